"""The images service: submit (validate, hold, queue), job status, waiting for jobs, and
the retention sweep. Set on the runtime as `runtime.images`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from functools import partial

from minitoolai.clock import as_utc, utcnow
from minitoolai.errors import DatabaseUnavailable, InvalidRequest, NotFound, ServiceUnavailable
from minitoolai.images import queue
from minitoolai.images.backends import model_ready
from minitoolai.images.request import ImageRequest, parse_image_request
from minitoolai.images.signatures import sign_job, signature_ok
from minitoolai.ledger.holds import UsageRecord, release, reserve_many
from minitoolai.ledger.undo import Undoer
from minitoolai.observability import exchange

log = logging.getLogger(__name__)

SEED_ENDPOINT = "/api/texttoimage"
QUEUE_COUNT_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Ticket:
    jobid: int
    signature: str


class ImagesService:
    def __init__(self, runtime, backends: dict, storage) -> None:
        self.runtime = runtime
        self.db = runtime.db
        self.settings = runtime.settings.images
        self.backends = backends
        self.storage = storage
        self.wake = asyncio.Event()  # set at submit: embedded workers start at once
        self._changed = asyncio.Event()  # set when jobs finish: wakes waiters
        self._queued_count = 0
        self._queued_at = float("-inf")
        self.undoer = Undoer()  # failed submits still being undone

    # ---- availability ----
    def is_available(self, model) -> bool:
        model_id = getattr(model, "id", model)
        return model_id in self.backends and self.backends[model_id].is_available(model_id)

    def model_names(self) -> list[str]:
        return [m.id for m in self.runtime.catalog.of_kind("image")]

    # ---- submit ----
    def parse(self, body) -> ImageRequest:
        return parse_image_request(body, self.model_names())

    async def submit(self, principal, req: ImageRequest, *, endpoint: str = SEED_ENDPOINT
                     ) -> Ticket:
        """Hold the price, queue the job, return its signed ticket."""
        return (await self.submit_many(principal, [req], endpoint=endpoint))[0]

    async def submit_many(self, principal, reqs: list[ImageRequest], *,
                          endpoint: str = SEED_ENDPOINT) -> list[Ticket]:
        """Hold every job's price first (all or none), then queue them together (the n
        pictures of one request: one model)."""
        if len({req.model for req in reqs}) != 1:
            raise ValueError("submit_many: the jobs of one request are of one model")
        for req in reqs:
            if not self.is_available(req.model):
                _, note = model_ready(self.runtime.settings, req.model, detailed=True)
                raise ServiceUnavailable(note, param="model", code="model_not_installed")
        if await self._queued() + len(reqs) > self.settings.max_queued:
            raise ServiceUnavailable(
                f"the image queue is full ({self.settings.max_queued} jobs waiting);"
                " try again shortly", code="queue_full", headers={"Retry-After": "10"})
        # the jobs' usage rows carry the response's x-request-id (with -N for each of n > 1)
        base_id = exchange.request_id()
        exchange.note_model(reqs[0].model)
        now = utcnow()
        rows = [{
            "id": queue.new_job_id(),
            "request_id": base_id if len(reqs) == 1 else f"{base_id}-{n}",
            "account_id": principal.account_id, "key_id": principal.key_id,
            "endpoint": endpoint, "model": req.model, "prompt": req.prompt,
            "negative_prompt": req.negative_prompt, "scheduler": req.scheduler,
            "steps": req.steps, "cfg_scale": req.cfg_scale, "width": req.width,
            "height": req.height, "seed": req.seed,
            "price": self.runtime.catalog.get(req.model).image_nano,
            "state": "submitting", "attempts": 0, "created_at": now,
        } for n, req in enumerate(reqs, 1)]
        try:
            # every job's hold in one transaction, or none: a refusal writes nothing (no
            # hold to give back, no usage row) and names what the n jobs need together
            await reserve_many(self.db, request_ids=[row["request_id"] for row in rows],
                               account_id=principal.account_id, key_id=principal.key_id,
                               amounts=[row["price"] for row in rows], kind="image",
                               ttl_seconds=self.settings.hold_ttl_seconds,
                               model=reqs[0].model)
            await queue.insert_jobs(self.db, rows)
        except BaseException:
            # refused (credit, the key's limits, expiry, models): nothing was written, but
            # on PostgreSQL a refusal may answer a batch run again after its connection was
            # lost under a COMMIT that did land (db/pg_ledger.py); or the database went
            # away under the holds' or the jobs' COMMIT: either way every hold is given
            # back and any job cancelled (a hold that does not exist releases nothing)
            await asyncio.shield(self._undo_submit(rows, endpoint))
            raise
        # The jobs went in "submitting", which no worker takes: inserted "queued", an INSERT
        # whose COMMIT landed with its answer lost could be run and charged by a worker
        # before this failed submit's undo cancelled it (found by tests/db/test_soak.py).
        # Queued only now, when the answer is a success whatever this UPDATE does: if the
        # database is away it is retried in the background (not done within
        # SUBMITTING_TIMEOUT_SECONDS, the sweeper fails the jobs and releases their holds).
        # Shielded: a client that hangs up now finds its jobs run, as if just after the answer.
        await asyncio.shield(self.undoer.finish(
            f"the queueing of the image jobs of {base_id}",
            partial(queue.queue_submitted, self.db, [row["id"] for row in rows]),
            give_up_after=queue.SUBMITTING_TIMEOUT_SECONDS))
        self._queued_count += len(rows)
        self.wake.set()
        return [Ticket(row["id"], sign_job(self.runtime.secret_key, row["id"])) for row in rows]

    async def _undo_submit(self, rows: list[dict], endpoint: str) -> None:
        """A submit that answers an error must leave no job to run and no credit held.

        Usually no job exists: the holds are given back. But the database may have gone
        away mid-submit: then the release fails too (and the image hold would keep the
        credit for `hold_ttl_seconds`, hours, until the sweeper), or the jobs' INSERT
        committed with its answer lost (and the jobs would run and be charged while the
        client was told they failed). So: cancel any job that exists (which releases its
        hold), release the rest, and while the database is away keep trying in the
        background, until the holds would expire anyway."""
        if rows:
            await self.undoer.undo(f"the failed image submit {rows[0]['request_id']}",
                                   lambda: self._cancel_and_release(rows, endpoint),
                                   give_up_after=self.settings.hold_ttl_seconds)

    async def _cancel_and_release(self, rows: list[dict], endpoint: str) -> None:
        await queue.cancel_unfinished(self.db, [row["id"] for row in rows],
                                      "the submit failed: its answer was an error")
        for row in rows:  # idempotent: a hold released above is not found again
            await release(self.db, row["request_id"], UsageRecord(
                endpoint=endpoint, model=row["model"], status="error"),
                account_id=row["account_id"])

    async def stop_undoing(self) -> None:
        """At shutdown: the holds of submits not undone yet are left to the sweeper."""
        await self.undoer.stop()

    async def _queued(self) -> int:
        """Jobs waiting, counted at most every QUEUE_COUNT_SECONDS (max_queued is a soft
        limit: a fresh COUNT per submit would cost more than the submit itself)."""
        now = time.monotonic()
        if now - self._queued_at > QUEUE_COUNT_SECONDS:
            self._queued_count = await queue.count_queued(self.db)
            self._queued_at = now
        return self._queued_count

    async def cancel_unfinished(self, job_ids: list[int], reason: str) -> list:
        """Cancel the jobs not finished yet; every job's row after (queue.cancel_unfinished)."""
        return await queue.cancel_unfinished(self.db, job_ids, reason)

    async def abandon(self, job_ids: list[int], reason: str) -> None:
        """Cancel the jobs of a request that answers an error after their submit (the
        database away while it waited for them): now, or in the background until the
        database takes it."""
        async def cancel_and_release() -> None:
            rows = await queue.cancel_unfinished(self.db, job_ids, reason)
            # a second try finds its jobs cancelled already, their holds maybe not released
            # (idempotent: a hold released or settled is not found again)
            for row in rows:
                if row.state == "error":
                    await release(self.db, row.request_id, UsageRecord(
                        endpoint=row.endpoint, model=row.model, status="error"),
                        account_id=row.account_id)

        await self.undoer.undo(f"the image jobs {job_ids}", cancel_and_release,
                               give_up_after=self.settings.hold_ttl_seconds)

    # ---- status ----
    async def job_for_ticket(self, jobid, signature):
        """The job row, or NotFound; a wrong signature is indistinguishable from no job."""
        if isinstance(jobid, str) and jobid.strip().isascii() and jobid.strip().isdigit() \
                and len(jobid.strip()) <= 20:  # "²".isdigit(); int() refuses 4,300+ digits
            jobid = int(jobid.strip())
        if isinstance(jobid, bool) or not isinstance(jobid, int):
            raise InvalidRequest("jobid must be the integer returned at submit", param="jobid",
                                 code="missing_field" if jobid is None else "invalid_value")
        if not isinstance(signature, str) or not signature:
            raise InvalidRequest("signature must be the string returned at submit",
                                 param="signature",
                                 code="missing_field" if signature is None else "invalid_value")
        unknown = NotFound("no job with this jobid and signature", code="job_not_found")
        if not 0 <= jobid <= queue.MAX_JOB_ID or not signature_ok(
                self.runtime.secret_key, jobid, signature):
            raise unknown
        job = await queue.get_job(self.db, jobid)
        if job is None:
            raise unknown
        return job

    async def describe(self, job) -> dict:
        """The jobs endpoint's answer for one job (the seed's shape, plus detail)."""
        out: dict = {"status": job.state, "jobid": job.id}
        if job.state == "submitting":  # its submit's last step waits for the database
            out.update(status="queued", position=await queue.queue_position(self.db, job),
                       message="queued: the submit is being confirmed")
        elif job.state == "queued":
            position = await queue.queue_position(self.db, job)
            out["position"] = position
            out["message"] = f"queued: position {position} in the queue"
        elif job.state == "processing":
            out["message"] = f"processing (attempt {job.attempts} of"
            out["message"] += f" {self.settings.max_attempts})"
        elif job.state == "error":
            out["message"] = job.error or "the job failed"
        else:
            expires_at = as_utc(job.expires_at)
            if job.image_key is None or expires_at <= utcnow():
                out.update(status="error", message=(
                    f"the image expired at {expires_at.isoformat()} (images are kept"
                    f" {self.settings.retention_hours:g} hours)"))
            else:
                out["image_url"] = await self.storage.url(job.image_key, expires_at)
                out["message"] = "success"
                out["expires_at"] = expires_at.isoformat()
        return out

    # ---- waiting (for /v1/images/generations) ----
    def notify_done(self) -> None:
        self._changed.set()

    async def wait(self, job_ids: list[int], timeout: float) -> list:
        """Wait until every job has finished; return their rows (in order). The database
        going away meanwhile is waited out until the deadline (then DatabaseUnavailable):
        the jobs run on, and a 503 now would leave them to be charged unseen."""
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()
            try:
                rows = [await queue.get_job(self.db, job_id) for job_id in job_ids]
            except DatabaseUnavailable:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.25)
                continue
            if all(row.state in ("success", "error") for row in rows):
                return rows
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return rows
            # workers in this process wake us; workers elsewhere are seen by polling
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.25))

    # ---- retention ----
    async def sweep_files(self) -> int:
        expired = await queue.expired_files(self.db)
        for _, key in expired:
            await self.storage.delete(key)
        if expired:
            await queue.forget_files(self.db, [job_id for job_id, _ in expired])
        return len(expired)

    async def run_retention(self) -> None:
        while True:
            try:
                deleted = await self.sweep_files()
                if deleted:
                    log.info("deleted %d expired image(s)", deleted)
            except asyncio.CancelledError:
                raise
            except Exception:  # the sweep retries next round
                log.exception("image retention sweep failed")
            await asyncio.sleep(self.settings.retention_sweep_seconds)
