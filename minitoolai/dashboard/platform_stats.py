"""What the operator's pages read across accounts: totals, provider health from the usage
records, and the image queue."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select

from minitoolai.clock import as_utc, utcnow
from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts, holds, usage


@dataclass
class ProviderHealth:
    name: str
    requests: int = 0
    errors: int = 0
    latency_total: int = 0
    latency_count: int = 0
    last_error_at: datetime | None = None
    last_error_model: str | None = None
    models: set[str] = field(default_factory=set)

    @property
    def mean_latency_ms(self) -> int | None:
        return self.latency_total // self.latency_count if self.latency_count else None

    @property
    def error_rate(self) -> str:
        return f"{100 * self.errors / self.requests:.1f}%" if self.requests else "–"


async def totals(db: Database) -> dict:
    async with db.read() as conn:
        row = (await conn.execute(select(
            func.count(), func.coalesce(func.sum(accounts.c.balance), 0),
            func.coalesce(func.sum(accounts.c.held), 0)).select_from(accounts))).one()
        open_holds = (await conn.execute(select(func.count()).select_from(holds))).scalar_one()
        since = utcnow() - timedelta(days=1)
        day = (await conn.execute(select(func.count(), func.coalesce(func.sum(usage.c.cost), 0))
                                  .where(usage.c.created_at >= since))).one()
    return {"accounts": int(row[0]), "balance": int(row[1]), "held": int(row[2]),
            "open_holds": int(open_holds), "requests_24h": int(day[0]),
            "spend_24h": int(day[1])}


async def provider_health(db: Database, catalog, hours: int = 24) -> list[ProviderHealth]:
    """Per provider, over the last `hours`: requests, errors, mean latency, last error; from
    the usage records (each model's provider per the catalog)."""
    since = utcnow() - timedelta(hours=hours)
    query = (select(usage.c.model, usage.c.status, func.count(),
                    func.coalesce(func.sum(usage.c.latency_ms), 0), func.count(usage.c.latency_ms),
                    func.max(usage.c.created_at))
             .where(usage.c.created_at >= since)
             .group_by(usage.c.model, usage.c.status))
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    by_name: dict[str, ProviderHealth] = {}
    for model in catalog:
        by_name.setdefault(model.provider, ProviderHealth(model.provider)).models.add(model.id)
    for model_id, status, count, latency_sum, latency_count, last in rows:
        model = catalog.get(model_id)
        name = model.provider if model is not None else "unknown"
        health = by_name.setdefault(name, ProviderHealth(name))
        health.models.add(model_id)
        health.requests += count
        if status == "ok":
            health.latency_total += int(latency_sum)
            health.latency_count += int(latency_count)
        elif status == "error":
            health.errors += count
            last = as_utc(last) if isinstance(last, datetime) else last
            if health.last_error_at is None or (last and last > health.last_error_at):
                health.last_error_at, health.last_error_model = last, model_id
    return sorted(by_name.values(), key=lambda h: h.name)


async def image_queue(db: Database) -> dict | None:
    """Counts by state and the latest failures; None when the images capability (and so its
    table) is not part of this install."""
    try:
        from minitoolai.images.tables import FINISHED, UNFINISHED, image_jobs
    except ImportError:
        return None
    async with db.read() as conn:
        states = dict((await conn.execute(
            select(image_jobs.c.state, func.count()).group_by(image_jobs.c.state))).all())
        failed = (await conn.execute(
            select(image_jobs.c.id, image_jobs.c.model, image_jobs.c.error,
                   image_jobs.c.finished_at)
            .where(image_jobs.c.state == "error")
            .order_by(image_jobs.c.id.desc()).limit(10))).all()
    return {"states": {s: int(states.get(s, 0)) for s in UNFINISHED + FINISHED},
            "failed": [(r.id, r.model, r.error, as_utc(r.finished_at)) for r in failed]}


