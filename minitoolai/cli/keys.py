"""`minitoolai keys ...`"""

from __future__ import annotations

import typer

from minitoolai.accounts.revocation import announce
from minitoolai.accounts.store import (
    UNCHANGED,
    create_key,
    find_account,
    list_keys,
    parse_expiry,
    parse_models,
    revoke_key,
    update_key,
)
from minitoolai.cli.common import (
    EXIT_USAGE,
    console,
    fail,
    json_option,
    make_table,
    money_fields,
    print_json,
    print_table,
    usd_or_exit,
    with_db,
)
from minitoolai.errors import InvalidRequest
from minitoolai.ledger.holds import month_of
from minitoolai.money import display_usd

app = typer.Typer(help="Create, list, update and revoke API keys.", no_args_is_help=True)


NONE_WORDS = ("none", "never", "all", "")


def _limit_option(text: str | None):
    """UNCHANGED when not given, None for `none`, else nanodollars."""
    if text is None:
        return UNCHANGED
    return None if text.strip().lower() in NONE_WORDS else usd_or_exit(text)


def _expiry(text: str | None, db):
    if text is None:
        return UNCHANGED
    if text.strip().lower() in NONE_WORDS:
        return None
    try:
        return parse_expiry(text, db.now())
    except InvalidRequest as exc:
        fail(exc.message, EXIT_USAGE)


def _models(text: str | None):
    if text is None:
        return UNCHANGED
    return None if text.strip().lower() in NONE_WORDS else parse_models(text)


def _known(models, settings):
    """The allowlist, if every id is a model of the catalog these settings serve (a typo
    would make a key that can use nothing, or less than meant); else exit 2."""
    if models is None or models is UNCHANGED:
        return models
    # imported here: the catalog's capabilities import the serving stack (cold path)
    from minitoolai.catalog_status import configured_catalog

    catalog = configured_catalog(settings)
    unknown = [m for m in models if m not in catalog]
    if unknown:
        fail(f"not a model of this server: {', '.join(unknown)[:200]} (see `minitoolai"
             " models`)", EXIT_USAGE)
    return models


LIMIT_HELP = "spending limit in USD for this key, over its whole life"
MONTHLY_HELP = "spending limit in USD per calendar month (UTC); resets on the 1st"
EXPIRES_HELP = ("expiry: YYYY-MM-DD (stops working when that day begins, UTC) or"
                " YYYY-MM-DDTHH:MM (UTC)")
MODELS_HELP = "the only models this key may use, comma-separated (others: 403)"


@app.command("create")
def create(email: str, name: str = typer.Option("", help="a name to recognise the key by"),
           limit: str = typer.Option(None, help=LIMIT_HELP),
           monthly_limit: str = typer.Option(None, "--monthly-limit", help=MONTHLY_HELP),
           expires: str = typer.Option(None, "--expires", help=EXPIRES_HELP),
           models: str = typer.Option(None, "--models", help=MODELS_HELP)):
    """Create an API key; prints the key, alone, on the last line. It is shown only once."""
    spend_limit = usd_or_exit(limit) if limit else None
    month_limit = usd_or_exit(monthly_limit) if monthly_limit else None

    async def action(settings, db):
        account = await find_account(db, email)
        expires_at = _expiry(expires, db) if expires else None
        return await create_key(db, account.id, name, spend_limit, month_limit=month_limit,
                                expires_at=expires_at, models=_known(
                                    parse_models(models) if models else None, settings))

    key, secret = with_db(action)
    console.print(f"created key {key.id} for {email} (store it now: it is shown only once)",
                  highlight=False)
    print(secret)


@app.command("update")
def update(key_id: str, name: str = typer.Option(None, help="a new name"),
           limit: str = typer.Option(None, help=LIMIT_HELP + "; 'none' removes it"),
           monthly_limit: str = typer.Option(None, "--monthly-limit",
                                             help=MONTHLY_HELP + "; 'none' removes it"),
           expires: str = typer.Option(None, "--expires", help=EXPIRES_HELP + "; 'never'"),
           models: str = typer.Option(None, "--models", help=MODELS_HELP + "; 'all' lifts it"),
           as_json: bool = json_option()):
    """Rename a key or change its limits, expiry or models (what is not given stays). The
    next request is checked against the change."""
    spend_limit, month_limit = _limit_option(limit), _limit_option(monthly_limit)
    allowed = _models(models)

    async def action(settings, db):
        key = await update_key(db, key_id, None, name=name, spend_limit=spend_limit,
                               month_limit=month_limit, expires_at=_expiry(expires, db),
                               models=_known(allowed, settings))
        if expires is not None:  # the servers' cached lookups carry the old expiry
            await announce(settings, key_id=key.id)
        return key, db.now()

    key, now = with_db(action)
    if as_json:
        print_json(_key_json(key, now))
        return
    console.print(f"updated {key.id} ({key.name})", highlight=False)


def _key_json(k, now) -> dict:
    return {"id": k.id, "name": k.name, "prefix": k.prefix, "created_at": k.created_at,
            "last_used_at": k.last_used_at, "revoked_at": k.revoked_at,
            "expires_at": k.expires_at, "expired": k.expired(now),
            "models": list(k.models) if k.models is not None else None,
            **money_fields("spend_limit", k.spend_limit),
            **money_fields("spent", k.spent),
            **money_fields("monthly_limit", k.month_limit),
            **money_fields("spent_this_month", k.spent_in(month_of(now)))}


@app.command("list")
def list_(email: str, as_json: bool = json_option()):
    """List an account's keys (never their secrets)."""

    async def action(settings, db):
        account = await find_account(db, email)
        return await list_keys(db, account.id), db.now()

    keys, now = with_db(action)
    if as_json:
        print_json([_key_json(k, now) for k in keys])
        return
    month = month_of(now)
    table = make_table("id", "name", "prefix", "created", "last used", "revoked", "expires",
                       "limit", "spent", "monthly", "this month", "models")
    for k in keys:
        table.add_row(k.id, k.name, k.prefix + "…", f"{k.created_at:%Y-%m-%d %H:%M}",
                      f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "",
                      f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
                      (f"{k.expires_at:%Y-%m-%d %H:%M}" + (" (expired)" if k.expired(now)
                                                           else "")) if k.expires_at else "",
                      display_usd(k.spend_limit) if k.spend_limit is not None else "",
                      display_usd(k.spent),
                      display_usd(k.month_limit) if k.month_limit is not None else "",
                      display_usd(k.spent_in(month)),
                      ",".join(k.models) if k.models is not None else "all")
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
