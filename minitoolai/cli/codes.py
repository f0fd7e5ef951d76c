"""`minitoolai codes create|list`: single-use redemption codes for top-ups."""

from __future__ import annotations

import typer

from minitoolai.cli.common import (
    EXIT_USAGE,
    err_console,
    fail,
    json_option,
    make_table,
    money_fields,
    print_json,
    print_table,
    usd_or_exit,
    with_db,
)
from minitoolai.dashboard.codes import MAX_BATCH, create_codes, display, list_codes
from minitoolai.money import format_usd

app = typer.Typer(help="Redemption codes: single-use top-ups customers redeem in the dashboard.",
                  no_args_is_help=True)


@app.command("create")
def create(amount: str = typer.Option(..., "--amount", help="value of each code in USD"),
           count: int = typer.Option(1, "--count", help=f"how many codes (1..{MAX_BATCH})"),
           batch: str = typer.Option("", "--batch", help="a label to find the batch by")):
    """Create codes; prints them one per line (and nothing else on stdout). They are shown
    only now: the server keeps their hashes."""
    value = usd_or_exit(amount, positive=True)
    if not 1 <= count <= MAX_BATCH:
        fail(f"--count must be between 1 and {MAX_BATCH}", EXIT_USAGE)
    codes = with_db(lambda settings, db: create_codes(db, value, count, batch=batch))
    err_console.print(f"{len(codes)} code(s) worth ${format_usd(value)} each", highlight=False)
    for code in codes:
        print(display(code))


@app.command("list")
def list_(used: bool = typer.Option(None, "--used/--unused", help="only used / unused codes"),
          batch: str = typer.Option(None, "--batch", help="only this batch"),
          limit: int = typer.Option(500, "--limit", help="rows to show"),
          as_json: bool = json_option()):
    """List codes, newest first: value, batch, and who used each one when."""
    rows = with_db(lambda settings, db: list_codes(db, used=used, batch=batch, limit=limit))
    if as_json:
        print_json([{"id": c.id, "code": c.display, **money_fields("amount", c.amount),
                     "batch": c.batch, "created_at": c.created_at,
                     "used_by": c.used_by_email, "used_at": c.used_at} for c in rows])
        return
    table = make_table("code", "amount", "batch", "created", "used by", "used at")
    for c in rows:
        table.add_row(c.display, "$" + format_usd(c.amount), c.batch,
                      f"{c.created_at:%Y-%m-%d %H:%M}", c.used_by_email or "",
                      f"{c.used_at:%Y-%m-%d %H:%M}" if c.used_at else "")
    print_table(table)
