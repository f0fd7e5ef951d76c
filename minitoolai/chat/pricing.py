"""What a chat request may cost (the hold) and what it did cost (the charge).

The hold must be an upper bound: a byte-level BPE token covers at least one byte, so the
prompt has at most as many tokens as its UTF-8 bytes (messages, tool definitions, tool
calls and their results, every forwarded field), plus each message's and tool call's few
framing tokens, plus the tool list's own framing, plus each image's and file's bound. The
output has at most `max_completion_tokens` per choice, `n` choices, plus the predicted
output's tokens (rejected prediction tokens are billed as output).
"""

from __future__ import annotations

import orjson

from minitoolai.chat.messages import PromptShape
from minitoolai.chat.providers.base import ChatRequest, Usage

BASE_OVERHEAD_TOKENS = 16
# OpenAI renders the tool list into the system prompt with a header and a few tokens per
# tool of its own (its published counting recipe: about 7 to open and 12 to close a
# function); these cover that framing, which the JSON's bytes need not
TOOLS_OVERHEAD_TOKENS = 32
PER_TOOL_OVERHEAD_TOKENS = 16


def prompt_token_bound(request: ChatRequest, shape: PromptShape,
                       per_message_overhead: int) -> int:
    extra = request.extra
    bound = (shape.text_bytes + BASE_OVERHEAD_TOKENS
             + per_message_overhead * (len(request.messages) + shape.tool_calls)
             + shape.images * request.model.image_tokens_max
             + shape.files * request.model.file_tokens_max)
    if extra:
        bound += len(orjson.dumps(extra))
        tools = len(extra.get("tools") or ()) + len(extra.get("functions") or ())
        if tools:
            bound += TOOLS_OVERHEAD_TOKENS + PER_TOOL_OVERHEAD_TOKENS * tools
    return bound


def output_token_bound(request: ChatRequest) -> int:
    bound = request.n * request.max_completion_tokens
    prediction = request.extra.get("prediction") if request.extra else None
    if prediction:
        bound += len(orjson.dumps(prediction))
    return bound


def hold_amount(request: ChatRequest, prompt_bound: int) -> int:
    model = request.model
    return prompt_bound * model.input_nano + output_token_bound(request) * model.output_nano


def estimate_usage(prompt_bound: int, text_bytes: int, chunks_sent: int,
                   max_completion_tokens: int, image_tokens: int = 0) -> Usage:
    """Usage for a stream cut short before the upstream reported it: roughly four bytes a
    prompt token plus each image's bound, one token per content chunk relayed; never more
    than the hold covers. (Hidden reasoning tokens cannot be seen, so are not counted.)"""
    prompt = min(prompt_bound, text_bytes // 4 + BASE_OVERHEAD_TOKENS + image_tokens)
    completion = min(max_completion_tokens, chunks_sent)
    return Usage(prompt, completion, estimated=True)
