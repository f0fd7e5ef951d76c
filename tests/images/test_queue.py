"""The queue in the database: batched claims, concurrent claims, lapsed leases, bounded
attempts, queue timeout, credit limits under concurrent submits, retention."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import requests
from sqlalchemy import func, select

from minitoolai.clock import utcnow
from minitoolai.db.engine import Database
from minitoolai.images import queue
from minitoolai.images.tables import image_jobs
from minitoolai.money import parse_usd
from tests.conftest import assert_ledger_ok, make_customer
from tests.images.conftest import PRICE, poll, submit


def balance(server, customer) -> dict:
    return requests.get(server.url + "/api/balance/", headers=customer.headers,
                        timeout=10).json()


async def count_states(database_url) -> dict:
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            rows = (await conn.execute(select(image_jobs.c.state, func.count())
                                       .group_by(image_jobs.c.state))).all()
    finally:
        await db.dispose()
    return dict(rows)


async def test_claim_takes_compatible_jobs_together(database_url, image_settings, serve):
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings(), workers=False)
    ids = [submit(server.url, customer.key, **fields).json()["jobid"] for fields in (
        {}, {"prompt": "another"}, {"width": 512}, {"steps": 3}, {"seed": 5},
        {"cfgScale": 3})]
    db = Database(database_url, pool_size=2)
    try:
        claims = []
        while True:
            _, jobs = await queue.claim(db, models=["realvision"], max_batch=16,
                                        lease_seconds=60, hold_ttl_seconds=3600)
            if not jobs:
                break
            claims.append([job.id for job in jobs])
    finally:
        await db.dispose()
    # same model, size, steps, scheduler and cfg share a pipeline call (prompt/seed may differ)
    assert claims == [[ids[0], ids[1], ids[4]], [ids[2]], [ids[3]], [ids[5]]]
    await assert_ledger_ok(database_url)


async def test_concurrent_claims_never_share_a_job(database_url, image_settings, serve):
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings(), workers=False)
    with ThreadPoolExecutor(8) as pool:
        tickets = list(pool.map(lambda _: submit(server.url, customer.key).json(), range(40)))
    databases = [Database(database_url, pool_size=2) for _ in range(6)]

    async def drain(db) -> list[int]:
        mine = []
        while True:
            _, jobs = await queue.claim(db, models=["realvision"], max_batch=3,
                                        lease_seconds=60, hold_ttl_seconds=3600)
            if not jobs:
                return mine
            mine += [job.id for job in jobs]

    try:
        claimed = await asyncio.gather(*(drain(db) for db in databases))
    finally:
        for db in databases:
            await db.dispose()
    every = [job_id for ids in claimed for job_id in ids]
    assert len(every) == len(set(every)) == 40
    assert set(every) == {t["jobid"] for t in tickets}
    await assert_ledger_ok(database_url)


async def test_lapsed_leases_run_again_then_fail_and_refund(database_url, image_settings,
                                                            serve):
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings(), workers=False)
    ticket = submit(server.url, customer.key).json()
    db = Database(database_url, pool_size=2)
    try:
        for attempt in (1, 2):
            _, [job] = await queue.claim(db, models=["realvision"], max_batch=1,
                                         lease_seconds=0.01, hold_ttl_seconds=3600)
            assert job.attempts == attempt
            await asyncio.sleep(0.05)  # the "worker" died: its lease lapses
            assert await queue.recover(db, max_attempts=2, queue_timeout_seconds=3600) == 1
            body = poll(server.url, ticket["jobid"], ticket["signature"], timeout=0)
            assert body["status"] == ("queued" if attempt == 1 else "error"), body
        assert "attempted 2 times" in body["message"]
    finally:
        await db.dispose()
    account = balance(server, customer)
    assert account["balance"] == "1" and account["held"] == "0"
    await assert_ledger_ok(database_url)


async def test_job_queued_too_long_fails_and_refunds(database_url, image_settings, serve):
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings(), workers=False)
    ticket = submit(server.url, customer.key).json()
    db = Database(database_url, pool_size=1)
    try:
        await asyncio.sleep(0.01)
        assert await queue.recover(db, max_attempts=3, queue_timeout_seconds=0) == 1
    finally:
        await db.dispose()
    body = poll(server.url, ticket["jobid"], ticket["signature"], timeout=0)
    assert body["status"] == "error" and "waited in the queue longer" in body["message"]
    assert balance(server, customer)["held"] == "0"
    assert balance(server, customer)["balance"] == "1"
    await assert_ledger_ok(database_url)


async def test_a_job_its_submit_never_queued_is_not_run_and_fails_refunded(
        database_url, image_settings, serve):
    """A submit inserts its job "submitting" and queues it as its last step; a server that
    stopped in between (the database away for that step) leaves it submitting: no worker
    takes it, its ticket says queued, and the sweeper fails it after
    SUBMITTING_TIMEOUT_SECONDS (10 minutes, not the 3 hours of queue_timeout_seconds) and
    releases its hold."""
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings(), workers=False)
    ticket = submit(server.url, customer.key).json()
    db = Database(database_url, pool_size=1)
    try:
        async with db.write() as conn:  # as the server that stopped left it
            await conn.execute(image_jobs.update().values(state="submitting"))
        body = poll(server.url, ticket["jobid"], ticket["signature"], timeout=0)
        assert body["status"] == "queued" and "being confirmed" in body["message"], body
        _, jobs = await queue.claim(db, models=["realvision"], max_batch=4, lease_seconds=60,
                                    hold_ttl_seconds=3600)
        assert jobs == []
        assert await queue.recover(db, max_attempts=3, queue_timeout_seconds=3600) == 0
        assert balance(server, customer)["held"] == "0.0015"
        async with db.write() as conn:  # its submit was that long ago
            await conn.execute(image_jobs.update().values(created_at=utcnow() - timedelta(
                seconds=queue.SUBMITTING_TIMEOUT_SECONDS + 1)))
        assert await queue.recover(db, max_attempts=3, queue_timeout_seconds=3600) == 1
    finally:
        await db.dispose()
    body = poll(server.url, ticket["jobid"], ticket["signature"], timeout=0)
    assert body["status"] == "error" and "could not queue it" in body["message"]
    account = balance(server, customer)
    assert account["balance"] == "1" and account["held"] == "0"
    await assert_ledger_ok(database_url)


async def test_100_concurrent_submits_against_credit_for_40_queue_40(
        database_url, image_settings, serve):
    customer = await make_customer(database_url, 40 * PRICE)
    server = serve(image_settings(), workers=False)
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda _: submit(server.url, customer.key), range(100)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) == 40 and statuses.count(402) == 60, statuses
    for answer in answers:
        if answer.status_code == 402:
            assert answer.json()["status"] == "error"
            assert "insufficient credit" in answer.json()["message"]
    assert await count_states(database_url) == {"queued": 40}
    account = balance(server, customer)
    assert account["balance"] == "0.06" and account["held"] == "0.06"
    await assert_ledger_ok(database_url)


async def test_100_concurrent_submits_with_workers_charge_exactly_40(
        database_url, image_settings, serve):
    customer = await make_customer(database_url, 40 * PRICE)
    server = serve(image_settings(images={"embedded_workers": 2}))
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda _: submit(server.url, customer.key), range(100)))
    tickets = [a.json() for a in answers if a.status_code == 200]
    assert len(tickets) == 40
    for ticket in tickets:
        assert poll(server.url, ticket["jobid"], ticket["signature"])["status"] == "success"
    account = balance(server, customer)
    assert account["balance"] == "0" and account["held"] == "0"
    await assert_ledger_ok(database_url)


async def test_retention_deletes_expired_images(database_url, image_settings, serve):
    customer = await make_customer(database_url, parse_usd("1"))
    settings = image_settings(images={"retention_hours": 1 / 3600,  # one second
                                      "retention_sweep_seconds": 0.2})
    server = serve(settings)
    ticket = submit(server.url, customer.key).json()
    body = poll(server.url, ticket["jobid"], ticket["signature"])
    assert body["status"] == "success"
    files = list((settings.data_dir / "images").glob("*.png"))
    assert len(files) == 1
    deadline = time.monotonic() + 30
    while files[0].exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not files[0].exists()
    gone = requests.get(body["image_url"], timeout=10)
    assert gone.status_code == 404 and gone.json()["status"] == "error"
    after = poll(server.url, ticket["jobid"], ticket["signature"], timeout=0)
    assert after["status"] == "error" and "expired" in after["message"]
    assert balance(server, customer)["balance"] == "0.9985"  # delivered, so still charged
    await assert_ledger_ok(database_url)


async def test_unguessable_file_paths(database_url, image_settings, serve):
    customer = await make_customer(database_url, 0)
    server = serve(image_settings(), workers=False)
    for path in ("x.png", "../secret_key", "%2e%2e%2fsecret_key", "A" * 32 + ".png"):
        answer = requests.get(server.url + "/api/texttoimage/files/" + path,
                              headers=customer.headers, timeout=10)
        assert answer.status_code == 404


async def test_a_job_whose_hold_was_swept_does_not_run_for_free(database_url, image_settings,
                                                               serve):
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings(), workers=False)
    ticket = submit(server.url, customer.key).json()
    db = Database(database_url, pool_size=2)
    try:
        async with db.write() as conn:  # as if the job waited past its hold's TTL
            await conn.exec_driver_sql("UPDATE holds SET expires_at = '2000-01-01 00:00:00'")
        from minitoolai.ledger.sweeper import sweep_expired
        assert await sweep_expired(db) == 1
        _, jobs = await queue.claim(db, models=["realvision"], max_batch=4, lease_seconds=60,
                                    hold_ttl_seconds=3600)
    finally:
        await db.dispose()
    assert jobs == []  # not run: it would have been free
    body = poll(server.url, ticket["jobid"], ticket["signature"])
    assert body["status"] == "error" and "nothing was charged" in body["message"]
    assert balance(server, customer)["balance"] == "1"
    await assert_ledger_ok(database_url)
