"""docs/operations.md and the sample Grafana dashboard name only metrics that exist, and the
page documents every one of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import minitoolai.app  # noqa: F401 (registers every metric)

DOCS = Path(__file__).resolve().parents[2] / "docs"
NAME = re.compile(r"\bminitoolai_[a-z_]+")
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")


def _families() -> set[str]:
    return {family.name for family in REGISTRY.collect() if family.name.startswith("minitoolai_")}


def _exists(name: str, families: set[str]) -> bool:
    return any(name == family + suffix for family in families for suffix in SUFFIXES)


def test_dashboard_queries_name_real_metrics():
    families = _families()
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in NAME.findall(expr)}
    assert used and all(_exists(name, families) for name in used), used


def test_operations_page_documents_every_metric():
    families = _families()
    page = (DOCS / "operations.md").read_text()
    named = set(NAME.findall(page))
    assert all(_exists(name, families) for name in named), named - families
    undocumented = {f for f in families if not any(f + s in named for s in SUFFIXES)}
    assert not undocumented, undocumented
