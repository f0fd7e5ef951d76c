"""The vendored schemas are whole: every root is there and every `$ref` resolves."""

from __future__ import annotations

import json

from tests.conformance.schemas import VENDORED
from tests.conformance.vendor_schemas import PREFIX, ROOTS, references


def test_every_reference_resolves_and_origin_is_noted():
    vendored = json.loads(VENDORED.read_text())
    schemas = vendored["components"]["schemas"]
    assert set(ROOTS) <= set(schemas) and vendored["roots"] == list(ROOTS)
    missing = {name for schema in schemas.values() for name in references(schema)} - set(schemas)
    assert not missing, f"re-run vendor_schemas.py: {sorted(missing)} not vendored"
    assert "MIT" in vendored["origin"]["licence"] and vendored["origin"]["version"] == "2.3.0"
    assert PREFIX == "#/components/schemas/"
