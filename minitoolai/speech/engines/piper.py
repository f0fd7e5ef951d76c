"""Piper voices (neural, ONNX) from local files, through the piper-tts package.

Each configured voice is one .onnx model with its .onnx.json config, loaded at start; nothing
is downloaded. Piper speaks one sentence at a time, so audio streams sentence by sentence.
Speed maps onto Piper's length_scale (1/speed), which Piper honours for every speed.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from minitoolai.speech.engines.base import EngineError, PcmCallback, Voice
from minitoolai.speech.settings import PiperVoiceSettings


def piper_installed() -> bool:
    try:
        import piper  # noqa: F401
    except ImportError:
        return False
    return True


class PiperEngine:
    def __init__(self, voices: list[PiperVoiceSettings], threads: int) -> None:
        try:
            from piper import PiperVoice
        except ImportError:
            raise EngineError("Piper voices are configured but piper-tts is not installed: "
                              "pip install 'minitoolai[speech]'") from None
        self._voices: dict[str, tuple[object, PiperVoiceSettings]] = {}
        for cfg in voices:
            config = cfg.config or cfg.model.with_name(cfg.model.name + ".json")
            if not cfg.model.is_file() or not config.is_file():
                raise EngineError(f"speech.piper_voices {cfg.id!r}: {cfg.model} or {config} "
                                  "does not exist")
            try:
                voice = PiperVoice.load(cfg.model, config_path=config)
            except (OSError, ValueError, KeyError) as exc:
                raise EngineError(f"speech.piper_voices {cfg.id!r}: cannot load: {exc}") \
                    from None
            self._voices[cfg.id.lower()] = (voice, cfg)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="piper")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def voices(self) -> list[Voice]:
        out = []
        for voice, cfg in self._voices.values():
            out.append(Voice(cfg.id, cfg.id, voice.config.espeak_voice,
                             extra={"sample_rate": voice.config.sample_rate}))
        return out

    def resolve(self, voice: str) -> str | None:
        key = voice.strip().lower()
        return key if key in self._voices else None

    def sample_rate(self, voice: str) -> int:
        return self._voices[voice][0].config.sample_rate

    def tempo(self, speed: float) -> float:
        return 1.0

    def start(self, text: str, voice: str, speed: float, on_pcm: PcmCallback) -> Future:
        return self._executor.submit(self._run, text, voice, speed, on_pcm)

    def _run(self, text: str, voice_id: str, speed: float, on_pcm: PcmCallback) -> None:
        from piper import SynthesisConfig

        voice, cfg = self._voices[voice_id]
        config = SynthesisConfig(speaker_id=cfg.speaker,
                                 length_scale=voice.config.length_scale / speed)
        for chunk in voice.synthesize(text, syn_config=config):
            if not on_pcm(chunk.audio_int16_bytes):
                return
