"""The command line of DESIGN.md, run as a user runs it (a subprocess), on each database."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from minitoolai.db.engine import Database
from tests.conftest import run


@pytest.fixture
def cli(database_url, tmp_path):
    env = {**os.environ, "MINITOOLAI_DATABASE_URL": database_url,
           "MINITOOLAI_DATA_DIR": str(tmp_path / "data"), "OPENAI_API_KEY": "",
           "COLUMNS": "200"}

    def call(*args, ok=True):
        result = subprocess.run([sys.executable, "-m", "minitoolai.cli.main", *args], env=env,
                                capture_output=True, text=True, timeout=120)
        if ok:
            assert result.returncode == 0, result.stdout + result.stderr
        return result
    return call


def test_account_key_credit_balance_usage_verify(cli, database_url):
    account_id = cli("accounts", "create", "Ada@Example.com", "--name", "Ada",
                     "--credit", "10").stdout.strip()
    assert account_id.isdigit()
    key = cli("keys", "create", "ada@example.com", "--name", "laptop").stdout.splitlines()[-1]
    assert key.startswith("mtai-") and len(key) > 40
    listing = cli("keys", "list", "ada@example.com").stdout
    assert "laptop" in listing and key not in listing  # the secret is never shown again
    assert "+$2.50, balance $12.50" in cli("credits", "add", "ada@example.com", "2.5",
                                           "--note", "invoice 7").stdout
    assert "balance   $12.50" in cli("balance", "ada@example.com").stdout
    assert "0 request(s)" in cli("usage", "ada@example.com", "--since", "2020-01-01").stdout
    assert "ledger OK" in cli("ledger", "verify").stdout
    assert "ada@example.com" in cli("accounts", "list").stdout
    key_id = listing.split("key_")[1].split()[0]
    assert "revoked" in cli("keys", "revoke", "key_" + key_id).stdout


def test_key_limits_expiry_and_models(cli):
    """keys create/update take --monthly-limit, --expires, --models (and lift them with
    none / never / all); keys list --json shows them with this month's spending. (Few
    calls: each starts a Python process.)"""
    import json

    cli("accounts", "create", "kim@example.com", "--credit", "5")
    cli("keys", "create", "kim@example.com", "--name", "ci", "--limit", "3",
        "--monthly-limit", "1.5", "--expires", "2031-01-01", "--models", "gpt-4o-mini,tts-1")
    (key,) = json.loads(cli("keys", "list", "kim@example.com", "--json").stdout)
    assert (key["spend_limit"], key["monthly_limit"], key["spent_this_month"]) == (
        "3.00", "1.50", "0.00")
    assert key["expires_at"].startswith("2031-01-01T00:00:00") and not key["expired"]
    assert key["models"] == ["gpt-4o-mini", "tts-1"]
    updated = json.loads(cli("keys", "update", key["id"], "--name", "ci-2", "--monthly-limit",
                             "none", "--expires", "never", "--models", "all", "--json").stdout)
    assert (updated["name"], updated["monthly_limit"], updated["expires_at"],
            updated["models"], updated["spend_limit"]) == ("ci-2", None, None, None, "3.00")
    past = cli("keys", "update", key["id"], "--expires", "2001-01-01", ok=False)
    assert past.returncode == 2 and "already passed" in past.stderr
    # a model id that is not in the catalog (a typo) is refused, and nothing is written
    typo = cli("keys", "update", key["id"], "--models", "gpt-4o-mni,tts-1", ok=False)
    assert typo.returncode == 2 and "not a model of this server: gpt-4o-mni " in typo.stderr
    assert "tts-1" not in typo.stderr  # the ids that are models are not named
    typo = cli("keys", "create", "kim@example.com", "--models", "nonexistent", ok=False)
    assert typo.returncode == 2 and "nonexistent" in typo.stderr
    assert len(json.loads(cli("keys", "list", "kim@example.com", "--json").stdout)) == 1


def test_errors_are_clear_and_non_zero(cli):
    cli("accounts", "create", "bo@example.com")
    dup = cli("accounts", "create", "bo@example.com", ok=False)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    assert "no account with email" in cli("balance", "nobody@example.com", ok=False).stderr
    bad = cli("credits", "add", "bo@example.com", "0.0000000001", ok=False)
    assert bad.returncode == 2 and "finer than one nanodollar" in bad.stderr
    assert cli("usage", "bo@example.com", "--since", "yesterday", ok=False).returncode == 2
    # a refused amount leaves nothing half done: no account without its credit
    refused = cli("accounts", "create", "cy@example.com", "--credit", "-5", ok=False)
    assert refused.returncode == 2 and "positive" in refused.stderr
    assert "cy@example.com" not in cli("accounts", "list").stdout
    huge = cli("credits", "add", "bo@example.com", "99999999999999", ok=False)
    assert huge.returncode == 2 and "largest amount" in huge.stderr


def test_ledger_verify_fails_on_tampering(cli, database_url):
    cli("accounts", "create", "eve@example.com", "--credit", "5")

    async def tamper():
        db = Database(database_url, pool_size=1)
        try:
            async with db.write() as conn:
                await conn.exec_driver_sql("UPDATE accounts SET balance = balance + 1")
        finally:
            await db.dispose()
    run(tamper())
    result = cli("ledger", "verify", ok=False)
    assert result.returncode == 1 and "!= ledger sum" in result.stderr


def test_models_lists_the_seed_catalog_with_prices(cli):
    out = cli("models").stdout
    for model in ("gpt-4o-mini", "gpt-5.5", "gpt-5.1-codex-mini", "realvision"):
        assert model in out
    assert "$5.00 in / $30.00 out per 1M tokens" in out  # gpt-5.5
    assert "$0.0015 per image" in out


@pytest.mark.parametrize("variable,value,named", [
    ("MINITOOLAI_PORTT", "1", "'portt'"),
    ("MINITOOLAI_LOG_LEVEL", "loud", "log_level"),
    ("MINITOOLAI_DATABASE_URL", "mysql://x", "database_url"),
    ("MINITOOLAI_DATA_DIR", "/proc/nope", "data_dir"),
])
def test_bad_configuration_names_the_key(variable, value, named):
    env_cli = subprocess.run([sys.executable, "-m", "minitoolai.cli.main", "models"],
                             env={**os.environ, variable: value}, capture_output=True,
                             text=True, timeout=60)
    assert env_cli.returncode == 2 and named in env_cli.stderr, env_cli.stderr
    assert "Traceback" not in env_cli.stderr


def test_usage_errors_are_one_line_and_exit_2(cli):
    """docs/operator-guide.md: errors are one line on stderr, usage errors exit 2 (Click's
    own is a boxed usage message over several lines)."""
    for args, says in [(("credits", "adjust", "a@b.c", "-2.50"), "Missing option '--note'"),
                       (("nosuch",), "No such command 'nosuch'"),
                       (("usage", "a@b.c", "--limit", "0"), "--limit"),
                       (("keys", "create"), "Missing argument")]:
        result = cli(*args, ok=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith("error: ") and says in lines[0], lines
    alone = cli("keys", ok=False)  # a group without its command: its help, exit 2
    assert alone.returncode == 2 and "Create, list, update and revoke API keys" in alone.stdout


def test_usage_table_shows_each_request_id(cli, database_url):
    """The request id ties an access line (x-request-id) to its usage row: the table shows
    it, not only --json."""
    from minitoolai.ledger.holds import UsageRecord, reserve, settle

    account_id = int(cli("accounts", "create", "uma@example.com", "--credit", "1").stdout)

    async def charge():
        db = Database(database_url, pool_size=1)
        try:
            await reserve(db, request_id="req_table_0001", account_id=account_id, key_id=None,
                          amount=10_000, kind="chat", ttl_seconds=60)
            await settle(db, "req_table_0001", 4_500, UsageRecord(
                endpoint="/v1/chat/completions", model="gpt-4o-mini", prompt_tokens=10,
                completion_tokens=5), account_id=account_id)
        finally:
            await db.dispose()

    run(charge())
    line = next(row for row in cli("usage", "uma@example.com").stdout.splitlines()
                if "req_table_0001" in row)
    assert "gpt-4o-mini" in line and "<$0.0001" in line  # the display rule; --json: exact
