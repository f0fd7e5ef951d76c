"""Routes of the core: health, the key's balance, and the model catalog."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request

from minitoolai.accounts.store import get_account
from minitoolai.catalog import Model
from minitoolai.catalog_status import unavailable_reason
from minitoolai.db.migrate import expected_heads
from minitoolai.errors import DatabaseUnavailable
from minitoolai.http import authenticate, json_response, runtime_of
from minitoolai.money import display_usd, to_usd
from minitoolai.redis_link import RedisLink
from minitoolai.redis_link import Unavailable as RedisUnavailable

router = APIRouter(redirect_slashes=False)


def both(path: str) -> list[str]:
    """A path with and without its trailing slash (never a redirect for a POST)."""
    bare = path.rstrip("/")
    return [bare, bare + "/"]


@router.get("/health")
async def health(request: Request):
    return json_response({"status": "ok"})


@router.get("/health/live")
async def live(request: Request):
    """Liveness: the process runs and answers (it checks nothing else, so a load balancer
    or Kubernetes never restarts a server only because its database is away)."""
    return json_response({"status": "live"})


@router.get("/health/ready")
async def ready(request: Request):
    """Readiness: whether this server can serve billed requests now: the database answers
    within `database.ready_timeout_seconds` and is migrated to this code's revisions.
    200 {"status": "ready", "checks": {...}}, or 503 naming each check that failed. With
    `redis_url`, Redis is checked too; losing it degrades limits to per process but blocks
    no billing, so it answers 200 "degraded" unless `redis_required_for_ready` is set."""
    runtime = runtime_of(request)
    checks = await readiness_checks(runtime)
    required = ["database", "migrations"]
    if runtime.settings.redis_required_for_ready:
        required.append("redis")
    if all(checks.get(name, "ok") == "ok" for name in required):
        status = "ready" if all(value == "ok" for value in checks.values()) else "degraded"
        return json_response({"status": status, "checks": checks})
    return json_response({"status": "unavailable", "checks": checks}, 503,
                         {"Retry-After": str(runtime.db.retry_after),
                          "Cache-Control": "no-store"})


async def readiness_checks(runtime) -> dict[str, str]:
    """Each check: "ok", or what is wrong."""
    checks = {"database": "ok", "migrations": "ok"}
    if runtime.redis.configured:
        checks["redis"] = await redis_check(runtime.redis)
    try:
        found = await runtime.db.revisions(runtime.settings.database.ready_timeout_seconds)
    except DatabaseUnavailable as exc:
        checks["database"] = f"unreachable: {exc.message}"
        checks["migrations"] = "unknown"
        return checks
    except SQLAlchemyError as exc:  # reachable, but no alembic_version table
        checks["migrations"] = f"not migrated: {type(exc).__name__}"
        return checks
    expected = expected_heads()
    if set(found) != expected:
        checks["migrations"] = (f"database at {sorted(found) or 'no revision'}, this server"
                                f" needs {sorted(expected)}: run `minitoolai db upgrade`")
    return checks


async def redis_check(link: RedisLink) -> str:
    """A PING through the link's breaker: while Redis is known lost this costs nothing (the
    breaker answers), and once its retry time has passed this PING is the probe."""
    try:
        await link.call(lambda client: client.ping())
    except RedisUnavailable:
        return ("unreachable: rate limits and throttles are per process, and revocations"
                " reach other processes within auth_cache_seconds, until it is back")
    return "ok"


async def balance(request: Request):
    principal = await authenticate(request)
    account = await get_account(runtime_of(request).db, principal.account_id)
    return json_response({
        "object": "balance",
        "currency": "USD",
        "balance": str(to_usd(account.balance)),
        "held": str(to_usd(account.held)),
        "available": str(to_usd(account.available)),
        "balance_display": display_usd(account.balance),
    })


def describe_model(model: Model, unavailable: str | None) -> dict:
    """One catalog entry as `/api/models/` shows it, prices in USD (strings, exact);
    `unavailable` is why this server cannot serve it now (None when it can)."""
    entry = {"id": model.id, "object": "model", "kind": model.kind, "owned_by": model.owned_by,
             "available": unavailable is None}
    if unavailable is not None:
        entry["unavailable_reason"] = unavailable
    if model.kind == "chat":
        entry["pricing"] = {
            "input_per_1m_tokens": str(to_usd(model.input_nano * 1_000_000)),
            "output_per_1m_tokens": str(to_usd(model.output_nano * 1_000_000)),
        }
        entry["vision"] = model.vision
        entry["reasoning_effort"] = model.reasoning is not None
    elif model.kind == "image":
        entry["pricing"] = {"per_image": str(to_usd(model.image_nano))}
    elif model.kind == "speech":
        entry["pricing"] = {"per_1m_characters": str(to_usd(model.input_nano * 1_000_000))}
    entry.update(model.extra.get("public", {}))
    return entry


async def models(request: Request):
    runtime = runtime_of(request)
    data = [describe_model(m, unavailable_reason(runtime, m)) for m in runtime.catalog]
    return json_response({"object": "list", "data": data})


for _path in both("/api/balance/"):
    router.add_api_route(_path, balance, methods=["GET"], include_in_schema=_path.endswith("/"))
for _path in both("/api/models/"):
    router.add_api_route(_path, models, methods=["GET"], include_in_schema=_path.endswith("/"))
