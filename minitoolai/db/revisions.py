"""The migration heads this code expects, read from the migration scripts without Alembic.

`GET /health/ready` compares them with the database's. A server process never imports
Alembic (about 11 MB, and `serve` migrates before the server starts, see serving.py), so
the heads are read here from each script's `revision` and `down_revision` assignments,
the two lines Alembic itself reads; tests/db checks that both agree.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"


def _assignments(path: Path) -> dict[str, object]:
    found: dict[str, object] = {}
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
            found[target.id] = ast.literal_eval(value)
    return found


@functools.cache
def expected_heads(versions_dir: Path = VERSIONS_DIR) -> frozenset[str]:
    """The revisions a database migrated by this code is at (one per branch): every
    revision that no other revision names as its parent."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted(versions_dir.glob("*.py")):
        found = _assignments(path)
        if "revision" not in found:
            continue
        revisions.add(str(found["revision"]))
        down = found.get("down_revision")
        if isinstance(down, str):
            parents.add(down)
        elif isinstance(down, (tuple, list)):  # a merge
            parents.update(str(d) for d in down)
    return frozenset(revisions - parents)
