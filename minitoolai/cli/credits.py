"""`minitoolai credits add`, `balance`, `usage`."""

from __future__ import annotations

from datetime import UTC, date, datetime

import typer
from sqlalchemy import func, select

from minitoolai.accounts.store import find_account
from minitoolai.cli.common import console, err_console, make_table, usd_or_exit, with_db
from minitoolai.db.tables import usage
from minitoolai.ledger.credits import add_credit
from minitoolai.money import format_usd

app = typer.Typer(help="Top up credit.", no_args_is_help=True)


@app.command("add")
def add(email: str, usd: str, note: str = typer.Option("", help="why, for the ledger")):
    """Add credit to an account (a top-up written to the ledger)."""
    amount = usd_or_exit(usd, positive=True)

    async def action(settings, db):
        account = await find_account(db, email)
        return await add_credit(db, account.id, amount, kind="topup", note=note)

    balance = with_db(action)
    console.print(f"{email}: +${format_usd(amount)}, balance ${format_usd(balance)}",
                  highlight=False)


def balance(email: str):
    """Show an account's balance, held and available credit."""
    account = with_db(lambda s, db: find_account(db, email))
    console.print(f"balance   ${format_usd(account.balance)}\n"
                  f"held      ${format_usd(account.held)}\n"
                  f"available ${format_usd(account.available)}", highlight=False)


def usage_(email: str, since: str = typer.Option(None, help="YYYY-MM-DD"),
           limit: int = typer.Option(50, help="rows to show")):
    """Show an account's recent requests and what each cost."""
    start = None
    if since:
        try:
            start = datetime.combine(date.fromisoformat(since), datetime.min.time(), tzinfo=UTC)
        except ValueError:
            err_console.print(f"[red]error:[/red] --since must be YYYY-MM-DD, not {since!r}")
            raise typer.Exit(2) from None

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
    table = make_table("time", "endpoint", "model", "in", "out", "images", "chars", "cost",
                       "status")
    for r in rows:
        table.add_row(f"{r.created_at:%Y-%m-%d %H:%M:%S}", r.endpoint, r.model,
                      str(r.prompt_tokens), str(r.completion_tokens), str(r.images),
                      str(r.characters),
                      "$" + format_usd(r.cost) + ("*" if r.estimated else ""), r.status)
    console.print(table)
    shown = f"the last {len(rows)} of " if len(rows) < count else ""
    note = " (* estimated usage)" if any(r.estimated for r in rows) else ""
    console.print(f"{shown}{count} request(s), ${format_usd(int(total))} in all{note}",
                  highlight=False)
