"""`minitoolai db upgrade`"""

from __future__ import annotations

import typer

from minitoolai.cli.common import console, database_or_exit, settings_or_exit
from minitoolai.db.migrate import upgrade as apply_migrations

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade():
    """Apply every pending migration (serve does this too)."""
    settings = settings_or_exit()
    with database_or_exit(settings):
        apply_migrations(settings.resolved_database_url)
    console.print(f"database at newest revision ({settings.resolved_database_url.split('@')[-1]})")
