"""API keys: create (the secret shown once, after the redirect), rename, spending limits
(lifetime and per calendar month), expiry, model allowlist, revoke. Every form that
changes something redirects (post/redirect/get): a reload never creates another key. A
refused form is shown again with the error next to its field (400)."""

from __future__ import annotations

from starlette.responses import Response

from minitoolai.accounts.store import (
    UNCHANGED,
    create_key,
    get_key,
    list_keys,
    parse_expiry,
    parse_models,
    revoke_key,
    update_key,
)
from minitoolai.dashboard.playground_key import playground_key_id
from minitoolai.dashboard.reveal import REVEAL_COOKIE, clear_reveal, set_reveal, take_reveal
from minitoolai.dashboard.web import Ctx, page
from minitoolai.errors import InvalidRequest
from minitoolai.ledger.holds import month_of
from minitoolai.money import MoneyFormatError, parse_usd


def _limit(text: str, param: str) -> int | None:
    """A spending limit from the form: blank means none."""
    text = text.strip()
    if not text:
        return None
    try:
        value = parse_usd(text)
    except MoneyFormatError as exc:
        raise InvalidRequest(str(exc), param=param) from None
    if value < 0:
        raise InvalidRequest("a spending limit cannot be negative", param=param)
    return value


def _models(ctx: Ctx, text: str) -> list[str] | None:
    """An allowlist from the form: catalog ids, separated by commas or spaces."""
    ids = parse_models(text)
    unknown = [m for m in ids or () if m not in ctx.runtime.catalog]
    if unknown:
        raise InvalidRequest(f"not a model of this server: {', '.join(unknown)[:200]}",
                             param="models")
    return ids


def _settings(ctx: Ctx, form: dict[str, str]) -> dict:
    """The limits, expiry and allowlist the form sends; a field it leaves out stays as
    it is (UNCHANGED). Raises InvalidRequest naming the form field."""
    values = {}
    for field in ("spend_limit", "month_limit"):
        if field in form:
            values[field] = _limit(form[field], field)
    if "expires" in form:
        try:
            values["expires_at"] = parse_expiry(form["expires"], ctx.db.now())
        except InvalidRequest as exc:
            exc.param = "expires"
            raise
    if "models" in form:
        values["models"] = _models(ctx, form["models"])
    return values


async def _render(ctx: Ctx, status_code: int = 200, **values) -> Response:
    keys = await list_keys(ctx.db, ctx.account.id)
    playground = await playground_key_id(ctx.db, ctx.account.id)
    keys.sort(key=lambda k: (k.revoked_at is not None, k.created_at), reverse=False)
    now = ctx.db.now()
    return ctx.render("keys.html", status_code=status_code, keys=keys,
                      playground_key=playground, now=now, month=month_of(now),
                      model_ids=sorted(m.id for m in ctx.runtime.catalog), **values)


async def keys_page(ctx: Ctx) -> Response:
    if REVEAL_COOKIE not in ctx.request.cookies:
        return await _render(ctx)
    # the redirect after creating a key: show its secret this once, then forget it
    shown = take_reveal(ctx) or {}
    keys = await list_keys(ctx.db, ctx.account.id)
    new_key = next((k for k in keys if k.id == shown.get("key_id")), None)
    response = await _render(ctx, new_key=new_key,
                             new_secret=shown.get("secret") if new_key else None)
    clear_reveal(response, "/keys")
    return response


async def create(ctx: Ctx) -> Response:
    name = ctx.form.get("name", "").strip()[:200] or "API key"
    try:
        values = _settings(ctx, ctx.form)
    except InvalidRequest as exc:
        return await _render(ctx, 400, error=exc.message, error_field=exc.param,
                             typed=ctx.form)
    key, secret = await create_key(
        ctx.db, ctx.account.id, name, values.get("spend_limit"),
        month_limit=values.get("month_limit"), expires_at=values.get("expires_at"),
        models=values.get("models"))
    response = ctx.redirect("/keys", f"Created {key.name}.")
    set_reveal(response, ctx, "/keys", {"key_id": key.id, "secret": secret})
    return response


async def _render_edit(ctx: Ctx, key, status_code: int = 200, **values) -> Response:
    now = ctx.db.now()
    return ctx.render("key_edit.html", status_code=status_code, key=key, now=now,
                      month=month_of(now), model_ids=sorted(m.id for m in ctx.runtime.catalog),
                      **values)


async def edit_page(ctx: Ctx) -> Response:
    # get_key matches on the key AND this session's account: another account's key id
    # answers 404 exactly like an unknown one
    key = await get_key(ctx.db, ctx.request.path_params["key_id"], ctx.account.id)
    return await _render_edit(ctx, key)


async def update(ctx: Ctx) -> Response:
    key_id = ctx.request.path_params["key_id"]
    key = await get_key(ctx.db, key_id, ctx.account.id)  # 404 for another account's
    if key.revoked_at is not None:
        return ctx.redirect("/keys", f"{key.name} is revoked: it cannot be changed.",
                            error=True)
    form = dict(ctx.form)
    shown = key.expires_at.strftime("%Y-%m-%d") if key.expires_at else ""
    if form.get("expires", "").strip() == shown:
        # the date the page showed, sent back as it was: not a new expiry (which must be
        # in the future), so an expired key can still be renamed
        form.pop("expires", None)
    try:
        values = _settings(ctx, form)
    except InvalidRequest as exc:
        return await _render_edit(ctx, key, 400, error=exc.message, error_field=exc.param,
                                  typed=ctx.form)
    name = ctx.form.get("name", "").strip()[:200] or None
    key = await update_key(ctx.db, key_id, ctx.account.id, name=name,
                           spend_limit=values.get("spend_limit", UNCHANGED),
                           month_limit=values.get("month_limit", UNCHANGED),
                           expires_at=values.get("expires_at", UNCHANGED),
                           models=values.get("models", UNCHANGED))
    # the servers' cached lookups carry the key's expiry: drop them, as for a revocation,
    # so a changed expiry applies to the next request everywhere (the hold reads the rest)
    await ctx.runtime.revocations.key_revoked(key.id)
    return ctx.redirect("/keys", f"Saved {key.name}.")


async def revoke(ctx: Ctx) -> Response:
    key_id = ctx.request.path_params["key_id"]
    key = await revoke_key(ctx.db, key_id, ctx.account.id)
    await ctx.runtime.revocations.key_revoked(key.id)
    return ctx.redirect("/keys", f"Revoked {key.name} ({key.prefix}…). It stops working now.")


ROUTES = [
    ("/keys", page(keys_page), ["GET"]),
    ("/keys", page(create), ["POST"]),
    ("/keys/{key_id}", page(edit_page), ["GET"]),
    ("/keys/{key_id}", page(update), ["POST"]),
    ("/keys/{key_id}/revoke", page(revoke), ["POST"]),
]
