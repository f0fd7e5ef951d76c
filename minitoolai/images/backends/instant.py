"""The instant backend: a TEST AND BENCHMARK backend that generates nothing.

It answers at once with a plain grey PNG of the requested size, so the queue, the ledger
and the HTTP layers can be tested and measured without a model. Never configure it for
customers: they would pay for a blank picture.
"""

from __future__ import annotations

import struct
import zlib
from functools import lru_cache

from minitoolai.images.queue import ClaimedJob


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


@lru_cache(maxsize=64)
def plain_png(width: int, height: int, grey: int = 128) -> bytes:
    """A valid 8-bit RGB PNG of one colour (cached: sizes repeat)."""
    row = b"\x00" + bytes((grey, grey, grey)) * width
    pixels = zlib.compress(row * height, 6)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels)
            + _chunk(b"IEND", b""))


class InstantBackend:
    name = "instant"

    def __init__(self, max_batch: int = 16) -> None:
        self.max_batch = max_batch

    def is_available(self, model: str) -> bool:
        return True

    async def generate(self, jobs: list[ClaimedJob]) -> list[bytes]:
        return [plain_png(job.width, job.height) for job in jobs]

    async def close(self) -> None:
        """Nothing to release."""
