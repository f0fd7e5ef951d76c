"""`minitoolai ledger verify` and `ledger sweep`."""

from __future__ import annotations

import typer

from minitoolai.cli.common import console, err_console, with_db
from minitoolai.ledger.sweeper import sweep_expired
from minitoolai.ledger.verify import verify as verify_ledger

app = typer.Typer(help="Check and repair the credit ledger.", no_args_is_help=True)


@app.command("verify")
def verify():
    """Check every ledger invariant, and that no settlement waits in the journal; exits
    non-zero if any fails."""
    problems = with_db(lambda s, db: verify_ledger(db, s.settlement_journal_dir))
    if problems:
        for line in problems:
            err_console.print(f"[red]FAIL[/red] {line}", highlight=False)
        raise typer.Exit(1)
    console.print("ledger OK: balances match ledger entries, holds match held credit")


@app.command("sweep")
def sweep():
    """Release expired holds now (the server does this periodically)."""
    count = with_db(lambda s, db: sweep_expired(db))
    console.print(f"released {count} expired hold(s)")
