"""The local GGUF provider called directly: real SmolLM2 generations through llama.cpp."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from minitoolai.chat.settings import LocalModelSettings
from minitoolai.errors import InvalidRequest, ServiceUnavailable, UpstreamError
from tests.chat.local.conftest import chat_request

SEED_CHUNK_KEYS = ["id", "object", "created", "model", "service_tier", "system_fingerprint",
                   "choices", "usage"]
# greedy, SmolLM2 answers this with a poem that never stops by itself
LONG_PROMPT = "Write a long poem about autumn leaves."
USAGE_KEYS = {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details",
              "completion_tokens_details"}


async def read_stream(stream) -> tuple[list[bytes], list[dict], str]:
    """Every item the stream yields, the parsed events, and the generated text."""
    items, events = [], []
    async for item in stream:
        items.append(item)
        for block in item.split(b"\n\n"):
            if not block:
                continue
            assert block.startswith(b"data: ")
            payload = block[6:]
            events.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events
                   if isinstance(e, dict) and e["choices"])
    return items, events, text


async def test_stream_has_the_seed_shape_and_counted_usage(provider):
    request = chat_request("What is the capital of France? Answer in one sentence.",
                           max_tokens=30)
    # put this prompt in the model's cache first, so that this stream and the direct call
    # below evaluate it alike (llama.cpp's numbers may differ in the last bits by batch size)
    await provider.complete(request)
    stream = await provider.open_stream(request)
    items, events, text = await read_stream(stream)

    assert events[-1] == "[DONE]" and items[-1] == b"data: [DONE]\n\n"
    chunks, usage_event = events[:-2], events[-2]
    assert items[-2].startswith(b"data: ") and b'"choices":[]' in items[-2]  # its own item
    for event in chunks + [usage_event]:
        assert list(event) == SEED_CHUNK_KEYS
        assert event["id"] == request.request_id and event["id"].startswith("chatcmpl-")
        assert event["object"] == "chat.completion.chunk"
        assert event["model"] == "smollm2-135m"
        assert event["system_fingerprint"].startswith("fp_")
    for event in chunks:
        assert event["usage"] is None
        [choice] = event["choices"]
        assert list(choice) == ["index", "delta", "logprobs", "finish_reason"]
        assert choice["logprobs"] is None
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": chunks[-1]["choices"][0]
                                        ["finish_reason"]}
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(e["choices"][0]["finish_reason"] is None for e in chunks[:-1])
    assert text.strip()  # what it says is the model's affair (see test_local_http.py)

    usage = usage_event["usage"]
    assert usage_event["choices"] == [] and set(usage) == USAGE_KEYS
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert usage["completion_tokens_details"] == {
        "reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0}
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == \
        (usage["prompt_tokens"], usage["completion_tokens"])

    # counted by the model's own tokenizer over its own chat template: llama-cpp-python's
    # chat completion (same GGUF template, greedy) reports the same text and the same usage
    direct = provider.engine.llm.create_chat_completion(
        messages=request.messages, temperature=0.0, max_tokens=30)
    assert direct["choices"][0]["message"]["content"] == text
    assert direct["usage"]["prompt_tokens"] == usage["prompt_tokens"]
    assert direct["usage"]["completion_tokens"] == usage["completion_tokens"]


async def test_prompt_tokens_are_known_before_the_hold(provider):
    """The template adds tokens (SmolLM2: a default system prompt when there is none), so the
    gateway can ask for the exact count before reserving."""
    request = chat_request("Hi", max_tokens=3, stream=False)
    exact = await provider.count_prompt_tokens(request)
    assert exact > 20  # "Hi" is one token; the rest is the template's
    _, usage = await provider.complete(request)
    assert usage.prompt_tokens == exact
    with pytest.raises(InvalidRequest):
        await provider.count_prompt_tokens(chat_request("Hi", stop=7))


async def test_a_stream_dropped_unread_stops_its_job(provider):
    import gc

    stream = await provider.open_stream(chat_request("Tell me a long story.", max_tokens=500))
    job = stream._job
    del stream
    gc.collect()
    assert job.cancelled.is_set()


async def test_complete_returns_a_chat_completion(provider):
    request = chat_request("Say hello to Alice.", max_tokens=20, stream=False)
    body, usage = await provider.complete(request)
    assert body["object"] == "chat.completion" and body["id"] == request.request_id
    [choice] = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    assert body["usage"]["prompt_tokens"] == usage.prompt_tokens > 0
    assert body["usage"]["completion_tokens"] == usage.completion_tokens > 0
    assert usage.completion_tokens <= 20


async def test_generation_is_sampled_not_canned(provider):
    """With temperature the seed decides the text: same seed, same text; others differ."""
    prompt = "Write one sentence about the sea."

    async def text(seed):
        body, _ = await provider.complete(
            chat_request(prompt, temperature=1.2, max_tokens=25, stream=False, seed=seed))
        return body["choices"][0]["message"]["content"]

    await text(99)  # this prompt in the cache: every call below then starts alike
    first = await text(1)
    assert await text(1) == first
    others = {await text(seed) for seed in (2, 3, 4)}
    assert others - {first}


async def test_max_completion_tokens_is_honoured(provider):
    stream = await provider.open_stream(
        chat_request("Write a long poem about autumn leaves.", max_tokens=5))
    _, events, _ = await read_stream(stream)
    assert stream.usage.completion_tokens == 5
    assert events[-3]["choices"][0]["finish_reason"] == "length"


async def test_developer_role_is_system(provider):
    from minitoolai.chat.providers.local_engine import Sampling

    def tokens(role):
        messages = [{"role": role, "content": "You answer in French."},
                    {"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
        return provider.engine.prepare(messages, 10, Sampling()).tokens

    assert tokens("developer") == tokens("system")
    prompt = provider.engine.llm.detokenize(tokens("developer"), special=True).decode()
    assert "<|im_start|>system\nYou answer in French." in prompt


async def test_stop_sequences_cut_the_text(provider):
    prompt = "List the days of the week, separated by commas."
    await provider.complete(chat_request(prompt, max_tokens=1, stream=False))  # cache it
    body, _ = await provider.complete(chat_request(prompt, max_tokens=40, stream=False))
    full = body["choices"][0]["message"]["content"]
    words = [w for w in full.replace(",", " ").split() if len(w) > 3]
    assert len(words) >= 2, full
    # an early word: on some CPUs two greedy runs of the same prompt part ways after a few
    # tokens (llama.cpp's kernels are not bit-reproducible across cache states)
    stop = words[1]
    body, _ = await provider.complete(chat_request(prompt, max_tokens=40, stream=False,
                                                       stop=[stop]))
    assert body["choices"][0]["message"]["content"] == full[:full.index(stop)]
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_client_disconnect_stops_generation_at_once(provider):
    """Closing the stream stops the model between two tokens; the next request runs next."""
    request = chat_request(LONG_PROMPT, temperature=0.0,
                           max_tokens=1000)
    stream = await provider.open_stream(request)
    received = 0
    async for item in stream:
        received += item.count(b'"content":')
        if received >= 3:
            break
    job = stream._job
    await stream.aclose()
    # the worker reports how far it went: at most a token or two past the cancel
    outcome = None
    while outcome is None:
        for kind, value in await job.channel.get_all():
            if kind == "end":
                outcome = value
    assert outcome.cancelled
    assert outcome.completion_tokens <= received + 2
    # and the model serves the next request
    _, usage = await provider.complete(chat_request("Say yes.", max_tokens=5, stream=False))
    assert usage.completion_tokens >= 1


async def test_disconnect_during_a_long_prompt_stops_its_evaluation(provider):
    """The prompt is evaluated in slices with a look at the cancel flag between them."""
    words = " ".join(f"item{i}" for i in range(450))
    stream = await provider.open_stream(chat_request(f"Sort these: {words}", max_tokens=50))
    job = stream._job
    prompt_tokens = len(job.prepared.tokens)
    assert prompt_tokens > 1000
    while provider._queue.running is not job:
        await asyncio.sleep(0.001)
    await stream.aclose()
    outcome = None
    while outcome is None:
        for kind, value in await job.channel.get_all():
            if kind == "end":
                outcome = value
    assert outcome.cancelled and outcome.completion_tokens == 0
    assert provider.engine.llm.n_tokens < prompt_tokens - 1  # stopped part-way
    _, usage = await provider.complete(chat_request("Say yes.", max_tokens=5, stream=False))
    assert usage.completion_tokens >= 1


async def test_abandoned_iteration_also_stops_generation(provider):
    """A reader that just stops iterating (its task cancelled) stops the model too."""
    stream = await provider.open_stream(
        chat_request("Describe every planet of the solar system in detail.", max_tokens=1000))
    job = stream._job
    started = asyncio.Event()

    async def reader():
        async for _ in stream:
            started.set()

    task = asyncio.create_task(reader())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert job.cancelled.is_set()
    body, _ = await provider.complete(chat_request("Say no.", max_tokens=3, stream=False))
    assert body["choices"][0]["message"]["content"]


async def test_concurrent_requests_complete_in_arrival_order(provider):
    streams = []
    for i in range(8):  # arrival order is the order of open_stream calls
        streams.append(await provider.open_stream(
            chat_request(f"Give me a fun fact about the number {i + 1}.", temperature=0.7,
                         max_tokens=12)))
    finished: list[int] = []

    async def consume(i, stream):
        _, events, text = await read_stream(stream)
        finished.append(i)
        return events, text, stream.usage

    results = await asyncio.gather(*(consume(i, s) for i, s in enumerate(streams)))
    assert finished == list(range(8))
    for events, text, usage in results:
        assert events[-1] == "[DONE]"
        assert text.strip()
        assert 1 <= usage.completion_tokens <= 12


async def test_full_queue_is_refused_with_503(gguf_path):
    from minitoolai.chat.providers.local_gguf import LocalGGUFProvider

    provider = LocalGGUFProvider(LocalModelSettings(id="tiny-queue", path=gguf_path,
                                                    queue_size=2))
    await provider.start()
    try:
        long = {"temperature": 0.0, "max_tokens": 1000}
        running = await provider.open_stream(chat_request(LONG_PROMPT, **long))
        while provider._queue.running is None:  # the worker takes it off the queue
            await asyncio.sleep(0.01)
        waiting = [await provider.open_stream(chat_request("Another story.", **long))
                   for _ in range(2)]
        assert provider.waiting == 2
        with pytest.raises(ServiceUnavailable) as refused:
            await provider.open_stream(chat_request("One too many.", **long))
        assert refused.value.status_code == 503
        assert "busy" in refused.value.message and "retry" in refused.value.message
        assert refused.value.envelope()["error"]["code"] == "model_busy"
        with pytest.raises(ServiceUnavailable):
            await provider.complete(chat_request("Also refused.", stream=False))
        # a waiting client that leaves frees its place at once
        await waiting[0].aclose()
        assert provider.waiting == 1
        extra = await provider.open_stream(chat_request("Now there is room.", **long))
        for stream in (running, waiting[1], extra):
            await stream.aclose()
    finally:
        await provider.aclose()
    assert not provider.is_available()


async def test_a_failed_decode_is_a_502_for_that_request_only(provider, monkeypatch):
    """llama.cpp raising mid-request (e.g. `llama_decode returned 1`) fails that request with
    502 `local_model_failed`; the worker goes on serving the queue."""
    real = provider.engine._generate
    calls = []

    def failing(job, cancelled, emit):
        if not calls:
            calls.append(job)
            emit("partial")
            raise RuntimeError("llama_decode returned 1")
        return real(job, cancelled, emit)

    monkeypatch.setattr(provider.engine, "_generate", failing)
    stream = await provider.open_stream(chat_request("Say hi."))
    received = []
    with pytest.raises(UpstreamError) as failed:
        async for item in stream:
            received.append(item)
    assert failed.value.status_code == 502
    assert failed.value.envelope()["error"]["code"] == "local_model_failed"
    assert "llama_decode returned 1" in failed.value.message
    assert b'"content":"partial"' in b"".join(received)  # what was made before is delivered
    calls.clear()  # the next one fails too, non-streamed this time
    with pytest.raises(UpstreamError) as failed:
        await provider.complete(chat_request("Say hi.", stream=False))
    assert failed.value.envelope()["error"]["code"] == "local_model_failed"
    body, usage = await provider.complete(chat_request("Say hi.", max_tokens=5, stream=False))
    assert usage.completion_tokens >= 1 and body["choices"][0]["message"]["content"]


async def test_shutdown_ends_running_and_waiting_requests_with_503(gguf_path):
    from minitoolai.chat.providers.local_gguf import LocalGGUFProvider

    provider = LocalGGUFProvider(LocalModelSettings(id="closing", path=gguf_path))
    await provider.start()
    running = await provider.open_stream(chat_request(LONG_PROMPT, max_tokens=1000))
    waiting = await provider.open_stream(chat_request(LONG_PROMPT, max_tokens=1000))
    events = running.__aiter__()
    assert b'"content"' in await events.__anext__()
    await provider.aclose()
    for iterator in (events, waiting.__aiter__()):
        with pytest.raises(ServiceUnavailable) as closed:
            async for _ in iterator:
                pass
        assert closed.value.status_code == 503 and "shutting down" in closed.value.message
    assert not provider.is_available()
    with pytest.raises(ServiceUnavailable) as refused:
        await provider.open_stream(chat_request("hi"))
    assert "not loaded" in refused.value.message


async def test_prompt_longer_than_the_context_is_a_400(provider):
    with pytest.raises(InvalidRequest) as exc:
        await provider.open_stream(chat_request("hello " * 3000))
    assert exc.value.status_code == 400
    assert exc.value.envelope()["error"]["code"] == "context_length_exceeded"
    assert "2048" in exc.value.message


@pytest.mark.parametrize("extra, param", [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"stop": 5}, "stop"),
    ({"top_p": 3}, "top_p"),
    ({"seed": "x"}, "seed"),
])
async def test_unsupported_or_bad_options_are_400(provider, extra, param):
    with pytest.raises(InvalidRequest) as exc:
        await provider.open_stream(chat_request("hi", **extra))
    assert exc.value.status_code == 400 and exc.value.param == param
