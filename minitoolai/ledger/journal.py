"""The settlement journal: settlements the database refused, kept on local disk until it
accepts them.

A request that was served must be charged even when its settlement fails (the database is
away, a connection broke mid-commit). The keeper (ledger/keeper.py) writes such a
settlement here, fsync'd, before the client is shown its cost, and retries it until the
database takes it; a process that dies first leaves its file behind, and the next process
to start on the same data directory adopts and replays it. Replaying is safe because
settling is idempotent by request id (only the first settlement finds the hold row).

One file per process, `<data_dir>/settlements/<host>-<pid>-<random>.jsonl`, created on the
first failure (a process whose settlements all succeed never touches the disk), and held
under an exclusive flock for as long as the process lives: the kernel drops the lock when
the process dies, however it dies, which is how a starting process tells a dead owner's
file (adopt it) from a live one's (leave it). JSON lines: `{"settle": {...}}` records a
pending settlement (fsync'd), `{"done": "<request id>"}` resolves one (not fsync'd: a lost
`done` only makes a replay find the settlement already made).

Written by hand: it is a few dozen lines of append, fsync and flock, which no library
does more simply; the standard library has all of it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from minitoolai.ledger.holds import UsageRecord

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"


@dataclass(frozen=True, slots=True)
class PendingSettlement:
    """One settlement to make: charge `cost` for `request_id`, with its usage record."""

    request_id: str
    account_id: int | None
    cost: int
    record: UsageRecord
    # a hold served from a credit lease (ledger/leases.py): its lease and key, and `cost`
    # is the charge already capped at the hold
    lease_id: str | None = None
    key_id: str | None = None

    def to_json(self) -> bytes:
        item = {"request_id": self.request_id, "account_id": self.account_id,
                "cost": self.cost, "record": asdict(self.record)}
        if self.lease_id is not None:
            item["lease_id"], item["key_id"] = self.lease_id, self.key_id
        return orjson.dumps({"settle": item}) + b"\n"

    @classmethod
    def from_json(cls, data: dict) -> PendingSettlement:
        return cls(data["request_id"], data["account_id"], int(data["cost"]),
                   UsageRecord(**data["record"]), data.get("lease_id"), data.get("key_id"))


def read_pending(path: Path) -> list[PendingSettlement]:
    """The settlements a journal file records and does not resolve, in order. A torn last
    line (the process died mid-write, before its fsync returned) was never acknowledged:
    it is skipped."""
    pending: dict[str, PendingSettlement] = {}
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
            if "settle" in item:
                entry = PendingSettlement.from_json(item["settle"])
                pending[entry.request_id] = entry
            else:
                pending.pop(item["done"], None)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.error("settlement journal %s: line %d is unreadable; skipped", path, number)
    return list(pending.values())


def journal_files(directory: Path) -> Iterator[Path]:
    if directory.is_dir():
        yield from sorted(directory.glob("*" + SUFFIX))


def pending_in(directory: Path) -> dict[Path, list[PendingSettlement]]:
    """Every journal file's pending settlements, live processes' included (`ledger
    verify`): a pending settlement is money served and not yet in the database."""
    found = {}
    for path in journal_files(directory):
        entries = read_pending(path)
        if entries:
            found[path] = entries
    return found


class SettlementJournal:
    """This process's journal file, and the adoption of dead processes' files.

    Its methods do blocking file I/O (an fsync takes milliseconds): the keeper calls them
    in a thread, never on the event loop."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()  # one writer at a time (the keeper's threads)
        self._file = None  # opened at the first record()
        self.path: Path | None = None
        self._open: set[str] = set()  # request ids recorded and not resolved

    # ---- this process's file -----------------------------------------------------------
    def _ensure_file(self):
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            staging = self.directory / (name + ".new")
            handle = open(staging, "ab")  # noqa: SIM115 - held open for the process's life
            # locked before it has its journal name, so a starting process never sees it
            # unlocked (and adopts it) between its creation and the lock
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.path = self.directory / (name + SUFFIX)
            os.replace(staging, self.path)
            _fsync_directory(self.directory)
            self._file = handle
        return self._file

    def record(self, entries: list[PendingSettlement]) -> None:
        """Append settlements and fsync: when this returns, they survive a crash."""
        with self._lock:
            handle = self._ensure_file()
            handle.write(b"".join(entry.to_json() for entry in entries))
            handle.flush()
            os.fsync(handle.fileno())
            self._open.update(entry.request_id for entry in entries)

    def resolve(self, request_id: str) -> None:
        """The database has the settlement (or it was found made already)."""
        with self._lock:
            if request_id not in self._open or self._file is None:
                return
            self._open.discard(request_id)
            if self._open:
                self._file.write(orjson.dumps({"done": request_id}) + b"\n")
                self._file.flush()
            else:  # nothing pending: start the file afresh (a replay of it finds nothing)
                self._file.truncate(0)
                self._file.seek(0)

    @property
    def pending(self) -> int:
        return len(self._open)

    def close(self) -> None:
        """At shutdown: an empty file goes; one with pending settlements stays for the
        next start to replay. The lock goes with the file handle."""
        with self._lock:
            if self._file is None:
                return
            if not self._open and self.path is not None:
                self.path.unlink(missing_ok=True)
            self._file.close()
            self._file = None

    # ---- dead processes' files ---------------------------------------------------------
    def adopt(self) -> list[PendingSettlement]:
        """Take over the pending settlements of every journal file whose process is gone:
        record them in this process's file (fsync'd), then delete theirs. A crash between
        the two leaves them in both files; replaying one twice charges once."""
        adopted: list[PendingSettlement] = []
        orphans = []
        for path in journal_files(self.directory):
            if path == self.path:
                continue
            handle = open(path, "rb")  # noqa: SIM115 - closed below, after the unlink
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live process's file
                handle.close()
                continue
            orphans.append((path, handle))
            adopted.extend(read_pending(path))
        if adopted:
            self.record(adopted)
        for path, handle in orphans:
            path.unlink(missing_ok=True)
            handle.close()
        for staging in self.directory.glob("*.new") if self.directory.is_dir() else ():
            _remove_if_unlocked(staging)  # a process died between creating and naming it
        return adopted


def _remove_if_unlocked(path: Path) -> None:
    try:
        with open(path, "rb") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
    except (BlockingIOError, FileNotFoundError):
        pass


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
