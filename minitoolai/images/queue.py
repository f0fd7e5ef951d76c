"""The image job queue, in the database: submit, atomic claims with leases, completion.

A claim takes the oldest queued job of a model this worker serves, plus the queued jobs that
can share its pipeline call (same model, size, steps, scheduler and cfg), and leases them
under a fresh token. PostgreSQL: `FOR UPDATE SKIP LOCKED`, so concurrent workers never
wait on, nor take, each other's jobs. SQLite: write transactions are BEGIN IMMEDIATE, so
the select and the update of a claim run with the database to themselves.

A job's change of state and its money move in one transaction: success settles the hold
(charged once: only the first settlement finds the hold), failure releases it. A worker
that dies stops renewing its lease; `recover` puts its jobs back in the queue, or fails
them (and refunds) after `max_attempts` runs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import and_, func, insert, or_, select, update

from minitoolai.clock import as_utc, utcnow
from minitoolai.db.engine import Database
from minitoolai.db.tables import holds
from minitoolai.images.tables import image_jobs
from minitoolai.ledger.holds import UsageRecord, settle_in

MAX_JOB_ID = 2**53 - 1  # JavaScript-safe
MIN_JOB_ID = 10**9


def new_job_id() -> int:
    return MIN_JOB_ID + secrets.randbelow(MAX_JOB_ID - MIN_JOB_ID)


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    id: int
    request_id: str
    account_id: int
    endpoint: str
    model: str
    prompt: str
    negative_prompt: str
    scheduler: str
    steps: int
    cfg_scale: float
    width: int
    height: int
    seed: int
    price: int
    attempts: int
    created_at: datetime


_CLAIM_COLUMNS = [image_jobs.c[name] for name in ClaimedJob.__slots__]


def _row_to_job(row) -> ClaimedJob:
    values = row._asdict()
    values["created_at"] = as_utc(values["created_at"])
    return ClaimedJob(**values)


async def insert_jobs(db: Database, rows: list[dict]) -> None:
    async with db.write() as conn:
        await conn.execute(insert(image_jobs), rows)


async def cancel_queued(db: Database, job_ids: list[int], reason: str) -> None:
    """Fail jobs that have not started yet and release their holds, together."""
    now = utcnow()
    async with db.write() as conn:
        rows = (await conn.execute(_locking(
            select(*_CLAIM_COLUMNS).where(image_jobs.c.id.in_(job_ids),
                                          image_jobs.c.state == "queued"), db))).all()
        for row in rows:
            job = _row_to_job(row)
            await conn.execute(update(image_jobs).where(image_jobs.c.id == job.id).values(
                state="error", error=reason, finished_at=now))
            await settle_in(conn, job.request_id, 0, _usage(job, images=0, status="cancelled"))


async def count_queued(db: Database) -> int:
    async with db.read() as conn:
        return (await conn.execute(select(func.count()).select_from(image_jobs)
                                   .where(image_jobs.c.state == "queued"))).scalar_one()


async def get_job(db: Database, job_id: int):
    async with db.read() as conn:
        return (await conn.execute(select(image_jobs).where(image_jobs.c.id == job_id))).first()


async def queue_position(db: Database, job) -> int:
    """1 for the next job to run."""
    async with db.read() as conn:
        ahead = (await conn.execute(
            select(func.count()).select_from(image_jobs).where(
                image_jobs.c.state == "queued",
                or_(image_jobs.c.created_at < job.created_at,
                    and_(image_jobs.c.created_at == job.created_at,
                         image_jobs.c.id < job.id)))
        )).scalar_one()
    return int(ahead) + 1


def _locking(query, db: Database):
    # SQLite's compiler renders no FOR UPDATE; its BEGIN IMMEDIATE already serialises claims
    return query if db.is_sqlite else query.with_for_update(skip_locked=True)


async def claim(db: Database, *, models: list[str], max_batch: int, lease_seconds: float,
                hold_ttl_seconds: int) -> tuple[str, list[ClaimedJob]]:
    """Lease the oldest runnable job and up to max_batch-1 compatible ones.
    Returns (lease token, jobs); no jobs when the queue has nothing for these models."""
    token = secrets.token_hex(16)
    now = utcnow()
    order = (image_jobs.c.created_at, image_jobs.c.id)
    async with db.write() as conn:
        head = (await conn.execute(_locking(
            select(*_CLAIM_COLUMNS)
            .where(image_jobs.c.state == "queued", image_jobs.c.model.in_(models))
            .order_by(*order).limit(1), db))).first()
        if head is None:
            return token, []
        rows = [head]
        if max_batch > 1:
            rows += (await conn.execute(_locking(
                select(*_CLAIM_COLUMNS).where(
                    image_jobs.c.state == "queued", image_jobs.c.id != head.id,
                    image_jobs.c.model == head.model, image_jobs.c.width == head.width,
                    image_jobs.c.height == head.height, image_jobs.c.steps == head.steps,
                    image_jobs.c.scheduler == head.scheduler,
                    image_jobs.c.cfg_scale == head.cfg_scale)
                .order_by(*order).limit(max_batch - 1), db))).all()
        ids = [row.id for row in rows]
        await conn.execute(
            update(image_jobs).where(image_jobs.c.id.in_(ids)).values(
                state="processing", attempts=image_jobs.c.attempts + 1, lease_token=token,
                lease_expires_at=now + timedelta(seconds=lease_seconds), started_at=now))
        # the hold must outlive the work now that it has started
        await conn.execute(
            update(holds).where(holds.c.id.in_([row.request_id for row in rows]))
            .values(expires_at=now + timedelta(seconds=hold_ttl_seconds)))
    jobs = [_row_to_job(row) for row in rows]
    return token, [replace(job, attempts=job.attempts + 1) for job in jobs]


async def renew(db: Database, token: str, lease_seconds: float) -> int:
    """Extend the lease of the jobs this token holds; returns how many it still holds."""
    async with db.write() as conn:
        result = await conn.execute(
            update(image_jobs)
            .where(image_jobs.c.lease_token == token, image_jobs.c.state == "processing")
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds)))
    return result.rowcount


def _usage(job: ClaimedJob, *, images: int, status: str) -> UsageRecord:
    latency = int((utcnow() - job.created_at).total_seconds() * 1000)
    return UsageRecord(endpoint=job.endpoint, model=job.model, images=images, status=status,
                       latency_ms=latency, extra={"job_id": job.id})


async def complete(db: Database, token: str, done: list[tuple[ClaimedJob, str]],
                   expires_at: datetime) -> list[int]:
    """Mark jobs successful with their stored image and charge each one, together.
    A job whose lease this token lost is left alone (its new owner finishes it).
    Returns the ids this call completed."""
    now = utcnow()
    won = []
    async with db.write() as conn:
        for job, image_key in done:
            result = await conn.execute(
                update(image_jobs).where(image_jobs.c.id == job.id,
                                         image_jobs.c.lease_token == token,
                                         image_jobs.c.state == "processing")
                .values(state="success", image_key=image_key, expires_at=expires_at,
                        finished_at=now, lease_token=None, lease_expires_at=None, error=None))
            if result.rowcount == 1:
                await settle_in(conn, job.request_id, job.price,
                                _usage(job, images=1, status="ok"))
                won.append(job.id)
    return won


async def fail(db: Database, token: str, jobs: list[ClaimedJob], reason: str, *,
               retry: bool, max_attempts: int) -> None:
    """A run failed: queue the jobs again while attempts remain (retry), else fail them
    and release their holds, in the same transaction."""
    now = utcnow()
    async with db.write() as conn:
        for job in jobs:
            mine = and_(image_jobs.c.id == job.id, image_jobs.c.lease_token == token,
                        image_jobs.c.state == "processing")
            if retry and job.attempts < max_attempts:
                await conn.execute(update(image_jobs).where(mine).values(
                    state="queued", lease_token=None, lease_expires_at=None, error=reason))
                continue
            result = await conn.execute(update(image_jobs).where(mine).values(
                state="error", error=reason, finished_at=now, lease_token=None,
                lease_expires_at=None))
            if result.rowcount == 1:
                await settle_in(conn, job.request_id, 0, _usage(job, images=0, status="error"))


async def recover(db: Database, *, max_attempts: int, queue_timeout_seconds: int) -> int:
    """Requeue jobs whose worker stopped renewing its lease (or fail them after
    max_attempts runs), and fail jobs queued for too long. Holds are released with the
    failures, in the same transaction. Returns how many jobs changed."""
    now = utcnow()
    changed = 0
    async with db.write() as conn:
        stale = (await conn.execute(_locking(
            select(*_CLAIM_COLUMNS).where(
                or_(and_(image_jobs.c.state == "processing",
                         image_jobs.c.lease_expires_at < now),
                    and_(image_jobs.c.state == "queued",
                         image_jobs.c.created_at < now - timedelta(
                             seconds=queue_timeout_seconds)))).limit(500), db))).all()
        for row in stale:
            job = _row_to_job(row)
            queued_too_long = job.created_at < now - timedelta(seconds=queue_timeout_seconds)
            if not queued_too_long and job.attempts < max_attempts:
                await conn.execute(update(image_jobs).where(image_jobs.c.id == job.id).values(
                    state="queued", lease_token=None, lease_expires_at=None,
                    error="the worker running this job stopped; queued again"))
            else:
                reason = (f"the job waited in the queue longer than {queue_timeout_seconds} s"
                          if queued_too_long else
                          f"the job was attempted {job.attempts} times and its worker stopped"
                          " each time")
                await conn.execute(update(image_jobs).where(image_jobs.c.id == job.id).values(
                    state="error", error=reason, finished_at=now, lease_token=None,
                    lease_expires_at=None))
                await settle_in(conn, job.request_id, 0, _usage(job, images=0, status="error"))
            changed += 1
    return changed


async def expired_files(db: Database, limit: int = 500) -> list[tuple[int, str]]:
    async with db.read() as conn:
        rows = (await conn.execute(
            select(image_jobs.c.id, image_jobs.c.image_key)
            .where(image_jobs.c.image_key.is_not(None), image_jobs.c.expires_at < utcnow())
            .limit(limit))).all()
    return [(row.id, row.image_key) for row in rows]


async def forget_files(db: Database, job_ids: list[int]) -> None:
    async with db.write() as conn:
        await conn.execute(update(image_jobs).where(image_jobs.c.id.in_(job_ids))
                           .values(image_key=None))


async def find_by_image_key(db: Database, image_key: str):
    async with db.read() as conn:
        return (await conn.execute(
            select(image_jobs.c.id, image_jobs.c.expires_at)
            .where(image_jobs.c.image_key == image_key))).first()
