"""The server process: uvicorn running the app, and nothing of the command line.

`minitoolai serve` migrates the database, creates the demo account and prints its banner,
then replaces itself with `python -m minitoolai.serving` (os.execv: same process id, so
supervisors and signals see one process). The server then starts from a clean interpreter
that never imported the command line (Typer, Rich), Alembic or the migration scripts, nor
kept the memory the migration used: a relay-only server stays under 100 MB
(bench/RESULTS.md, "Memory").
"""

from __future__ import annotations

import os
import sys

ENTRY = "minitoolai.serving"


def app_from_env():
    """uvicorn factory (each `serve --workers N` process builds its own app)."""
    from minitoolai.app import create_app
    from minitoolai.config import load_settings
    from minitoolai.observability.logs import configure_logging
    from minitoolai.slow_clients import configure

    settings = load_settings()
    configure(settings)  # this worker process's protocol classes (see slow_clients)
    configure_logging(settings)  # again: `--workers N` processes start afresh
    return create_app(settings, migrate=False)


def run(workers: int) -> None:
    """Serve in this process until stopped (the settings come from the environment)."""
    import uvicorn

    from minitoolai.config import load_settings
    from minitoolai.observability.logs import configure_logging
    from minitoolai.slow_clients import uvicorn_options

    settings = load_settings()
    configure_logging(settings)
    uvicorn.run(f"{ENTRY}:app_from_env", factory=True, host=settings.host,
                port=settings.port, workers=workers, log_level=settings.log_level,
                loop="auto", access_log=False, log_config=None, **uvicorn_options(settings))


def exec_server(workers: int, *, fresh: bool = True) -> None:
    """Replace this process with a fresh interpreter running `run(workers)`; with
    `fresh=False` (`serve --no-exec`), or where exec is not available, run in this one."""
    if os.name != "posix" or not fresh:
        run(workers)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", ENTRY, str(workers)])


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
