"""x-request-id on every response, equal to the usage row's request id when billed."""

from __future__ import annotations

import re
import time

import requests

from minitoolai.observability.exchange import new_request_id
from tests.conftest import assert_ledger_ok, run
from tests.observability.conftest import CHAT, OPENAI_CHAT, usage_rows

REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")


def _chat(server, customer, *, stream, path=CHAT, text="hello there"):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}],
            "stream": stream}
    return requests.post(server.url + path, headers=customer.headers, json=body, timeout=10)


def test_chat_request_id_is_the_usage_rows(server, customer, database_url):
    ids = []
    for path, stream in ((CHAT, True), (CHAT, False), (OPENAI_CHAT, True),
                         (OPENAI_CHAT, False)):
        response = _chat(server, customer, stream=stream, path=path)
        assert response.status_code == 200, response.text
        rid = response.headers["x-request-id"]
        assert REQUEST_ID.match(rid), rid
        if stream:
            assert response.text.rstrip().endswith("data: [DONE]")
        ids.append(rid)
    rows = usage_rows(database_url, customer.account_id)
    assert [row.request_id for row in rows] == ids
    assert len(set(ids)) == 4
    # time-ordered: made one after another, their times (the first 12 digits) sort so
    assert [rid[4:16] for rid in ids] == sorted(rid[4:16] for rid in ids)
    run(assert_ledger_ok(database_url))


def test_refused_and_failed_chats_have_an_id(server, customer, database_url, upstream):
    unauthorised = requests.post(server.url + CHAT, json={"model": "gpt-4o-mini"}, timeout=10)
    assert unauthorised.status_code == 401
    assert unauthorised.json()["error"]["type"] == "authentication_error"
    assert REQUEST_ID.match(unauthorised.headers["x-request-id"])

    # an upstream failure: the hold is released under the request's id, nothing charged
    failed = _chat(server, customer, stream=False, text="[fail:500] hi")
    assert failed.status_code == 502
    assert failed.json()["error"]["type"] == "upstream_error"
    rows = usage_rows(database_url, customer.account_id, at_least=1)
    assert [(r.request_id, r.status, r.cost) for r in rows] == [
        (failed.headers["x-request-id"], "error", 0)]
    run(assert_ledger_ok(database_url))


def test_every_route_has_an_id(server):
    seen = set()
    for method, path, status in (("GET", "/no/such/route", 404), ("GET", "/health", 200),
                                 ("PUT", CHAT, 405), ("GET", "/v1/models", 401),
                                 ("GET", "/metrics", 200)):
        response = requests.request(method, server.url + path, timeout=10)
        assert response.status_code == status, (path, response.text)
        rid = response.headers.get("x-request-id")
        assert rid and REQUEST_ID.match(rid), (path, rid)  # one header (requests joins two)
        seen.add(rid)
    # outside the APIs an unknown address is the dashboard's HTML page, with the id in it
    not_found = requests.get(server.url + "/api/no/such/route", timeout=10)
    assert not_found.json()["error"]["code"] == "unknown_route"
    assert len(seen) == 5


def test_a_client_sent_id_is_not_taken(server, customer, database_url):
    """The usage row's id must stay unique: a client's x-request-id is ignored."""
    headers = {**customer.headers, "x-request-id": "mine"}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
            "stream": False}
    response = requests.post(server.url + CHAT, headers=headers, json=body, timeout=10)
    assert response.status_code == 200
    assert REQUEST_ID.match(response.headers["x-request-id"])
    assert response.headers["x-request-id"].count(",") == 0
    (row,) = usage_rows(database_url, customer.account_id)
    assert row.request_id == response.headers["x-request-id"]


def test_a_bug_outside_every_handler_still_answers_with_an_id(caplog):
    """The middleware's last resort: an exception before any response is a 500 envelope
    with its request id, and its traceback is logged once."""
    import asyncio
    import logging

    from minitoolai.config import Settings
    from minitoolai.observability.middleware import wrap

    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    app = wrap(broken, Settings())
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}
    with caplog.at_level(logging.INFO):
        asyncio.run(app(scope, receive, send))
    start, body = sent
    assert start["status"] == 500
    (rid,) = [v.decode() for k, v in start["headers"] if k == b"x-request-id"]
    assert REQUEST_ID.match(rid)
    assert body["body"] == (b'{"error":{"message":"internal server error","type":"server_error",'
                            b'"param":null,"code":null}}')
    (bug,) = [r for r in caplog.records if r.exc_info]
    assert "boom" in str(bug.exc_info[1])
    (access,) = [r for r in caplog.records if r.name == "minitoolai.access"]
    assert access.access["status"] == 500 and access.access["error"] == "server_error"


def test_ids_are_time_ordered_and_unique():
    """The first 12 hex digits are the time in ms, so ids made later sort later and the
    unique indexes keyed by them grow at their right edge; the 80 random bits after them
    keep ids made in the same millisecond (by any process) apart."""
    before = time.time_ns() // 1_000_000
    made = []
    for _ in range(5):
        made.append(new_request_id())
        time.sleep(0.002)
    after = time.time_ns() // 1_000_000
    assert all(REQUEST_ID.match(rid) for rid in made), made
    assert made == sorted(made)
    stamps = [int(rid[4:16], 16) for rid in made]
    assert before <= stamps[0] and stamps[-1] <= after
    assert stamps == sorted(set(stamps))  # 2 ms apart: each its own millisecond
    burst = [new_request_id() for _ in range(20_000)]  # most share their millisecond
    assert len(set(burst)) == len(burst)
    assert len({rid[16:] for rid in burst}) == len(burst)  # told apart by the random part
