"""`minitoolai codes create|list|void`: single-use redemption codes for top-ups."""

from __future__ import annotations

import typer

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
from minitoolai.dashboard.codes import MAX_BATCH, create_codes, display, list_codes, void_code
from minitoolai.money import display_usd

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
    err_console.print(f"{len(codes)} code(s) worth {display_usd(value)} each", highlight=False)
    for code in codes:
        print(display(code))


@app.command("list")
def list_(used: bool = typer.Option(None, "--used/--unused",
                                    help="only used / still redeemable codes"),
          batch: str = typer.Option(None, "--batch", help="only this batch"),
          limit: int = typer.Option(500, "--limit", help="rows to show"),
          before: int = typer.Option(None, "--before", help="only codes older than this id"
                                                            " (to page on)"),
          as_json: bool = json_option()):
    """List codes, newest first: value, batch, and who used (or voided) each one when."""
    rows = with_db(lambda settings, db: list_codes(db, used=used, batch=batch, limit=limit,
                                                   before_id=before))
    if as_json:
        print_json([{"id": c.id, "code": c.display, **money_fields("amount", c.amount),
                     "batch": c.batch, "created_at": c.created_at,
                     "used_by": c.used_by_email, "used_at": c.used_at,
                     "voided_by": c.voided_by, "voided_at": c.voided_at} for c in rows])
        return
    table = make_table("id", "code", "amount", "batch", "created", "used by", "used at",
                       "voided")
    for c in rows:
        table.add_row(str(c.id), c.display, display_usd(c.amount), c.batch,
                      f"{c.created_at:%Y-%m-%d %H:%M}", c.used_by_email or "",
                      f"{c.used_at:%Y-%m-%d %H:%M}" if c.used_at else "",
                      f"{c.voided_at:%Y-%m-%d %H:%M} by {c.voided_by}" if c.voided_at else "")
    print_table(table)


@app.command("void")
def void(code_id: int):
    """Void an unused code by its id (see `codes list`): nobody can redeem it afterwards.
    Who voided it and when stay on the code."""
    by = operator_name()
    code = with_db(lambda settings, db: void_code(db, code_id, by))
    console.print(f"voided {code.display} (id {code.id}, {display_usd(code.amount)})",
                  highlight=False)
