"""The Runtime: everything built once at start and passed down to every capability.

Routes reach it as `request.app.state.runtime`; workers and CLI commands are handed it.
Each capability attaches its own service object (`runtime.chat`, `runtime.images`, ...)
in its `lifecycle.start`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from minitoolai.accounts.auth import Authenticator
from minitoolai.accounts.ratelimit import RateLimiter
from minitoolai.catalog import Catalog, build_catalog
from minitoolai.config import Settings
from minitoolai.db.engine import Database
from minitoolai.ledger.keeper import HoldKeeper


@dataclass
class Runtime:
    settings: Settings
    db: Database
    catalog: Catalog
    auth: Authenticator
    rate_limiter: RateLimiter
    secret_key: str  # signs image tickets and file URLs
    holds: HoldKeeper
    chat: Any = None
    images: Any = None
    speech: Any = None
    dashboard: Any = None
    run_workers: bool = True  # False: image workers run in other processes
    background: list = field(default_factory=list)  # asyncio tasks to cancel at stop

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        db = Database.from_settings(settings)
        return cls(
            settings=settings,
            db=db,
            catalog=build_catalog(settings),
            auth=Authenticator(db, settings.auth_cache_seconds),
            rate_limiter=RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst),
            secret_key=settings.secret_key or "",  # unset: resolve_secret_key()
            holds=HoldKeeper(db, settings.hold_ttl_seconds),
        )

    async def resolve_secret_key(self) -> None:
        """Without a configured `secret_key`, use the one shared through the database
        (db/secrets.py), so that every server on it agrees."""
        if not self.secret_key:
            from minitoolai.db.secrets import shared_signing_key

            self.secret_key = await shared_signing_key(self.db, self.settings.data_dir)
