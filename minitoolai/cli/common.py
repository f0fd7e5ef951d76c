"""What every command shares: settings, a database for the length of one command, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console

from minitoolai.config import Settings, load_settings
from minitoolai.db.engine import Database
from minitoolai.db.migrate import upgrade
from minitoolai.errors import MiniToolAIError
from minitoolai.money import MoneyFormatError, parse_usd

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
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


def usd_or_exit(text: str) -> int:
    try:
        return parse_usd(text)
    except MoneyFormatError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
