"""The dashboard's service object: its settings, the template environment and the failure
throttles, built once at start (`runtime.dashboard`)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from minitoolai import __version__
from minitoolai.config import Settings
from minitoolai.dashboard.throttle import BackoffThrottle, FailureThrottle
from minitoolai.money import display_usd, format_usd
from minitoolai.redis_link import RedisLink

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"


def usd(nano: int | None) -> Markup:
    """Dollars for people (money.display_usd), the exact amount on hover, never wrapped."""
    nano = nano or 0
    return Markup('<span class="money" title="${}">{}</span>').format(
        format_usd(nano), display_usd(nano))


def usd_exact(nano: int | None) -> str:
    """The exact amount without its sign, for a form field's value."""
    return format_usd(nano or 0)


def when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else ""


class DashboardService:
    def __init__(self, settings: Settings, redis: RedisLink | None = None) -> None:
        self.settings = settings
        self.config = settings.dashboard
        # per (client address, account), so that a guesser cannot lock the account's owner
        # out (issue 15): in this process with doubling backoff, and, with Redis, also
        # counted over every process (a pair over the limit anywhere waits the window out)
        self.login_backoff = BackoffThrottle(self.config.login_failures_per_15min)
        self.login_throttle = (FailureThrottle.for_link(
            "login", self.config.login_failures_per_15min, redis)
            if redis is not None and redis.configured else None)
        # an address may try several accounts (an office behind one NAT), not endlessly
        self.address_throttle = FailureThrottle.for_link(
            "login-address", 5 * self.config.login_failures_per_15min, redis)
        self.redeem_throttle = FailureThrottle.for_link(
            "redeem", self.config.redeem_failures_per_15min, redis)
        # "forgot password" requests, counted per email address and per client address:
        # each one may send an email, so a script must not make the server spam a mailbox
        hourly = self.config.reset_requests_per_hour
        self.reset_throttle = FailureThrottle.for_link("reset", hourly, redis, 3600.0)
        self.reset_address_throttle = FailureThrottle.for_link("reset-address", 5 * hourly,
                                                               redis, 3600.0)
        self.templates = Environment(loader=FileSystemLoader(TEMPLATES_DIR),
                                     autoescape=select_autoescape(("html", "xml")),
                                     trim_blocks=True, lstrip_blocks=True)
        self.templates.filters["usd"] = usd
        self.templates.filters["usd_exact"] = usd_exact
        self.templates.filters["when"] = when
        self.templates.globals["version"] = __version__
        self.templates.globals["min_password"] = self.config.min_password_length
        self.static_names = {p.name for p in STATIC_DIR.iterdir() if p.is_file()}

    @property
    def cookie_secure(self) -> bool:
        if self.config.cookie_secure is not None:
            return self.config.cookie_secure
        return self.settings.base_url.startswith("https://")

    def is_available(self, model) -> bool:
        return False  # the dashboard serves pages, not models
