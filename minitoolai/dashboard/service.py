"""The dashboard's service object: its settings, the template environment and the failure
throttles, built once at start (`runtime.dashboard`)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from minitoolai import __version__
from minitoolai.config import Settings
from minitoolai.dashboard.throttle import FailureThrottle
from minitoolai.money import format_usd
from minitoolai.redis_link import RedisLink

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"


def usd(nano: int | None, places: int | None = None) -> str:
    """Dollars for display: at least cents, exact below a cent (API calls cost fractions)."""
    return "$" + format_usd(nano or 0, places)


def when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else ""


class DashboardService:
    def __init__(self, settings: Settings, redis: RedisLink | None = None) -> None:
        self.settings = settings
        self.config = settings.dashboard
        # counted for the whole platform through Redis when configured, else per process
        self.login_throttle = FailureThrottle.for_link(
            "login", self.config.login_failures_per_15min, redis)
        # an address may try several accounts (an office behind one NAT), not endlessly
        self.address_throttle = FailureThrottle.for_link(
            "login-address", 5 * self.config.login_failures_per_15min, redis)
        self.redeem_throttle = FailureThrottle.for_link(
            "redeem", self.config.redeem_failures_per_15min, redis)
        self.templates = Environment(loader=FileSystemLoader(TEMPLATES_DIR),
                                     autoescape=select_autoescape(("html", "xml")),
                                     trim_blocks=True, lstrip_blocks=True)
        self.templates.filters["usd"] = usd
        self.templates.filters["when"] = when
        self.templates.globals["version"] = __version__
        self.static_names = {p.name for p in STATIC_DIR.iterdir() if p.is_file()}

    @property
    def cookie_secure(self) -> bool:
        if self.config.cookie_secure is not None:
            return self.config.cookie_secure
        return self.settings.base_url.startswith("https://")

    def is_available(self, model) -> bool:
        return False  # the dashboard serves pages, not models
