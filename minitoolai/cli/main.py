"""The `minitoolai` command: every group and command of DESIGN.md's command line."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from minitoolai.cli import accounts, codes, credits, db, keys, ledger, serve
from minitoolai.cli.common import (
    fail_line,
    json_option,
    make_table,
    print_json,
    print_table,
    settings_or_exit,
)

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


def main() -> None:
    """The `minitoolai` command: a usage error (an unknown option, a missing argument) is
    one line on stderr and exit 2, like every other error here (Click's default is a boxed
    usage message over several lines)."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:  # Ctrl-C at a prompt
        fail_line("aborted", 1)
    except Exception as exc:
        # Click's exceptions (typer vendors its own Click since 0.2x: recognised by what
        # they carry, not by a class path that moves between versions)
        exit_code = getattr(exc, "exit_code", None)
        if not isinstance(exit_code, int) or not hasattr(exc, "format_message"):
            raise
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group given no command: its help
            print(ctx.get_help() if ctx is not None else exc.format_message())
            sys.exit(exit_code)  # 2, as Click's own: a command was missing
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        fail_line(exc.format_message() + where, exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
