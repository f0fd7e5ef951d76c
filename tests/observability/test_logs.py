"""Logging: one access line per request with its fields, the text and JSON formats, the
request id on application lines, and no traceback for an expected failure."""

from __future__ import annotations

import io
import logging

import orjson
import pytest
import requests

from minitoolai.observability.logs import configure_logging
from tests.observability.conftest import CHAT, usage_rows

CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two"}]}


@pytest.fixture
def log_stream(make_settings):
    """configure_logging(...) writing to a buffer; the handler is removed after."""
    installed = []

    def install(**overrides) -> io.StringIO:
        buffer = io.StringIO()
        installed.append(configure_logging(make_settings(**overrides), stream=buffer))
        return buffer

    root = logging.getLogger()
    level = root.level
    yield install
    for handler in installed:
        root.removeHandler(handler)
    root.setLevel(level)


def _access_records(caplog, request_id):
    return [r for r in caplog.records
            if r.name == "minitoolai.access" and getattr(r, "request_id", None) == request_id]


def test_access_line_of_a_billed_chat(server, customer, database_url, caplog):
    caplog.set_level(logging.INFO, logger="minitoolai.access")
    for stream in (True, False):
        response = requests.post(server.url + CHAT, headers=customer.headers,
                                 json={**CHAT_BODY, "stream": stream}, timeout=10)
        assert response.status_code == 200
        rid = response.headers["x-request-id"]
        (row,) = [r for r in usage_rows(database_url, customer.account_id)
                  if r.request_id == rid]
        (record,) = _access_records(caplog, rid)
        fields = record.access
        assert fields["method"] == "POST" and fields["path"] == CHAT
        assert fields["status"] == 200
        assert fields["latency_ms"] > 0 and 0 < fields["ttfb_ms"] <= fields["latency_ms"]
        assert fields["key_id"] == customer.key_id
        assert fields["model"] == "gpt-4o-mini"
        assert (fields["prompt_tokens"], fields["completion_tokens"]) == (
            row.prompt_tokens, row.completion_tokens)
        assert fields["cost_nano"] == row.cost == (row.prompt_tokens * 150
                                                   + row.completion_tokens * 600)
        assert fields["error"] is None
        assert record.getMessage().startswith(f"POST {CHAT} 200 ")


def test_access_line_of_an_error(server, caplog):
    caplog.set_level(logging.INFO, logger="minitoolai.access")
    response = requests.post(server.url + CHAT, json=CHAT_BODY,
                             headers={"Authorization": "Bearer sk-nope"}, timeout=10)
    assert response.status_code == 401
    (record,) = _access_records(caplog, response.headers["x-request-id"])
    assert record.access["status"] == 401
    assert record.access["error"] == "authentication_error"
    assert record.access["key_id"] is None and record.access["cost_nano"] is None


def test_text_format(server, customer, log_stream):
    buffer = log_stream(log_format="text")
    response = requests.post(server.url + CHAT, headers=customer.headers,
                             json={**CHAT_BODY, "stream": False}, timeout=10)
    rid = response.headers["x-request-id"]
    (line,) = [l for l in buffer.getvalue().splitlines() if "minitoolai.access" in l]
    # 2026-12-02T05:53:53.123Z INFO minitoolai.access [req_...] POST /api/... 200 1.2ms ...
    stamp, level, logger, rest = line.split(" ", 3)
    assert stamp.endswith("Z") and "T" in stamp
    assert (level, logger) == ("INFO", "minitoolai.access")
    assert rest.startswith(f"[{rid}] POST {CHAT} 200 ")
    assert f" key_id={customer.key_id} " in line and " model=gpt-4o-mini " in line
    assert " cost_nano=" in line and " error=" not in line


def test_json_format(server, customer, log_stream, upstream):
    buffer = log_stream(log_format="json")
    ok = requests.post(server.url + CHAT, headers=customer.headers,
                       json={**CHAT_BODY, "stream": False}, timeout=10)
    failed = requests.post(server.url + CHAT, headers=customer.headers, timeout=10, json={
        **CHAT_BODY, "stream": False,
        "messages": [{"role": "user", "content": "[fail:500] x"}]})
    assert (ok.status_code, failed.status_code) == (200, 502)
    lines = [orjson.loads(line) for line in buffer.getvalue().splitlines()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    by_id = {}
    for line in lines:
        by_id.setdefault(line.get("request_id"), []).append(line)
    (access,) = [l for l in by_id[ok.headers["x-request-id"]]
                 if l["logger"] == "minitoolai.access"]
    assert access["status"] == 200 and access["model"] == "gpt-4o-mini"
    assert access["key_id"] == customer.key_id and access["cost_nano"] > 0
    # the failure's own lines carry its request id, and an expected failure has no traceback
    failure = by_id[failed.headers["x-request-id"]]
    assert [l["logger"] for l in failure][-1] == "minitoolai.access"
    assert any(l["level"] == "WARNING" for l in failure), failure
    assert not any("exception" in l for l in failure), failure
    assert failure[-1]["status"] == 502 and failure[-1]["error"] == "upstream_error"


def test_access_log_can_be_turned_off(chat_settings, log_stream):
    from minitoolai.app import create_app
    from tests.servers import ThreadedServer

    buffer = log_stream(access_log="false")
    with ThreadedServer(create_app(chat_settings(access_log="false"))) as live:
        assert requests.get(live.url + "/health", timeout=10).status_code == 200
    assert "minitoolai.access" not in buffer.getvalue()


def test_a_dependency_failure_is_one_line_a_bug_keeps_its_traceback(log_stream):
    buffer = log_stream(log_format="text")
    log = logging.getLogger("minitoolai.test")
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except OSError:
        log.exception("hold sweeper failed")
    try:
        {}["missing"]
    except KeyError:
        log.exception("a bug")
    lines = buffer.getvalue().splitlines()
    assert lines[0].endswith("ERROR minitoolai.test hold sweeper failed | "
                             "builtins.ConnectionRefusedError: [Errno 111] Connection refused")
    assert lines[1].endswith("ERROR minitoolai.test a bug")
    assert lines[2] == "Traceback (most recent call last):" and lines[-1] == "KeyError: 'missing'"

    json_buffer = log_stream(log_format="json", log_level="debug")
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except OSError:
        log.exception("at debug level, the whole story")
    (line,) = [orjson.loads(l) for l in json_buffer.getvalue().splitlines()]
    assert line["level"] == "ERROR" and line["logger"] == "minitoolai.test"
    assert line["exception"].startswith("Traceback (most recent call last):")
