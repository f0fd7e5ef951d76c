from decimal import Decimal

import pytest

from minitoolai.money import MoneyFormatError, display_usd, format_usd, parse_usd, per_unit_nano


def test_seed_prices_are_exact_nanodollars_per_token():
    assert per_unit_nano("0.15") == 150
    assert per_unit_nano("0.05") == 50
    assert per_unit_nano("30.00") == 30_000
    assert parse_usd("0.0015") == 1_500_000


def test_parse_refuses_floats_and_sub_nano():
    with pytest.raises(MoneyFormatError):
        parse_usd(0.1)
    with pytest.raises(MoneyFormatError):
        parse_usd("0.0000000001")
    with pytest.raises(MoneyFormatError):
        parse_usd("ten")
    assert parse_usd(Decimal("2.5")) == 2_500_000_000


def test_format():
    assert format_usd(1_500_000) == "0.0015"
    assert format_usd(5_000_000_000) == "5.00"
    assert format_usd(-150) == "-0.00000015"


@pytest.mark.parametrize(("usd", "shown"), [
    ("0", "$0.00"), ("0.5", "$0.50"), ("0.0015", "$0.0015"), ("0.00156", "$0.0016"),
    ("0.00001455", "<$0.0001"), ("0.000000001", "<$0.0001"), ("0.99996", "$1.00"),
    ("1", "$1.00"), ("11.99845045", "$12.00"), ("1234567.891", "$1,234,567.89"),
    ("0.00015", "$0.0002"), ("0.00025", "$0.0002"),  # half to even
    ("-2.5", "-$2.50"), ("-0.0001", "-$0.0001"),
])
def test_display_rule(usd, shown):
    assert display_usd(parse_usd(usd)) == shown
