"""Schemathesis against the OpenAPI document the server publishes (issue 15): every operation
in `/api/openapi.json` (chat, responses, images, speech, jobs, files, models, balance,
health) gets cases generated from its schema, conforming ones (some are served and charged)
and non-conforming ones (wrong types, missing fields, out-of-range values), sent with a
funded customer's key to a live server on loopback, on SQLite and PostgreSQL. A fixed seed
and a per-operation example budget keep CI fast (MTAI_FUZZ_EXAMPLES raises it to fuzz longer).
Properties: no response is a 5xx, only served requests are charged (charged usage rows =
billed 2xx answers), no hold is left open, the balance is the credit less the charges, and
the ledger verifies."""

from __future__ import annotations

import collections
import os
import time

import requests
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from minitoolai.app import create_app
from minitoolai.catalog import SEED_IMAGE_MODELS
from tests.conftest import assert_ledger_ok, make_customer, run
from tests.fakes.openai_upstream import FakeOpenAI
from tests.servers import ThreadedServer, free_port
from tests.speech.helpers import account_state, usage_rows

CREDIT = 10**13
# examples per operation and generation mode; a test-harness knob, not server configuration
EXAMPLES = int(os.environ.get("MTAI_FUZZ_EXAMPLES", "100"))
SEED = 15
# operations that charge one usage row per 2xx answer (images: one per generated image)
BILLED = {"/api/chat-completions/", "/v1/chat/completions", "/v1/responses",
          "/api/texttoimage/", "/api/texttospeech/", "/v1/audio/speech"}


def billed_count(path: str, response: requests.Response) -> int:
    if response.status_code >= 300:
        return 0
    if path == "/v1/images/generations":
        return len(response.json()["data"])
    return 1 if path in BILLED else 0


def has_inputs(operation) -> bool:
    return bool(list(operation.body)) or any(
        parameter.name != "Authorization" for parameter in operation.iter_parameters())


def test_schemathesis_never_5xx_and_refusals_cost_nothing(make_settings, database_url):
    customer = run(make_customer(database_url, CREDIT))
    statuses: collections.Counter = collections.Counter()
    served = 0
    started = time.monotonic()
    with FakeOpenAI(api_key="sk-upstream") as upstream:
        port = free_port()
        app_settings = make_settings(
            public_url=f"http://127.0.0.1:{port}", rate_limit_per_minute="0",
            chat={"providers": {"openai": {"base_url": upstream.base_url,
                                           "api_key": "sk-upstream", "read_timeout": 2}},
                  "builtin_local_model": False},
            # every image model the document lists is served (an unconfigured one is a 503)
            images={"models": {name: {"backend": "instant"} for name in SEED_IMAGE_MODELS},
                    "poll_interval_seconds": 0.05})
        with ThreadedServer(create_app(app_settings), port=port) as live, \
                requests.Session() as http:
            schema = schemathesis.openapi.from_url(live.url + "/api/openapi.json")
            auth = {"Authorization": f"Bearer {customer.key}"}
            operations = [result.ok() for result in schema.get_all_operations()]
            assert len(operations) >= 15, [op.path for op in operations]

            def fuzz(operation, mode: GenerationMode) -> None:
                @seed(SEED)
                @settings(max_examples=EXAMPLES, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=mode, headers=auth))
                def case_(case):
                    nonlocal served
                    response = case.call(base_url=live.url, session=http, timeout=30)
                    statuses[(operation.method.upper(), operation.path, mode.value,
                              response.status_code)] += 1
                    assert response.status_code < 500, (
                        operation.method, operation.path, mode, case.path_parameters,
                        case.query, case.headers, case.body, response.text[:500])
                    served += billed_count(operation.path, response)

                case_()

            for operation in operations:
                fuzz(operation, GenerationMode.POSITIVE)
                # negative cases need an input to break (the key is fixed)
                if has_inputs(operation):
                    try:
                        fuzz(operation, GenerationMode.NEGATIVE)
                    except Unsatisfiable:
                        # a lone string path parameter has no non-conforming value
                        assert not list(operation.body), operation.path

            # wait for the image jobs to finish and every hold to settle
            deadline = time.monotonic() + 60
            while run(account_state(database_url, customer.account_id))[1] and \
                    time.monotonic() < deadline:
                time.sleep(0.1)

    balance, held = run(account_state(database_url, customer.account_id))
    charged = [r for r in run(usage_rows(database_url, customer.account_id)) if r.cost > 0]
    total = sum(statuses.values())
    by_status = collections.Counter()
    for (*_, status), count in statuses.items():
        by_status[status] += count
    print(f"\nschemathesis: {total} requests in {time.monotonic() - started:.1f} s, "
          f"{served} served and charged, statuses {dict(sorted(by_status.items()))}")
    for key, count in sorted(statuses.items()):
        print("  ", *key, count)
    # every operation of the document was called
    assert {(op.method.upper(), op.path) for op in operations} == {k[:2] for k in statuses}
    assert held == 0 and served > 0  # some generated requests were valid and served
    assert len(charged) == served, (len(charged), served)
    assert balance == CREDIT - sum(r.cost for r in charged)
    run(assert_ledger_ok(database_url))
