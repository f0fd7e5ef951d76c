"""Checks of untrusted input at the edge, shared by every parser (JSON bodies, dashboard forms,
query strings, path parameters), so that what reaches the services and the database is text
every database stores and every serialiser writes.

- Text: no NUL (PostgreSQL refuses it in text columns; SQLite would store it) and no lone
  surrogate (not encodable as UTF-8: the database driver and orjson.dumps would fail).
- JSON: nesting at most MAX_JSON_DEPTH levels. orjson reads 1,024 levels but writes only
  255; the gateway writes request bodies again (to the upstream, to measure the hold), so a
  body must stay well inside what it can write.
- Integers given as text (ids, counts, timestamps): ASCII digits only and a bounded length,
  because str.isdigit() accepts "²" and int() refuses more than 4,300 digits.

Every refusal is an InvalidRequest (400) that names the field.
"""

from __future__ import annotations

import re
from typing import Any

from minitoolai.errors import InvalidRequest

MAX_JSON_DEPTH = 64
# a body whose bytes hold none of these escapes cannot decode to a NUL or a surrogate
# (raw control bytes and invalid UTF-8 are refused by the JSON parser itself)
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None when it can."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000)"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate (invalid Unicode)"
    return None


def check_text(value: str, param: str) -> str:
    """Return `value`, or raise a 400 naming `param` when it is not storable text."""
    problem = text_problem(value)
    if problem is not None:
        raise InvalidRequest(f"{param} {problem}", param=param, code="invalid_string")
    return value


def _where(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def check_json(value: Any, raw: bytes | None = None) -> Any:
    """Return the parsed JSON `value`, or raise a 400 for a string that is not storable text or
    nesting deeper than MAX_JSON_DEPTH. With the `raw` bytes it was parsed from, a body that
    cannot hold either problem is passed without walking it (the chat hot path)."""
    strings = raw is None or _SUSPECT_ESCAPE.search(raw) is not None
    depth = raw is None or raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH
    if (strings or depth) and _has_problem(value, strings):
        _raise_problem(value)
    return value


def _has_problem(value: Any, strings: bool) -> bool:
    """The quick walk: containers only, no paths (most bodies have no problem at all).
    Iterative: a body 1,000 levels deep must not exhaust Python's recursion limit."""
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if level > MAX_JSON_DEPTH:
            return True
        if type(node) is dict:
            if strings and any(text_problem(k) for k in node):
                return True
            items = node.values()
        else:
            items = node
        for item in items:
            kind = type(item)
            if kind is dict or kind is list:
                stack.append((item, level + 1))
            elif strings and kind is str and text_problem(item) is not None:
                return True
    return False


def _raise_problem(value: Any) -> None:
    """The slow walk, once a problem is known to exist: find it and name where it is."""
    stack: list[tuple[Any, int, tuple]] = [(value, 1, ())]
    while stack:
        node, level, path = stack.pop()
        if isinstance(node, dict | list):
            if level > MAX_JSON_DEPTH:
                where = _where(path)[:120]
                raise InvalidRequest(f"{where} is nested deeper than {MAX_JSON_DEPTH} levels",
                                     param=where, code="too_deeply_nested")
            pairs = node.items() if isinstance(node, dict) else enumerate(node)
            for key, item in pairs:
                if isinstance(key, str):  # named by where it is: the key itself is bad
                    check_text(key, f"a key of {_where(path)}")
                stack.append((item, level + 1, path + (key,)))
        elif isinstance(node, str):
            check_text(node, _where(path))


MAX_ROW_ID = 2**31 - 1  # the integer primary keys are 32-bit columns


def strict_int(text: str, param: str, *, max_digits: int = 18,
               maximum: int | None = None) -> int:
    """A non-negative integer written in ASCII digits, at most `max_digits` of them (18 fit
    a 64-bit column) and at most `maximum`, or a 400 naming `param`."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > max_digits \
            or (maximum is not None and int(text) > maximum):
        limit = f"at most {maximum}" if maximum is not None else f"of at most {max_digits} digits"
        raise InvalidRequest(f"{param} must be a whole number {limit}", param=param)
    return int(text)


def before_row_id(text: str, param: str) -> int | None:
    """A page's "older than this row" cursor (`?before=ID`): None when empty, else a strict
    integer (a 400 naming `param` otherwise: "²".isdigit() is true but int() refuses it, and
    int() refuses 5,000 digits), capped at the largest row id: anything above it means
    "from the newest", like no value."""
    text = text.strip()
    return min(strict_int(text, param), MAX_ROW_ID) if text else None
