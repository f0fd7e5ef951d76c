"""Run the `minitoolai` CLI as if some extras had not been installed.

    python tests/cli/without_extras.py local serve --port 8123   # only the `local` extra
    python tests/cli/without_extras.py "" models                  # the bare package

Every test machine has all the extras, so nothing else would notice a module that `serve`
imports needing one. What is absent is derived from pyproject.toml, not listed by hand: the
distributions that the other extras (test and bench included) bring, with everything they
require, less those that the bare package and the named extras need. Importing any of their modules then fails exactly as it does where they
are not installed, and `importlib.util.find_spec` reports them absent.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
VENV_SEEDS = ["pip", "setuptools"]  # every virtual environment starts with them


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements: list[str]) -> set[str]:
    """The installed distributions these requirements bring in, transitively."""
    found: set[str] = set()
    visited: set[tuple[str, frozenset]] = set()  # a package reached again with other extras
    todo = [(Requirement(r), ("",)) for r in requirements]
    while todo:
        req, active = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in active):
            continue
        name = _norm(req.name)
        if name == "minitoolai" or (name, frozenset(req.extras)) in visited:
            continue
        visited.add((name, frozenset(req.extras)))
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.add(name)
        todo.extend((Requirement(r), ("", *req.extras)) for r in dist.requires or ())
    return found


def _requirements(optional: dict[str, list[str]], extra: str) -> list[str]:
    out = []
    for req in optional[extra]:
        inner = re.fullmatch(r"minitoolai\[(.+)\]", req)  # `all` names other extras
        if inner:
            out.extend(r for e in inner.group(1).split(",") for r in _requirements(optional, e))
        else:
            out.append(req)
    return out


def absent_modules(installed_extras: list[str]) -> set[str]:
    """Top-level modules of what the other extras (test and bench included) would install
    and the bare package with `installed_extras` does not."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    optional = project["optional-dependencies"]
    present = _closure(VENV_SEEDS + project["dependencies"] + [
        r for e in installed_extras for r in _requirements(optional, e)])
    everything = _closure([r for e in optional for r in _requirements(optional, e)])
    absent = everything - present
    return {module for module, dists in importlib.metadata.packages_distributions().items()
            if any(_norm(d) in absent for d in dists)}


class _Absent(importlib.abc.MetaPathFinder):
    def __init__(self, modules: set[str]) -> None:
        self.modules = modules

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.modules:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def main() -> None:
    modules = absent_modules([e for e in sys.argv[1].split(",") if e])
    sys.meta_path.insert(0, _Absent(modules))
    args = sys.argv[2:]
    if args[:1] == ["serve"]:
        # `serve` execs a fresh server process after migrating (minitoolai/serving.py),
        # which would start without this import hook: kept in this process instead. The
        # exec'd path runs on real installs, bare and `[local]`, in scripts/quickstart_check.py
        args.append("--no-exec")
    sys.argv = ["minitoolai", *args]
    from minitoolai.cli.main import app

    app()


if __name__ == "__main__":
    main()
