"""`/v1/images/generations` when its wait times out as the jobs finish: the timeout cancels
and reads the jobs' states in one transaction, so an image that finished meanwhile is
delivered (and charged) and one that had not is cancelled (and not charged). A 504 always
means nothing was charged."""

from __future__ import annotations

import asyncio
import random
from concurrent.futures import ThreadPoolExecutor

import requests
from sqlalchemy import func, select

from minitoolai.db.engine import Database
from minitoolai.db.tables import ledger_entries
from minitoolai.images.backends import instant
from minitoolai.images.tables import image_jobs
from tests.conftest import assert_ledger_ok, make_customer
from tests.images.conftest import PRICE

ROUNDS = 200
WAIT = 0.15  # the /v1 request's wait; the backend takes 0 to 2 x WAIT


async def _counts(database_url: str, account_id: int) -> tuple[int, int, int]:
    """(jobs in success, charge entries, sum charged) of the account."""
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            succeeded = (await conn.execute(
                select(func.count()).select_from(image_jobs).where(
                    image_jobs.c.account_id == account_id,
                    image_jobs.c.state == "success"))).scalar_one()
            charges, charged = (await conn.execute(
                select(func.count(), func.coalesce(func.sum(ledger_entries.c.amount), 0))
                .where(ledger_entries.c.account_id == account_id,
                       ledger_entries.c.kind == "charge"))).one()
    finally:
        await db.dispose()
    return succeeded, charges, -int(charged)


async def test_timeout_racing_the_worker_charges_only_what_it_delivered(
        database_url, image_settings, serve, monkeypatch):
    finish = instant.InstantBackend.generate
    rng = random.Random(2026)

    async def around_the_deadline(self, jobs):
        await asyncio.sleep(rng.uniform(0, 2 * WAIT))
        return await finish(self, jobs)

    monkeypatch.setattr(instant.InstantBackend, "generate", around_the_deadline)
    credit = ROUNDS * 2 * PRICE
    customer = await make_customer(database_url, credit)
    server = serve(image_settings(rate_limit_per_minute=0, images={
        "openai_wait_seconds": WAIT, "poll_interval_seconds": 0.01}))

    def one(i: int) -> requests.Response:
        return requests.post(server.url + "/v1/images/generations", headers=customer.headers,
                             json={"model": "realvision", "prompt": f"race {i}",
                                   "n": 1 + i % 2, "size": "256x256",
                                   "response_format": "b64_json"}, timeout=60)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(one, range(ROUNDS)))

    delivered = 0
    timeouts = 0
    for answer in answers:
        if answer.status_code == 200:
            data = answer.json()["data"]
            assert 1 <= len(data) <= 2 and all(item["b64_json"] for item in data)
            delivered += len(data)
        else:
            assert answer.status_code == 504, answer.text
            assert answer.json() == {"error": {
                "message": f"the image(s) did not finish within {WAIT:g} s; they were"
                           " cancelled and nothing was charged",
                "type": "upstream_timeout", "param": None, "code": "upstream_timeout"}}
            timeouts += 1
    # both sides of the race were taken, or the test proved nothing
    assert delivered > 0 and timeouts > 0, (delivered, timeouts)

    # let workers finish the jobs they were running when they were cancelled: those must
    # not be charged either
    await asyncio.sleep(4 * WAIT + 0.5)
    balance = requests.get(server.url + "/api/balance/", headers=customer.headers,
                           timeout=10).json()
    assert balance["held"] == "0"
    succeeded, charges, charged = await _counts(database_url, customer.account_id)
    assert (succeeded, charges, charged) == (delivered, delivered, delivered * PRICE)
    await assert_ledger_ok(database_url)
