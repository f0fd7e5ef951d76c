"""Start and stop of the dashboard: builds its service object (templates, throttles) and
attaches it to the runtime as `runtime.dashboard`."""

from __future__ import annotations

from minitoolai.dashboard.service import DashboardService


def extend_catalog(settings, catalog) -> None:
    """The dashboard adds no models."""


def availability(settings, model) -> tuple[bool, str]:
    return False, "the dashboard serves no models"


async def start(runtime) -> None:
    runtime.dashboard = DashboardService(runtime.settings) if runtime.settings.dashboard.enabled \
        else None


async def stop(runtime) -> None:
    runtime.dashboard = None
