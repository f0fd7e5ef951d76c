"""Settings of the ledger's credit leases (ledger/leases.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from minitoolai.money import MoneyFormatError, parse_usd


class LeaseSettings(BaseModel):
    """Credit leases: each server process takes a slice of a busy account's credit at a
    time and serves its requests' holds from it, so that several servers on one account
    do not queue on the account's row, and each request costs less (no hold row is written).
    `size` "0" (the default) turns them off: every hold is a row, as before."""

    model_config = ConfigDict(extra="forbid")

    # USD one process takes from an account at a time; a request bigger than that still
    # gets what it needs, and a small account's leases shrink to what is available
    size: str = "0"
    # a lease not renewed for this long belongs to a dead process: the sweeper returns it
    # (by the database's clock); it is renewed every tick while its process lives
    ttl_seconds: int = Field(60, ge=2)
    # how often a process folds its leases' charges into the balance, renews them, and
    # gives back what an idle lease holds (the balance shown lags by at most this)
    tick_seconds: float = Field(1.0, gt=0)

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        try:
            parse_usd(value)
        except MoneyFormatError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def size_nano(self) -> int:
        return parse_usd(self.size)
