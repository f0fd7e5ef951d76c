"""Fixtures of the observability tests: the chat tests' fake upstream and server, a funded
customer, and helpers to read usage rows and /metrics."""

from __future__ import annotations

import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from minitoolai.db.engine import Database
from minitoolai.db.tables import usage
from tests.chat.conftest import chat_settings, server, upstream  # noqa: F401 (fixtures)
from tests.conftest import make_customer, run

CHAT = "/api/chat-completions/"
OPENAI_CHAT = "/v1/chat/completions"


@pytest.fixture
def customer(database_url):
    return run(make_customer(database_url, 10**9))


async def _usage_rows(database_url: str, account_id: int) -> list:
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            return (await conn.execute(select(usage).where(usage.c.account_id == account_id)
                                       .order_by(usage.c.id))).all()
    finally:
        await db.dispose()


def usage_rows(database_url: str, account_id: int, at_least: int = 0) -> list:
    """The account's usage rows, once there are `at_least` (a failed request's hold is
    released after its answer)."""
    deadline = time.monotonic() + 10
    while len(rows := run(_usage_rows(database_url, account_id))) < at_least:
        assert time.monotonic() < deadline, rows
        time.sleep(0.05)
    return rows


def scrape(base_url: str, token: str | None = None) -> dict[tuple, float]:
    """GET /metrics, as {(sample name, sorted labels): value}."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.get(base_url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def sample(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
