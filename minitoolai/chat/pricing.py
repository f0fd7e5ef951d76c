"""What a chat request may cost (the hold) and what it did cost (the charge).

The hold must be an upper bound: a byte-level BPE token covers at least one byte, so the
prompt has at most as many tokens as its UTF-8 bytes, plus each message's few framing
tokens, plus each image's bound; the output has at most `max_completion_tokens`.
"""

from __future__ import annotations

import orjson

from minitoolai.chat.providers.base import ChatRequest, Usage

BASE_OVERHEAD_TOKENS = 16


def prompt_token_bound(request: ChatRequest, text_bytes: int, images: int,
                       per_message_overhead: int) -> int:
    extra_bytes = len(orjson.dumps(request.extra)) if request.extra else 0
    return (text_bytes + extra_bytes + BASE_OVERHEAD_TOKENS
            + per_message_overhead * len(request.messages)
            + images * request.model.image_tokens_max)


def hold_amount(request: ChatRequest, prompt_bound: int) -> int:
    model = request.model
    return prompt_bound * model.input_nano + request.max_completion_tokens * model.output_nano


def estimate_usage(prompt_bound: int, text_bytes: int, chunks_sent: int,
                   max_completion_tokens: int, image_tokens: int = 0) -> Usage:
    """Usage for a stream cut short before the upstream reported it: roughly four bytes a
    prompt token plus each image's bound, one token per content chunk relayed; never more
    than the hold covers. (Hidden reasoning tokens cannot be seen, so are not counted.)"""
    prompt = min(prompt_bound, text_bytes // 4 + BASE_OVERHEAD_TOKENS + image_tokens)
    completion = min(max_completion_tokens, chunks_sent)
    return Usage(prompt, completion, estimated=True)
