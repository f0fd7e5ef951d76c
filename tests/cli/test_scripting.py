"""The command line for scripts: --json with exact amounts, tables that never wrap, signed
adjustments with their note in the credit history, strict amounts, one-line errors and the
documented exit codes. In-process through typer's CliRunner (a subprocess per call would cost
seconds each); the unreachable database runs as a user runs it, in subprocesses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from minitoolai.cli.main import app


@pytest.fixture
def cli(database_url, tmp_path):
    runner = CliRunner()
    env = {"MINITOOLAI_DATABASE_URL": database_url, "MINITOOLAI_DATA_DIR": str(tmp_path / "data"),
           "OPENAI_API_KEY": "", "COLUMNS": "40"}

    def call(*args, code=0):
        result = runner.invoke(app, list(args), env=env)
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        return result
    return call


def jcall(cli, *args):
    return json.loads(cli(*args, "--json").stdout)


def test_json_listings_have_exact_amounts(cli):
    cli("accounts", "create", "ada@example.com", "--name", "Ada", "--credit", "10.000000001")
    cli("keys", "create", "ada@example.com", "--name", "laptop", "--limit", "0.5")
    accounts = jcall(cli, "accounts", "list")
    assert [(a["email"], a["name"], a["balance"], a["balance_nano"], a["held_nano"],
             a["available_nano"], a["admin"], a["disabled"]) for a in accounts] == \
        [("ada@example.com", "Ada", "10.000000001", 10_000_000_001, 0, 10_000_000_001, False,
          False)]
    keys = jcall(cli, "keys", "list", "ada@example.com")
    assert len(keys) == 1 and keys[0]["name"] == "laptop" and keys[0]["id"].startswith("key_")
    assert (keys[0]["spend_limit"], keys[0]["spend_limit_nano"], keys[0]["spent_nano"]) == \
        ("0.50", 500_000_000, 0)
    assert keys[0]["revoked_at"] is None and "T" in keys[0]["created_at"]
    assert jcall(cli, "balance", "ada@example.com") == {
        "email": "ada@example.com", "id": accounts[0]["id"], "balance": "10.000000001",
        "balance_nano": 10_000_000_001, "held": "0.00", "held_nano": 0,
        "available": "10.000000001", "available_nano": 10_000_000_001}
    usage = jcall(cli, "usage", "ada@example.com", "--since", "2020-01-01")
    assert usage == {"email": "ada@example.com", "count": 0, "total": "0.00", "total_nano": 0,
                     "requests": []}
    models = {m["id"]: m for m in jcall(cli, "models")}
    assert models["gpt-5.5"]["price"] == {"input_per_1m": "5.00", "output_per_1m": "30.00",
                                          "input_nano_per_token": 5_000,
                                          "output_nano_per_token": 30_000}
    assert models["realvision"]["price"] == {"per_image": "0.0015", "nano_per_image": 1_500_000}
    assert jcall(cli, "ledger", "verify") == {"ok": True, "problems": []}


def test_tables_never_wrap_an_id_or_an_amount(cli):
    email = "a-rather-long-address-for-a-table@example-company.com"
    cli("accounts", "create", email, "--credit", "12345.123456789")
    out = cli("accounts", "list").stdout  # COLUMNS=40, not a terminal
    line = next(row for row in out.splitlines() if email in row)
    assert "$12,345.12" in line  # the money display rule; --json has the exact amount
    key_id = json.loads(cli("keys", "list", email, "--json").stdout or "[]")
    assert key_id == []
    cli("keys", "create", email, "--name", "a key with a long descriptive name")
    listing = cli("keys", "list", email).stdout
    key = jcall(cli, "keys", "list", email)[0]
    assert any(key["id"] in row and "a key with a long descriptive name" in row
               for row in listing.splitlines())


def test_signed_adjustment_with_its_note_in_the_credit_history(cli):
    cli("accounts", "create", "bo@example.com", "--credit", "5")
    done = cli("credits", "adjust", "bo@example.com", "-1.25", "--note", "refund of order 9")
    assert "bo@example.com: -$1.25, balance $3.75" in done.stdout
    # the `--` way of passing a negative number works too
    cli("credits", "adjust", "bo@example.com", "--note", "goodwill", "--", "-0.000000001")
    cli("credits", "adjust", "bo@example.com", "+2", "--note", "bonus")
    cli("credits", "add", "bo@example.com", "3", "--note", "invoice 12", "--paid")

    history = jcall(cli, "ledger", "entries", "bo@example.com")
    entries = [(e["kind"], e["amount"], e["amount_nano"], e["note"], e["paid"])
               for e in history["entries"]]
    assert entries == [
        ("topup", "3.00", 3_000_000_000, "invoice 12", True),
        ("adjustment", "2.00", 2_000_000_000, "bonus", False),
        ("adjustment", "-0.000000001", -1, "goodwill", False),
        ("adjustment", "-1.25", -1_250_000_000, "refund of order 9", False),
        ("topup", "5.00", 5_000_000_000, "initial credit", False),
    ]
    assert all(e["created_by"].startswith("cli") for e in history["entries"])
    assert (history["count"], history["total_nano"], history["balance_nano"]) == \
        (5, 8_749_999_999, 8_749_999_999)
    text = cli("ledger", "entries", "bo@example.com").stdout
    refund = next(row for row in text.splitlines() if "refund of order 9" in row)
    assert "-$1.25" in refund and "adjustment" in refund and "cli" in refund
    assert "5 entries, net +$8.75; balance $8.75" in text  # exact in --json, above
    # --since from tomorrow: nothing; --limit: the newest
    assert jcall(cli, "ledger", "entries", "bo@example.com", "--since", "2999-01-01")[
        "entries"] == []
    newest = jcall(cli, "ledger", "entries", "bo@example.com", "--limit", "1")
    assert [e["note"] for e in newest["entries"]] == ["invoice 12"] and newest["count"] == 5
    assert jcall(cli, "ledger", "verify")["ok"] is True


def test_refused_changes_are_one_line_with_their_exit_code(cli):
    cli("accounts", "create", "cy@example.com", "--credit", "1")
    cases = [
        # (args, exit code, words in the one line)
        (("credits", "add", "cy@example.com", "-1"), 2, "credits adjust"),
        (("credits", "add", "cy@example.com", "1e3"), 2, "not an amount of money"),
        (("credits", "adjust", "cy@example.com", "1E3", "--note", "x"), 2,
         "not an amount of money"),
        (("credits", "add", "cy@example.com", "1.0000000001"), 2, "more than 9 decimals"),
        (("credits", "add", "cy@example.com", "1,000"), 2, "not an amount of money"),
        (("credits", "add", "cy@example.com", "NaN"), 2, "not an amount of money"),
        (("credits", "adjust", "cy@example.com", "0", "--note", "x"), 2, "not be zero"),
        (("credits", "adjust", "cy@example.com", "-1", "--note", "  "), 2, "--note"),
        (("credits", "adjust", "cy@example.com", "-5", "--note", "too much"), 1,
         "below zero"),
        (("balance", "nobody@example.com"), 1, "no account with email"),
        (("ledger", "entries", "nobody@example.com"), 1, "no account with email"),
        (("ledger", "entries", "cy@example.com", "--since", "last week"), 2, "--since"),
        (("keys", "revoke", "key_nope"), 1, ""),
    ]
    for args, code, words in cases:
        result = cli(*args, code=code)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], \
            (args, result.stderr)
    missing_note = cli("credits", "adjust", "cy@example.com", "-1", code=2)
    assert "--note" in missing_note.stderr
    # nothing was written by any refused command
    history = jcall(cli, "ledger", "entries", "cy@example.com")
    assert [e["amount_nano"] for e in history["entries"]] == [1_000_000_000]
    assert jcall(cli, "ledger", "verify")["ok"] is True


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: connections refused


@pytest.mark.parametrize("args", [
    ("balance", "x@example.com"), ("accounts", "list", "--json"), ("ledger", "verify"),
    ("credits", "adjust", "x@example.com", "-1", "--note", "n"), ("db", "upgrade"),
    ("serve", "--port", "1"),
])
def test_unreachable_database_is_one_line_and_exit_3(args, tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/nowhere"
    result = subprocess.run(
        [sys.executable, "-m", "minitoolai.cli.main", *args], capture_output=True, text=True,
        timeout=60, env={**os.environ, "MINITOOLAI_DATABASE_URL": url,
                         "MINITOOLAI_DATA_DIR": str(tmp_path / "data"), "OPENAI_API_KEY": ""})
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: database postgresql://postgres@127.0.0.1:")
    assert "refused" in lines[0].lower()
    assert result.stdout == ""


def test_a_silent_database_host_fails_in_seconds(tmp_path):
    """A host that accepts the connection and never answers (a hung server, a half-open
    firewall) ends the command with one line and exit 3 after the connect timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever speaks
        port = silent.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "minitoolai.cli.main", "balance", "x@example.com"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "MINITOOLAI_DATABASE_URL": f"postgresql://127.0.0.1:{port}/x",
                 "MINITOOLAI_DATA_DIR": str(tmp_path / "data"), "OPENAI_API_KEY": ""})
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "timeout" in lines[0].lower(), result.stderr
