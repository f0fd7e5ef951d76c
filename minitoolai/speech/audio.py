"""Audio encoding: 16-bit mono PCM from an engine, in chunks, to each output format.

wav and pcm are written here; mp3 (LAME), opus (libopus in Ogg), aac (ADTS) and flac go
through PyAV, whose wheel ships FFmpeg with those encoders. Every format is produced as a
stream: bytes come out as PCM goes in, so the first audio reaches the client while the
engine is still speaking.

- pcm: raw signed 16-bit little-endian mono at 24 kHz, OpenAI's convention, resampled here.
- wav: the engine's own rate; the RIFF and data sizes are 0xFFFFFFFF ("unknown length", as
  OpenAI streams it), since the header goes out before the length is known.
- opus: 48 kHz (the Opus rates do not include the engines' 22.05 kHz).
"""

from __future__ import annotations

import struct

import av
import numpy as np

from minitoolai.speech.formats import CONTENT_TYPES, FORMATS, OPUS_RATE, PCM_RATE

__all__ = ["CONTENT_TYPES", "FORMATS", "PCM_RATE", "Encoder", "encode_all", "missing_encoders",
           "wav_header"]

# format -> (container, codec, fixed output rate or None for the engine's rate, muxer options,
#            bit rate or None, encoder options)
# Mono speech needs few bits. The encoder options trade a little quality for a lot of CPU
# (measured on eSpeak output, bench/RESULTS.md): LAME at compression_level 7 takes half the
# CPU of its default, FFmpeg's AAC "fast" coder a sixth of its default "twoloop", libopus at
# compression_level 5 a third of its default 10.
_CODECS = {
    "mp3": ("mp3", "libmp3lame", None, {}, 64_000, {"compression_level": "7"}),
    "opus": ("ogg", "libopus", OPUS_RATE, {"page_duration": "100000"},  # 0.1 s Ogg pages
             32_000, {"compression_level": "5"}),
    "aac": ("adts", "aac", None, {}, 64_000, {"aac_coder": "fast"}),
    "flac": ("flac", "flac", None, {}, None, {}),
}


# the loudest a sample of "nothing said" gets: -36 dBFS; speech peaks at thousands
SILENCE = 512


def missing_encoders() -> list[str]:
    """The formats this installation cannot encode (PyAV absent or built without a codec)."""
    missing = []
    for fmt, (_, codec, *_) in _CODECS.items():
        try:
            av.codec.Codec(codec, "w")
        except ValueError:  # av.codec.codec.UnknownCodecError: this FFmpeg lacks it
            missing.append(fmt)
    return missing


def wav_header(rate: int) -> bytes:
    """A streaming WAV header: PCM s16le mono, sizes unknown (0xFFFFFFFF)."""
    unknown = 0xFFFFFFFF
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", unknown))


class _Collector:
    """A write-only, non-seekable file for PyAV: muxers then write headers up front only."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


class _Tempo:
    """FFmpeg's atempo: changes speed, keeps pitch. For speeds an engine cannot reach itself."""

    def __init__(self, rate: int, factor: float) -> None:
        self.graph = av.filter.Graph()
        src = self.graph.add_abuffer(format="s16", sample_rate=rate, layout="mono")
        tempo = self.graph.add("atempo", f"{factor:.6f}")
        sink = self.graph.add("abuffersink")
        src.link_to(tempo)
        tempo.link_to(sink)
        self.graph.configure()

    def process(self, frame: av.AudioFrame | None) -> list[av.AudioFrame]:
        self.graph.push(frame)
        frames = []
        while True:
            try:
                frames.append(self.graph.pull())
            except (av.error.BlockingIOError, av.error.EOFError):
                return frames


class Encoder:
    """Feed s16le mono PCM at `rate` with `feed`, end with `finish`; each returns the encoded
    bytes that are ready (possibly none). Not thread-safe: one encoder per request."""

    def __init__(self, fmt: str, rate: int, tempo: float = 1.0) -> None:
        if fmt not in CONTENT_TYPES:
            raise ValueError(f"unknown audio format {fmt!r}")
        self.fmt = fmt
        self.rate = rate
        self._tempo = _Tempo(rate, tempo) if abs(tempo - 1.0) > 1e-6 else None
        # worth a worker thread: a codec or a filter (wav and pcm are byte copies)
        self.costly = fmt not in ("wav", "pcm") or self._tempo is not None
        self._started = False
        self._pts = 0
        # whether anything was said: punctuation alone makes the engine produce a pause
        # (of a length that depends on what it said before): silence, or the faint tail of
        # the previous utterance's filters (measured: peaks of 158), which the tempo filter
        # may swallow whole, leaving at most a resampler's or codec's padding. That is not
        # audio to sell as an empty, header-only or silent file: `audible` needs a sample
        # louder than SILENCE from the engine and samples out of the tempo filter
        # (speech/streaming.py holds bytes back until then)
        self.voiced = False
        self.samples = 0
        self._container = None
        self._resampler = None
        if fmt == "wav":
            self.out_rate = rate
        elif fmt == "pcm":
            self.out_rate = PCM_RATE
            if rate != PCM_RATE:
                self._resampler = av.AudioResampler(format="s16", layout="mono", rate=PCM_RATE)
        else:
            container_fmt, codec, fixed_rate, options, bit_rate, codec_options = _CODECS[fmt]
            self.out_rate = fixed_rate or rate
            self._sink = _Collector()
            self._container = av.open(self._sink, mode="w", format=container_fmt,
                                      options={"flush_packets": "1", **options})
            self._stream = self._container.add_stream(codec, rate=self.out_rate, layout="mono",
                                                      options=dict(codec_options))
            if bit_rate:
                self._stream.codec_context.bit_rate = bit_rate
            sample_format = self._stream.codec_context.codec.audio_formats[0].name
            self._resampler = av.AudioResampler(format=sample_format, layout="mono",
                                                rate=self.out_rate)

    # ---- public ---------------------------------------------------------------------------
    def feed(self, pcm: bytes) -> bytes:
        head = b""
        if not self._started:
            self._started = True
            if self.fmt == "wav":
                head = wav_header(self.out_rate)
        if not pcm:
            return head
        samples = np.frombuffer(pcm, dtype="<i2")
        if not self.voiced:
            self.voiced = bool((np.abs(samples, dtype=np.int32) > SILENCE).any())
        if self._tempo is None and self._resampler is None:
            self.samples += samples.size
            return head + samples.astype("<i2", copy=False).tobytes()
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += samples.size
        return head + self._after_tempo(frame)

    @property
    def audible(self) -> bool:
        """Whether the engine said something and some of it came out."""
        return self.voiced and self.samples > 0

    def finish(self) -> bytes:
        out = self.feed(b"") if not self._started else b""
        out += self._after_tempo(None)
        if self._container is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            out += self._sink.take()
        return out

    def close(self) -> None:
        """Free the codec without finishing (the request was abandoned)."""
        if self._container is not None:
            try:
                self._container.close()
            except av.error.FFmpegError:  # a half-written stream may fail its trailer
                pass
            self._container = None

    # ---- stages ---------------------------------------------------------------------------
    def _after_tempo(self, frame: av.AudioFrame | None) -> bytes:
        if self._tempo is None:
            if frame is not None:
                self.samples += frame.samples
            return self._after_resample(frame)
        frames = self._tempo.process(frame)
        self.samples += sum(f.samples for f in frames)
        out = b"".join(self._after_resample(f) for f in frames)
        if frame is None:
            out += self._after_resample(None)
        return out

    def _after_resample(self, frame: av.AudioFrame | None) -> bytes:
        if frame is None and self._resampler is None:
            return b""
        frames = self._resampler.resample(frame) if self._resampler is not None else [frame]
        if self._container is None:  # pcm / wav: the frames are s16 mono already
            return b"".join(bytes(f.planes[0])[: f.samples * 2] for f in frames)
        for f in frames:
            for packet in self._stream.encode(f):
                self._container.mux(packet)
        return self._sink.take()


def encode_all(fmt: str, rate: int, chunks, tempo: float = 1.0) -> bytes:
    """Encode a whole PCM recording (tests, benchmarks)."""
    encoder = Encoder(fmt, rate, tempo)
    out = [encoder.feed(c) for c in chunks]
    out.append(encoder.finish())
    return b"".join(out)


