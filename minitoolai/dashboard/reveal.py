"""Show a secret once, after a redirect (post/redirect/get).

A form that creates a secret (a new API key, a batch of codes) must redirect, or a reload posts it again and
creates another; but the secret exists only in the POST's memory (the database keeps its
hash). So the POST's redirect carries it to the next GET in a short-lived cookie, sealed
with AES-GCM (the `cryptography` package) under a key derived from the server's secret and
bound to the session's CSRF token: the browser holds only ciphertext, any server process of
the platform can open it (no per-process state, so `--workers N` and several machines work),
no other session can, and the GET that shows it deletes it, so a reload shows it no more.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

REVEAL_COOKIE = "mtai_reveal"
REVEAL_SECONDS = 120  # from the redirect to the page that shows it: seconds, not minutes
_NONCE = 12


def _aead(secret_key: str) -> AESGCM:
    # imported at the first sealed secret: `cryptography` is about 6 MB that a server
    # nobody uses the dashboard on never needs
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = hmac.new(secret_key.encode("utf-8"), b"minitoolai dashboard reveal v1",
                   hashlib.sha256).digest()
    return AESGCM(key)


def seal(secret_key: str, bound_to: str, payload: dict[str, Any]) -> str:
    nonce = os.urandom(_NONCE)
    sealed = _aead(secret_key).encrypt(nonce, json.dumps(payload).encode("utf-8"),
                                       bound_to.encode("utf-8"))
    return base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def unseal(secret_key: str, bound_to: str, token: str | None) -> dict[str, Any] | None:
    """The payload, or None for a missing, tampered, foreign or malformed cookie."""
    if not token or len(token) > 4096:
        return None
    from cryptography.exceptions import InvalidTag

    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
        plain = _aead(secret_key).decrypt(raw[:_NONCE], raw[_NONCE:], bound_to.encode("utf-8"))
        payload = json.loads(plain)
    except (ValueError, InvalidTag, UnicodeError):
        return None
    return payload if isinstance(payload, dict) else None


def set_reveal(response: Response, ctx, path: str, payload: dict[str, Any]) -> None:
    """Attach a sealed payload for the next GET of `path` by this session."""
    response.set_cookie(REVEAL_COOKIE, seal(ctx.runtime.secret_key, ctx.csrf_token, payload),
                        max_age=REVEAL_SECONDS, path=path, httponly=True, samesite="strict",
                        secure=ctx.service.cookie_secure)


def take_reveal(ctx) -> dict[str, Any] | None:
    """The payload this request carries (to show once), or None."""
    return unseal(ctx.runtime.secret_key, ctx.csrf_token,
                  ctx.request.cookies.get(REVEAL_COOKIE))


def clear_reveal(response: Response, path: str) -> None:
    response.delete_cookie(REVEAL_COOKIE, path=path)
