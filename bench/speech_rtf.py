"""Real-time factor of the local speech engine (eSpeak NG), called directly and through the
server, in one run.

RTF = seconds spent / seconds of audio produced (lower is faster; 0.01 = 100x real time).
Both wall-clock and CPU seconds are reported: on a shared 2-core machine the wall clock
moves with everyone else's load, CPU seconds much less. Direct CPU is this process's
(engine thread included); server CPU is the server process's, from /proc, so the client's
own work is not counted.

- direct/engine:  EspeakEngine.start(...) with PCM thrown away (the engine alone)
- direct/+encode: the engine with the server's encoder for the format, in the same thread
- server:         POST /v1/audio/speech to a server in its own process (uvicorn, SQLite,
                  hold + settle per request), timed by the client from request to last byte;
                  time to first byte shows the streaming

Run:  python bench/speech_rtf.py [--repeats 5] [--formats pcm,wav,mp3,opus]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minitoolai.speech.audio import PCM_RATE, Encoder
from minitoolai.speech.engines.espeak import (
    EspeakEngine,
    find_library,
    load_library,
)

TEXTS = {
    "en-us": ("The MiniToolAI API provides a simple interface to state-of-the-art AI models "
              "for natural language processing, image generation, and text to speech. "
              "The cost of API requests will be deducted from your credit balance. ") * 4,
    "fr-fr": ("L'API MiniToolAI offre une interface simple vers des modèles d'intelligence "
              "artificielle pour le traitement du langage, la génération d'images et la "
              "synthèse vocale. Le coût des requêtes est déduit de votre crédit. ") * 4,
}


def audio_seconds(data: bytes, fmt: str) -> float:
    if fmt == "pcm":
        return len(data) / 2 / PCM_RATE
    container = av.open(io.BytesIO(data))
    samples = rate = 0
    for frame in container.decode(audio=0):
        samples += frame.samples
        rate = frame.sample_rate
    return samples / rate


def server_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def direct(engine: EspeakEngine, text: str, voice: str, fmt: str | None):
    """(wall seconds, seconds of audio, CPU seconds)."""
    rate = engine.sample_rate(voice)
    encoder = Encoder(fmt, rate) if fmt else None
    pcm_bytes = 0

    def on_pcm(pcm: bytes) -> bool:
        nonlocal pcm_bytes
        pcm_bytes += len(pcm)
        if encoder is not None:
            encoder.feed(pcm)
        return True

    cpu = time.process_time()
    started = time.perf_counter()
    engine.start(text, voice, 1.0, on_pcm).result()
    if encoder is not None:
        encoder.finish()
    return time.perf_counter() - started, pcm_bytes / 2 / rate, time.process_time() - cpu


def serve(port: int, database_url: str, data_dir: str) -> None:
    import uvicorn

    from minitoolai.app import create_app
    from minitoolai.config import load_settings

    settings = load_settings({}, overrides={"data_dir": data_dir, "database_url": database_url,
                                            "demo_account": "false", "secret_key": "bench",
                                            "rate_limit_per_minute": "0"})
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


async def make_key(database_url: str) -> str:
    from minitoolai.accounts.store import create_account, create_key
    from minitoolai.db.engine import Database
    from minitoolai.ledger.credits import add_credit

    db = Database(database_url, pool_size=1)
    try:
        account = await create_account(db, "bench@example.com", "bench")
        await add_credit(db, account.id, 10**12, note="bench")
        _, secret = await create_key(db, account.id, "bench")
    finally:
        await db.dispose()
    return secret


def through_server(url: str, key: str, text: str, voice: str, fmt: str):
    """(seconds to last byte, seconds to first byte, seconds of audio)."""
    started = time.perf_counter()
    first = None
    parts = []
    with requests.post(url + "/v1/audio/speech", stream=True, timeout=120,
                       headers={"Authorization": f"Bearer {key}"},
                       json={"model": "espeak-ng", "input": text, "voice": voice,
                             "response_format": fmt}) as response:
        response.raise_for_status()
        for chunk in response.iter_content(chunk_size=None):
            if first is None:
                first = time.perf_counter() - started
            parts.append(chunk)
    total = time.perf_counter() - started
    return total, first, audio_seconds(b"".join(parts), fmt)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--formats", default="pcm,wav,mp3,opus,aac,flac")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--serve", nargs=3, metavar=("PORT", "DB", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.serve[2])
        return
    formats = args.formats.split(",")
    load_before = os.getloadavg()[:3]

    engine = EspeakEngine(load_library(*find_library(None, None)), "en-us", {}, 200)
    rows = []
    concurrent_rows = []
    for voice, text in TEXTS.items():
        resolved = engine.resolve(voice)
        direct(engine, text, resolved, None)  # warm up
        for fmt in [None, *formats]:
            runs = [direct(engine, text, resolved, fmt) for _ in range(args.repeats)]
            spent = statistics.median(r[0] for r in runs)
            cpu = sum(r[2] for r in runs) / len(runs)
            rows.append((voice, "direct", f"engine+{fmt}" if fmt else "engine only", len(text),
                         runs[0][1], spent, cpu, None))

    from minitoolai.db.migrate import upgrade
    from tests.servers import free_port

    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/bench.sqlite3"
        upgrade(database_url)
        key = asyncio.run(make_key(database_url))
        port = free_port()
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), database_url,
                                   tmp], env={**os.environ, "PYTHONPATH": str(Path.cwd())})
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    requests.get(url + "/health", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
            for voice, text in TEXTS.items():
                through_server(url, key, text, voice, "pcm")  # warm up
                for fmt in formats:
                    cpu_before = server_cpu(server.pid)
                    runs = [through_server(url, key, text, voice, fmt)
                            for _ in range(args.repeats)]
                    cpu = (server_cpu(server.pid) - cpu_before) / len(runs)
                    spent = statistics.median(r[0] for r in runs)
                    ttfb = statistics.median(r[1] for r in runs)
                    rows.append((voice, "server", fmt, len(text), runs[0][2], spent, cpu, ttfb))
            # several clients at once: aggregate throughput, in audio seconds per wall second
            from concurrent.futures import ThreadPoolExecutor

            text = TEXTS["en-us"]
            for fmt in ("wav", "mp3"):
                jobs = args.concurrency * args.repeats
                cpu_before = server_cpu(server.pid)
                started = time.perf_counter()
                with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                    runs = list(pool.map(lambda _: through_server(url, key, text, "en-us", fmt),
                                         range(jobs)))
                wall = time.perf_counter() - started
                cpu = server_cpu(server.pid) - cpu_before
                audio = sum(r[2] for r in runs)
                concurrent_rows.append((fmt, args.concurrency, jobs, audio, wall, cpu,
                                        statistics.median(r[1] for r in runs)))
        finally:
            server.terminate()
            server.wait(10)

    print(f"eSpeak NG at {engine.sample_rate('x')} Hz; wall: median of {args.repeats} runs, "
          f"CPU: mean; load average {load_before} before, {os.getloadavg()[:3]} after\n")
    print("| voice | path | format | chars | audio s | wall s | RTF wall | CPU s | RTF CPU "
          "| x real time (CPU) | first byte ms |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for voice, path, fmt, chars, audio, spent, cpu, ttfb in rows:
        print(f"| {voice} | {path} | {fmt} | {chars} | {audio:.1f} | {spent:.3f} | "
              f"{spent / audio:.4f} | {cpu:.3f} | {cpu / audio:.4f} | {audio / max(cpu, 1e-3):.0f}"
              f" | {'' if ttfb is None else f'{ttfb * 1000:.0f}'} |")

    print(f"\nConcurrent clients through the server (en-us, {len(TEXTS['en-us'])} characters "
          "per request)\n")
    print("| format | clients | requests | audio s | wall s | audio s per wall s | server CPU s "
          "| RTF CPU | first byte ms (median) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for fmt, clients, jobs, audio, wall, cpu, ttfb in concurrent_rows:
        print(f"| {fmt} | {clients} | {jobs} | {audio:.0f} | {wall:.2f} | {audio / wall:.0f} | "
              f"{cpu:.2f} | {cpu / audio:.4f} | {ttfb * 1000:.0f} |")


if __name__ == "__main__":
    main()
