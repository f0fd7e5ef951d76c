"""/metrics: the counters a chat, an error and an upstream failure move, the database
gauges, and who may read it."""

from __future__ import annotations

import pytest
import requests

from minitoolai.app import create_app
from tests.chat.test_request_validation import hold_of
from tests.conftest import assert_ledger_ok, make_customer, run
from tests.fakes.outage import DatabaseOutage
from tests.observability.conftest import CHAT, OPENAI_CHAT, sample, scrape, usage_rows
from tests.servers import ThreadedServer

MODEL = "gpt-4o-mini"
ROUTE = CHAT.rstrip("/")


def _chat(url, customer, text, stream=False, path=CHAT):
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": stream}
    return requests.post(url + path, headers=customer.headers, json=body, timeout=10)


def test_counters_after_chats_and_errors(server, customer, database_url):
    before = scrape(server.url)
    assert _chat(server.url, customer, "one two three", stream=True).status_code == 200
    assert _chat(server.url, customer, "four", path=OPENAI_CHAT).status_code == 200
    assert _chat(server.url, customer, "[fail:500] five").status_code == 502
    assert requests.post(server.url + CHAT, json={}, timeout=10).status_code == 401
    assert requests.get(server.url + "/nowhere", timeout=10).status_code == 404
    rows = usage_rows(database_url, customer.account_id, at_least=3)
    after = scrape(server.url)

    def delta(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    charged = [r for r in rows if r.status == "ok"]
    assert len(charged) == 2 and len(rows) == 3
    assert delta("minitoolai_http_requests_total", route=ROUTE, method="POST", status="200",
                 model=MODEL) == 1
    assert delta("minitoolai_http_requests_total", route="/v1/chat/completions",
                 method="POST", status="200", model=MODEL) == 1
    assert delta("minitoolai_http_requests_total", route=ROUTE, method="POST", status="502",
                 model=MODEL) == 1
    assert delta("minitoolai_http_requests_total", route=ROUTE, method="POST", status="401",
                 model="") == 1
    assert delta("minitoolai_http_requests_total", route="unmatched", method="GET",
                 status="404", model="") == 1
    assert delta("minitoolai_http_request_duration_seconds_count", route=ROUTE,
                 model=MODEL) == 2
    assert delta("minitoolai_http_errors_total", route=ROUTE, model=MODEL,
                 type="upstream_error") == 1
    assert delta("minitoolai_http_errors_total", route=ROUTE, model="",
                 type="authentication_error") == 1
    assert delta("minitoolai_http_errors_total", route="unmatched", model="",
                 type="not_found_error") == 1
    # money and tokens: exactly what the usage rows say
    assert delta("minitoolai_charged_nanodollars_total", model=MODEL,
                 endpoint="/api/chat-completions") + delta(
        "minitoolai_charged_nanodollars_total", model=MODEL,
        endpoint="/v1/chat/completions") == sum(r.cost for r in rows) > 0
    assert delta("minitoolai_tokens_total", model=MODEL, kind="prompt") == sum(
        r.prompt_tokens for r in charged)
    assert delta("minitoolai_tokens_total", model=MODEL, kind="completion") == sum(
        r.completion_tokens for r in charged)
    # upstream: three calls timed, one failure
    assert delta("minitoolai_upstream_duration_seconds_count", provider="openai") == 3
    assert delta("minitoolai_upstream_errors_total", provider="openai",
                 type="upstream_error") == 1
    assert sample(after, "minitoolai_holds_open") == 0
    assert sample(after, "minitoolai_holds_nanodollars") == 0
    assert sample(after, "minitoolai_image_jobs", state="queued") == 0
    run(assert_ledger_ok(database_url))


def test_token_and_switch(chat_settings):
    settings = chat_settings(metrics_token="scrape-secret")
    with ThreadedServer(create_app(settings)) as live:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = requests.get(live.url + "/metrics", headers=headers, timeout=10)
            assert refused.status_code == 401
            assert refused.json()["error"]["type"] == "authentication_error"
            assert refused.headers["www-authenticate"] == "Bearer"
        assert "minitoolai_http_requests_total" in str(scrape(live.url, "scrape-secret"))
    with ThreadedServer(create_app(chat_settings(metrics_enabled="false"))) as live:
        off = requests.get(live.url + "/metrics", timeout=10)
        assert off.status_code == 404
        assert off.json()["error"]["code"] == "unknown_route"


def _total(samples: dict, name: str, **labels) -> float:
    """The sum of a metric's samples whose labels include these."""
    wanted = set(labels.items())
    return sum(value for (sample_name, sample_labels), value in samples.items()
               if sample_name == name and wanted <= set(sample_labels))


def test_each_error_class_is_counted_and_logged(chat_settings, database_url, caplog):
    """402, 413, 415, 429 and 503: each one an access line with its status and error type,
    and its counters moved; none of them charged."""
    import logging

    caplog.set_level(logging.INFO, logger="minitoolai.access")
    settings = chat_settings(rate_limit_per_minute=1, rate_limit_burst=2, max_body_bytes=4096)
    poor = run(make_customer(database_url, 1_000))  # a thousand nanodollars
    busy = run(make_customer(database_url, 10**9))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    with ThreadedServer(create_app(settings)) as live:
        before = scrape(live.url)
        answers = [
            (402, "insufficient_quota", requests.post(
                live.url + CHAT, headers=poor.headers, json=body, timeout=10)),
            (413, "invalid_request_error", requests.post(
                live.url + CHAT, headers={**busy.headers, "Content-Type": "application/json"},
                data=b'{"pad": "' + b"x" * 8192 + b'"}', timeout=10)),
            (415, "invalid_request_error", requests.post(
                live.url + CHAT, headers={**busy.headers, "Content-Type": "text/plain"},
                data=b"{}", timeout=10)),
            (503, "service_unavailable", requests.post(
                live.url + "/api/texttoimage/", headers=poor.headers,
                json={"model": "realvision", "prompt": "a cat"}, timeout=10)),
        ]
        # the busy key has used its burst of 2 (413, 415): the next one waits
        answers.append((429, "rate_limit_error", requests.post(
            live.url + CHAT, headers=busy.headers, json=body, timeout=10)))
        after = scrape(live.url)
    for status, error_type, response in answers:
        assert response.status_code == status, (status, response.text)
        rid = response.headers["x-request-id"]
        (record,) = [r for r in caplog.records if r.name == "minitoolai.access"
                     and getattr(r, "request_id", None) == rid]
        assert (record.access["status"], record.access["error"]) == (status, error_type)
        assert record.access["cost_nano"] is None
    for status in (402, 413, 415, 429):
        assert _total(after, "minitoolai_http_requests_total", route=ROUTE,
                      status=str(status)) - _total(before, "minitoolai_http_requests_total",
                                                   route=ROUTE, status=str(status)) == 1
    assert _total(after, "minitoolai_http_requests_total", route="/api/texttoimage",
                  status="503") - _total(before, "minitoolai_http_requests_total",
                                         route="/api/texttoimage", status="503") == 1
    for error_type, count in (("insufficient_quota", 1), ("invalid_request_error", 2),
                              ("rate_limit_error", 1), ("service_unavailable", 1)):
        assert _total(after, "minitoolai_http_errors_total", type=error_type) - _total(
            before, "minitoolai_http_errors_total", type=error_type) == count, error_type
    assert usage_rows(database_url, poor.account_id) == []
    assert usage_rows(database_url, busy.account_id) == []
    run(assert_ledger_ok(database_url))


def test_a_charge_capped_at_its_hold_is_counted_and_logged(server, customer, database_url,
                                                           caplog):
    """An upstream counting past the request's bound (5,000 hidden reasoning tokens against
    max_completion_tokens 5) is charged the hold, not more: the operator sees it."""
    before = sample(scrape(server.url), "minitoolai_charges_capped_total", model=MODEL)
    messages = [{"role": "user", "content": "hi [reasoning:5000]"}]
    answer = requests.post(server.url + OPENAI_CHAT, headers=customer.headers, json={
        "model": MODEL, "messages": messages, "max_completion_tokens": 5}, timeout=10)
    assert answer.status_code == 200, answer.text
    usage = answer.json()["usage"]
    assert usage["completion_tokens"] > 5000
    # charged the hold, to the nanodollar, and told so
    hold = hold_of(messages, {}, 5)
    assert round(usage["cost"] * 10**9) == hold
    (row,) = usage_rows(database_url, customer.account_id, at_least=1)
    assert row.cost == hold and row.completion_tokens == usage["completion_tokens"]
    assert sample(scrape(server.url), "minitoolai_charges_capped_total",
                  model=MODEL) == before + 1
    assert any("over its hold" in r.getMessage() and r.levelname == "ERROR"
               for r in caplog.records)
    run(assert_ledger_ok(database_url))


def test_metrics_answer_while_the_database_is_away(chat_settings, customer, database_url):
    """A database outage is when an operator needs /metrics most: the scrape answers (the
    gauges read from the database keep their last values), it is not a 503."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite's outage (a held write lock) leaves reads working")
    with DatabaseOutage(database_url) as outage, ThreadedServer(
            create_app(chat_settings(database_url=outage.url))) as live:
        assert _chat(live.url, customer, "hi").status_code == 200
        before = sample(scrape(live.url), "minitoolai_http_requests_total", route=ROUTE,
                        method="POST", status="200", model=MODEL)
        assert before >= 1
        outage.begin()
        refused = _chat(live.url, customer, "hi")
        assert refused.status_code == 503, refused.text
        during = scrape(live.url)  # asserts a 200
        assert sample(during, "minitoolai_http_requests_total", route=ROUTE, method="POST",
                      status="503", model=MODEL) >= 1
        assert ("minitoolai_holds_open", ()) in during
        outage.end()
