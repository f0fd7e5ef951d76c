"""The dashboard's stylesheet and script, served from the package (no build step)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from minitoolai.dashboard.service import STATIC_DIR
from minitoolai.errors import NotFound
from minitoolai.http import runtime_of

MEDIA_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}


async def static_file(request: Request) -> Response:
    service = runtime_of(request).dashboard
    name = request.path_params["name"]
    # only names listed at start: nothing outside the folder can be asked for
    if service is None or name not in service.static_names:
        raise NotFound(f"no static file {name!r}")
    suffix = name[name.rfind("."):]
    return FileResponse(STATIC_DIR / name, media_type=MEDIA_TYPES.get(suffix),
                        headers={"Cache-Control": "public, max-age=300",
                                 "X-Content-Type-Options": "nosniff"})


ROUTES = [("/static/dashboard/{name}", static_file, ["GET"])]
