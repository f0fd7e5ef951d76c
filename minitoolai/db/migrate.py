"""Apply Alembic migrations programmatically (`minitoolai db upgrade`, and `serve` at start).

Each capability keeps its migrations on its own Alembic branch that starts from the core's
first revision, so they never conflict; `upgrade heads` applies every branch.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from minitoolai.db.engine import sync_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sync_url(database_url).replace("%", "%%"))
    return cfg


def upgrade(database_url: str) -> None:
    """Bring the database to the newest revision of every branch."""
    if database_url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        path = make_url(database_url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(database_url), "heads")
