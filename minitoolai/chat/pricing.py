"""What a chat request may cost (the hold) and what it did cost (the charge).

The hold must be an upper bound: a byte-level BPE token covers at least one byte, so the
prompt has at most as many tokens as its UTF-8 bytes, plus each message's few framing
tokens, plus each image's bound; the output has at most `max_completion_tokens`.
"""

from __future__ import annotations

import orjson

from minitoolai.chat.providers.base import ChatRequest, Usage
from minitoolai.chat.tokens import count_prompt, delivered_text, encoding_for, tokenizer

BASE_OVERHEAD_TOKENS = 16
# the relay keeps up to this much of what it sent (references, not copies) so that an
# estimate can count the tokens the client received; past it, one token per event
KEEP_SENT_BYTES = 256 * 1024


def prompt_token_bound(request: ChatRequest, text_bytes: int, images: int,
                       per_message_overhead: int) -> int:
    extra_bytes = len(orjson.dumps(request.extra)) if request.extra else 0
    return (text_bytes + extra_bytes + BASE_OVERHEAD_TOKENS
            + per_message_overhead * len(request.messages)
            + images * request.model.image_tokens_max)


def hold_amount(request: ChatRequest, prompt_bound: int) -> int:
    model = request.model
    return prompt_bound * model.input_nano + request.max_completion_tokens * model.output_nano


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
    return Usage(min(prompt, prompt_bound), min(completion, request.max_completion_tokens),
                 estimated=True)


def hold_usage(request: ChatRequest, prompt_bound: int) -> Usage:
    """The usage the hold was sized for: what is charged when the gateway itself cut the
    upstream off (it may have billed all of it). Its price is exactly the hold."""
    return Usage(prompt_bound, request.max_completion_tokens, estimated=True)
