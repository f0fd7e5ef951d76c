"""An image job and a speech request: their x-request-id is their usage row's, their access
line says what they cost, and the metrics count them."""

from __future__ import annotations

import logging

import requests

from tests.conftest import assert_ledger_ok, run
from tests.images.conftest import PRICE, poll, serve, submit  # noqa: F401 (serve: fixture)
from tests.observability.conftest import sample, scrape, usage_rows


def _access(caplog, request_id):
    (record,) = [r for r in caplog.records if r.name == "minitoolai.access"
                 and getattr(r, "request_id", None) == request_id]
    return record.access


def test_image_job_and_speech(make_settings, serve, customer, database_url,  # noqa: F811
                              caplog):
    caplog.set_level(logging.INFO, logger="minitoolai.access")
    settings = make_settings(images={"models": {"realvision": {"backend": "instant"}},
                                     "poll_interval_seconds": 0.05})
    live = serve(settings)
    before = scrape(live.url)

    job = submit(live.url, customer.key)
    assert job.status_code == 200, job.text
    image_id = job.headers["x-request-id"]
    assert poll(live.url, job.json()["jobid"], job.json()["signature"])["status"] == "success"
    fields = _access(caplog, image_id)
    assert (fields["status"], fields["model"], fields["key_id"]) == (
        200, "realvision", customer.key_id)

    text = "Hello from the observability test."
    speech = requests.post(live.url + "/v1/audio/speech", headers=customer.headers,
                           json={"model": "espeak-ng", "input": text, "voice": "en"},
                           timeout=30)
    assert speech.status_code == 200, speech.text
    speech_id = speech.headers["x-request-id"]
    assert "," not in speech_id  # one header: the middleware's, not a second one
    fields = _access(caplog, speech_id)
    assert (fields["model"], fields["characters"], fields["cost_nano"]) == (
        "espeak-ng", len(text), len(text) * 1_000)

    rows = {r.request_id: r for r in usage_rows(database_url, customer.account_id)}
    assert rows[image_id].model == "realvision" and rows[image_id].cost == PRICE
    assert rows[speech_id].characters == len(text) and rows[speech_id].cost == len(text) * 1_000

    after = scrape(live.url)

    def delta(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("minitoolai_image_job_outcomes_total", model="realvision",
                 outcome="success") == 1
    assert delta("minitoolai_image_job_duration_seconds_count", model="realvision") == 1
    assert delta("minitoolai_charged_nanodollars_total", model="realvision",
                 endpoint="/api/texttoimage") == PRICE
    assert delta("minitoolai_charged_nanodollars_total", model="espeak-ng",
                 endpoint="/v1/audio/speech") == len(text) * 1_000
    assert delta("minitoolai_http_requests_total", route="/v1/audio/speech", method="POST",
                 status="200", model="espeak-ng") == 1
    assert sample(after, "minitoolai_holds_open") == 0
    run(assert_ledger_ok(database_url))
