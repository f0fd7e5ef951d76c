"""The image job queue, in the database: submit, atomic claims with leases, completion.

A claim takes the oldest queued job of a model this worker serves, plus the queued jobs that
can share its pipeline call (same model, size, steps, scheduler and cfg), and leases them
under a fresh token. PostgreSQL: `FOR UPDATE SKIP LOCKED`, so concurrent workers never
wait on, nor take, each other's jobs. SQLite: write transactions are BEGIN IMMEDIATE, so
the select and the update of a claim run with the database to themselves.

A submit inserts its jobs "submitting", which no worker takes, and queues them only once the
hold and the rows are known to be there (`queue_submitted`): a failed submit's jobs are
cancelled by its undo without a race with the workers, even when their INSERT committed with
its answer lost (a job inserted "queued" could be run, and charged, in that moment).

A job's change of state and its money move in one transaction: success settles the hold
(charged once: only the first settlement finds the hold), failure releases it. A worker
that dies stops renewing its lease; `recover` puts its jobs back in the queue, or fails
them (and refunds) after `max_attempts` runs.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update

from minitoolai.clock import as_utc, utcnow
from minitoolai.db.engine import Database
from minitoolai.images.tables import UNFINISHED, image_jobs
from minitoolai.ledger.holds import UsageRecord, release, settle_in, settle_tx
from minitoolai.observability import metrics

log = logging.getLogger(__name__)

# A job its submit could not queue (the database away at that last step) waits this long for
# the submit's background retry, then the sweeper fails it and releases its hold: its client
# may have been told it failed (the INSERT's answer lost), so it is never queued by anyone else
SUBMITTING_TIMEOUT_SECONDS = 600
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

# The hot path (submit, claim, renew, complete, fail) is plain SQL run by the ledger's
# executor (db.ledger(): an inline sqlite3 connection on SQLite, no thread hand-off per
# statement; a raw asyncpg connection on PostgreSQL), so a job's change of state and its
# settlement share one transaction.
JOB_COLUMNS = ", ".join(ClaimedJob.__slots__)
INSERT_COLUMNS = ("id", "request_id", "account_id", "key_id", "endpoint", "model", "prompt",
                  "negative_prompt", "scheduler", "steps", "cfg_scale", "width", "height",
                  "seed", "price", "state", "attempts", "created_at")
INSERT_JOB = (f"INSERT INTO image_jobs ({', '.join(INSERT_COLUMNS)}) VALUES"
              f" ({', '.join(':' + c for c in INSERT_COLUMNS)})")
QUEUE_SUBMITTED = ("UPDATE image_jobs SET state = 'queued'"
                   " WHERE id = :id AND state = 'submitting'")
MARK_PROCESSING = ("UPDATE image_jobs SET state = 'processing', attempts = attempts + 1,"
                   " lease_token = :token, lease_expires_at = :lease_expires_at,"
                   " started_at = :now WHERE id = :id")
EXTEND_HOLD = "UPDATE holds SET expires_at = :hold_expires_at WHERE id = :request_id"
RENEW_LEASE = ("UPDATE image_jobs SET lease_expires_at = :lease_expires_at"
               " WHERE lease_token = :token AND state = 'processing'")
_MINE = " WHERE id = :id AND lease_token = :token AND state = 'processing'"
MARK_SUCCESS = ("UPDATE image_jobs SET state = 'success', image_key = :image_key,"
                " expires_at = :expires_at, finished_at = :now, lease_token = NULL,"
                " lease_expires_at = NULL, error = NULL" + _MINE)
MARK_REQUEUED = ("UPDATE image_jobs SET state = 'queued', lease_token = NULL,"
                 " lease_expires_at = NULL, error = :error" + _MINE)
# a job handed back by a stopping worker was not really attempted: its attempt is undone
HAND_BACK = ("UPDATE image_jobs SET state = 'queued', attempts = attempts - 1,"
             " lease_token = NULL, lease_expires_at = NULL, error = :error" + _MINE)
MARK_FAILED = ("UPDATE image_jobs SET state = 'error', error = :error, finished_at = :now,"
               " lease_token = NULL, lease_expires_at = NULL" + _MINE)


def _when(value) -> datetime:
    """A datetime from either executor (the inline sqlite3 one hands back text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value)


def _row_to_job(row) -> ClaimedJob:
    """The job of a row that has at least ClaimedJob's columns."""
    values = {name: getattr(row, name) for name in ClaimedJob.__slots__}
    values["created_at"] = as_utc(values["created_at"])
    return ClaimedJob(**values)


def _tuple_to_job(row) -> ClaimedJob:
    values = dict(zip(ClaimedJob.__slots__, tuple(row), strict=True))
    values["created_at"] = _when(values["created_at"])
    return ClaimedJob(**values)


async def insert_jobs(db: Database, rows: list[dict]) -> None:
    async with db.ledger() as tx:
        for row in rows:
            await tx.execute(INSERT_JOB, row)


async def queue_submitted(db: Database, job_ids: list[int]) -> None:
    """Hand a submit's jobs to the workers. Idempotent: a job already queued, or failed
    meanwhile by an undo or the sweeper, is left as it is."""
    async with db.ledger() as tx:
        for job_id in job_ids:
            await tx.execute(QUEUE_SUBMITTED, {"id": job_id})


async def cancel_unfinished(db: Database, job_ids: list[int], reason: str) -> list:
    """Fail the jobs that have not finished (submitting, queued or running), and return
    every job's row as it stands after, in one transaction: a job that finished just
    before is seen finished (and charged: its image is the client's), one that had not is
    cancelled, with no instant between the two for a worker to complete it. A running
    job's lease is taken away, so its worker's success no longer matches and is neither
    stored nor charged (the client who gave up never gets it). The cancelled jobs' holds
    are released right after, each in a transaction of its own: once a job is cancelled
    nothing can charge it, and taking no account's row lock while holding job rows keeps
    this from deadlocking with a worker completing a batch (job row, then account, then
    the next job row). If the process dies in between, the sweeper releases those holds."""
    now = db.now()
    cancelled: list[ClaimedJob] = []
    async with db.write() as conn:
        query = (select(image_jobs).where(image_jobs.c.id.in_(job_ids))
                 .order_by(image_jobs.c.account_id, image_jobs.c.id))
        if not db.is_sqlite:
            # wait for a completion in progress (it holds these rows) instead of reading
            # the state from before it; rows in the same (account, id) order as `complete`
            query = query.with_for_update()
        for row in (await conn.execute(query)).all():
            if row.state not in UNFINISHED:
                continue
            cancelled.append(_row_to_job(row))
            await conn.execute(update(image_jobs).where(image_jobs.c.id == row.id).values(
                state="error", error=reason, finished_at=now, lease_token=None,
                lease_expires_at=None))
        after = (await conn.execute(select(image_jobs).where(image_jobs.c.id.in_(job_ids))))
        by_id = {row.id: row for row in after.all()}
    for job in cancelled:
        await asyncio.shield(release(db, job.request_id,
                                     _usage(job, images=0, status="cancelled"),
                                     account_id=job.account_id))
    return [by_id[job_id] for job_id in job_ids if job_id in by_id]


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


def _claim_sql(db: Database, where: str) -> str:
    # SQLite's BEGIN IMMEDIATE already serialises claims; PostgreSQL skips locked rows
    lock = "" if db.is_sqlite else " FOR UPDATE SKIP LOCKED"
    return (f"SELECT {JOB_COLUMNS} FROM image_jobs WHERE state = 'queued' AND {where}"
            f" ORDER BY created_at, id LIMIT 1{lock}")


async def claim(db: Database, *, models: list[str], max_batch: int, lease_seconds: float,
                hold_ttl_seconds: int) -> tuple[str, list[ClaimedJob]]:
    """Lease the oldest runnable job and up to max_batch-1 compatible ones.
    Returns (lease token, jobs); no jobs when the queue has nothing for these models.

    One row at a time (select, then mark processing): each statement is microseconds on
    SQLite's inline connection, and a row marked processing drops out of the next select."""
    token = secrets.token_hex(16)
    now = db.now()
    names = {f"m{i}": model for i, model in enumerate(models)}
    head_sql = _claim_sql(db, "model IN (" + ", ".join(":" + k for k in names) + ")")
    mate_sql = _claim_sql(db, "model = :model AND width = :width AND height = :height"
                              " AND steps = :steps AND scheduler = :scheduler"
                              " AND cfg_scale = :cfg_scale")
    lease = {"token": token, "now": now,
             "lease_expires_at": now + timedelta(seconds=lease_seconds),
             "hold_expires_at": now + timedelta(seconds=hold_ttl_seconds)}
    jobs: list[ClaimedJob] = []
    async with db.ledger() as tx:
        row = await tx.fetchone(head_sql, names)
        while row is not None:
            job = _tuple_to_job(row)
            await tx.execute(MARK_PROCESSING, {**lease, "id": job.id})
            # the hold must outlive the work now that it has started; a job whose hold is
            # gone (swept after waiting longer than its TTL) must not run, or it would be free
            if await tx.execute(EXTEND_HOLD, {**lease, "request_id": job.request_id}) != 1:
                await tx.execute(MARK_FAILED, {
                    "id": job.id, "token": token, "now": now,
                    "error": "the job waited in the queue longer than its credit hold;"
                             " nothing was charged, please submit it again"})
            else:
                jobs.append(replace(job, attempts=job.attempts + 1))
            if len(jobs) >= max_batch:
                break
            row = await tx.fetchone(mate_sql, {
                "model": job.model, "width": job.width, "height": job.height,
                "steps": job.steps, "scheduler": job.scheduler, "cfg_scale": job.cfg_scale})
    return token, jobs


async def renew(db: Database, token: str, lease_seconds: float) -> int:
    """Extend the lease of the jobs this token holds; returns how many it still holds."""
    async with db.ledger() as tx:
        return await tx.execute(RENEW_LEASE, {
            "token": token, "lease_expires_at": db.now() + timedelta(seconds=lease_seconds)})


def _usage(job: ClaimedJob, *, images: int, status: str) -> UsageRecord:
    latency = int((utcnow() - job.created_at).total_seconds() * 1000)
    return UsageRecord(endpoint=job.endpoint, model=job.model, images=images, status=status,
                       latency_ms=latency)


async def complete(db: Database, token: str, done: list[tuple[ClaimedJob, str]],
                   expires_at: datetime) -> list[int]:
    """Mark jobs successful with their stored image and charge each one, together.
    A job whose lease this token lost is left alone (its new owner finishes it).
    Returns the ids this call completed."""
    now = db.now()
    won = []
    charged = []
    async with db.ledger() as tx:
        # settle in (account, job) order: two workers completing batches that share accounts
        # (or a /v1 request cancelling its jobs, see cancel_unfinished) lock the rows in the
        # same order, so they wait for each other, never deadlock
        for job, image_key in sorted(done, key=lambda pair: (pair[0].account_id, pair[0].id)):
            changed = await tx.execute(MARK_SUCCESS, {
                "id": job.id, "token": token, "image_key": image_key,
                "expires_at": expires_at, "now": now})
            if changed == 1:
                if await settle_tx(tx, job.request_id, job.price,
                                   _usage(job, images=1, status="ok")) is None:
                    log.warning("job %s succeeded after its hold was swept: not charged",
                                job.id)
                else:
                    charged.append(job)
                won.append(job.id)
    for job in charged:  # committed: count them
        metrics.count_settled(job.endpoint, job.model, job.price, 0, 0)
    for job, _ in done:
        if job.id in won:
            metrics.IMAGE_OUTCOMES.labels(job.model, "success").inc()
            metrics.IMAGE_SECONDS.labels(job.model).observe(
                (now - as_utc(job.created_at)).total_seconds())
    return won


async def fail(db: Database, token: str, jobs: list[ClaimedJob], reason: str, *,
               retry: bool, max_attempts: int) -> None:
    """A run failed: queue the jobs again while attempts remain (retry), else fail them
    and release their holds, in the same transaction."""
    now = db.now()
    outcomes = []
    async with db.ledger() as tx:
        for job in sorted(jobs, key=lambda job: job.account_id):  # lock order: see complete
            params = {"id": job.id, "token": token, "error": reason, "now": now}
            if retry and job.attempts < max_attempts:
                await tx.execute(MARK_REQUEUED, params)
                outcomes.append((job.model, "retried"))
            elif await tx.execute(MARK_FAILED, params) == 1:
                await settle_tx(tx, job.request_id, 0, _usage(job, images=0, status="error"))
                outcomes.append((job.model, "error"))
    for model, outcome in outcomes:
        metrics.IMAGE_OUTCOMES.labels(model, outcome).inc()


async def hand_back(db: Database, token: str, jobs: list[ClaimedJob]) -> int:
    """A stopping worker gives its unfinished jobs back to the queue now (another worker
    takes them at once instead of after the lease lapses). Returns how many it still held."""
    async with db.ledger() as tx:
        handed = 0
        for job in jobs:
            handed += await tx.execute(HAND_BACK, {
                "id": job.id, "token": token,
                "error": "the worker running this job was stopped; queued again"})
    return handed


async def recover(db: Database, *, max_attempts: int, queue_timeout_seconds: int) -> int:
    """Requeue jobs whose worker stopped renewing its lease (or fail them after
    max_attempts runs), and fail jobs queued for too long. Holds are released with the
    failures, in the same transaction. Returns how many jobs changed."""
    now = db.now()
    changed = 0
    outcomes = []
    async with db.write() as conn:
        stale = (await conn.execute(_locking(
            select(*_CLAIM_COLUMNS, image_jobs.c.state).where(
                or_(and_(image_jobs.c.state == "processing",
                         image_jobs.c.lease_expires_at < now),
                    and_(image_jobs.c.state == "queued",
                         image_jobs.c.created_at < now - timedelta(
                             seconds=queue_timeout_seconds)),
                    # never queued: its submit's last step did not land in time
                    # (ImagesService.submit_many)
                    and_(image_jobs.c.state == "submitting",
                         image_jobs.c.created_at < now - timedelta(seconds=min(
                             SUBMITTING_TIMEOUT_SECONDS, queue_timeout_seconds)))))
            .order_by(image_jobs.c.account_id).limit(500), db))).all()
        for row in stale:
            job = _row_to_job(row)
            queued_too_long = job.created_at < now - timedelta(seconds=queue_timeout_seconds)
            if row.state != "submitting" and not queued_too_long \
                    and job.attempts < max_attempts:
                await conn.execute(update(image_jobs).where(image_jobs.c.id == job.id).values(
                    state="queued", lease_token=None, lease_expires_at=None,
                    error="the worker running this job stopped; queued again"))
                outcomes.append((job.model, "requeued"))
            else:
                reason = ("the job's submit could not queue it (the database was away);"
                          " nothing was charged"
                          if row.state == "submitting" else
                          f"the job waited in the queue longer than {queue_timeout_seconds} s"
                          if queued_too_long else
                          f"the job was attempted {job.attempts} times and its worker stopped"
                          " each time")
                await conn.execute(update(image_jobs).where(image_jobs.c.id == job.id).values(
                    state="error", error=reason, finished_at=now, lease_token=None,
                    lease_expires_at=None))
                await settle_in(conn, job.request_id, 0, _usage(job, images=0, status="error"))
                outcomes.append((job.model, "error"))
            changed += 1
    for model, outcome in outcomes:
        metrics.IMAGE_OUTCOMES.labels(model, outcome).inc()
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
