"""`minitoolai accounts ...`"""

from __future__ import annotations

import typer

from minitoolai.accounts.revocation import announce
from minitoolai.accounts.store import create_account, find_account, list_accounts, set_account_flags
from minitoolai.cli.common import (
    EXIT_USAGE,
    console,
    err_console,
    fail,
    json_option,
    make_table,
    money_fields,
    operator_name,
    print_json,
    print_table,
    usd_or_exit,
    with_db,
)
from minitoolai.ledger.credits import add_credit
from minitoolai.money import display_usd

app = typer.Typer(help="Create and list accounts.", no_args_is_help=True)


@app.command("create")
def create(email: str, name: str = typer.Option("", help="display name"),
           credit: str = typer.Option(None, help="initial credit in USD, e.g. 10 or 2.50"),
           paid: bool = typer.Option(False, "--paid",
                                     help="money was received for the credit (revenue)")):
    """Create an account; prints the new account's id."""
    amount = usd_or_exit(credit, positive=True) if credit else 0

    async def action(settings, db):
        account = await create_account(db, email, name)
        if amount:
            await add_credit(db, account.id, amount, kind="topup", note="initial credit",
                             by=operator_name(), paid=paid)
        return account

    account = with_db(action)
    console.print(account.id, highlight=False)


@app.command("list")
def list_(search: str = typer.Option(None, help="filter by email or name"),
          as_json: bool = json_option()):
    """List accounts with their balances."""
    rows = with_db(lambda s, db: list_accounts(db, search))
    if as_json:
        print_json([{"id": a.id, "email": a.email, "name": a.name,
                     **money_fields("balance", a.balance), **money_fields("held", a.held),
                     **money_fields("available", a.available), "admin": a.is_admin,
                     "disabled": a.disabled, "created_at": a.created_at} for a in rows])
        return
    table = make_table("id", "email", "name", "balance", "held", "admin", "disabled")
    for a in rows:
        table.add_row(str(a.id), a.email, a.name, display_usd(a.balance),
                      display_usd(a.held), "yes" if a.is_admin else "",
                      "yes" if a.disabled else "")
    print_table(table)


@app.command("grant-admin")
def grant_admin(email: str, revoke: bool = typer.Option(False, "--revoke",
                                                         help="take the role away")):
    """Give an account the operator (admin) role in the dashboard."""

    async def action(settings, db):
        account = await find_account(db, email)
        await set_account_flags(db, account.id, is_admin=not revoke)
        return account

    account = with_db(action)
    console.print(f"{account.email}: admin {'revoked' if revoke else 'granted'}")


@app.command("disable")
def disable(email: str, enable: bool = typer.Option(False, "--enable", help="re-enable")):
    """Disable (or re-enable) an account: its keys stop working (with Redis, on every server
    at once; without, within auth_cache_seconds)."""

    async def action(settings, db):
        account = await find_account(db, email)
        await set_account_flags(db, account.id, disabled=not enable)
        if not enable:
            await announce(settings, account_id=account.id)
        return account

    account = with_db(action)
    console.print(f"{account.email}: {'enabled' if enable else 'disabled'}")


@app.command("reset-link")
def reset_link(email: str,
               minutes: int = typer.Option(None, min=5, max=7 * 24 * 60,
                                           help="how long the link works (default:"
                                                " dashboard.password_reset_minutes)")):
    """Print a one-time link that lets the account choose a new password (for servers that
    send no email, or a customer who cannot receive it). Give it to the account's owner
    only: whoever opens it first sets the password."""
    # here, not at the top: argon2 and the dashboard's tables load for this command only
    from minitoolai.dashboard.resets import create_reset, reset_url

    async def action(settings, db):
        if not settings.dashboard.enabled:
            fail("the dashboard is disabled (dashboard.enabled = false): the link would not"
                 " open", EXIT_USAGE)
        account = await find_account(db, email)
        if account.disabled:
            fail(f"{account.email} is disabled: enable it first (accounts disable --enable)")
        await db.sync_clock()  # the link expires by the database's clock
        token = await create_reset(db, account.id,
                                   minutes or settings.dashboard.password_reset_minutes)
        return settings, reset_url(settings.base_url, token)

    settings, url = with_db(action)
    if not settings.public_url:
        err_console.print("note: public_url is not set; the link uses "
                          f"{settings.base_url}, where this server listens")
    console.print(url)
