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
from minitoolai.accounts.revocation import Revocations
from minitoolai.catalog import Catalog, build_catalog
from minitoolai.config import Settings
from minitoolai.db.engine import Database
from minitoolai.idempotency.store import IdempotencyStore
from minitoolai.ledger.journal import SettlementJournal
from minitoolai.ledger.keeper import HoldKeeper
from minitoolai.ledger.leases import LeaseBook
from minitoolai.redis_link import RedisLink


@dataclass
class Runtime:
    settings: Settings
    db: Database
    catalog: Catalog
    auth: Authenticator
    rate_limiter: RateLimiter
    secret_key: str  # signs image tickets and file URLs
    holds: HoldKeeper
    idempotency: IdempotencyStore
    redis: RedisLink  # `redis.configured` is False without redis_url
    revocations: Revocations
    chat: Any = None
    images: Any = None
    speech: Any = None
    dashboard: Any = None
    run_workers: bool = True  # False: image workers run in other processes
    background: list = field(default_factory=list)  # asyncio tasks to cancel at stop
    loop_monitor: Any = None  # observability/loop_monitor.py, when configured

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        db = Database.from_settings(settings)
        auth = Authenticator(db, settings.auth_cache_seconds)
        link = RedisLink(settings)
        return cls(
            settings=settings,
            db=db,
            catalog=build_catalog(settings),
            auth=auth,
            rate_limiter=RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst,
                                     link),
            secret_key=settings.secret_key or "",  # unset: resolve_secret_key()
            holds=HoldKeeper(db, settings.hold_ttl_seconds,
                             journal=SettlementJournal(settings.settlement_journal_dir),
                             # credit leases (ledger/leases.py), when sized
                             leases=(LeaseBook(db, settings.leases)
                                     if settings.leases.size_nano else None)),
            # a claim left `running` longer than a hold lives belongs to a dead process
            idempotency=IdempotencyStore(db, settings.hold_ttl_seconds,
                                         settings.idempotency_max_replay_bytes),
            redis=link,
            revocations=Revocations(auth, link),
        )

    async def resolve_secret_key(self) -> None:
        """Without a configured `secret_key`, use the one shared through the database
        (db/secrets.py), so that every server on it agrees."""
        if not self.secret_key:
            from minitoolai.db.secrets import shared_signing_key

            self.secret_key = await shared_signing_key(self.db, self.settings.data_dir)
