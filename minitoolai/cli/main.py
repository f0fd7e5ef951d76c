"""The `minitoolai` command: every group and command of DESIGN.md's command line."""

from __future__ import annotations

import typer
from rich.markup import escape

from minitoolai.cli import accounts, codes, credits, db, keys, ledger, serve
from minitoolai.cli.common import json_option, make_table, print_json, print_table, settings_or_exit

app = typer.Typer(help="MiniToolAI: a self-hostable AI API platform with prepaid credit.",
                  no_args_is_help=True, add_completion=False,
                  # a real bug still prints its traceback, but never the values of locals
                  # (settings, database URLs with passwords, key secrets)
                  pretty_exceptions_show_locals=False)
app.command("serve")(serve.serve)
app.command("worker")(serve.worker)
app.add_typer(db.app, name="db")
app.add_typer(accounts.app, name="accounts")
app.add_typer(keys.app, name="keys")
app.add_typer(credits.app, name="credits")
app.command("balance")(credits.balance)
app.command("usage")(credits.usage_)
app.add_typer(ledger.app, name="ledger")
app.add_typer(codes.app, name="codes")


@app.command("models")
def models(as_json: bool = json_option()):
    """The catalog: every model with its price and whether this server can serve it."""
    from minitoolai.catalog_status import catalog_records, catalog_rows

    settings = settings_or_exit()
    if as_json:
        print_json(catalog_records(settings))
        return
    table = make_table("model", "kind", "price", "available", "note")
    for row in catalog_rows(settings):
        # escaped: the notes hold pip commands such as 'minitoolai[local]', which Rich would
        # take for markup and drop
        table.add_row(*(escape(cell) for cell in row))
    print_table(table)


if __name__ == "__main__":
    app()
