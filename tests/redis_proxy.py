"""A TCP proxy of the test's own, between the servers and the real Redis, that the test can
cut (stop listening, drop every open connection), stall (keep connections, forward nothing)
and restore, without touching Redis."""

from __future__ import annotations

import asyncio
import threading

from tests.servers import free_port


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.stalled = False  # read and drop everything: Redis looks alive but never answers

    def _do(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def start(self) -> TcpProxy:
        self._thread.start()
        self.restore()
        return self

    def restore(self) -> None:
        async def listen():
            self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port,
                                                      reuse_address=True)
        self._do(listen())

    def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        async def drop():
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()
        self._do(drop())

    def stop(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter):
            try:
                while data := await src.read(65536):
                    if self.stalled:
                        continue
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"
