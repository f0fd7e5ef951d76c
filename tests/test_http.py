"""Hostile input at the edge of the JSON APIs (issue 15): Content-Type, size, nesting depth,
NUL and lone surrogates, strictly parsed ids, typed forwarded fields, unknown fields. Every
refusal is a 4xx in the route's own envelope, and none of them holds or charges a nanodollar.
"""

from __future__ import annotations

import json

import requests

from minitoolai.app import create_app
from minitoolai.inputs import MAX_JSON_DEPTH
from tests.conftest import assert_ledger_ok, make_customer, run
from tests.fakes.openai_upstream import FakeOpenAI
from tests.servers import ThreadedServer, free_port
from tests.speech.helpers import account_state, usage_rows

CREDIT = 10**9
HELLO = [{"role": "user", "content": "hello"}]
CHAT = {"model": "gpt-4o", "messages": HELLO}
IMAGE = {"model": "realvision", "prompt": "a lighthouse", "width": 256, "height": 256}
SPEECH = {"model": "espeak-ng", "input": "Hello.", "voice": "alloy", "response_format": "wav"}


def openai_error(response, status: int, code: str | None = None, param: str | None = None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    if code:
        assert body["error"]["code"] == code, body
    if param:
        assert body["error"]["param"] == param, body
    return body["error"]


def seed_image_error(response, status: int, words: str):
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["status"], body["jobid"], body["signature"]) == ("error", None, None), body
    assert words in body["message"], body
    return body


def nested(depth: int) -> str:
    """`depth` levels of arrays as JSON text (the json module cannot write 1,000 levels)."""
    return "[" * (depth - 1) + '"deep"' + "]" * (depth - 1)


def _server(make_settings, upstream: FakeOpenAI):
    port = free_port()
    settings = make_settings(
        public_url=f"http://127.0.0.1:{port}",
        chat={"providers": {"openai": {"base_url": upstream.base_url, "api_key": "sk-upstream",
                                       "read_timeout": 2}}, "builtin_local_model": False},
        images={"models": {"realvision": {"backend": "instant"}}})
    return ThreadedServer(create_app(settings, workers=False), port=port)


def test_json_apis_refuse_hostile_bodies_without_charging(make_settings, database_url):
    customer = run(make_customer(database_url, CREDIT))
    key = {"Authorization": f"Bearer {customer.key}"}
    as_json = {**key, "Content-Type": "application/json"}
    with FakeOpenAI(api_key="sk-upstream") as upstream, _server(make_settings, upstream) as live:
        url = live.url

        # 415 without Content-Type: application/json, in each route's envelope
        for path, body in (("/api/chat-completions/", CHAT), ("/v1/chat/completions", CHAT),
                           ("/v1/audio/speech", SPEECH), ("/api/texttospeech/", SPEECH)):
            for headers in ({**key, "Content-Type": "text/plain"},
                            {**key, "Content-Type": "application/x-www-form-urlencoded"},
                            {**key, "Content-Type": "application/xml"}, key):
                openai_error(requests.post(url + path, data=json.dumps(body), headers=headers),
                             415, code="unsupported_media_type")
        seed_image_error(requests.post(url + "/api/texttoimage/", data=json.dumps(IMAGE),
                                       headers={**key, "Content-Type": "text/plain"}),
                         415, "Content-Type")
        seed_image_error(requests.post(url + "/api/texttoimage/jobs/",
                                       data='{"jobid": 1, "signature": "x"}',
                                       headers={"Content-Type": "text/plain"}),
                         415, "Content-Type")
        # application/json with a charset is JSON
        ok = requests.post(url + "/v1/chat/completions", data=json.dumps(CHAT),
                           headers={**key, "Content-Type": "application/json; charset=utf-8"})
        assert ok.status_code == 200, ok.text

        # nesting: 256..1024 levels inside a message or a forwarded field is a 400, not a 500
        for depth in (MAX_JSON_DEPTH + 1, 256, 300, 1000):
            deep_message = ('{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi",'
                            ' "extra": ' + nested(depth) + '}]}')
            openai_error(requests.post(url + "/api/chat-completions/", data=deep_message,
                                       headers=as_json), 400, code="too_deeply_nested")
            deep_field = ('{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],'
                          ' "response_format": {"type": "json_schema", "json_schema":'
                          ' {"name": "x", "schema": ' + nested(depth) + '}}}')
            openai_error(requests.post(url + "/v1/chat/completions", data=deep_field,
                                       headers=as_json), 400, code="too_deeply_nested")
        # just inside the bound is fine (the fake upstream answers)
        inside = ('{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],'
                  ' "response_format": {"type": "json_schema", "json_schema":'
                  ' {"name": "x", "schema": {"a": ' + nested(50) + '}}}}')
        assert requests.post(url + "/v1/chat/completions", data=inside,
                             headers=as_json).status_code == 200

        # NUL and lone surrogates in any string: 400 on every database
        nul_prompt = requests.post(url + "/api/texttoimage/", headers=as_json,
                                   data=json.dumps({**IMAGE, "prompt": "a\u0000b"}))
        seed_image_error(nul_prompt, 400, "NUL")
        surrogate = b'{"model": "realvision", "prompt": "a\\ud800b"}'
        seed_image_error(requests.post(url + "/api/texttoimage/", data=surrogate,
                                       headers=as_json), 400, "surrogate")
        openai_error(requests.post(url + "/api/chat-completions/", headers=as_json, json={
            "model": "gpt-4o", "messages": [{"role": "user", "content": "hi\u0000"}]}),
            400, code="invalid_string", param="messages[0].content")
        openai_error(requests.post(url + "/v1/audio/speech", headers=as_json,
                                   json={**SPEECH, "input": "he\u0000llo"}),
                     400, code="invalid_string", param="input")

        # the jobs endpoint (no key): ids parsed strictly
        for jobid in ("²", "1" * 5000, "١٢٣", 1e300, "-1"):
            seed_image_error(requests.post(url + "/api/texttoimage/jobs/", headers=as_json,
                                           json={"jobid": jobid, "signature": "x"}),
                             400, "jobid")
        seed_image_error(requests.post(url + "/api/texttoimage/jobs/", headers=as_json,
                                       json={"jobid": "9" * 20, "signature": "x"}),
                         404, "no job")
        big = json.dumps({"jobid": 1, "signature": "s" * 20_000})
        seed_image_error(requests.post(url + "/api/texttoimage/jobs/", data=big,
                                       headers=as_json), 413, "limit")

        # forwarded chat fields are type-checked before the hold
        for field, value in (("top_p", "high"), ("top_p", 2), ("stop", [1]),
                             ("stop", ["a", "b", "c", "d", "e"]), ("seed", "42"),
                             ("seed", 2**70), ("user", {"id": 1}), ("user", "u" * 600),
                             ("response_format", "json"), ("response_format", {"type": "x"}),
                             ("logit_bias", {"abc": 1}), ("logit_bias", {"1": 500}),
                             ("metadata", {"k": 1}), ("store", "yes"),
                             ("parallel_tool_calls", 1), ("verbosity", "loud"),
                             ("presence_penalty", True), ("frequency_penalty", -3)):
            error = openai_error(requests.post(url + "/v1/chat/completions", headers=as_json,
                                               json={**CHAT, field: value}), 400)
            # a wrong type, or a value of the right type out of its range; `param` names the
            # field or the part of it that is wrong (response_format.type)
            assert error["code"] in ("invalid_type", "invalid_value"), (field, error)
            assert error["param"].split(".")[0] == field, (field, error)

        # speech: unknown fields are refused on both routes
        for path in ("/v1/audio/speech", "/api/texttospeech/"):
            openai_error(requests.post(url + path, headers=as_json,
                                       json={**SPEECH, "pitch": 3}),
                         400, code="unknown_field", param="pitch")

        # only the two chat requests that were served reached the upstream
        assert len(upstream.requests) == 2

    # ... and only they were charged: two usage rows, the balance down by exactly their cost
    balance, held = run(account_state(database_url, customer.account_id))
    rows = run(usage_rows(database_url, customer.account_id))
    assert len(rows) == 2 and all(r.cost > 0 for r in rows)
    assert (balance, held) == (CREDIT - sum(r.cost for r in rows), 0)
    run(assert_ledger_ok(database_url))


def test_a_body_that_arrived_with_its_head_is_read_without_a_timer():
    """http.read_body skips its timer when uvicorn has the whole body already (it cannot
    wait): this holds uvicorn's request cycle, on both of its parsers, to the attributes
    http._arrived_whole reads. A body still on its way is read with the timer."""
    import socket
    import time

    from starlette.requests import Request

    from minitoolai.http import _arrived_whole, read_body

    seen: list[tuple[bool, bytes]] = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        whole = _arrived_whole(receive)
        request = Request(scope, receive)
        request.scope["app"] = type("App", (), {"runtime": runtime})()
        body = await read_body(request, 1000)
        assert await request.body() == body  # read again: the same, at once
        seen.append((whole, body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    runtime = type("Runtime", (), {"settings": type("S", (), {"body_timeout_seconds": 5})})()
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nConnection: close\r\n\r\n"
    for parser in ("httptools", "h11"):
        seen.clear()
        with ThreadedServer(app, http=parser) as server:
            for pause in (0.0, 0.3):
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                    if pause:
                        sock.sendall(head)
                        time.sleep(pause)
                        sock.sendall(b"hello there")
                    else:
                        sock.sendall(head + b"hello there")
                    while sock.recv(65536):
                        pass
        assert seen == [(True, b"hello there"), (False, b"hello there")], (parser, seen)
