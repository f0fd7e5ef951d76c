"""Start and stop of the dashboard: builds its service object (templates, throttles) and
attaches it to the runtime as `runtime.dashboard`."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import SQLAlchemyError

from minitoolai.dashboard.service import DashboardService
from minitoolai.dashboard.sessions import purge_expired

log = logging.getLogger(__name__)
PURGE_INTERVAL_SECONDS = 3600.0


def extend_catalog(settings, catalog) -> None:
    """The dashboard adds no models."""


def availability(settings, model) -> tuple[bool, str]:
    return False, "the dashboard serves no models"


async def _purge_sessions(db) -> None:
    """Expired login sessions are refused on sight; this only keeps the table small."""
    while True:
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)
        try:
            await purge_expired(db)
        except SQLAlchemyError:  # a busy or restarting database: try again next hour
            log.warning("could not purge expired dashboard sessions", exc_info=True)


async def start(runtime) -> None:
    if not runtime.settings.dashboard.enabled:
        runtime.dashboard = None
        return
    runtime.dashboard = DashboardService(runtime.settings, runtime.redis)
    runtime.background.append(asyncio.create_task(_purge_sessions(runtime.db),
                                                  name="dashboard-session-purge"))


async def stop(runtime) -> None:
    runtime.dashboard = None
