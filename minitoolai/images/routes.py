"""HTTP routes of images: the seed's submit and jobs endpoints, image files, and OpenAI's
/v1/images/generations. Thin: parse, call the service, answer."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from minitoolai.clock import as_utc, utcnow
from minitoolai.core_routes import both
from minitoolai.errors import InvalidRequest, NotFound, ServiceUnavailable
from minitoolai.http import authenticate, json_response, read_json, runtime_of
from minitoolai.idempotency.responses import idempotent
from minitoolai.images.openai_images import generations
from minitoolai.images.queue import find_by_image_key
from minitoolai.images.storage import FILES_PATH, LocalStorage

router = APIRouter(redirect_slashes=False)
JOBS_BODY_LIMIT = 16 * 1024  # a ticket is two short fields; the route needs no key


def service_of(request: Request):
    service = runtime_of(request).images
    if service is None:
        raise ServiceUnavailable("image generation is not running on this server")
    return service


async def submit(request: Request):
    service = service_of(request)
    principal = await authenticate(request)
    body = await read_json(request)
    req = service.parse(body)

    async def submit_once():
        ticket = await service.submit(principal, req)
        return json_response({"status": "success", "jobid": ticket.jobid,
                              "signature": ticket.signature})

    return await idempotent(request, runtime_of(request).idempotency, principal.account_id,
                            "/api/texttoimage", body, submit_once)


async def jobs(request: Request):
    service = service_of(request)
    body = await read_json(request, JOBS_BODY_LIMIT)
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object with jobid and signature")
    job = await service.job_for_ticket(body.get("jobid"), body.get("signature"))
    return json_response(await service.describe(job))


async def image_file(request: Request, key: str):
    service = service_of(request)
    storage = service.storage
    path = storage.path_of(key) if isinstance(storage, LocalStorage) else None
    gone = NotFound("no such image (it may have expired)", code="image_not_found")
    if path is None:
        raise gone
    row = await find_by_image_key(service.db, key)
    if row is None or as_utc(row.expires_at) <= utcnow() or not path.exists():
        raise gone
    return FileResponse(path, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})


for _path in both("/api/texttoimage/"):
    router.add_api_route(_path, submit, methods=["POST"], include_in_schema=_path.endswith("/"))
for _path in both("/api/texttoimage/jobs/"):
    router.add_api_route(_path, jobs, methods=["POST"], include_in_schema=_path.endswith("/"))
router.add_api_route(FILES_PATH + "{key}", image_file, methods=["GET"],
                     summary="An image made by a job (the job's image_url; no key needed)",
                     response_class=Response,
                     responses={200: {"content": {"image/png": {}}, "description": "The PNG"}})
for _path in both("/v1/images/generations"):
    router.add_api_route(_path, generations, methods=["POST"],
                         include_in_schema=not _path.endswith("/"))
