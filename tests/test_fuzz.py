"""Property-based fuzzing of the JSON APIs' validation (issue 15), with a fixed seed and a
small budget: generated chat, image, speech and jobs requests (well-formed, half-formed and
hostile values: NUL, lone surrogates, huge numbers, deep nesting, wrong types, unknown fields,
wrong Content-Type) against a live server on SQLite and PostgreSQL. Properties: no response
is a 5xx, and only served requests are charged (charged usage rows = 2xx answers), and the
ledger verifies."""

from __future__ import annotations

import json
import time

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minitoolai.app import create_app
from tests.conftest import assert_ledger_ok, make_customer, run
from tests.fakes.openai_upstream import FakeOpenAI
from tests.servers import ThreadedServer, free_port
from tests.speech.helpers import account_state, usage_rows

CREDIT = 10**12
EXAMPLES = 60  # per route: a few seconds each; raise locally to fuzz longer

HOSTILE_TEXT = st.sampled_from(["", " ", "\x00", "a\x00b", "\ud800", "\udfff", "²", "١٢٣",
                                "9" * 5000, "<|im_start|>system", "é" * 50, "x" * 20_000])
TEXT = st.one_of(st.text(max_size=40), HOSTILE_TEXT)
NUMBER = st.one_of(st.integers(min_value=-2**70, max_value=2**70),
                   st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0, 1, 2]))
SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)
VALUE = st.recursive(SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)), max_leaves=8)


def deep(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


DEEP = st.sampled_from([5, 63, 64, 65, 200]).map(deep)
ANY = st.one_of(VALUE, DEEP)


def fields(required: dict[str, st.SearchStrategy],
           optional: dict[str, st.SearchStrategy]) -> st.SearchStrategy[dict]:
    """Bodies of three kinds: valid ones (some get served and charged), valid ones with one
    field replaced by any value (or one unknown field added), and loose ones (any subset of
    the fields, any values, unknown fields)."""
    valid = st.fixed_dictionaries(required, optional=optional)
    mutated = valid.flatmap(lambda body: st.tuples(
        st.sampled_from(sorted(body) + ["unknown_field"]), ANY).map(
        lambda kv: {**body, kv[0]: kv[1]}))
    loose = st.fixed_dictionaries({}, optional={
        k: st.one_of(v, ANY) for k, v in {**required, **optional}.items()}).flatmap(
        lambda body: st.dictionaries(TEXT, ANY, max_size=2).map(
            lambda extra: {**extra, **body}))
    return st.one_of(valid, mutated, loose)


MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]),
                                 "content": st.one_of(st.just("hello"), TEXT)},
                                optional={"name": TEXT})
CHAT = fields({"model": st.sampled_from(["gpt-4o", "gpt-5", "gpt-4o-mini"]),
               "messages": st.lists(MESSAGE, min_size=1, max_size=3)},
              {"temperature": st.floats(0, 2), "max_completion_tokens": st.integers(1, 50),
               "stream": st.booleans(), "top_p": st.floats(0, 1), "stop": st.text(max_size=3),
               "seed": st.integers(0, 100), "response_format": st.just({"type": "text"}),
               "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5),
                                           max_size=2)})
IMAGE = fields({"model": st.just("realvision"), "prompt": st.text(min_size=1, max_size=30)},
               {"negativePrompt": st.text(max_size=20), "steps": st.integers(1, 8),
                "cfgScale": st.floats(1, 7), "width": st.sampled_from([256, 512]),
                "height": st.sampled_from([256, 1344]), "seed": st.integers(0, 2**32 - 1),
                "scheduler": st.sampled_from(["Euler a", "DPM++ SDE"])})
SPEECH = fields({"model": st.just("espeak-ng"), "input": st.just("Hello there."),
                 "voice": st.just("alloy")},
                {"response_format": st.sampled_from(["wav", "pcm"]),
                 "speed": st.floats(0.25, 4)})
OPENAI_IMAGE = fields({"prompt": st.text(min_size=1, max_size=30)},
                     {"model": st.just("realvision"), "n": st.integers(1, 2),
                      "size": st.sampled_from(["256x256", "512x256", "auto", "1x1"]),
                      "response_format": st.sampled_from(["url", "b64_json"]),
                      "steps": st.integers(1, 8), "seed": st.integers(0, 100)})
JOBS = fields({"jobid": st.one_of(st.integers(-1, 2**64), TEXT), "signature": TEXT}, {})
CONTENT_TYPES = st.sampled_from(["application/json"] * 6 + [
    "text/plain", "application/x-www-form-urlencoded", None, "application/json; charset=utf-8"])
ROUTES = {"/api/chat-completions/": CHAT, "/v1/chat/completions": CHAT,
          "/api/texttoimage/": IMAGE, "/api/texttoimage/jobs/": JOBS,
          "/v1/images/generations": OPENAI_IMAGE,
          "/v1/audio/speech": SPEECH, "/api/texttospeech/": SPEECH}


def encode(body) -> bytes:
    # ensure_ascii: lone surrogates travel as \\ud800 escapes, as a hostile client sends them
    return json.dumps(body, ensure_ascii=True).encode()


def test_fuzzed_requests_never_5xx_and_refusals_cost_nothing(make_settings, database_url):
    customer = run(make_customer(database_url, CREDIT))
    served = 0
    with FakeOpenAI(api_key="sk-upstream") as upstream:
        port = free_port()
        app_settings = make_settings(
            public_url=f"http://127.0.0.1:{port}", rate_limit_per_minute="0",
            chat={"providers": {"openai": {"base_url": upstream.base_url,
                                           "api_key": "sk-upstream", "read_timeout": 2}},
                  "builtin_local_model": False},
            images={"models": {"realvision": {"backend": "instant"}},
                    "poll_interval_seconds": 0.05})
        with ThreadedServer(create_app(app_settings), port=port) as live, \
                requests.Session() as http:
            def fuzz(path: str, strategy) -> None:
                @settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
                          database=None, suppress_health_check=list(HealthCheck))
                @given(body=strategy, content_type=CONTENT_TYPES)
                def case(body, content_type):
                    nonlocal served
                    headers = {"Authorization": f"Bearer {customer.key}"}
                    if content_type:
                        headers["Content-Type"] = content_type
                    response = http.post(live.url + path, data=encode(body), headers=headers,
                                         timeout=30)
                    assert response.status_code < 500, (path, body, response.text[:500])
                    if response.status_code < 300 and path == "/v1/images/generations":
                        served += len(response.json()["data"])  # one charge per image
                    elif response.status_code < 300 and path != "/api/texttoimage/jobs/":
                        served += 1

                case()

            for path, strategy in ROUTES.items():
                fuzz(path, strategy)

            # wait for the image jobs to finish and every hold to settle
            deadline = time.monotonic() + 60
            while run(account_state(database_url, customer.account_id))[1] and \
                    time.monotonic() < deadline:
                time.sleep(0.1)

    balance, held = run(account_state(database_url, customer.account_id))
    charged = [r for r in run(usage_rows(database_url, customer.account_id)) if r.cost > 0]
    assert held == 0 and served > 0  # some generated requests were valid and served
    assert len(charged) == served, (len(charged), served)
    print(f"fuzz: {served} requests served and charged")
    assert balance == CREDIT - sum(r.cost for r in charged)
    run(assert_ledger_ok(database_url))
