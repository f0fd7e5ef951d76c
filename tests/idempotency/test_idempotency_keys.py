"""`Idempotency-Key` on the billed POSTs: the same key and body answer the first result
again, 409 while the first still runs, 422 for another body; never a second charge."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import requests
from sqlalchemy import func, select

from minitoolai.app import create_app
from minitoolai.db.engine import Database
from minitoolai.db.tables import ledger_entries, usage
from tests.conftest import assert_ledger_ok, make_customer
from tests.servers import ThreadedServer

CREDIT = 10**9
SLOW = {"model": "gpt-4o-mini", "max_completion_tokens": 100,
        "messages": [{"role": "user", "content": "[slow] [chunks:20]"}]}


async def counts(database_url: str, account_id: int) -> tuple[int, int, int]:
    """(charge entries, usage rows, total charged) of the account."""
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            charges, charged = (await conn.execute(
                select(func.count(), func.coalesce(func.sum(ledger_entries.c.amount), 0))
                .where(ledger_entries.c.account_id == account_id,
                       ledger_entries.c.kind == "charge"))).one()
            rows = (await conn.execute(select(func.count()).select_from(usage).where(
                usage.c.account_id == account_id))).scalar_one()
    finally:
        await db.dispose()
    return charges, rows, -int(charged)


async def usage_ids(database_url: str, account_id: int) -> set[str]:
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            return set((await conn.execute(select(usage.c.request_id).where(
                usage.c.account_id == account_id))).scalars())
    finally:
        await db.dispose()


def envelope(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param",
                                                             "code"}, body
    return body["error"]


async def test_twenty_concurrent_sends_of_one_key_charge_once(chat_settings, database_url):
    customer = await make_customer(database_url, CREDIT)
    headers = {**customer.headers, "Idempotency-Key": "order-42"}
    with ThreadedServer(create_app(chat_settings(rate_limit_per_minute=0))) as server:
        go = threading.Barrier(20)

        def send(_):
            go.wait(10)
            return requests.post(server.url + "/api/chat-completions/", headers=headers,
                                 json=SLOW, timeout=60)

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(send, range(20)))
        ok = [a for a in answers if a.status_code == 200]
        busy = [a for a in answers if a.status_code == 409]
        assert len(ok) + len(busy) == 20 and ok, [a.status_code for a in answers]
        for answer in busy:
            assert envelope(answer) == {
                "message": "a request with this Idempotency-Key is still being processed;"
                           " retry once it has finished",
                "type": "idempotency_error", "param": None,
                "code": "idempotency_key_in_use"}
            assert answer.headers["retry-after"] == "1"
        first = ok[0].content
        assert b'"cost"' in first and first.endswith(b"data: [DONE]\n\n")
        assert all(a.content == first for a in ok)
        # a retry after it finished: the same stream, replayed, nothing charged
        again = requests.post(server.url + "/api/chat-completions/", headers=headers,
                              json=SLOW, timeout=60)
        assert again.status_code == 200 and again.content == first
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["content-type"].startswith("text/event-stream")
        # the same key with another body is refused
        other = requests.post(server.url + "/api/chat-completions/", headers=headers,
                              json={**SLOW, "max_completion_tokens": 99}, timeout=60)
        assert other.status_code == 422
        assert envelope(other)["code"] == "idempotency_key_reused"
        # key order and spacing are not a different body
        reordered = requests.post(server.url + "/api/chat-completions/", headers={
            **headers, "Content-Type": "application/json"},
            data=b'{"messages": [{"content": "[slow] [chunks:20]", "role": "user"}],'
                 b' "max_completion_tokens": 100, "model": "gpt-4o-mini"}', timeout=60)
        assert reordered.status_code == 200 and reordered.content == first
    charges, rows, charged = await counts(database_url, customer.account_id)
    assert (charges, rows) == (1, 1) and charged > 0
    await assert_ledger_ok(database_url)


async def test_sdk_retry_with_a_key_returns_the_first_completion(chat_settings, database_url):
    customer = await make_customer(database_url, CREDIT)
    with ThreadedServer(create_app(chat_settings())) as server:
        sdk = openai.OpenAI(api_key=customer.key, base_url=server.url + "/v1", max_retries=0)

        def ask():
            return sdk.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}],
                extra_headers={"Idempotency-Key": "sdk-1"})

        first, second = ask(), ask()
        assert first.parse().id == second.parse().id
        assert first.parse().usage.model_dump() == second.parse().usage.model_dump()
        assert second.headers["idempotent-replayed"] == "true"
        # the replay has its own request id and names the first one, whose usage row it is
        assert second.headers["original-request"] == first.headers["x-request-id"]
        assert second.headers["x-request-id"] != first.headers["x-request-id"]
        assert "original-request" not in first.headers
        # no key: an ordinary second request, charged again
        sdk.chat.completions.create(model="gpt-4o-mini",
                                    messages=[{"role": "user", "content": "hello there"}])
    charges, rows, charged = await counts(database_url, customer.account_id)
    assert await usage_ids(database_url, customer.account_id) >= {first.headers["x-request-id"]}
    cost = round(first.parse().usage.model_extra["cost"] * 10**9)
    assert (charges, rows, charged) == (2, 2, 2 * cost)
    await assert_ledger_ok(database_url)


async def test_images_and_speech_keys(make_settings, database_url):
    customer = await make_customer(database_url, CREDIT)
    settings = make_settings(images={"models": {"realvision": {"backend": "instant"}},
                                     "poll_interval_seconds": 0.05})
    with ThreadedServer(create_app(settings)) as server:
        def post(path, key, body):
            return requests.post(server.url + path, json=body, timeout=60, headers={
                **customer.headers, "Idempotency-Key": key})

        image = {"model": "realvision", "prompt": "a harbour", "width": 256, "height": 256}
        tickets = [post("/api/texttoimage/", "img-1", image) for _ in range(2)]
        assert [t.status_code for t in tickets] == [200, 200]
        assert tickets[0].json() == tickets[1].json()
        reused = post("/api/texttoimage/", "img-1", {**image, "prompt": "a castle"})
        assert reused.status_code == 422
        assert reused.json() == {"status": "error", "jobid": None, "signature": None,
                                 "code": "idempotency_key_reused",
                                 "message": "this Idempotency-Key was already used with"
                                            " another request (a different endpoint or"
                                            " body); use a new key for a new request"}
        v1 = {"model": "realvision", "prompt": "a boat", "size": "256x256",
              "response_format": "b64_json"}
        generated = [post("/v1/images/generations", "img-2", v1) for _ in range(2)]
        assert generated[0].json() == generated[1].json()
        speech = {"model": "espeak-ng", "input": "Hello there.", "voice": "alloy",
                  "response_format": "mp3"}
        spoken = [post("/v1/audio/speech", "tts-1", speech) for _ in range(2)]
        assert [s.status_code for s in spoken] == [200, 200]
        assert spoken[0].content == spoken[1].content and len(spoken[0].content) > 1000
        assert spoken[1].headers["x-cost-usd"] == spoken[0].headers["x-cost-usd"]
        # a key is the account's: the same key on another endpoint is another request
        assert post("/v1/audio/speech", "img-1", speech).status_code == 422
        # a refused request keeps nothing: fixed, the same key runs
        refused = post("/v1/audio/speech", "tts-2", {**speech, "voice": "robot"})
        assert refused.status_code == 400
        assert post("/v1/audio/speech", "tts-2", speech).status_code == 200
    charges, rows, charged = await counts(database_url, customer.account_id)
    # two images (one per key) and two speeches (tts-1 once, tts-2 once)
    assert (charges, rows) == (4, 4)
    assert charged == 2 * 1_500_000 + 2 * len("Hello there.") * 1_000
    await assert_ledger_ok(database_url)


async def test_a_response_over_the_replay_limit_is_refused_not_run_again(chat_settings,
                                                                         database_url):
    """The stored copy is bounded: a stream larger than `idempotency_max_replay_bytes` is
    sent whole but not kept, and its retry is a 409, never a second run and charge."""
    customer = await make_customer(database_url, CREDIT)
    settings = chat_settings(rate_limit_per_minute=0, idempotency_max_replay_bytes=1024)
    with ThreadedServer(create_app(settings)) as server:
        def post(key, body):
            return requests.post(server.url + "/api/chat-completions/", json=body, timeout=60,
                                 headers={**customer.headers, "Idempotency-Key": key})

        first = post("big-1", SLOW)
        assert first.status_code == 200 and len(first.content) > 1024
        assert first.content.endswith(b"data: [DONE]\n\n")
        again = post("big-1", SLOW)
        assert again.status_code == 409
        error = envelope(again)
        assert (error["type"], error["code"]) == ("idempotency_error",
                                                  "idempotency_result_too_large")
        assert "charged once" in error["message"] and "1024 bytes" in error["message"]
        # a small answer under the same limit is still replayed
        small = {**SLOW, "stream": False, "max_completion_tokens": 5,
                 "messages": [{"role": "user", "content": "hi"}]}
        kept = [post("small-1", small) for _ in range(2)]
        assert [k.status_code for k in kept] == [200, 200] and len(kept[0].content) <= 1024
        assert kept[1].headers["idempotent-replayed"] == "true"
        assert kept[0].content == kept[1].content
    charges, rows, _ = await counts(database_url, customer.account_id)
    assert (charges, rows) == (2, 2)
    await assert_ledger_ok(database_url)
