"""Validate a JSON body against one of OpenAI's vendored schemas (openai_schemas.json)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from jsonschema import Draft202012Validator

VENDORED = Path(__file__).parent / "openai_schemas.json"


def _nullable(node):
    """OpenAPI 3.0's `nullable: true` (still used by the 3.1 document) as JSON Schema: the
    schema, or null. Read strictly as 3.1, OpenAI's own chunks would fail on their nulls."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    if node.pop("nullable", False) is True:
        return {"anyOf": [node, {"type": "null"}]}
    return node


@lru_cache
def _components() -> dict:
    return _nullable(json.loads(VENDORED.read_text())["components"])


@lru_cache
def validator(name: str) -> Draft202012Validator:
    components = _components()
    assert name in components["schemas"], f"{name} is not vendored: add it to ROOTS"
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                 "components": components})


def problems(name: str, body) -> list[str]:
    """Every way `body` breaks the schema `name`, as readable lines ([] when it conforms)."""
    return [f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
            for error in validator(name).iter_errors(body)]


def assert_conforms(name: str, body) -> None:
    found = problems(name, body)
    assert not found, f"{name} violated:\n" + "\n".join(found) + f"\nbody: {body!r}"


def member_for(union: str, body: dict) -> str:
    """The member of a discriminated union (`discriminator.propertyName`) that `body` names:
    validating against it says what is wrong, where the whole anyOf only says 'none'."""
    schemas = _components()["schemas"]
    key = schemas[union]["discriminator"]["propertyName"]
    for option in schemas[union]["anyOf"]:
        name = option["$ref"].rsplit("/", 1)[1]
        if body.get(key) in schemas[name]["properties"][key].get("enum", ()):
            return name
    raise AssertionError(f"{union} has no member with {key}={body.get(key)!r}")
