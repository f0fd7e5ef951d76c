"""A worker killed mid-job (a real `minitoolai worker` process, SIGKILL) leaves the job to
run again, and it is charged once; a worker stopped with SIGTERM finishes its job within the
drain time, or hands it back to the queue at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from sqlalchemy import func, select

from minitoolai.db.engine import Database
from minitoolai.db.tables import ledger_entries
from minitoolai.images.tables import image_jobs
from minitoolai.money import parse_usd
from tests.conftest import assert_ledger_ok, make_customer
from tests.images.conftest import PRICE, poll, submit
from tests.images.fake_a1111 import FakeA1111
from tests.servers import free_port


def start_worker(settings, fake_url: str, log_path, **images) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINITOOLAI_")}
    env.update({
        "MINITOOLAI_DATABASE_URL": settings.database_url,
        "MINITOOLAI_DATA_DIR": str(settings.data_dir),
        "MINITOOLAI_SECRET_KEY": settings.secret_key,
        "MINITOOLAI_IMAGES__MODELS": json.dumps({"realvision": {"backend": "a1111"}}),
        "MINITOOLAI_IMAGES__A1111__BASE_URL": fake_url,
        "MINITOOLAI_IMAGES__LEASE_SECONDS": "2",
        "MINITOOLAI_IMAGES__POLL_INTERVAL_SECONDS": "0.1",
        "OPENAI_API_KEY": "",
    })
    env.update({f"MINITOOLAI_IMAGES__{k.upper()}": str(v) for k, v in images.items()})
    return subprocess.Popen([sys.executable, "-m", "minitoolai.cli.main", "worker"], env=env,
                            stdout=log_path.open("w"), stderr=subprocess.STDOUT)


def stop_all(processes) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


async def test_worker_killed_mid_job_runs_again_and_charges_once(
        database_url, image_settings, serve, tmp_path):
    fake = FakeA1111().start()
    workers = []
    try:
        customer = await make_customer(database_url, parse_usd("1"))
        settings = image_settings(images={
            "models": {"realvision": {"backend": "a1111"}},
            "a1111": {"base_url": fake.url}, "lease_seconds": 2})
        server = serve(settings, workers=False)  # the API only: jobs run in the workers
        fake.hang_next = 1  # the first run never answers
        ticket = submit(server.url, customer.key).json()
        workers.append(start_worker(settings, fake.url, tmp_path / "worker1.log"))
        wait_for(lambda: len(fake.requests) == 1, what="the first worker's request")
        status = poll(server.url, ticket["jobid"], ticket["signature"], until=("processing",))
        assert status["status"] == "processing" and "attempt 1" in status["message"]

        workers[0].send_signal(signal.SIGKILL)
        assert workers[0].wait(timeout=30) == -signal.SIGKILL
        # a second worker process finds the lapsed lease and runs the job again
        workers.append(start_worker(settings, fake.url, tmp_path / "worker2.log"))
        body = poll(server.url, ticket["jobid"], ticket["signature"], timeout=60)
        assert body["status"] == "success", (body, (tmp_path / "worker2.log").read_text())
        assert len(fake.requests) == 2
        assert requests.get(body["image_url"], timeout=10).status_code == 200

        db = Database(database_url, pool_size=1)
        try:
            async with db.read() as conn:
                job = (await conn.execute(select(image_jobs).where(
                    image_jobs.c.id == ticket["jobid"]))).one()
                charges = (await conn.execute(select(func.count(), func.sum(
                    ledger_entries.c.amount)).where(ledger_entries.c.kind == "charge"))).one()
        finally:
            await db.dispose()
        assert job.attempts == 2 and job.state == "success"
        assert tuple(charges) == (1, -PRICE)
        balance = requests.get(server.url + "/api/balance/", headers=customer.headers,
                               timeout=10).json()
        assert balance["balance"] == "0.9985" and balance["held"] == "0"
        await assert_ledger_ok(database_url)
    finally:
        stop_all(workers)
        fake.stop()


@pytest.mark.parametrize("signal_number", [signal.SIGTERM])
async def test_worker_process_stops_cleanly(database_url, image_settings, tmp_path,
                                            signal_number):
    settings = image_settings(images={"models": {"realvision": {"backend": "a1111"}},
                                      "a1111": {"base_url": "http://127.0.0.1:9"}})
    process = start_worker(settings, "http://127.0.0.1:9", tmp_path / "w.log")
    wait_for(lambda: "minitoolai worker: 1 loop(s) serving realvision" in
             (tmp_path / "w.log").read_text(), what="the worker to start")
    process.send_signal(signal_number)
    assert process.wait(timeout=30) == 0, (tmp_path / "w.log").read_text()


async def _job_and_charges(database_url, job_id):
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            job = (await conn.execute(select(image_jobs).where(image_jobs.c.id == job_id))).one()
            charges = (await conn.execute(select(func.count(), func.sum(
                ledger_entries.c.amount)).where(ledger_entries.c.kind == "charge"))).one()
    finally:
        await db.dispose()
    return job, tuple(charges)


async def test_sigterm_lets_the_running_job_finish(database_url, image_settings, serve,
                                                   tmp_path):
    fake = FakeA1111().start()
    process = None
    try:
        customer = await make_customer(database_url, parse_usd("1"))
        settings = image_settings(images={
            "models": {"realvision": {"backend": "a1111"}}, "a1111": {"base_url": fake.url}})
        server = serve(settings, workers=False)
        fake.hang_next = 1
        ticket = submit(server.url, customer.key).json()
        log = tmp_path / "worker.log"
        process = start_worker(settings, fake.url, log, stop_drain_seconds=30)
        wait_for(lambda: len(fake.requests) == 1, what="the worker's request")
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.poll() is None  # still draining: the job is running
        fake.released.set()
        assert process.wait(timeout=30) == 0, log.read_text()
        body = poll(server.url, ticket["jobid"], ticket["signature"], timeout=10)
        assert body["status"] == "success"
        job, charges = await _job_and_charges(database_url, ticket["jobid"])
        assert (job.attempts, charges) == (1, (1, -PRICE))
        await assert_ledger_ok(database_url)
    finally:
        if process is not None and process.poll() is None:
            process.kill()
        fake.stop()


async def test_sigterm_past_the_drain_time_hands_the_job_back_at_once(
        database_url, image_settings, serve, tmp_path):
    fake = FakeA1111().start()
    processes = []
    try:
        customer = await make_customer(database_url, parse_usd("1"))
        # a long lease: only the hand-back, not a lapsed lease, can requeue the job in time
        settings = image_settings(images={
            "models": {"realvision": {"backend": "a1111"}}, "a1111": {"base_url": fake.url},
            "lease_seconds": 120})
        server = serve(settings, workers=False)
        fake.hang_next = 1  # the first run never answers
        ticket = submit(server.url, customer.key).json()
        first = tmp_path / "worker1.log"
        processes.append(start_worker(settings, fake.url, first, lease_seconds=120,
                                      stop_drain_seconds=1))
        wait_for(lambda: len(fake.requests) == 1, what="the first worker's request")
        stopped_at = time.monotonic()
        processes[0].send_signal(signal.SIGTERM)
        assert processes[0].wait(timeout=30) == 0, first.read_text()
        assert time.monotonic() - stopped_at < 15
        assert "handing their jobs back to the queue" in first.read_text()
        job, charges = await _job_and_charges(database_url, ticket["jobid"])
        assert (job.state, job.attempts, job.lease_token, charges) == \
            ("queued", 0, None, (0, None))

        metrics_port = free_port()
        processes.append(start_worker(settings, fake.url, tmp_path / "worker2.log",
                                      lease_seconds=120, worker_metrics_port=metrics_port))
        body = poll(server.url, ticket["jobid"], ticket["signature"], timeout=60)
        assert body["status"] == "success"
        # the job's outcome is counted in the worker that ran it, on its own /metrics
        scraped = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert ('minitoolai_image_job_outcomes_total{model="realvision",outcome="success"}'
                ' 1.0') in scraped
        job, charges = await _job_and_charges(database_url, ticket["jobid"])
        assert (job.attempts, charges) == (1, (1, -PRICE))
        await assert_ledger_ok(database_url)
    finally:
        stop_all(processes)
        fake.stop()
