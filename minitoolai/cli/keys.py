"""`minitoolai keys ...`"""

from __future__ import annotations

import typer

from minitoolai.accounts.revocation import announce
from minitoolai.accounts.store import create_key, find_account, list_keys, revoke_key
from minitoolai.cli.common import (
    console,
    json_option,
    make_table,
    money_fields,
    print_json,
    print_table,
    usd_or_exit,
    with_db,
)
from minitoolai.money import format_usd

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


@app.command("create")
def create(email: str, name: str = typer.Option("", help="a name to recognise the key by"),
           limit: str = typer.Option(None, help="spending limit in USD for this key")):
    """Create an API key; prints the key, alone, on the last line. It is shown only once."""
    spend_limit = usd_or_exit(limit) if limit else None

    async def action(settings, db):
        account = await find_account(db, email)
        return await create_key(db, account.id, name, spend_limit)

    key, secret = with_db(action)
    console.print(f"created key {key.id} for {email} (store it now: it is shown only once)",
                  highlight=False)
    print(secret)


@app.command("list")
def list_(email: str, as_json: bool = json_option()):
    """List an account's keys (never their secrets)."""

    async def action(settings, db):
        account = await find_account(db, email)
        return await list_keys(db, account.id)

    keys = with_db(action)
    if as_json:
        print_json([{"id": k.id, "name": k.name, "prefix": k.prefix, "created_at": k.created_at,
                     "last_used_at": k.last_used_at, "revoked_at": k.revoked_at,
                     **money_fields("spend_limit", k.spend_limit),
                     **money_fields("spent", k.spent)} for k in keys])
        return
    table = make_table("id", "name", "prefix", "created", "last used", "revoked", "limit", "spent")
    for k in keys:
        table.add_row(k.id, k.name, k.prefix + "…", f"{k.created_at:%Y-%m-%d %H:%M}",
                      f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "",
                      f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
                      "$" + format_usd(k.spend_limit) if k.spend_limit is not None else "",
                      "$" + format_usd(k.spent))
    print_table(table)


@app.command("revoke")
def revoke(key_id: str):
    """Revoke a key by its id (key_...). With Redis (redis_url) every server refuses it at
    once; without, each server refuses it within auth_cache_seconds (2 s)."""

    async def action(settings, db):
        key = await revoke_key(db, key_id)
        return key, await announce(settings, key_id=key.id), settings

    key, pushed, settings = with_db(action)
    console.print(f"revoked {key.id}", highlight=False)
    if not pushed:
        console.print(f"servers refuse it within auth_cache_seconds"
                      f" ({settings.auth_cache_seconds:g} s)"
                      + ("" if settings.redis_url else ": set redis_url to push it at once"),
                      highlight=False)
