"""API key secrets: generated from the OS's CSPRNG, stored only as SHA-256 hashes.

A key carries 256 bits of randomness, so a fast hash is enough to make the stored value
useless to a thief (no dictionary can reach it); argon2 is kept for human passwords.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "mtai-"


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[: len(KEY_PREFIX) + 6]
