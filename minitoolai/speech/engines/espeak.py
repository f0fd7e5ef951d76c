"""eSpeak NG in-process, through ctypes: no download, about a hundred languages.

The library comes from the espeakng-loader wheel (which ships libespeak-ng and its data), or
from the system (Debian's libespeak-ng1 + espeak-ng-data) when the wheel is absent, or from
the configured paths. eSpeak NG keeps its state in process globals and is not thread-safe,
so one library object per process (cached by path) owns one worker thread, and every
synthesis runs there, one after another. It is fast (hundreds of times real time on one
core), so the queue stays short.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from minitoolai.speech.engines.base import EngineError, PcmCallback, Voice

NORMAL_WPM = 175  # eSpeak's default rate: speed 1.0
MIN_WPM = 80  # eSpeak clamps slower rates; the encoder's atempo does the rest

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_RATE = 1  # espeakRATE
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_GENDERS = {1: "male", 2: "female"}


class _EspeakVoice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_void_p),
                ("identifier", ctypes.c_char_p), ("gender", ctypes.c_ubyte),
                ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte), ("xx1", ctypes.c_ubyte),
                ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)


def find_library(configured: Path | None, data: Path | None) -> tuple[str, str | None]:
    """(library path, data path or None for the library's built-in default)."""
    if configured is not None:
        return str(configured), str(data) if data else None
    try:
        import espeakng_loader
    except ImportError:
        system = ctypes.util.find_library("espeak-ng")
        if system is None:
            raise EngineError("eSpeak NG not found: pip install espeakng-loader "
                              "(or apt-get install libespeak-ng1 espeak-ng-data)") from None
        return system, str(data) if data else None
    return espeakng_loader.get_library_path(), str(data or espeakng_loader.get_data_path())


def _languages(pointer: int) -> list[tuple[int, str]]:
    """eSpeak's `languages` field: (priority byte, NUL-terminated name)*, then a zero byte.
    A lower priority number is a better match for that language."""
    out = []
    while pointer and ctypes.string_at(pointer, 1)[0] != 0:
        name = ctypes.string_at(pointer + 1)
        out.append((ctypes.string_at(pointer, 1)[0], name.decode("ascii", "replace")))
        pointer += 2 + len(name)
    return out


class _Library:
    """The loaded libespeak-ng and the one thread allowed to call it."""

    def __init__(self, library: str, data: str | None) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")
        self.executor.submit(self._load, library, data).result()

    def _load(self, library: str, data: str | None) -> None:
        try:
            lib = ctypes.CDLL(library)
        except OSError as exc:
            raise EngineError(f"cannot load eSpeak NG from {library}: {exc}") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_int]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                     ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                     ctypes.c_void_p, ctypes.c_void_p]
        # 100 ms buffers: small enough to stream, large enough to keep callbacks cheap
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 100,
                                     data.encode() if data else None, 0)
        if rate <= 0:
            raise EngineError(f"eSpeak NG failed to initialise (data: {data or 'default'})")
        self.lib = lib
        self.rate = rate
        self.voices = self._list(None)
        spec = _EspeakVoice(languages=ctypes.cast(ctypes.c_char_p(b"variant"),
                                                  ctypes.c_void_p).value)
        self.variants = [v["identifier"].rsplit("/", 1)[-1] for v in self._list(spec)]
        self._target: PcmCallback | None = None
        self._stopped = False
        self._callback = _Callback(self._on_audio)  # kept alive as long as the library
        lib.espeak_SetSynthCallback(self._callback)

    def _list(self, spec) -> list[dict]:
        array = self.lib.espeak_ListVoices(ctypes.byref(spec) if spec is not None else None)
        out, i = [], 0
        while array[i]:
            v = array[i].contents
            out.append({"name": v.name.decode("utf-8", "replace"),
                        "identifier": v.identifier.decode("utf-8", "replace"),
                        "languages": _languages(v.languages), "gender": v.gender})
            i += 1
        return out

    def _on_audio(self, wav, numsamples, events) -> int:
        if self._stopped:
            return 1
        if wav and numsamples > 0 and not self._target(ctypes.string_at(wav, numsamples * 2)):
            self._stopped = True
            return 1  # abort the synthesis
        return 0

    def speak(self, text: str, identifier: str, wpm: int, on_pcm: PcmCallback) -> None:
        """Runs on the library's thread only."""
        if self.lib.espeak_SetVoiceByName(identifier.encode()) != 0:
            raise EngineError(f"eSpeak NG has no voice {identifier!r}")
        self.lib.espeak_SetParameter(_RATE, wpm, 0)
        data = text.replace("\x00", " ").encode("utf-8")
        self._target, self._stopped = on_pcm, False
        try:
            err = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                        None, None)
        finally:
            self._target = None
        if err != 0 and not self._stopped:
            raise EngineError(f"eSpeak NG failed to speak (error {err})")


_libraries: dict[tuple[str, str | None], _Library] = {}
_libraries_lock = threading.Lock()


def load_library(library: str, data: str | None) -> _Library:
    """One _Library per process and path: eSpeak NG's state is process-wide."""
    with _libraries_lock:
        key = (library, data)
        if key not in _libraries:
            _libraries[key] = _Library(library, data)
        return _libraries[key]


class EspeakEngine:
    def __init__(self, library: _Library, default_voice: str, aliases: dict[str, str],
                 chunk_ms: int) -> None:
        self._lib = library
        self._chunk_bytes = max(2, library.rate * chunk_ms // 1000 * 2)
        self._by_language: dict[str, str] = {}
        self._voices: list[Voice] = []
        for v in library.voices:
            voice_id = (v["languages"][0][1] if v["languages"] else v["identifier"]).lower()
            if voice_id in self._by_language:
                voice_id = v["identifier"].lower()
            self._by_language[voice_id] = v["identifier"]
            self._voices.append(Voice(voice_id, v["name"], voice_id, _GENDERS.get(v["gender"])))
        # a bare language ("en", "fr") picks the voice eSpeak ranks best for it
        best: dict[str, tuple[int, str]] = {}
        for v in library.voices:
            for priority, language in v["languages"][1:]:
                language = language.lower()
                if language not in self._by_language and (
                        language not in best or priority < best[language][0]):
                    best[language] = (priority, v["identifier"])
        self._by_language.update({language: ident for language, (_, ident) in best.items()})
        self._variants = {name.lower(): name for name in library.variants}
        self.default_voice = default_voice
        self._aliases = {}
        for alias, target in aliases.items():
            if self.resolve(target) is None:
                raise EngineError(f"speech.voice_aliases: {alias!r} maps to unknown eSpeak "
                                  f"voice {target!r}")
            self._aliases[alias.lower()] = target
        self._voices += [Voice(a, f"{a} ({t})", t.split("+")[0], alias_of=t)
                         for a, t in self._aliases.items()]

    @property
    def variants(self) -> list[str]:
        return sorted(self._variants.values(), key=str.lower)

    def voices(self) -> list[Voice]:
        return list(self._voices)

    def resolve(self, voice: str) -> str | None:
        key = voice.strip().lower()
        if key in getattr(self, "_aliases", {}):
            key = self._aliases[key].lower()
        language, _, variant = key.partition("+")
        identifier = self._by_language.get(language)
        if identifier is None:
            return None
        if variant:
            name = self._variants.get(variant)
            if name is None:
                return None
            return f"{identifier}+{name}"
        return identifier

    def sample_rate(self, voice: str) -> int:
        return self._lib.rate

    def wpm(self, speed: float) -> int:
        return max(MIN_WPM, round(NORMAL_WPM * speed))

    def tempo(self, speed: float) -> float:
        return NORMAL_WPM * speed / self.wpm(speed)

    def start(self, text: str, voice: str, speed: float, on_pcm: PcmCallback) -> Future:
        """Queue the synthesis on the library's thread; `on_pcm` is called there."""
        return self._lib.executor.submit(self._run, text, voice, speed, on_pcm)

    def _run(self, text: str, voice: str, speed: float, on_pcm: PcmCallback) -> None:
        # eSpeak hands over ~100 ms at a time; pass on `chunk_ms` worth, to keep the
        # per-chunk costs (encoder calls, thread hops) small
        pending: list[bytes] = []
        size = 0
        stopped = False

        def collect(pcm: bytes) -> bool:
            nonlocal size, stopped
            pending.append(pcm)
            size += len(pcm)
            if size >= self._chunk_bytes:
                chunk = b"".join(pending)
                pending.clear()
                size = 0
                if not on_pcm(chunk):
                    stopped = True
                    return False
            return True

        self._lib.speak(text, voice, self.wpm(speed), collect)
        if pending and not stopped:
            on_pcm(b"".join(pending))
