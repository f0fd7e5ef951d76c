"""Redemption codes: made by the operator (dashboard and CLI), single use, and a code raced by
two accounts at once credits exactly one of them."""

from __future__ import annotations

import asyncio
import re
import threading

from sqlalchemy import select
from typer.testing import CliRunner

from minitoolai.accounts.store import get_account
from minitoolai.app import create_app
from minitoolai.cli.main import app as cli
from minitoolai.dashboard.codes import canonical, create_codes, display, list_codes, redeem
from minitoolai.db.engine import Database
from minitoolai.db.tables import ledger_entries
from minitoolai.errors import InvalidRequest
from tests.conftest import assert_ledger_ok
from tests.dashboard.conftest import login, make_user, page_token, visible
from tests.servers import ThreadedServer

VALUE = 2_500_000_000  # $2.50


async def _balances(database_url: str, *account_ids: int) -> list[int]:
    db = Database(database_url, pool_size=1)
    try:
        return [(await get_account(db, a)).balance for a in account_ids]
    finally:
        await db.dispose()


async def test_two_accounts_racing_over_http_credit_once(live, database_url):
    """Both customers post the same code at the same instant, for several codes."""
    a_id, a_email = await make_user(database_url)
    b_id, b_email = await make_user(database_url)
    db = Database(database_url, pool_size=1)
    try:
        codes = await create_codes(db, VALUE, 6, batch="race")
    finally:
        await db.dispose()
    clients = []
    for email in (a_email, b_email):
        http = login(live.url, email)
        clients.append((http, page_token(http, live.url + "/")))
    outcomes: list[str] = []
    lock = threading.Lock()

    def redeem_as(http, token, code, barrier):
        barrier.wait()
        response = http.post(live.url + "/redeem", data={"csrf_token": token, "code": code})
        with lock:
            outcomes.append("credited" if "Code redeemed" in response.text else "refused")

    for code in codes:
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=redeem_as, args=(http, token, display(code), barrier))
                   for http, token in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(outcomes) == ["credited"] * 6 + ["refused"] * 6
    a, b = await _balances(database_url, a_id, b_id)
    assert a + b == 6 * VALUE and a % VALUE == 0 and b % VALUE == 0
    db = Database(database_url, pool_size=1)
    try:
        used = await list_codes(db, used=True)
        async with db.read() as conn:
            refs = (await conn.execute(select(ledger_entries.c.request_id)
                                       .where(ledger_entries.c.kind == "redeem"))).scalars().all()
    finally:
        await db.dispose()
    assert len(used) == 6 and {c.used_by for c in used} <= {a_id, b_id}
    assert sorted(refs) == sorted(f"code:{c.id}" for c in used)
    await assert_ledger_ok(database_url)


async def test_concurrent_redeem_in_process_credits_once(database_url):
    """Many coroutines on separate connections race for one code."""
    ids = [(await make_user(database_url))[0] for _ in range(4)]
    dbs = [Database(database_url, pool_size=2) for _ in ids]
    try:
        (code,) = await create_codes(dbs[0], VALUE, 1)

        async def attempt(db, account_id):
            try:
                return await redeem(db, account_id, code)
            except InvalidRequest as exc:
                return exc.code

        results = await asyncio.gather(*(attempt(db, a) for db, a in zip(dbs, ids)))
    finally:
        for db in dbs:
            await db.dispose()
    credited = [r for r in results if isinstance(r, tuple)]
    assert len(credited) == 1 and credited[0][0] == VALUE
    assert results.count("invalid_code") == 3
    assert sum(await _balances(database_url, *ids)) == VALUE
    await assert_ledger_ok(database_url)


async def test_bad_codes_are_refused_alike_and_throttled(dash_settings, database_url):
    account_id, email = await make_user(database_url)
    settings = dash_settings(dashboard={"redeem_failures_per_15min": 2})
    with ThreadedServer(create_app(settings)) as live:
        http = login(live.url, email)
        token = page_token(http, live.url + "/")
        texts = [http.post(live.url + "/redeem", data={"csrf_token": token, "code": c}).text
                 for c in ("NOPE-NOPE-NOPE-NOPE", "")]
        # refusals are shown as errors (styled apart, announced to screen readers)
        assert all("not valid or has already been used" in t
                   and '<p class="flash flash-error" role="alert">' in t for t in texts)
        db = Database(database_url, pool_size=1)
        try:
            (code,) = await create_codes(db, VALUE, 1)
        finally:
            await db.dispose()
        blocked = http.post(live.url + "/redeem", data={"csrf_token": token, "code": code})
        assert "Too many invalid codes" in blocked.text and 'role="alert"' in blocked.text
    assert await _balances(database_url, account_id) == [0]


async def test_admin_creates_codes_and_sees_who_used_them(live, database_url):
    _, admin = await make_user(database_url, admin=True)
    _, user = await make_user(database_url)
    admin_http = login(live.url, admin)
    token = page_token(admin_http, live.url + "/admin/codes")
    page = admin_http.post(live.url + "/admin/codes", data={
        "csrf_token": token, "amount": "2.50", "count": "3", "batch": "spring"}).text
    assert "3 new codes worth $2.50 each (spring)" in visible(page)
    shown = [c for c in re.findall(r"\b[2-9A-Z]{4}-[2-9A-Z]{4}-[2-9A-Z]{4}-[2-9A-Z]{4}\b", page)
             if not c.startswith("XXXX-")]
    db = Database(database_url, pool_size=1)
    try:
        codes = await list_codes(db, batch="spring")
        async with db.read() as conn:  # the server keeps only hashes of the codes
            stored = " ".join(str(v) for row in (await conn.exec_driver_sql(
                "SELECT * FROM redemption_codes")).all() for v in row)
    finally:
        await db.dispose()
    assert len(set(shown)) == 3 and not any(canonical(c) in stored for c in shown)
    assert len(codes) == 3 and all(c.display in page for c in codes)
    user_http = login(live.url, user)
    response = user_http.post(live.url + "/redeem", data={
        "csrf_token": page_token(user_http, live.url + "/"), "code": shown[0]})
    assert "Code redeemed: +$2.50. Your balance is $2.50." in response.text
    assert '<p class="flash" role="status">' in response.text  # a confirmation, not an error
    used = admin_http.get(live.url + "/admin/codes?state=used").text
    hint = canonical(shown[0])[-4:]
    assert "XXXX-XXXX-XXXX-" + hint in used and user in used
    assert all(c.display not in used for c in codes if c.hint != hint)
    refused = admin_http.post(live.url + "/admin/codes", data={
        "csrf_token": token, "amount": "0.0000000001", "count": "1"})
    assert refused.status_code == 400 and "finer than one nanodollar" in refused.text
    await assert_ledger_ok(database_url)


def test_codes_cli(database_url, tmp_path):
    env = {"MINITOOLAI_DATABASE_URL": database_url, "MINITOOLAI_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    created = runner.invoke(cli, ["codes", "create", "--amount", "5", "--count", "3",
                                  "--batch", "cli"], env=env)
    assert created.exit_code == 0, created.output
    printed = [line for line in created.stdout.splitlines() if line.count("-") == 3]
    assert len(printed) == 3 and all(len(c) == 19 for c in printed)
    listing = runner.invoke(cli, ["codes", "list", "--unused"], env=env)
    assert listing.exit_code == 0 and all(c[-4:] in listing.stdout for c in printed)
    assert not any(c in listing.stdout for c in printed)  # shown once, at creation
    assert "$5.00" in listing.stdout
    bad = runner.invoke(cli, ["codes", "create", "--amount", "abc"], env=env)
    assert bad.exit_code == 2


async def test_creating_codes_redirects_and_shows_the_batch_once(live, database_url):
    """Post/redirect/get: the batch is shown on the page the 303 leads to, and a reload shows
    it no more nor makes more codes; a batch too big for a cookie is shown in the POST's own
    response."""
    _, admin = await make_user(database_url, admin=True)
    admin_http = login(live.url, admin)
    token = page_token(admin_http, live.url + "/admin/codes")
    created = admin_http.post(live.url + "/admin/codes", data={
        "csrf_token": token, "amount": "1", "count": "2", "batch": "prg"},
        allow_redirects=False)
    assert created.status_code == 303 and created.headers["location"] == "/admin/codes"
    shown = admin_http.get(live.url + "/admin/codes").text
    assert "2 new codes worth $1.00 each (prg)" in visible(shown)
    full = [c for c in re.findall(r"\b[2-9A-Z]{4}-[2-9A-Z]{4}-[2-9A-Z]{4}-[2-9A-Z]{4}\b", shown)
            if not c.startswith("XXXX-")]
    assert len(set(full)) == 2
    reloaded = admin_http.get(live.url + "/admin/codes").text
    assert "new codes worth" not in reloaded and not any(c in reloaded for c in full)
    big = admin_http.post(live.url + "/admin/codes", data={
        "csrf_token": token, "amount": "1", "count": "101", "batch": "big"},
        allow_redirects=False)
    assert big.status_code == 200 and "101 new codes worth $1.00 each (big)" in visible(big.text)
    db = Database(database_url, pool_size=1)
    try:
        assert len(await list_codes(db, batch="prg")) == 2
        assert len(await list_codes(db, batch="big")) == 101
    finally:
        await db.dispose()
    # the redeemed code is still good after all this
    _, user = await make_user(database_url)
    user_http = login(live.url, user)
    redeemed = user_http.post(live.url + "/redeem", data={
        "csrf_token": page_token(user_http, live.url + "/"), "code": full[0]})
    assert "Code redeemed: +$1.00. Your balance is $1.00." in redeemed.text
    await assert_ledger_ok(database_url)
