"""API keys: create (the secret shown once, after the redirect), rename, spending limit,
revoke. Every form redirects (post/redirect/get): a reload never creates another key."""

from __future__ import annotations

from starlette.responses import Response

from minitoolai.accounts.store import create_key, list_keys, revoke_key, update_key
from minitoolai.dashboard.playground_key import playground_key_id
from minitoolai.dashboard.reveal import REVEAL_COOKIE, clear_reveal, set_reveal, take_reveal
from minitoolai.dashboard.web import Ctx, page
from minitoolai.errors import InvalidRequest
from minitoolai.money import MoneyFormatError, parse_usd


def _limit(text: str) -> int | None:
    """A spending limit from the form: blank means none."""
    text = text.strip()
    if not text:
        return None
    try:
        value = parse_usd(text)
    except MoneyFormatError as exc:
        raise InvalidRequest(str(exc), param="spend_limit") from None
    if value < 0:
        raise InvalidRequest("a spending limit cannot be negative", param="spend_limit")
    return value


async def _render(ctx: Ctx, status_code: int = 200, **values) -> Response:
    keys = await list_keys(ctx.db, ctx.account.id)
    playground = await playground_key_id(ctx.db, ctx.account.id)
    keys.sort(key=lambda k: (k.revoked_at is not None, k.created_at), reverse=False)
    return ctx.render("keys.html", status_code=status_code, keys=keys,
                      playground_key=playground, **values)


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
        limit = _limit(ctx.form.get("spend_limit", ""))
    except InvalidRequest as exc:
        return await _render(ctx, 400, error=exc.message)
    key, secret = await create_key(ctx.db, ctx.account.id, name, limit)
    response = ctx.redirect("/keys", f"Created {key.name}.")
    set_reveal(response, ctx, "/keys", {"key_id": key.id, "secret": secret})
    return response


async def update(ctx: Ctx) -> Response:
    key_id = ctx.request.path_params["key_id"]
    try:
        limit = _limit(ctx.form.get("spend_limit", ""))
    except InvalidRequest as exc:
        return await _render(ctx, 400, error=exc.message)
    name = ctx.form.get("name", "").strip()[:200] or None
    # update_key matches on the key AND this session's account: another account's key id
    # answers 404 exactly like an unknown one
    key = await update_key(ctx.db, key_id, ctx.account.id, name=name, spend_limit=limit)
    return ctx.redirect("/keys", f"Saved {key.name}.")


async def revoke(ctx: Ctx) -> Response:
    key_id = ctx.request.path_params["key_id"]
    key = await revoke_key(ctx.db, key_id, ctx.account.id)
    await ctx.runtime.revocations.key_revoked(key.id)
    return ctx.redirect("/keys", f"Revoked {key.name} ({key.prefix}…). It stops working now.")


ROUTES = [
    ("/keys", page(keys_page), ["GET"]),
    ("/keys", page(create), ["POST"]),
    ("/keys/{key_id}", page(update), ["POST"]),
    ("/keys/{key_id}/revoke", page(revoke), ["POST"]),
]
