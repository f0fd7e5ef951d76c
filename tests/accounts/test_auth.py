"""Bearer authentication against the database, with its short cache."""

from __future__ import annotations

import asyncio

import pytest

from minitoolai.accounts.auth import Authenticator
from minitoolai.accounts.keys import hash_secret
from minitoolai.accounts.store import create_key, list_keys, revoke_key, set_account_flags
from minitoolai.db.tables import api_keys
from minitoolai.errors import AuthenticationFailed, PermissionDenied
from tests.conftest import make_customer


async def test_keys_are_stored_only_as_hashes(db, database_url):
    customer = await make_customer(database_url, 0)
    async with db.read() as conn:
        rows = (await conn.execute(api_keys.select())).all()
    stored = " ".join(str(v) for row in rows for v in row)
    assert customer.key not in stored
    assert hash_secret(customer.key) in stored


async def test_revocation_is_immediate_in_this_process(db, database_url):
    customer = await make_customer(database_url, 0)
    auth = Authenticator(db, cache_seconds=60)
    principal = await auth.authenticate(f"Bearer {customer.key}")
    assert principal.account_id == customer.account_id
    await revoke_key(db, customer.key_id)
    assert (await auth.authenticate(f"Bearer {customer.key}")) == principal  # cached
    auth.forget_key(customer.key_id)
    with pytest.raises(AuthenticationFailed) as info:
        await auth.authenticate(f"Bearer {customer.key}")
    assert info.value.code == "revoked_api_key"


async def test_disabled_account_is_refused(db, database_url):
    customer = await make_customer(database_url, 0)
    await set_account_flags(db, customer.account_id, disabled=True)
    with pytest.raises(PermissionDenied):
        await Authenticator(db, 0).authenticate(f"Bearer {customer.key}")


async def test_a_second_key_and_its_listing(db, database_url):
    customer = await make_customer(database_url, 0)
    key, secret = await create_key(db, customer.account_id, "ci")
    assert secret.startswith("mtai-") and key.prefix == secret[:11]
    assert [k.name for k in await list_keys(db, customer.account_id)] == ["test", "ci"]
    principal = await Authenticator(db, 0).authenticate(f"bearer {secret}")
    assert principal.key_id == key.id


def _key_lookups(db) -> list[str]:
    """The key lookups this database's read engine runs, as they run."""
    from sqlalchemy import event

    seen: list[str] = []

    @event.listens_for(db._reader.sync_engine, "before_cursor_execute")
    def count(conn, cursor, statement, *args):
        if "key_hash" in statement:
            seen.append(statement)
    return seen


async def test_requests_without_an_entry_share_one_lookup(db, database_url):
    customer = await make_customer(database_url, 0)
    auth = Authenticator(db, cache_seconds=60)
    lookups = _key_lookups(db)
    principals = await asyncio.gather(*(auth.authenticate(f"Bearer {customer.key}")
                                        for _ in range(32)))
    assert {p.account_id for p in principals} == {customer.account_id}
    assert len(lookups) == 1


async def test_a_key_in_use_is_renewed_ahead_and_never_waits(db, database_url):
    customer = await make_customer(database_url, 0)
    auth = Authenticator(db, cache_seconds=60)
    lookups = _key_lookups(db)
    principal = await auth.authenticate(f"Bearer {customer.key}")
    digest = hash_secret(customer.key)
    expires, _, cached = auth._cache[digest]
    auth._cache[digest] = (expires, 0.0, cached)  # three quarters of its time have passed
    # served from the cache at once; the renewal runs in the background
    assert await auth.authenticate(f"Bearer {customer.key}") == principal
    for _ in range(200):
        if auth._cache[digest][1] > 0.0:
            break
        await asyncio.sleep(0.01)
    assert len(lookups) == 2 and auth._cache[digest][0] >= expires
    # a revoked key is dropped by its renewal: the next request is refused
    await revoke_key(db, customer.key_id)
    auth._cache[digest] = (auth._cache[digest][0], 0.0, cached)
    assert await auth.authenticate(f"Bearer {customer.key}") == principal
    for _ in range(200):
        if digest not in auth._cache:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(AuthenticationFailed) as info:
        await auth.authenticate(f"Bearer {customer.key}")
    assert info.value.code == "revoked_api_key"
