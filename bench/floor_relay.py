"""The floor of this project's stack: a relay that does nothing but relay, on the same parts.

uvicorn (uvloop, httptools, access log off, as `minitoolai serve` runs it) serving a bare
ASGI app that checks one static key and passes `POST /v1/chat/completions` to the upstream
through one aiohttp session (as the gateway's OpenAI-compatible provider holds it), the
upstream's bytes passed on as they arrive: no parsing of the request or of the stream, no
account, hold, settlement, log line, metric or request id. Whatever CPU it spends per
request, the gateway cannot spend less on these parts; bench/sidebyside.py runs it as
`python-floor`, next to nginx and the gateway.

    python bench/floor_relay.py --port 8100 --upstream http://127.0.0.1:8000 --key sk-floor
"""

from __future__ import annotations

import argparse

import aiohttp
import uvicorn


def make_app(upstream: str, key: str):
    session: aiohttp.ClientSession | None = None
    expected = f"Bearer {key}".encode()

    async def app(scope, receive, send):
        nonlocal session
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    session = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=30),
                        timeout=aiohttp.ClientTimeout(total=None, sock_read=60),
                        trust_env=False)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await session.close()
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
        async with session.post(upstream + scope["path"], data=body,
                                headers={"content-type": "application/json"}) as resp:
            await send({"type": "http.response.start", "status": resp.status,
                        "headers": [(b"content-type",
                                     resp.headers.get("content-type", "").encode())]})
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="http://host:port (no path)")
    ap.add_argument("--key", required=True)
    args = ap.parse_args()
    uvicorn.run(make_app(args.upstream.rstrip("/"), args.key), host="127.0.0.1",
                port=args.port, loop="uvloop", http="httptools", access_log=False,
                log_level="warning")


if __name__ == "__main__":
    main()
