"""A TCP proxy of the test's own, between a server and a dependency (PostgreSQL, Redis),
that can be cut, stalled and restored: the way to make a shared service "go away" for one
test without touching the service.

    with TcpProxy("127.0.0.1", 5432) as proxy:   # proxy.port forwards to 5432
        proxy.cut()       # every open connection dropped, new ones refused
        proxy.restore()   # accepting and forwarding again, on the same port
        proxy.stalled = True   # connections stay open, nothing is forwarded (a hung peer)

Runs its own event loop in a thread, like tests/servers.py.
"""

from __future__ import annotations

import asyncio
import threading

from tests.servers import free_port


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.connections = 0  # accepted since start
        self.stalled = False  # read and drop everything: the peer looks alive, never answers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self._cuts = 0  # cuts so far: a connection accepted before one is not let through after
        self._thread: threading.Thread | None = None

    # ---- control, from the test's thread ------------------------------------------------
    def start(self) -> TcpProxy:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._listen())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("TCP proxy did not start")
        return self

    def cut(self) -> None:
        """Stop listening (connects are refused) and drop every open connection."""
        self._call(self._cut())

    def restore(self) -> None:
        """Listen again on the same port."""
        self._call(self._listen())

    def stop(self) -> None:
        if self._loop is not None:
            self._call(self._cut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _call(self, coro) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # ---- the proxy's loop ----------------------------------------------------------------
    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self) -> None:
        self._cuts += 1
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._pipes):
            writer.transport.abort()
        self._pipes.clear()

    async def _accept(self, client_reader, client_writer) -> None:
        self.connections += 1
        cuts = self._cuts
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        if self._cuts != cuts:
            # cut while this connection was being made: it was not among the pipes the cut
            # dropped, and letting it through would give the client a working connection in
            # the middle of the outage (a worker then saw the database come and go)
            client_writer.transport.abort()
            upstream_writer.transport.abort()
            return
        pair = (client_writer, upstream_writer)
        self._pipes.update(pair)
        await asyncio.gather(self._pump(client_reader, upstream_writer),
                             self._pump(upstream_reader, client_writer))
        self._pipes.difference_update(pair)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.stalled:
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()  # one side ended: end the other
