"""The database goes away and comes back, for real, under a live server: its backends
terminated under load (only this test's database's), or a TCP proxy of the test's own
between the server and PostgreSQL cut and restored. The server must answer 503 with
Retry-After in each route's envelope while it is away (never 500), recover by itself within
seconds, charge every served request exactly once, and pass `ledger verify`."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from sqlalchemy import func, select

from minitoolai.app import create_app
from minitoolai.db.engine import Database
from minitoolai.db.tables import ledger_entries, usage
from tests.conftest import PG_ADMIN_DSN, assert_ledger_ok, make_customer, run
from tests.db.conftest import pg_url
from tests.fakes.tcp_proxy import TcpProxy
from tests.servers import ThreadedServer

CHAT = "/api/chat-completions/"
RECOVERY_SECONDS = 5


def terminate_backends(name: str) -> int:
    """pg_terminate_backend on every connection to this test's database (no other's)."""
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchone()[0]


async def charges_of(database_url: str, account_id: int) -> tuple[int, int, int]:
    """(usage rows served ok, charge entries, nanodollars charged) of one account."""
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            served = await conn.scalar(select(func.count()).select_from(usage).where(
                usage.c.account_id == account_id, usage.c.status == "ok"))
            entries, total = (await conn.execute(
                select(func.count(), func.coalesce(func.sum(ledger_entries.c.amount), 0))
                .where(ledger_entries.c.account_id == account_id,
                       ledger_entries.c.kind == "charge"))).one()
    finally:
        await db.dispose()
    return served, entries, -total


def chat_body(n: int, stream: bool) -> dict:
    return {"model": "gpt-4o-mini", "stream": stream,
            "messages": [{"role": "user", "content": f"request {n} [chunks:3]"}]}


def assert_unavailable(response: httpx.Response, *, image: bool = False) -> None:
    """503, Retry-After, and the route's documented envelope."""
    assert response.status_code == 503, (response.status_code, response.text)
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if image:  # the seed's shape
        assert body["status"] == "error" and body["jobid"] is None
        assert body["signature"] is None and body["code"] == "database_unavailable"
        assert "database" in body["message"]
    else:
        assert body["error"]["type"] == "service_unavailable"
        assert body["error"]["code"] == "database_unavailable"
        assert "database" in body["error"]["message"]


async def _load(base: str, headers: dict, name: str, *, workers: int, duration: float,
                kills: tuple[float, ...]):
    """Chat requests from `workers` clients for `duration` s, the database's backends
    terminated at each of `kills` (seconds from the start). Returns (results, kill times):
    results are (started, finished, status, served) with times from the start."""
    results: list[tuple[float, float, int, bool]] = []
    start = time.monotonic()
    killed_at: list[float] = []

    async def client(worker: int) -> None:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
            n = 0
            while time.monotonic() - start < duration:
                n += 1
                stream = (worker + n) % 2 == 0
                began = time.monotonic() - start
                response = await http.post(CHAT, json=chat_body(n, stream))
                served = response.status_code == 200
                if served and stream:
                    assert response.text.rstrip().endswith("data: [DONE]"), response.text
                results.append((began, time.monotonic() - start, response.status_code, served))

    async def killer() -> None:
        for at in kills:
            await asyncio.sleep(max(0.0, at - (time.monotonic() - start)))
            killed_at.append(time.monotonic() - start)
            assert await asyncio.to_thread(terminate_backends, name) >= 1

    await asyncio.gather(killer(), *(client(w) for w in range(workers)))
    return results, killed_at


def test_backends_terminated_under_load(pg_name, fault_settings):
    """(a) pg_terminate_backend twice under 6 concurrent clients: no 500 ever, service
    back within 5 s of each kill, each 200 charged exactly once."""
    url = pg_url(pg_name)
    customer = run(make_customer(url, 10**12))
    app = create_app(fault_settings(url))
    with ThreadedServer(app) as server:
        results, kills = run(_load(server.url, customer.headers, pg_name, workers=6,
                                   duration=6.0, kills=(1.5, 3.5)))
        reconnects = app.state.runtime.db._pg_ledger.reconnects
    statuses = sorted({status for _, _, status, _ in results})
    assert set(statuses) <= {200, 503}, statuses
    for at in kills:
        back = [end for began, end, status, _ in results if began >= at and status == 200]
        assert back and back[0] - at < RECOVERY_SECONDS, (at, back[:1])
    assert all(s == 200 for began, _, s, _ in results if began > kills[-1] + RECOVERY_SECONDS)
    assert reconnects >= 2  # the ledger's kept connection was replaced after each kill
    served = sum(1 for *_, ok in results if ok)
    assert served > 20
    ok_rows, charges, total = run(charges_of(url, customer.account_id))
    # prompt: 3 words + 3 per message -> 6 tokens x 150; 3 chunks x 600 (gpt-4o-mini)
    assert (ok_rows, charges, total) == (served, served, served * (6 * 150 + 3 * 600))
    run(assert_ledger_ok(url))


def test_database_unreachable_answers_503_then_recovers(pg_name, fault_settings):
    """(b) the network to PostgreSQL cut (a proxy of the test's own stops accepting and
    drops every connection), then restored."""
    direct = pg_url(pg_name)
    customer = run(make_customer(direct, 10**12))
    with TcpProxy("127.0.0.1", 5432) as proxy:
        # a short lease: a claim whose COMMIT was in flight at the cut is unknown to its
        # worker, and the job waits for the lease to run out before it runs again
        app = create_app(fault_settings(pg_url(pg_name, proxy.port),
                                        images={"lease_seconds": 2}))
        with ThreadedServer(app) as server, httpx.Client(base_url=server.url, timeout=30,
                                                         headers=customer.headers) as http:
            served = 0
            assert http.post(CHAT, json=chat_body(0, False)).status_code == 200
            served += 1
            image = {"model": "realvision", "prompt": "a lighthouse", "steps": 4,
                     "width": 256, "height": 256}
            ticket = http.post("/api/texttoimage/", json=image).json()
            assert ticket["status"] == "success", ticket
            assert http.get("/health/ready").json()["status"] == "ready"

            proxy.cut()
            cut_at = time.monotonic()
            assert_unavailable(http.post(CHAT, json=chat_body(1, False)))
            assert_unavailable(http.post(CHAT, json=chat_body(2, True)))
            assert_unavailable(http.post("/v1/chat/completions", json=chat_body(3, False)))
            assert_unavailable(http.post("/api/texttoimage/", json=image), image=True)
            assert_unavailable(http.post("/api/texttoimage/jobs/", json={
                "jobid": ticket["jobid"], "signature": ticket["signature"]}), image=True)
            # an unknown key: authentication itself needs the database
            stranger = {"Authorization": "Bearer sk-not-cached"}
            assert_unavailable(http.get("/api/balance/", headers=stranger))
            ready = http.get("/health/ready")
            assert ready.status_code == 503 and "retry-after" in ready.headers
            assert ready.json()["status"] == "unavailable"
            assert ready.json()["checks"]["database"].startswith("unreachable")
            assert http.get("/health/live").status_code == 200
            assert http.get("/health").json() == {"status": "ok"}
            assert time.monotonic() - cut_at < 10  # every answer came quickly

            proxy.restore()
            restored = time.monotonic()
            while True:
                response = http.post(CHAT, json=chat_body(4, False))
                assert response.status_code in (200, 503), response.text
                if response.status_code == 200:
                    served += 1
                    break
                assert time.monotonic() - restored < RECOVERY_SECONDS
                time.sleep(0.1)
            recovery = time.monotonic() - restored
            assert recovery < RECOVERY_SECONDS
            print(f"served again {recovery:.2f} s after the database came back")
            assert http.get("/health/ready").json()["status"] == "ready"
            assert http.get("/api/balance/").status_code == 200
            for n in range(5, 10):
                assert http.post(CHAT, json=chat_body(n, n % 2 == 0)).status_code == 200
                served += 1
            job = {"jobid": ticket["jobid"], "signature": ticket["signature"]}
            deadline = time.monotonic() + 15
            while (state := http.post("/api/texttoimage/jobs/", json=job).json())[
                    "status"] != "success":
                assert time.monotonic() < deadline, state
                time.sleep(0.05)
    ok_rows, charges, total = run(charges_of(direct, customer.account_id))
    chat_ok = ok_rows - 1  # the image job's usage row
    assert chat_ok == served and charges == served + 1
    assert total == served * (6 * 150 + 3 * 600) + 1_500_000
    run(assert_ledger_ok(direct))


def _wait_direct(direct: str, query: str, predicate, what: str, timeout: float = 30.0):
    """Poll the database itself (not through the proxy) until `predicate(row)`."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(direct, autocommit=True) as conn:
        while not predicate(row := conn.execute(query).fetchone()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {row}"
            time.sleep(0.05)
    return row


def _pause(direct: str, table: str, when: str, event: str = "INSERT",
           condition: str = "") -> None:
    """A trigger that sleeps 2 s in the server's `event` on `table` (when="statement") or at
    its COMMIT (when="commit"), on the rows `condition` (a WHEN clause) picks, so that the
    test can cut the network at exactly that moment."""
    with psycopg.connect(direct, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION pause() RETURNS trigger LANGUAGE plpgsql AS"
                     " $$ BEGIN PERFORM pg_sleep(2); RETURN NEW; END $$")
        conn.execute((f"CREATE TRIGGER pause BEFORE {event} ON {table} FOR EACH ROW"
                      if when == "statement" else
                      f"CREATE CONSTRAINT TRIGGER pause AFTER {event} ON {table} DEFERRABLE"
                      " INITIALLY DEFERRED FOR EACH ROW")
                     + (f" WHEN ({condition})" if condition else "")
                     + " EXECUTE FUNCTION pause()")


def _wait_sleeping(direct: str, pg_name: str, sleeping: int, what: str) -> None:
    """Until `sleeping` of this database's backends sleep in a trigger."""
    _wait_direct(direct, "SELECT count(*) FROM pg_stat_activity WHERE datname ="
                 f" '{pg_name}' AND wait_event = 'PgSleep'", lambda r: r[0] == sleeping, what)


IMAGE = {"model": "realvision", "prompt": "a lighthouse", "steps": 4, "width": 256,
         "height": 256}


@pytest.mark.parametrize("cut_during", ["hold-commit", "job-insert", "job-commit"])
def test_an_image_submit_cut_midway_leaves_no_hold_and_no_job(pg_name, fault_settings,
                                                              cut_during):
    """Found by bench/soak.py: a submit that lost the database midway answered 503 but
    left its hold (the hold's COMMIT landed unseen, or the job's INSERT failed and so did
    the release), keeping the credit for the image hold's 6 hours; had the job's INSERT
    committed unseen, the job would have run and been charged though the client was told
    it failed. A trigger that sleeps (at the hold's COMMIT, in the job's INSERT, or at its
    COMMIT) lets the test cut the network at exactly that moment.

    A worker runs throughout, polling every 50 ms, with the instant backend: found by
    tests/db/test_soak.py, a job whose INSERT committed unseen was run and charged by a
    worker once the database came back, before the submit's undo cancelled it. Jobs are
    inserted "submitting", which no worker takes, and queued only by a submit that
    succeeds."""
    direct = pg_url(pg_name)
    customer = run(make_customer(direct, 10**12))
    _pause(direct, *{"hold-commit": ("holds", "commit"), "job-insert": ("image_jobs", "statement"),
                     "job-commit": ("image_jobs", "commit")}[cut_during])
    with TcpProxy("127.0.0.1", 5432) as proxy:
        app = create_app(fault_settings(pg_url(pg_name, proxy.port),
                                        images={"embedded_workers": 1}))
        with ThreadedServer(app) as server, httpx.Client(base_url=server.url, timeout=30,
                                                         headers=customer.headers) as http, \
                ThreadPoolExecutor(1) as pool:
            submitted = pool.submit(http.post, "/api/texttoimage/", json=IMAGE)
            _wait_sleeping(direct, pg_name, 1, "the server's statement to sleep in its trigger")
            proxy.cut()
            assert_unavailable(submitted.result(), image=True)
            # the database is away from the server: the hold is still there (and, cut at
            # the job's COMMIT, the job too, once the sleeping backend commits it)
            held = _wait_direct(direct, "SELECT count(*), (SELECT count(*) FROM image_jobs)"
                                " FROM holds", lambda r: r[1] == (cut_during == "job-commit")
                                and r[0] == 1, "the sleeping backend to finish")
            assert held[0] == 1
            proxy.restore()
            # undone in the background once the database is back: no hold, no job to run
            _wait_direct(direct, "SELECT count(*), (SELECT count(*) FROM image_jobs WHERE"
                         " state <> 'error') FROM holds",
                         lambda r: r == (0, 0), "the submit to be undone")
            time.sleep(0.5)  # ten polls of the worker: it must find nothing to run
            assert http.get("/api/balance/").json()["held"] == "0"
    with psycopg.connect(direct) as conn:
        assert conn.execute("SELECT count(*) FROM ledger_entries WHERE kind = 'charge'"
                            ).fetchone()[0] == 0
        assert conn.execute("SELECT state FROM image_jobs").fetchall() == \
            ([("error",)] if cut_during == "job-commit" else [])
    run(assert_ledger_ok(direct))


@pytest.mark.parametrize("cut_during", ["queue-update", "queue-commit"])
def test_an_image_submit_cut_at_its_last_step_succeeds_and_runs_once(pg_name, fault_settings,
                                                                     cut_during):
    """The submit's last step, the UPDATE that hands its job to the workers, loses the
    database (in the statement, which then never commits, or at its COMMIT, which lands
    unseen). The hold and the job are in: the submit answers 200 with its ticket, the step
    is retried in the background, and once the database is back the job runs and is
    charged exactly once."""
    direct = pg_url(pg_name)
    customer = run(make_customer(direct, 10**12))
    _pause(direct, "image_jobs", "statement" if cut_during == "queue-update" else "commit",
           event="UPDATE", condition="OLD.state = 'submitting' AND NEW.state = 'queued'")
    with TcpProxy("127.0.0.1", 5432) as proxy:
        app = create_app(fault_settings(pg_url(pg_name, proxy.port),
                                        images={"embedded_workers": 1}))
        with ThreadedServer(app) as server, httpx.Client(base_url=server.url, timeout=30,
                                                         headers=customer.headers) as http, \
                ThreadPoolExecutor(1) as pool:
            submitted = pool.submit(http.post, "/api/texttoimage/", json=IMAGE)
            _wait_sleeping(direct, pg_name, 1, "the server's UPDATE to sleep in its trigger")
            proxy.cut()
            answer = submitted.result()
            assert answer.status_code == 200, answer.text
            ticket = answer.json()
            assert ticket["status"] == "success" and ticket["signature"]
            # the sleeping backend finishes: cut in the statement, the job is still not
            # queued; cut at the COMMIT, it is
            _wait_sleeping(direct, pg_name, 0, "the sleeping backend to finish")
            expected = "submitting" if cut_during == "queue-update" else "queued"
            _wait_direct(direct, "SELECT state FROM image_jobs", lambda r: r[0] == expected,
                         f"the job to be {expected}")
            proxy.restore()
            _wait_direct(direct, "SELECT state, (SELECT count(*) FROM holds) FROM image_jobs",
                         lambda r: r == ("success", 0), "the job to run")
            job = http.post("/api/texttoimage/jobs/", json={
                "jobid": ticket["jobid"], "signature": ticket["signature"]}).json()
            assert job["status"] == "success" and job["image_url"], job
            assert http.get("/api/balance/").json()["held"] == "0"
    with psycopg.connect(direct) as conn:
        charges = conn.execute("SELECT count(*), -sum(amount) FROM ledger_entries WHERE kind ="
                               " 'charge'").fetchone()
        price = conn.execute("SELECT price FROM image_jobs").fetchone()[0]
    assert charges == (1, price)
    run(assert_ledger_ok(direct))


def test_a_v1_image_request_that_loses_the_database_while_waiting_charges_nothing(
        pg_name, fault_settings):
    """`/v1/images/generations` waits for its job. The database goes away while it waits
    and stays away past the wait's deadline: the answer is 503, and once the database is
    back the job is cancelled in the background and its hold released, so it is never run
    and charged unseen (it used to be left queued). No worker runs meanwhile: the job must
    still be waiting when the database comes back."""
    direct = pg_url(pg_name)
    customer = run(make_customer(direct, 10**12))
    with TcpProxy("127.0.0.1", 5432) as proxy:
        app = create_app(fault_settings(pg_url(pg_name, proxy.port), images={
            "embedded_workers": 0, "openai_wait_seconds": 3}))
        with ThreadedServer(app) as server, httpx.Client(base_url=server.url, timeout=30,
                                                         headers=customer.headers) as http, \
                ThreadPoolExecutor(1) as pool:
            sent = pool.submit(http.post, "/v1/images/generations",
                               json={"model": "realvision", "prompt": "a lighthouse",
                                     "size": "256x256"})
            _wait_direct(direct, "SELECT count(*) FROM image_jobs WHERE state = 'queued'",
                         lambda r: r[0] == 1, "the job to be queued")
            proxy.cut()
            assert_unavailable(sent.result())
            assert _wait_direct(direct, "SELECT state FROM image_jobs", lambda r: True,
                                "the job")[0] == "queued"
            proxy.restore()
            _wait_direct(direct, "SELECT state, (SELECT count(*) FROM holds) FROM image_jobs",
                         lambda r: r == ("error", 0), "the job to be cancelled")
            assert http.get("/api/balance/").json()["held"] == "0"
    with psycopg.connect(direct) as conn:
        assert conn.execute("SELECT count(*) FROM ledger_entries WHERE kind = 'charge'"
                            ).fetchone()[0] == 0
    run(assert_ledger_ok(direct))


# ---- chat: a hold left behind by a request that answered an error ---------------------------

CREDIT = 10**12


def _credit(direct: str, account_id: int) -> str:
    return ("SELECT (SELECT count(*) FROM holds), held, balance, (SELECT count(*) FROM"
            f" ledger_entries WHERE kind = 'charge') FROM accounts WHERE id = {account_id}")


SPEECH = "/v1/audio/speech"


def _chat_request(route: str, text: str) -> dict:
    if route == SPEECH:
        return {"model": "tts-1", "input": text, "voice": "alloy"}
    if route == "/v1/responses":
        return {"model": "gpt-4o-mini", "input": text, "max_output_tokens": 64}
    return {"model": "gpt-4o-mini", "max_tokens": 64,
            "messages": [{"role": "user", "content": text}]}


@pytest.mark.parametrize("route", [CHAT, "/v1/chat/completions", "/v1/responses", SPEECH])
def test_a_chat_hold_whose_commit_answer_was_lost_is_released(pg_name, fault_settings, route):
    """(Chat, the Responses API and speech hold alike.) The hold's COMMIT landed but its answer was lost with the database: the request
    answered 503, and nothing gave the hold back, so the customer's credit stayed held
    until the sweeper (hold_ttl_seconds, 15 minutes), refusing their next requests with
    402. The hold's id is the request's, known before the COMMIT: the failed request
    releases it, in the background until the database is back."""
    direct = pg_url(pg_name)
    customer = run(make_customer(direct, CREDIT))
    _pause(direct, "holds", "commit")
    with TcpProxy("127.0.0.1", 5432) as proxy:
        app = create_app(fault_settings(pg_url(pg_name, proxy.port),
                                        images={"embedded_workers": 0}))
        with ThreadedServer(app) as server, httpx.Client(base_url=server.url, timeout=30,
                                                         headers=customer.headers) as http, \
                ThreadPoolExecutor(1) as pool:
            sent = pool.submit(http.post, route, json=_chat_request(route, "hi [chunks:3]"))
            _wait_sleeping(direct, pg_name, 1, "the hold's COMMIT to sleep in its trigger")
            proxy.cut()
            assert_unavailable(sent.result())
            # the sleeping backend commits the hold nobody will hear of
            held = _wait_direct(direct, _credit(direct, customer.account_id),
                                lambda r: r[0] == 1, "the hold's COMMIT to land")
            assert held[1] > 0
            proxy.restore()
            # given back in the background once the database is back
            assert _wait_direct(direct, _credit(direct, customer.account_id),
                                lambda r: r[0] == 0, "the hold to be released") == \
                (0, 0, CREDIT, 0)
            assert http.get("/api/balance/").json()["held"] == "0"
            if route == SPEECH:  # (this test's upstream speaks chat only)
                assert run(charges_of(direct, customer.account_id)) == (0, 0, 0)
                run(assert_ledger_ok(direct))
                return
            with psycopg.connect(direct, autocommit=True) as conn:
                conn.execute("DROP TRIGGER pause ON holds")
            served = http.post(route, json=_chat_request(route, "again [chunks:3]"))
            assert served.status_code == 200, served.text
    with psycopg.connect(direct) as conn:
        rows = conn.execute("SELECT status, cost FROM usage ORDER BY created_at").fetchall()
        (charged,) = conn.execute("SELECT -amount FROM ledger_entries WHERE kind ="
                                  " 'charge'").fetchone()
        assert conn.execute(_credit(direct, customer.account_id)).fetchone() == \
            (0, 0, CREDIT - charged, 1)
    assert [status for status, _ in rows] == ["error", "ok"] and rows[1][1] == charged > 0
    run(assert_ledger_ok(direct))


def test_a_chat_release_the_database_refused_is_made_when_it_is_back(pg_name, fault_settings,
                                                                     upstream):
    """The upstream failed while the database was away: the release of the request's hold
    failed too, and the hold kept the credit until the sweeper. It is retried in the
    background and lands within seconds of the database's return."""
    direct = pg_url(pg_name)
    customer = run(make_customer(direct, CREDIT))
    with TcpProxy("127.0.0.1", 5432) as proxy:
        app = create_app(fault_settings(
            pg_url(pg_name, proxy.port), images={"embedded_workers": 0},
            chat={"providers": {"openai": {"read_timeout": 1}}}))
        with ThreadedServer(app) as server, httpx.Client(base_url=server.url, timeout=30,
                                                         headers=customer.headers) as http, \
                ThreadPoolExecutor(1) as pool:
            asked = len(upstream.requests)
            sent = pool.submit(http.post, CHAT, json=_chat_request(CHAT, "wait [hang]"))
            deadline = time.monotonic() + 30
            while len(upstream.requests) == asked:  # held, and the upstream is asked
                assert time.monotonic() < deadline, "the upstream was never asked"
                time.sleep(0.02)
            proxy.cut()
            answer = sent.result()
            assert answer.status_code == 504, answer.text  # the upstream timed out
            assert _wait_direct(direct, _credit(direct, customer.account_id),
                                lambda r: r[0] == 1, "the hold")[1] > 0
            proxy.restore()
            assert _wait_direct(direct, _credit(direct, customer.account_id),
                                lambda r: r[0] == 0, "the hold to be released") == \
                (0, 0, CREDIT, 0)
            assert http.get("/api/balance/").json()["held"] == "0"
    with psycopg.connect(direct) as conn:
        assert conn.execute("SELECT status, cost FROM usage").fetchall() == [("error", 0)]
    run(assert_ledger_ok(direct))


# ---- `minitoolai worker` while the database is away ------------------------------------------

def test_a_worker_logs_the_outage_once_and_polls_less_while_it_lasts(pg_name, fault_settings,
                                                                     tmp_path):
    """A real `minitoolai worker` process (polling every 0.05 s) whose network to PostgreSQL
    is cut for 3 s logged an ERROR with a traceback at every poll (60 here, ~200 in a soak's
    short outage). Now: one WARNING when the database goes away, one INFO when it is back,
    no ERROR, and the polls meanwhile back off to AWAY_POLL_MAX apart."""
    from tests.images.test_worker_crash import start_worker, stop_all, wait_for

    log = tmp_path / "worker.log"
    with TcpProxy("127.0.0.1", 5432) as proxy:
        settings = fault_settings(pg_url(pg_name, proxy.port))
        process = start_worker(settings, "http://127.0.0.1:9", log,
                               poll_interval_seconds=0.05)
        try:
            wait_for(lambda: "1 loop(s) serving" in log.read_text(), what="the worker")
            proxy.cut()
            wait_for(lambda: "the database is unavailable" in log.read_text(),
                     what="the worker to see the outage")
            time.sleep(3)  # an outage of some length (60 polls at the usual interval)
            proxy.restore()
            wait_for(lambda: "the database is reachable again" in log.read_text(),
                     what="the worker to see the database back")
        finally:
            stop_all([process])
    lines = log.read_text().splitlines()
    assert not [line for line in lines if "ERROR" in line or "Traceback" in line], lines
    assert [line for line in lines if "WARNING" in line] == \
        [line for line in lines if "the database is unavailable" in line]
    assert len([line for line in lines if "the database is unavailable" in line]) == 1
    assert len([line for line in lines if "reachable again" in line]) == 1
