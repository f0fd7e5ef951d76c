"""Money as integer nanodollars (1 USD = 10**9 nano).

Every price in the seeds is an exact whole number of nanodollars per token or per image
($0.15 per 1M tokens = 150 nano per token; $0.0015 per image = 1,500,000 nano), so every
charge is an exact integer. Floats never enter the ledger: amounts are parsed from decimal
strings and rendered back only for display.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal

NANO_PER_USD = 1_000_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are quoted per 1M tokens / characters
# the largest single credit and the largest balance: far below what a 64-bit column holds
# (9.2e18 nano), so no sum of them can overflow it
MAX_CREDIT_NANO = 1_000_000 * NANO_PER_USD  # $1,000,000
MAX_BALANCE_NANO = 1_000_000_000 * NANO_PER_USD  # $1,000,000,000
# plain decimal notation only: Decimal() alone would also take "1e3", "1_000", "NaN" and
# non-ASCII digits, and "1e3" silently meaning $1000 is how an operator over-credits
_DECIMAL_USD = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
MAX_DECIMALS = 9
_CENT = Decimal("0.01")
_TEN_THOUSANDTH = Decimal("0.0001")


class MoneyFormatError(ValueError):
    """A text that is not an exact amount of money."""


def parse_usd(text: str | int | Decimal) -> int:
    """Parse a USD amount ("12.5", "-2", "$0.000000001", 3) into nanodollars, exactly.

    Text must be plain decimal notation (an optional sign and "$", digits, at most 9
    decimals): no exponent, separators or spaces inside. Refuses anything finer than a
    nanodollar rather than rounding it away.
    """
    if isinstance(text, float):
        raise MoneyFormatError("amounts must be given as strings or integers, not floats")
    if isinstance(text, Decimal):
        if not text.is_finite():
            raise MoneyFormatError(f"not an amount of money: {text!r}")
        value = text
    else:
        raw = str(text).strip()
        sign = raw[:1] if raw[:1] in "+-" and raw[:1] else ""
        digits = raw[len(sign):].removeprefix("$")
        if not _DECIMAL_USD.fullmatch(sign + digits):
            raise MoneyFormatError(f"not an amount of money: {text!r} (write plain decimal"
                                   " USD such as 12.50 or -0.25)")
        decimals = digits.partition(".")[2]
        if len(decimals) > MAX_DECIMALS:
            raise MoneyFormatError(f"{text!r} has more than {MAX_DECIMALS} decimals: finer"
                                   " than one nanodollar")
        value = Decimal(sign + digits)
    if value.copy_abs() > MAX_BALANCE_NANO // NANO_PER_USD:  # copy_abs: no context, no Overflow
        # a long run of digits is a finite Decimal, but no amount the ledger holds, and its
        # nanodollars overflow every integer column
        raise MoneyFormatError(f"{str(text)[:40]!r} is over the largest amount accepted"
                               f" (${MAX_BALANCE_NANO // NANO_PER_USD:,})")
    nano = value * NANO_PER_USD
    if nano != nano.to_integral_value():
        raise MoneyFormatError(f"{text!r} is finer than one nanodollar")
    return int(nano)


def per_unit_nano(price_per_million_usd: str | int | Decimal) -> int:
    """Convert a price per 1M tokens (or characters) in USD to nanodollars per single unit."""
    total = parse_usd(price_per_million_usd)
    if total % TOKENS_PER_PRICE_UNIT:
        raise MoneyFormatError(
            f"price {price_per_million_usd!r} per 1M is not a whole number of nanodollars per unit"
        )
    return total // TOKENS_PER_PRICE_UNIT


def to_usd(nano: int) -> Decimal:
    """Exact Decimal USD value of a nanodollar amount."""
    return Decimal(nano) / NANO_PER_USD


def format_usd(nano: int, places: int | None = None) -> str:
    """Render nanodollars as a USD string: exact by default, trailing zeros trimmed to cents."""
    value = to_usd(nano)
    if places is not None:
        return f"{value:.{places}f}"
    text = f"{value:.9f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def display_usd(nano: int) -> str:
    """Money for people, one rule everywhere it is shown (dashboard, `balance_display`):
    two decimals from $1 up, at most four below (trailing zeros trimmed to cents), thousands
    separators, `<$0.0001` for a non-zero amount smaller than that. Rounded half to even for
    display only: the exact value (`format_usd`) goes beside it (a tooltip, the JSON fields).
    """
    sign = "-" if nano < 0 else ""
    value = to_usd(abs(nano))
    if value >= 1:
        return f"{sign}${value.quantize(_CENT, ROUND_HALF_EVEN):,.2f}"
    shown = value.quantize(_TEN_THOUSANDTH, ROUND_HALF_EVEN)
    if shown == 0 and nano != 0:
        return f"{sign}<$0.0001"
    if shown >= 1:  # 0.99996 rounds up to a dollar
        return f"{sign}$1.00"
    text = f"{shown:.4f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{sign}${whole}.{frac.ljust(2, '0')}"


def usd_number(nano: int) -> float:
    """A JSON-friendly float for API responses only (never stored or summed)."""
    return nano / NANO_PER_USD
