"""What every command shares: settings, a database for the length of one command, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.table import Table

from minitoolai.config import Settings, ensure_data_dir, load_settings
from minitoolai.db.engine import Database
from minitoolai.db.migrate import upgrade
from minitoolai.errors import MiniToolAIError
from minitoolai.money import MAX_CREDIT_NANO, MoneyFormatError, format_usd, parse_usd

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)


def make_table(*headers: str) -> Table:
    """A table whose cells wrap instead of being cut: ids and amounts must stay whole even
    at 80 columns (a pipe, a small terminal), since they are copied into other commands."""
    table = Table()
    for i, header in enumerate(headers):
        # the first column names the row (an id, a model): it never wraps
        table.add_column(header, overflow="fold", no_wrap=i == 0)
    return table


def settings_or_exit() -> Settings:
    try:
        settings = load_settings()
        ensure_data_dir(settings)
        return settings
    except MiniToolAIError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def with_db(action: Callable[[Settings, Database], Awaitable[T]]) -> T:
    """Run one command against the database (migrated first), translating our errors."""
    settings = settings_or_exit()

    async def main() -> T:
        db = Database(settings.resolved_database_url, pool_size=2)
        try:
            return await action(settings, db)
        finally:
            await db.dispose()

    try:
        upgrade(settings.resolved_database_url)
        return asyncio.run(main())
    except MiniToolAIError as exc:
        err_console.print(f"[red]error:[/red] {getattr(exc, 'message', exc)}")
        raise typer.Exit(1) from None


def usd_or_exit(text: str, *, positive: bool = False) -> int:
    """Parse a USD amount given on the command line, or exit 2 saying what is wrong (checked
    before anything is written, so a bad amount never leaves half a change behind)."""
    try:
        amount = parse_usd(text)
    except MoneyFormatError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    problem = None
    if positive and amount <= 0:
        problem = f"the amount must be positive, not {text}"
    elif abs(amount) > MAX_CREDIT_NANO:
        problem = f"{text} is over the largest amount accepted (${format_usd(MAX_CREDIT_NANO)})"
    if problem:
        err_console.print(f"[red]error:[/red] {problem}")
        raise typer.Exit(2)
    return amount
