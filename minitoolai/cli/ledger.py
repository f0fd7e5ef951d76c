"""`minitoolai ledger verify`, `ledger entries` and `ledger sweep`."""

from __future__ import annotations

import typer

from minitoolai.accounts.store import find_account
from minitoolai.cli.common import (
    EXIT_FAILED,
    console,
    err_console,
    json_option,
    make_table,
    money_fields,
    print_json,
    print_table,
    signed_usd,
    since_or_exit,
    with_db,
)
from minitoolai.ledger.history import count_entries, list_entries
from minitoolai.ledger.sweeper import sweep_expired, sweep_expired_leases
from minitoolai.ledger.verify import verify as verify_ledger
from minitoolai.money import display_usd

app = typer.Typer(help="The credit ledger: history, checks, repair.", no_args_is_help=True)


@app.command("verify")
def verify(as_json: bool = json_option()):
    """Check every ledger invariant, and that no settlement waits in the journal; exits
    non-zero if any fails."""
    problems = with_db(lambda s, db: verify_ledger(db, s.settlement_journal_dir))
    if as_json:
        print_json({"ok": not problems, "problems": problems})
    elif problems:
        for line in problems:
            err_console.print(f"[red]FAIL[/red] {line}", markup=True)
    else:
        console.print("ledger OK: balances match ledger entries, holds match held credit")
    if problems:
        raise typer.Exit(EXIT_FAILED)


@app.command("entries")
def entries(email: str,
            since: str = typer.Option(None, help="only from this day (YYYY-MM-DD, UTC) on"),
            charges: bool = typer.Option(False, "--charges/--no-charges",
                                         help="include per-request charges (usage has them)"),
            limit: int = typer.Option(0, min=0, help="newest N entries (0: all)"),
            as_json: bool = json_option()):
    """An account's credit history, newest first: every top-up, code, Stripe payment and
    adjustment with its signed amount, note, who made it and when."""
    start = since_or_exit(since)

    async def action(settings, db):
        account = await find_account(db, email)
        rows = await list_entries(db, account.id, since=start, credits_only=not charges,
                                  limit=limit or None)
        count, total = await count_entries(db, account.id, since=start,
                                           credits_only=not charges)
        return account, rows, count, total

    account, rows, count, total = with_db(action)
    if as_json:
        print_json({"email": account.email, "account_id": account.id, "count": count,
                    **money_fields("total", total), **money_fields("balance", account.balance),
                    "entries": [e.as_json() for e in rows]})
        return
    table = make_table("id", "time (UTC)", "kind", "amount", "paid", "by", "note")
    for e in rows:
        table.add_row(str(e.id), f"{e.created_at:%Y-%m-%d %H:%M:%S}", e.kind,
                      signed_usd(e.amount),
                      "yes" if e.paid else "", e.created_by or "", e.note)
    print_table(table)
    shown = f"the newest {len(rows)} of " if len(rows) < count else ""
    console.print(f"{shown}{count} entr{'y' if count == 1 else 'ies'}, net"
                  f" {signed_usd(total)}; balance {display_usd(account.balance)}")


@app.command("sweep")
def sweep():
    """Release expired holds and return expired credit leases now (the server does this
    periodically)."""

    async def both(db) -> tuple[int, int]:
        return await sweep_expired(db), await sweep_expired_leases(db)

    count, leases = with_db(lambda s, db: both(db))
    console.print(f"released {count} expired hold(s)")
    if leases:
        console.print(f"returned {leases} expired credit lease(s)")
