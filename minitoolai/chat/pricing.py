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
from minitoolai.chat.tokens import count_prompt, delivered_text, encoding_for, tokenizer

BASE_OVERHEAD_TOKENS = 16
# the relay keeps up to this much of what it sent (references, not copies) so that an
# estimate can count the tokens the client received; past it, one token per event
KEEP_SENT_BYTES = 256 * 1024
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


def estimate_usage(request: ChatRequest, prompt_bound: int, prompt_exact: int | None,
                   image_tokens: int, sent: list[bytes], more_events: int) -> Usage:
    """Usage for a stream that ended before the provider reported it (the upstream broke
    off or never sent its usage event): the prompt and every token the upstream streamed,
    counted with the model's own tokenizer (chat/tokens.py), never more than the hold.

    `sent` is what was relayed, as bytes; `more_events` counts the events relayed after
    the gateway stopped keeping them (one token each). Hidden reasoning tokens cannot be
    seen, so they are not in the estimate. Without the model's tokenizer, the prompt is
    charged at its bound (an upper bound) and the completion at one token per event that
    carried text. Blocking (tokenizing, maybe loading the tokenizer): run it in a thread."""
    encoding = encoding_for(request.model.upstream_model)
    counter = tokenizer(encoding) if encoding else None
    text, carrying = delivered_text(sent)
    if counter is None:
        prompt = prompt_bound
        completion = carrying + more_events
    else:
        prompt = count_prompt(counter, request.messages, request.extra) + image_tokens
        completion = counter.count(text) + more_events
    if prompt_exact is not None:  # an in-process model counted it itself
        prompt = prompt_exact
    return Usage(min(prompt, prompt_bound), min(completion, output_token_bound(request)),
                 estimated=True)


def hold_usage(request: ChatRequest, prompt_bound: int) -> Usage:
    """The usage the hold was sized for: what is charged when the gateway itself cut the
    upstream off (it may have billed all of it). Its price is exactly the hold."""
    return Usage(prompt_bound, output_token_bound(request), estimated=True)
