"""Summarise a py-spy raw (collapsed stacks) profile: where the server's time goes.

    py-spy record --pid PID --duration 10 --rate 250 --nonblocking --format raw -o prof.txt
    python bench/profile_summary.py prof.txt [--top 25]

With --native, C frames count too (socket writes, the garbage collector); with --gil, only
samples that hold the GIL, i.e. the CPU that competes for the one event-loop thread.

Prints the share of samples (a) by category, counted once per stack at the first frame that
matches (inclusive time), (b) by leaf function (self time). Idle samples are not recorded
by py-spy unless --idle, so shares are of busy samples across all threads.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# (category, pattern on a frame "func (file:line)"), checked from the leaf upward, so the
# most specific category wins: SQLAlchemy compilation inside ledger code counts as compile.
CATEGORIES = [
    # native frames (py-spy --native): what the C code under Python is doing
    ("syscall: socket write/send (GIL held)", r"^(write|send|sendmsg|writev|__libc_write) \(libc"),
    ("syscall: socket read/recv", r"^(read|recv|recvmsg|__libc_read) \(libc"),
    ("garbage collector", r"gc_collect|collect_generation|subtract_refs|update_refs|visit_"),
    ("thread wake-ups (sem_post, futex)", r"^(sem_post|futex|pthread_cond)"),
    ("sqlite3 C calls (aiosqlite worker thread)", r"aiosqlite/core\.py|sqlite3"),
    ("asyncpg protocol", r"asyncpg/"),
    ("SQLAlchemy statement compilation", r"sqlalchemy/sql/compiler\.py|_compiler_dispatch"
                                         r"|ClauseElement\._compile_w_cache"),
    ("SQLAlchemy engine/result/pool", r"sqlalchemy/(engine|pool|util|event)/"),
    ("SQLAlchemy async adaptation (greenlet, await_only)", r"sqlalchemy/(ext/asyncio|util/"
                                                           r"_concurrency|dialects)|greenlet"),
    ("SQLAlchemy other (sql construction)", r"sqlalchemy/"),
    ("aiohttp client (upstream call)", r"aiohttp/"),
    ("Starlette StreamingResponse", r"starlette/responses\.py"),
    ("uvicorn protocol (httptools/h11)", r"uvicorn/"),
    ("FastAPI/Starlette routing, middleware", r"fastapi/|starlette/"),
    ("minitoolai ledger", r"minitoolai/ledger/"),
    ("minitoolai chat validation/pricing", r"minitoolai/chat/(validation|pricing)"),
    ("minitoolai chat providers", r"minitoolai/chat/providers/"),
    ("minitoolai chat service", r"minitoolai/chat/"),
    ("minitoolai accounts/auth", r"minitoolai/accounts/"),
    ("minitoolai other", r"minitoolai/"),
    ("asyncio/uvloop event loop", r"asyncio/|uvloop"),
    ("logging", r"logging/"),
    ("threading (idle workers)", r"threading\.py|concurrent/futures"),
]


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def categorise(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, pattern in CATEGORIES:
            if re.search(pattern, frame):
                return name
    return "other"


def summarise(path: Path, top: int) -> None:
    stacks = load(path)
    total = sum(c for _, c in stacks) or 1
    by_cat: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        by_cat[categorise(frames)] += count
        by_leaf[frames[-1]] += count
        for frame in set(frames):
            if "minitoolai/" in frame:
                inclusive[frame] += count
    print(f"{path.name}: {total} busy samples")
    print("\nby category (leaf-most match):")
    for name, count in by_cat.most_common():
        print(f"  {100 * count / total:5.1f}%  {name}")
    print(f"\ntop {top} leaf functions (self time):")
    for frame, count in by_leaf.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {frame}")
    print(f"\ntop {top} minitoolai frames (inclusive time):")
    for frame, count in inclusive.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {frame}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profiles", nargs="+", type=Path)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    for path in args.profiles:
        summarise(path, args.top)
        print()


if __name__ == "__main__":
    main()
