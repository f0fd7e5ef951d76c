"""Extract the OpenAI schemas the conformance tests need from OpenAI's published OpenAPI
document into `openai_schemas.json` (committed), so the tests need no copy of the document.

    python3 tests/conformance/vendor_schemas.py [path/to/openapi.yaml]

The roots below and every component they reference, transitively, are copied verbatim;
OpenAPI quirks (`nullable: true`) are handled where the tests load the file, not here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOTS = ("CreateChatCompletionResponse", "CreateChatCompletionStreamResponse",
         "ListModelsResponse", "Model", "ImagesResponse", "ErrorResponse", "Response", "ResponseStreamEvent")
PREFIX = "#/components/schemas/"
HERE = Path(__file__).parent
DEFAULT_SOURCE = Path("/work/shared/openai-openapi/openapi.yaml")
ORIGIN = {"source": "https://github.com/openai/openai-openapi (openapi.yaml)",
          "commit": "f85dbe2 (2026-08-21)",
          "licence": "MIT, (c) OpenAI; see info.license of the source document"}


def references(node) -> set[str]:
    """Names of the components this node refers to with `$ref`."""
    if isinstance(node, dict):
        found = {node["$ref"][len(PREFIX):]} if str(node.get("$ref", "")).startswith(
            PREFIX) else set()
        for value in node.values():
            found |= references(value)
        return found
    if isinstance(node, list):
        return set().union(*map(references, node)) if node else set()
    return set()


def closure(schemas: dict, roots) -> dict:
    wanted, todo = {}, list(roots)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted[name] = schemas[name]
            todo.extend(references(wanted[name]))
    return dict(sorted(wanted.items()))


def main(source: Path) -> None:
    import yaml  # only here: the tests import this module without PyYAML

    document = yaml.safe_load(source.read_text())
    vendored = {"$comment": "Vendored by tests/conformance/vendor_schemas.py; do not edit.",
                "origin": {**ORIGIN, "openapi": document["openapi"],
                           "version": document["info"]["version"]},
                "roots": list(ROOTS),
                "components": {"schemas": closure(document["components"]["schemas"], ROOTS)}}
    (HERE / "openai_schemas.json").write_text(json.dumps(vendored, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE)
