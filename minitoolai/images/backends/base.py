"""The seam between the queue and whatever makes pixels.

A backend turns a batch of claimed jobs (same model, size, steps, scheduler and cfg) into
one PNG per job, in order. Errors: raise minitoolai.errors.UpstreamError / UpstreamTimeout
for a failure worth another attempt (an upstream down, a timeout); anything else fails the
jobs at once with its message.
"""

from __future__ import annotations

from typing import Protocol

from minitoolai.images.queue import ClaimedJob


class Backend(Protocol):
    name: str
    max_batch: int

    def is_available(self, model: str) -> bool:
        """Whether this backend can serve the model now (from configuration)."""

    async def generate(self, jobs: list[ClaimedJob]) -> list[bytes]:
        """One PNG per job, in the order given."""

    async def close(self) -> None:
        """Release pipelines and connections."""
