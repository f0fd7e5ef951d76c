"""The speech service: the engines this server runs, and one request from hold to settle.

speak(): reserve the exact price of the input (characters x price per character), start the
engine, wait for its first bytes (a failure here releases the hold and answers an error
status; so does an input that ends without a byte of audio: 400 no_audio), then stream the rest and settle once the stream ends. A client that goes away
mid-stream is charged the full price (the work was asked for and done, or stopped at its
request); a failure of the engine or upstream mid-stream releases the hold.
"""

from __future__ import annotations

import asyncio
import logging
import time

from minitoolai.catalog import Model
from minitoolai.errors import APIError, InvalidRequest, ServiceUnavailable
from minitoolai.ledger.holds import REFUSALS, UsageRecord, reserve
from minitoolai.money import format_usd
from minitoolai.observability import exchange
from minitoolai.observability.metrics import UpstreamTimer
from minitoolai.speech import models as speech_models
from minitoolai.speech.engines.base import EngineError
from minitoolai.speech.engines.upstream import UpstreamSpeech
from minitoolai.speech.formats import CONTENT_TYPES, PCM_RATE, local_engine_missing
from minitoolai.speech.streaming import AudioResponse, LocalStream
from minitoolai.speech.validation import SpeechRequest

log = logging.getLogger(__name__)


class NoAudio(InvalidRequest):
    default_code = "no_audio"


class EngineFailed(APIError):
    status_code = 500
    error_type = "server_error"
    default_code = "engine_failed"


class SpeechService:
    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings.speech
        self.catalog = runtime.catalog
        self.engines: dict[str, object] = {}  # provider ("espeak", "piper") -> engine
        self.notes: dict[str, str] = {}  # provider -> why it is not running
        self.upstreams: dict[str, UpstreamSpeech] = {}
        self.missing_formats: list[str] = []

    # ---- start / stop ---------------------------------------------------------------------
    async def open(self) -> None:
        cfg = self.settings
        missing = local_engine_missing()
        if missing is not None:
            # the upstream models still work; the local ones say why they do not
            for provider in (speech_models.ESPEAK, speech_models.PIPER):
                self.notes[provider] = missing
        else:
            from minitoolai.speech.audio import missing_encoders

            self.missing_formats = missing_encoders()
        if cfg.espeak and missing is None:
            try:
                self.engines[speech_models.ESPEAK] = await asyncio.to_thread(self._load_espeak)
            except EngineError as exc:
                # a server without eSpeak still serves the rest; /api/models/ says why not
                self.notes[speech_models.ESPEAK] = str(exc)
                log.warning("speech: %s", exc)
        if cfg.piper_voices and missing is None:
            from minitoolai.speech.engines.piper import PiperEngine

            try:
                self.engines[speech_models.PIPER] = await asyncio.to_thread(
                    PiperEngine, cfg.piper_voices, cfg.piper_threads)
            except EngineError as exc:
                self.notes[speech_models.PIPER] = str(exc)
                log.warning("speech: %s", exc)
        providers = self.runtime.settings.chat.providers
        for model in self.catalog.of_kind("speech"):
            if speech_models.is_local(model) or model.provider in self.upstreams:
                continue
            p = providers.get(model.provider)
            if p is None:
                continue
            upstream = UpstreamSpeech(model.provider, p.base_url, p.api_key, p.connect_timeout,
                                      p.read_timeout, p.max_connections)
            await upstream.open()
            self.upstreams[model.provider] = upstream

    def _load_espeak(self):
        from minitoolai.speech.engines.espeak import EspeakEngine, find_library, load_library

        cfg = self.settings
        library = load_library(*find_library(cfg.espeak_library, cfg.espeak_data))
        engine = EspeakEngine(library, cfg.espeak_default_voice, cfg.voice_aliases,
                              cfg.espeak_chunk_ms)
        if engine.resolve(cfg.espeak_default_voice) is None:
            raise EngineError(f"speech.espeak_default_voice {cfg.espeak_default_voice!r} is "
                              "not an eSpeak NG voice")
        return engine

    async def close(self) -> None:
        await self.runtime.holds.drain()
        for upstream in self.upstreams.values():
            await upstream.close()
        piper = self.engines.get(speech_models.PIPER)
        if piper is not None:
            piper.close()

    # ---- what is served -------------------------------------------------------------------
    def is_available(self, model: Model) -> bool:
        if speech_models.is_local(model):
            return model.provider in self.engines
        ok, _ = speech_models.upstream_configured(self.runtime.settings, model)
        return ok and model.provider in self.upstreams

    def default_voice(self, model: Model) -> str:
        if model.provider == speech_models.ESPEAK:
            return self.settings.espeak_default_voice
        return self.voices(model)[0]["id"]

    def voices(self, model: Model) -> list[dict]:
        engine = self.engines.get(model.provider)
        if engine is not None:
            return [v.public() for v in engine.voices()]
        return [{"id": v, "name": v, "language": None} for v in model.extra.get("voices", ())]

    def check_voice(self, model: Model, voice: str) -> str | None:
        """The engine's name for the voice (None for an upstream), or 400 naming `voice`."""
        engine = self.engines.get(model.provider)
        if engine is not None:
            resolved = engine.resolve(voice)
        else:
            resolved = None if voice not in model.extra.get("voices", ()) else voice
        if resolved is None:
            raise InvalidRequest(f"unknown voice {voice!r} for model {model.id!r}; "
                                 "GET /api/voices/ lists them", param="voice",
                                 code="invalid_voice")
        return resolved if engine is not None else None

    def listing(self) -> list[dict]:
        out = []
        for model in self.catalog.of_kind("speech"):
            available = self.is_available(model)
            entry = {
                "model": model.id, "object": "speech_model", "owned_by": model.owned_by,
                "available": available,
                "pricing": {"per_1m_characters": format_usd(model.input_nano * 1_000_000)},
                "formats": [f for f in CONTENT_TYPES
                            if speech_models.is_local(model) is False
                            or f not in self.missing_formats],
                "voices": self.voices(model) if available or not speech_models.is_local(model)
                else [],
            }
            engine = self.engines.get(model.provider)
            if model.provider == speech_models.ESPEAK and engine is not None:
                entry["default_voice"] = self.settings.espeak_default_voice
                entry["variants"] = engine.variants
            if not available:
                if speech_models.is_local(model):
                    entry["note"] = self.notes.get(model.provider) or "not running"
                else:
                    entry["note"] = speech_models.upstream_configured(
                        self.runtime.settings, model)[1]
            out.append(entry)
        return out

    # ---- one request ----------------------------------------------------------------------
    async def speak(self, principal, req: SpeechRequest, endpoint: str) -> AudioResponse:
        if speech_models.is_local(req.model) and req.format in self.missing_formats:
            raise InvalidRequest(f"format {req.format!r} cannot be encoded on this server "
                                 "(PyAV is missing or lacks its encoder)",
                                 param="response_format", code="invalid_format")
        db = self.runtime.db
        characters = req.characters
        cost = characters * req.model.input_nano
        request_id = exchange.request_id()  # the response's x-request-id (the middleware's)
        exchange.note_model(req.model.id)
        started = time.monotonic()

        def record(status: str) -> UsageRecord:
            return UsageRecord(endpoint=endpoint, model=req.model.id, characters=characters,
                               status=status,
                               latency_ms=int((time.monotonic() - started) * 1000))

        def give_back() -> asyncio.Task:
            # a release the database refuses is retried in the background (ledger/undo.py)
            return self.runtime.holds.settle(request_id, 0, record("error"),
                                             account_id=principal.account_id)

        try:
            await reserve(db, request_id=request_id, account_id=principal.account_id,
                          key_id=principal.key_id, amount=cost, kind="speech",
                          ttl_seconds=self.settings.hold_ttl_seconds, model=req.model.id)
        except REFUSALS:
            raise  # refused (credit, the key's limits, expiry, models): nothing was written
        except BaseException:
            give_back()  # the hold's COMMIT may have landed unseen (see ChatService.serve)
            raise
        self.runtime.holds.track(request_id)  # renewed while the audio flows, however long

        stream = None
        try:
            stream = await self._open(req)
            first = await anext(stream, b"")
            if not first:  # the stream ended without a byte of audio: nothing to sell
                raise NoAudio("the input produced no audio (nothing in it is spoken at this"
                              " speed); nothing was charged", param="input")
        except BaseException as exc:
            if stream is not None:
                await stream.aclose()
            await asyncio.shield(give_back())
            if isinstance(exc, EngineError):
                raise EngineFailed(f"the speech engine failed: {exc}") from None
            raise

        async def finish(status: str) -> None:
            try:
                await stream.aclose()  # stops a local engine still speaking
            finally:
                charged = cost if status in ("ok", "cancelled") else 0
                exchange.note_speech(characters, charged)
                # journaled if the database refuses it: the audio was served
                await self.runtime.holds.settle_or_journal(
                    request_id, charged, record(status), account_id=principal.account_id)

        headers = {"X-Characters": str(characters),
                   "X-Cost-USD": format_usd(cost)}
        if req.format == "pcm" and speech_models.is_local(req.model):
            headers["X-Sample-Rate"] = str(PCM_RATE)
        return AudioResponse(first, stream, CONTENT_TYPES[req.format], headers,
                             lambda status: self._settle_later(finish(status), request_id))

    async def _open(self, req: SpeechRequest):
        engine = self.engines.get(req.model.provider)
        if engine is not None:
            return aiter(LocalStream(engine, req.input, req.engine_voice, req.speed,
                                     req.format))
        upstream = self.upstreams.get(req.model.provider)
        if upstream is None:
            raise ServiceUnavailable(f"speech model {req.model.id!r} has no provider")
        payload = {"model": req.model.upstream_model, "input": req.input, "voice": req.voice,
                   "response_format": req.format, "speed": req.speed}
        if req.instructions is not None:
            payload["instructions"] = req.instructions
        with UpstreamTimer(req.model.provider):
            return await upstream.stream(payload)

    async def _settle_later(self, coro, request_id: str) -> None:
        """Settle in a task of its own (see HoldKeeper.finish), and wait for it."""
        await asyncio.shield(self.runtime.holds.finish(request_id, coro))
