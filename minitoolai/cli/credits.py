"""`minitoolai credits add|adjust`, `balance`, `usage`."""

from __future__ import annotations

import typer
from sqlalchemy import func, select

from minitoolai.accounts.store import find_account
from minitoolai.cli.common import (
    EXIT_USAGE,
    console,
    fail,
    json_option,
    make_table,
    money_fields,
    operator_name,
    print_json,
    print_table,
    signed_usd,
    since_or_exit,
    usd_or_exit,
    with_db,
)
from minitoolai.clock import as_utc
from minitoolai.db.tables import usage
from minitoolai.ledger.credits import add_credit
from minitoolai.money import display_usd

app = typer.Typer(help="Top up and adjust credit.", no_args_is_help=True)
# "-1" would otherwise be read as an unknown option ("No such option: -1"): let click pass
# it on as the amount argument; `credits adjust x --note why -- -1` works as well (after
# `--` everything is an argument, --note included)
NEGATIVE_AMOUNTS = {"ignore_unknown_options": True}


@app.command("add", context_settings=NEGATIVE_AMOUNTS)
def add(email: str, usd: str, note: str = typer.Option("", help="why, for the ledger"),
        paid: bool = typer.Option(False, "--paid",
                                  help="money was received for it (counts as revenue)")):
    """Add credit to an account (a top-up written to the ledger)."""
    if usd.strip().startswith("-"):
        fail(f"credits add takes a positive amount; to take credit away use"
             f" `minitoolai credits adjust {email} {usd} --note REASON`", EXIT_USAGE)
    amount = usd_or_exit(usd, positive=True)

    async def action(settings, db):
        account = await find_account(db, email)
        return await add_credit(db, account.id, amount, kind="topup", note=note,
                                by=operator_name(), paid=paid)

    balance = with_db(action)
    console.print(f"{email}: +{display_usd(amount)}, balance {display_usd(balance)}")


@app.command("adjust", context_settings=NEGATIVE_AMOUNTS)
def adjust(email: str = typer.Argument(..., metavar="EMAIL"),
           usd: str = typer.Argument(..., metavar="AMOUNT",
                                     help="signed USD: 5 adds, -2.50 takes away"),
           note: str = typer.Option(..., "--note", help="why (required): kept in the ledger")):
    """Adjust an account's credit up or down (an adjustment entry with its reason). A debit
    may not take the available balance below zero."""
    if not note.strip():
        fail("--note must say why: it is kept in the ledger", EXIT_USAGE)
    amount = usd_or_exit(usd, nonzero=True)

    async def action(settings, db):
        account = await find_account(db, email)
        return await add_credit(db, account.id, amount, kind="adjustment", note=note.strip(),
                                by=operator_name())

    balance = with_db(action)
    console.print(f"{email}: {signed_usd(amount)}, balance {display_usd(balance)}")


def balance(email: str, as_json: bool = json_option()):
    """Show an account's balance, held and available credit."""
    account = with_db(lambda s, db: find_account(db, email))
    if as_json:
        print_json({"email": account.email, "id": account.id,
                    **money_fields("balance", account.balance),
                    **money_fields("held", account.held),
                    **money_fields("available", account.available)})
        return
    console.print(f"balance   {display_usd(account.balance)}\n"
                  f"held      {display_usd(account.held)}\n"
                  f"available {display_usd(account.available)}")


def usage_(email: str, since: str = typer.Option(None, help="YYYY-MM-DD (UTC)"),
           limit: int = typer.Option(50, min=1, help="rows to show"),
           as_json: bool = json_option()):
    """Show an account's recent requests and what each cost."""
    start = since_or_exit(since)

    async def action(settings, db):
        account = await find_account(db, email)
        where = [usage.c.account_id == account.id]
        if start is not None:
            where.append(usage.c.created_at >= start)
        async with db.read() as conn:
            rows = (await conn.execute(select(usage).where(*where)
                                       .order_by(usage.c.id.desc()).limit(limit))).all()
            totals = (await conn.execute(select(func.count(), func.coalesce(func.sum(
                usage.c.cost), 0)).select_from(usage).where(*where))).one()
        return rows, totals

    rows, (count, total) = with_db(action)
    if as_json:
        print_json({"email": email, "count": int(count), **money_fields("total", int(total)),
                    "requests": [{"request_id": r.request_id, "created_at": as_utc(r.created_at),
                                  "key_id": r.key_id, "endpoint": r.endpoint, "model": r.model,
                                  "prompt_tokens": r.prompt_tokens,
                                  "completion_tokens": r.completion_tokens,
                                  "images": r.images, "characters": r.characters,
                                  **money_fields("cost", int(r.cost)),
                                  "estimated": bool(r.estimated), "status": r.status,
                                  "latency_ms": r.latency_ms} for r in rows]})
        return
    # the request id is the x-request-id of the access line and of the client's answer
    table = make_table("time", "request id", "endpoint", "model", "in", "out", "images",
                       "chars", "cost", "status")
    for r in rows:
        table.add_row(f"{r.created_at:%Y-%m-%d %H:%M:%S}", r.request_id, r.endpoint, r.model,
                      str(r.prompt_tokens), str(r.completion_tokens), str(r.images),
                      str(r.characters),
                      display_usd(r.cost) + ("*" if r.estimated else ""), r.status)
    print_table(table)
    shown = f"the last {len(rows)} of " if len(rows) < count else ""
    note = " (* estimated usage)" if any(r.estimated for r in rows) else ""
    console.print(f"{shown}{count} request(s), {display_usd(int(total))} in all{note}")
