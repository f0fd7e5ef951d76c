"""The floor of this project's stack: a relay that does nothing but relay, on the same parts.

uvicorn (uvloop, httptools, access log off, as `minitoolai serve` runs it) serving a bare
ASGI app that checks one static key and passes `POST /v1/chat/completions` to the upstream
through the gateway's own upstream client (minitoolai/chat/providers/upstream_http.py,
one pool as the OpenAI-compatible provider holds it; aiohttp's before the seventh pass), the
upstream's bytes passed on as they arrive: no parsing of the request or of the stream, no
account, hold, settlement, log line, metric or request id. Whatever CPU it spends per
request, the gateway cannot spend less on these parts; bench/sidebyside.py runs it as
`python-floor`, next to nginx and the gateway.

    python bench/floor_relay.py --port 8100 --upstream http://127.0.0.1:8000 --key sk-floor

The same relay on other parts, to see whether another HTTP server or upstream client would
lower that floor: aiohttp's client (the gateway's until the seventh pass of issue 16), or
parts that are no dependency of this project (install them into a venv of your own, e.g.
`pip install granian pyreqwest aiosonic`):

    python bench/floor_relay.py ... --server granian          # Rust HTTP server, ASGI
    python bench/floor_relay.py ... --client aiohttp           # aiohttp's client
    python bench/floor_relay.py ... --client pyreqwest         # Rust (reqwest) client
    python bench/floor_relay.py ... --client aiosonic          # pure-Python client
"""

from __future__ import annotations

import argparse
import os

CLIENTS = ("aiohttp", "minitoolai", "pyreqwest", "aiosonic")


def _open_client(client: str, upstream: str = ""):
    if client == "minitoolai":
        from minitoolai.chat.providers.upstream_http import UpstreamPool

        return UpstreamPool("floor", upstream, {"Content-Type": "application/json"},
                            connect_timeout=5, read_timeout=60, max_connections=1000)
    if client == "aiohttp":
        import aiohttp

        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=60), trust_env=False)
    if client == "pyreqwest":
        from pyreqwest.client import ClientBuilder

        return ClientBuilder().build()
    import aiosonic

    return aiosonic.HTTPClient()


async def _relay(client: str, session, url: str, body: bytes, send) -> None:
    """POST the body upstream and pass the answer on, chunk by chunk as it arrives."""
    json_header = {"content-type": "application/json"}
    if client == "minitoolai":
        resp = await session.post(url, body)
        await _start(send, resp.status, resp.headers.get(b"content-type", b"").decode())
        while chunk := await resp.read_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        resp.release()
    elif client == "aiohttp":
        async with session.post(url, data=body, headers=json_header) as resp:
            await _start(send, resp.status, resp.headers.get("content-type", ""))
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    elif client == "pyreqwest":
        request = session.post(url).header("content-type", "application/json")
        async with request.body_bytes(body).build_streamed() as resp:
            await _start(send, resp.status, resp.headers.get("content-type") or "")
            while (chunk := await resp.body_reader.read_chunk()) is not None:
                await send({"type": "http.response.body", "body": bytes(chunk),
                            "more_body": True})
    else:
        resp = await session.post(url, data=body, headers=json_header)
        await _start(send, resp.status_code, resp.headers.get("content-type") or "")
        chunks = resp.read_chunks() if resp.chunked else None
        if chunks is None:
            await send({"type": "http.response.body", "body": await resp.content(),
                        "more_body": True})
        else:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _start(send, status: int, content_type: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode())]})


def make_app(upstream: str, key: str, client: str = "minitoolai"):
    session = None
    expected = f"Bearer {key}".encode()

    async def app(scope, receive, send):
        nonlocal session
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    session = _open_client(client, upstream)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    close = getattr(session, "close", None) or getattr(session, "aclose", None)
                    if close is not None:
                        await close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if dict(scope["headers"]).get(b"authorization") != expected:
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"error":"unauthorized"}'})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        url = scope["path"] if client == "minitoolai" else upstream + scope["path"]
        await _relay(client, session, url, body, send)

    return app


def app_from_env():
    """For `--server granian`, which imports its app by name (in its worker process)."""
    return make_app(os.environ["FLOOR_UPSTREAM"], os.environ["FLOOR_KEY"],
                    os.environ["FLOOR_CLIENT"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="http://host:port (no path)")
    ap.add_argument("--key", required=True)
    ap.add_argument("--client", choices=CLIENTS, default="minitoolai",
                    help="the upstream client (default: the gateway's own)")
    ap.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn",
                    help="the HTTP server (default: uvicorn, as the gateway)")
    args = ap.parse_args()
    upstream = args.upstream.rstrip("/")
    if args.server == "granian":
        from granian import Granian

        os.environ.update(FLOOR_UPSTREAM=upstream, FLOOR_KEY=args.key, FLOOR_CLIENT=args.client)
        os.environ["PYTHONPATH"] = os.path.dirname(os.path.abspath(__file__)) + os.pathsep \
            + os.environ.get("PYTHONPATH", "")
        Granian("floor_relay:app_from_env", address="127.0.0.1", port=args.port,
                interface="asgi", loop="uvloop", workers=1, factory=True,
                log_level="warning").serve()
        return
    import uvicorn

    uvicorn.run(make_app(upstream, args.key, args.client), host="127.0.0.1", port=args.port,
                loop="uvloop", http="httptools", access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
