"""What every command shares: settings, a database for the length of one command, output
(tables that never wrap, --json), errors as one line and an exit code.

Exit codes (docs/operator-guide.md): 0 done; 1 the command ran and refused or failed (an
unknown email or key, a refused adjustment, `ledger verify` found a problem); 2 bad usage (a
bad option, amount or date, bad configuration); 3 the database cannot be reached or failed.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from minitoolai.config import Settings, ensure_data_dir, load_settings
from minitoolai.db.engine import Database
from minitoolai.db.migrate import upgrade
from minitoolai.errors import MiniToolAIError
from minitoolai.money import MAX_CREDIT_NANO, MoneyFormatError, display_usd, format_usd, parse_usd

T = TypeVar("T")
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3
# plain lines are never wrapped at the terminal width: they hold ids and amounts to copy
console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

try:  # the errors asyncpg raises itself when it cannot connect, beside OSError
    from asyncpg.exceptions import InterfaceError as _PgInterfaceError
    from asyncpg.exceptions import PostgresError as _PgError

    _DRIVER_ERRORS: tuple[type[BaseException], ...] = (_PgError, _PgInterfaceError)
except ImportError:  # pragma: no cover - asyncpg is a dependency
    _DRIVER_ERRORS = ()
DATABASE_ERRORS = (SQLAlchemyError, OSError, TimeoutError, *_DRIVER_ERRORS)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """One line on stderr, then exit with `code`."""
    _error_line(message)
    raise typer.Exit(code)


def fail_line(message: str, code: int) -> NoReturn:
    """`fail` outside a command (cli/main.py's usage errors): the process exits."""
    _error_line(message)
    sys.exit(code)


def _error_line(message: str) -> None:
    err_console.print(f"[red]error:[/red] {escape(message)}", markup=True, highlight=False,
                      soft_wrap=True)


def make_table(*headers: str) -> Table:
    """A table whose cells never wrap nor get cut: ids and amounts are copied into other
    commands and scripts. `print_table` widens the output to fit instead."""
    table = Table()
    for header in headers:
        table.add_column(header, no_wrap=True, overflow="ignore")
    return table


def print_table(table: Table) -> None:
    """Print at the table's natural width when it is wider than the terminal (or the 80
    columns Rich assumes for a pipe): a long line beats an id split across two."""
    natural = Measurement.get(console, console.options.update_width(1_000_000), table).maximum
    Console(width=max(console.width, natural), highlight=False).print(table)


def print_json(value: Any) -> None:
    """JSON on stdout for scripts: exact amounts (decimal strings and integer nanodollars),
    ISO 8601 times."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=_json_default))
    sys.stdout.write("\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def money_fields(name: str, nano: int | None) -> dict[str, Any]:
    """`{"balance": "12.50", "balance_nano": 12500000000}`: both exact, for any parser."""
    return {name: None if nano is None else format_usd(nano), f"{name}_nano": nano}


def signed_usd(nano: int) -> str:
    """+$2.50 / -$1.00: the sign always shown, for ledger entries; the money display rule
    (money.display_usd) as everywhere people read amounts; `--json` has the exact ones."""
    return ("-" if nano < 0 else "+") + display_usd(abs(nano))


def json_option() -> Any:
    return typer.Option(False, "--json", help="print JSON instead of a table")


def operator_name() -> str:
    """Who made a ledger entry from the command line: the operating-system user."""
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container with an arbitrary uid)
        return "cli"


def settings_or_exit() -> Settings:
    try:
        settings = load_settings()
        ensure_data_dir(settings)
        return settings
    except MiniToolAIError as exc:
        fail(str(exc), EXIT_USAGE)


def _safe_url(url: str) -> str:
    """The database URL for a message: never its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # settings validated it; this is belt and braces
        return "the configured database"


def _reason(exc: BaseException) -> str:
    """The driver's own first line (SQLAlchemy adds its class name and a link below)."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip() or type(inner).__name__
    return text.splitlines()[0].strip()


@contextmanager
def database_or_exit(settings: Settings) -> Iterator[None]:
    """Turn a database that is unreachable (or fails) into one line and exit code 3."""
    try:
        yield
    except DATABASE_ERRORS as exc:
        fail(f"database {_safe_url(settings.resolved_database_url)}: {_reason(exc)}",
             EXIT_DATABASE)


def with_db(action: Callable[[Settings, Database], Awaitable[T]]) -> T:
    """Run one command against the database (migrated first), translating our errors."""
    settings = settings_or_exit()

    async def main() -> T:
        db = Database(settings.resolved_database_url, pool_size=2)
        try:
            return await action(settings, db)
        finally:
            await db.dispose()

    with database_or_exit(settings):
        try:
            upgrade(settings.resolved_database_url)
            return asyncio.run(main())
        except MiniToolAIError as exc:
            fail(getattr(exc, "message", None) or str(exc), EXIT_FAILED)


def usd_or_exit(text: str, *, positive: bool = False, nonzero: bool = False) -> int:
    """Parse a USD amount given on the command line, or exit 2 saying what is wrong (checked
    before anything is written, so a bad amount never leaves half a change behind)."""
    try:
        amount = parse_usd(text)
    except MoneyFormatError as exc:
        fail(str(exc), EXIT_USAGE)
    if positive and amount <= 0:
        fail(f"the amount must be positive, not {text}", EXIT_USAGE)
    if nonzero and amount == 0:
        fail("the amount must not be zero", EXIT_USAGE)
    if abs(amount) > MAX_CREDIT_NANO:
        fail(f"{text} is over the largest amount accepted (${format_usd(MAX_CREDIT_NANO)})",
             EXIT_USAGE)
    return amount


def since_or_exit(text: str | None) -> datetime | None:
    """--since YYYY-MM-DD (UTC midnight) or a full ISO 8601 time."""
    if not text:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--since must be YYYY-MM-DD or an ISO 8601 time, not {text!r}", EXIT_USAGE)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
