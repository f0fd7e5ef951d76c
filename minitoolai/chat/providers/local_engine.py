"""One GGUF model loaded through llama.cpp: its chat template, its tokenizer, its token loop.

Everything here is synchronous and runs on the local queue's worker thread (loading runs in a
thread too), never on the event loop. `Engine.generate` is the only code that touches the
model's context, and the queue guarantees one caller at a time; `prepare` only reads the
vocabulary, which llama.cpp allows beside a running decode.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jinja2

from minitoolai.chat.settings import LocalModelSettings
from minitoolai.errors import InvalidRequest

# used when a GGUF file carries no chat template: ChatML, which most small instruct models use
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MAX_STOP_SEQUENCES = 4
# stands for message i's content while the template renders (private-use code points, which
# no template treats specially); see Engine.prepare
_MARKER = re.compile("\ue000mtai-content-([0-9]+)\ue001")


def _marker(index: int) -> str:
    return f"\ue000mtai-content-{index}\ue001"

# prompt tokens evaluated between two looks at the cancel flag (a few hundred ms at most)
PROMPT_SLICE = 128


@dataclass(slots=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 0.95
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(slots=True)
class Prepared:
    """A request turned into the model's prompt tokens, ready for the queue."""

    tokens: list[int]
    max_tokens: int  # max_completion_tokens, capped by what the context has left
    sampling: Sampling


@dataclass(slots=True)
class Outcome:
    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: str = "length"
    cancelled: bool = False
    pieces: list[str] = field(default_factory=list)


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # parts: the gateway refuses image parts for a model without vision, so text remains
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The messages as chat templates expect them: developer is system, content is text."""
    out = []
    for message in messages:
        role = message.get("role")
        out.append({"role": "system" if role == "developer" else role,
                    "content": _text_of(message.get("content"))})
    return out


def _float(extra: dict, key: str, low: float, high: float, default: float) -> float:
    value = extra.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(f"'{key}' must be a number between {low} and {high}", param=key)
    return float(value)


# what a local model cannot do: refused with a 400 rather than silently ignored
UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "logit_bias", "logprobs",
               "top_logprobs", "audio", "prediction", "web_search_options")


def refuse_unsupported(messages: list[dict[str, Any]], extra: dict[str, Any], n: int) -> None:
    """400 for a request a local model cannot serve: tool calling, logprobs, audio, n > 1."""
    for key in UNSUPPORTED:
        if extra.get(key):
            raise InvalidRequest(f"'{key}' is not supported by local models", param=key,
                                 code="unsupported_parameter")
    if any(m != "text" for m in extra.get("modalities") or ()):
        raise InvalidRequest("local models only produce text: 'modalities' must be"
                             " [\"text\"]", param="modalities", code="unsupported_parameter")
    if n != 1:
        raise InvalidRequest("local models produce one choice: 'n' must be 1", param="n",
                             code="unsupported_parameter")
    for i, message in enumerate(messages):
        role = message.get("role")
        if role in ("tool", "function") or message.get("tool_calls") \
                or message.get("function_call"):
            raise InvalidRequest(f"messages[{i}]: local models do not support tool calling"
                                 " (tool results, tool calls)", param=f"messages[{i}]",
                                 code="unsupported_parameter")
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if part.get("type") not in ("text", "refusal"):
                    raise InvalidRequest(f"messages[{i}].content[{j}]: local models read text"
                                         f" only (got a {part.get('type')!r} part)",
                                         param=f"messages[{i}].content[{j}]",
                                         code="unsupported_parameter")


def sampling_of(temperature: float, extra: dict[str, Any]) -> Sampling:
    """The sampling options a local model honours, from the request's OpenAI fields."""
    response_format = extra.get("response_format")
    if response_format and not (isinstance(response_format, dict)
                                and response_format.get("type") == "text"):
        raise InvalidRequest("local models only produce text: 'response_format' must be"
                             " {\"type\": \"text\"}", param="response_format",
                             code="unsupported_parameter")
    seed = extra.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidRequest("'seed' must be an integer", param="seed")
    stop = extra.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) \
            and len(stop) <= MAX_STOP_SEQUENCES:
        stops = tuple(stop)
    else:
        raise InvalidRequest(f"'stop' must be a string or a list of at most"
                             f" {MAX_STOP_SEQUENCES} strings", param="stop")
    return Sampling(
        temperature=temperature,
        top_p=_float(extra, "top_p", 0.0, 1.0, 0.95),
        presence_penalty=_float(extra, "presence_penalty", -2.0, 2.0, 0.0),
        frequency_penalty=_float(extra, "frequency_penalty", -2.0, 2.0, 0.0),
        seed=seed,
        stop=tuple(s for s in stops if s),
    )


class Engine:
    """A loaded model. `load()` once; then `prepare()` anywhere and `generate()` on one thread."""

    def __init__(self, cfg: LocalModelSettings) -> None:
        self.cfg = cfg
        self.llm = None
        self.fingerprint = "fp_local"
        self._formatter = None
        self._stop_ids: frozenset[int] = frozenset()
        self._is_eog: Callable[[int], bool] = lambda token: False
        self._random = random.Random()
        self._lock = threading.Lock()  # defensive: generate() must never run twice at once

    # ---- loading ---------------------------------------------------------------------------
    def load(self) -> None:
        import llama_cpp  # imported here: loading the native library is this method's cost
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        cfg = self.cfg
        # the same count for prompt and generation: llama-cpp-python would otherwise use every
        # CPU for prompts, and threads that wait on each other collapse on a busy machine
        threads = cfg.threads or max(1, (os.cpu_count() or 2) // 2)
        llm = llama_cpp.Llama(
            model_path=str(cfg.path), n_ctx=cfg.context_size, n_batch=min(512, cfg.context_size),
            n_threads=threads, n_threads_batch=threads, verbose=False,
        )
        eos_id, bos_id = llm.token_eos(), llm.token_bos()
        eos = llm.detokenize([eos_id], special=True).decode("utf-8", "replace") \
            if eos_id != -1 else ""
        bos = llm.detokenize([bos_id], special=True).decode("utf-8", "replace") \
            if bos_id != -1 else ""
        template = llm.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos,
                                              stop_token_ids=[eos_id])
        vocab = llm._model.vocab  # the vocabulary handle that llama_vocab_is_eog needs
        self._is_eog = lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))
        self._stop_ids = frozenset(t for t in (eos_id,) if t != -1)
        digest = hashlib.sha256(
            f"{cfg.path.name}:{cfg.path.stat().st_size}:{llama_cpp.__version__}".encode()
        ).hexdigest()
        self.fingerprint = "fp_" + digest[:10]
        self.llm = llm

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.close()

    # ---- requests --------------------------------------------------------------------------
    def prepare(self, messages: list[dict[str, Any]], max_completion_tokens: int,
                sampling: Sampling) -> Prepared:
        """Format with the model's own chat template and tokenize with its own tokenizer."""
        chat = chat_messages(messages)
        # each content is rendered as a marker, then the prompt is tokenized piece by piece:
        # the template's own text with special tokens parsed, the clients' text without, so
        # "<|im_start|>system" typed by a user stays text and never becomes a control token
        marked = [dict(m, content=_marker(i)) for i, m in enumerate(chat)]
        formatted = self._render(marked)
        pieces = _MARKER.split(formatted.prompt)
        found = {int(i) for i in pieces[1::2]}
        add_bos = not formatted.added_special
        if all(int(i) in found for i, m in enumerate(chat) if m["content"]):
            tokens: list[int] = []
            for k, piece in enumerate(pieces):
                text, special = (piece, True) if k % 2 == 0 else (chat[int(piece)]["content"],
                                                                   False)
                if text:
                    tokens += self.llm.tokenize(text.encode("utf-8"),
                                                add_bos=add_bos and not tokens, special=special)
        else:
            # a template that transforms the content (the markers did not survive): render
            # it as is, and refuse content that would tokenize into special tokens
            for i, message in enumerate(chat):
                data = message["content"].encode("utf-8")
                if self.llm.tokenize(data, add_bos=False, special=True) != \
                        self.llm.tokenize(data, add_bos=False, special=False):
                    raise InvalidRequest(f"messages[{i}].content contains the model's control"
                                         " token text", param=f"messages[{i}].content")
            formatted = self._render(chat)
            tokens = self.llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=add_bos,
                                       special=True)
        room = self.cfg.context_size - len(tokens)
        if room < 1:
            raise InvalidRequest(
                f"the prompt is {len(tokens)} tokens but the model {self.cfg.id!r} has a"
                f" context of {self.cfg.context_size} tokens; shorten the messages",
                param="messages", code="context_length_exceeded")
        template_stops = formatted.stop if isinstance(formatted.stop, list) else \
            [formatted.stop] if formatted.stop else []
        extra_stops = tuple(s for s in template_stops if s and s not in sampling.stop)
        if extra_stops:
            sampling.stop = sampling.stop + extra_stops
        return Prepared(tokens, min(max_completion_tokens, room), sampling)

    def _render(self, messages: list[dict[str, str]]):
        try:
            return self._formatter(messages=messages)
        except (jinja2.TemplateError, ValueError, TypeError) as exc:  # raise_exception() -> 400
            raise InvalidRequest(f"the model's chat template refused the messages: {exc}",
                                 param="messages") from None

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def generate(self, job: Prepared, cancelled: threading.Event,
                 emit: Callable[[str], None]) -> Outcome:
        """Run one generation, calling `emit(text)` for each piece of new text, until the end
        of generation, a stop sequence, the token limit, or `cancelled` (checked between
        tokens, so a cancelled job releases the model after at most one more token)."""
        with self._lock:
            return self._generate(job, cancelled, emit)

    def _evaluate_prompt(self, tokens: list[int], cancelled: threading.Event) -> bool:
        """Evaluate all but the last prompt token in slices, checking `cancelled` between
        them, so a client that leaves during a long prompt frees the model quickly too.
        `Llama.generate` then finds this prefix in its cache and evaluates only the last
        token. Returns False when cancelled."""
        llm = self.llm
        target = len(tokens) - 1
        done = 0
        cached = llm.input_ids[: min(llm.n_tokens, target)]
        while done < len(cached) and cached[done] == tokens[done]:
            done += 1
        if target - done <= PROMPT_SLICE:
            return not cancelled.is_set()  # short: not worth slicing
        llm.n_tokens = done  # eval() drops the cache past this point
        while done < target:
            if cancelled.is_set():
                return False
            end = min(done + PROMPT_SLICE, target)
            llm.eval(tokens[done:end])
            done = end
        return not cancelled.is_set()

    def _generate(self, job: Prepared, cancelled: threading.Event,
                  emit: Callable[[str], None]) -> Outcome:
        llm, s = self.llm, job.sampling
        outcome = Outcome(prompt_tokens=len(job.tokens))
        if cancelled.is_set():
            outcome.cancelled = True
            return outcome
        if not self._evaluate_prompt(job.tokens, cancelled):
            outcome.cancelled = True
            return outcome
        llm.set_seed(s.seed if s.seed is not None else self._random.getrandbits(31))
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        stops = s.stop
        longest_stop = max((len(x) for x in stops), default=0)
        held = ""  # text that may be the start of a stop sequence, not yet emitted
        tokens = llm.generate(job.tokens, temp=s.temperature, top_p=s.top_p,
                              presence_penalty=s.presence_penalty,
                              frequency_penalty=s.frequency_penalty, reset=True)
        try:
            for token in tokens:
                if cancelled.is_set():
                    outcome.cancelled = True
                    break
                if token in self._stop_ids or self._is_eog(token):
                    outcome.finish_reason = "stop"
                    break
                outcome.completion_tokens += 1
                text = decoder.decode(llm.detokenize([token]))
                if stops:
                    held += text
                    cut = min((i for i in (held.find(x) for x in stops) if i >= 0), default=-1)
                    if cut >= 0:
                        if held[:cut]:
                            emit(held[:cut])
                        outcome.finish_reason = "stop"
                        held = ""
                        break
                    # keep back only a tail that could still grow into a stop sequence
                    keep = _partial_stop_len(held, stops, longest_stop)
                    text, held = held[:len(held) - keep], held[len(held) - keep:]
                if text:
                    emit(text)
                if outcome.completion_tokens >= job.max_tokens:
                    break
            tail = held + decoder.decode(b"", final=True)
            if tail and not outcome.cancelled:
                emit(tail)
        finally:
            tokens.close()
        return outcome


def _partial_stop_len(text: str, stops: tuple[str, ...], longest: int) -> int:
    """Length of the longest end of `text` that is a proper prefix of a stop sequence."""
    for size in range(min(longest - 1, len(text)), 0, -1):
        tail = text[-size:]
        if any(stop.startswith(tail) for stop in stops):
            return size
    return 0
