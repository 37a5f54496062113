"""The committed schema and reference equal fresh exports; examples validate against the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from forkserve.config.reference import reference_markdown
from forkserve.config.schema import schema_text, site_schema
from forkserve.config.source import parse

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schema_is_fresh() -> None:
    committed = (ROOT / "schemas" / "forkserve.schema.json").read_text()
    assert committed == schema_text(), "run: python -m forkserve schema > schemas/forkserve.schema.json"


def test_committed_reference_is_fresh() -> None:
    committed = (ROOT / "docs" / "config-reference.md").read_text()
    assert committed == reference_markdown(), "run: python -m forkserve.config.reference > docs/config-reference.md"


def _properties(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = list(schema["properties"].items())
    for definition in schema["$defs"].values():
        found += list(definition["properties"].items())
    return found


def test_schema_header_and_descriptions() -> None:
    schema = site_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"]
    jsonschema.Draft202012Validator.check_schema(schema)
    missing = [name for name, prop in _properties(schema) if not prop.get("description")]
    assert missing == []


@pytest.mark.parametrize("name", ["site.toml", "site.yaml"])
def test_examples_validate_against_schema(name: str) -> None:
    path = ROOT / "examples" / "configs" / name
    data = parse(path.read_text(), path.suffix.lstrip("."))
    jsonschema.validate(data.data, site_schema())


def test_schema_rejects_what_the_models_reject() -> None:
    validator = jsonschema.Draft202012Validator(site_schema())
    good = {"apps": {"a": {"module": "a:b", "binds": ["a:1"]}}}
    assert validator.is_valid(good)
    for bad in (
        {"apps": {"A": {"module": "a:b", "binds": ["a:1"]}}},
        {"apps": {"a": {"module": "a:b", "binds": ["a:1"], "workrs": 2}}},
        {"apps": {"a": {"module": "a:b", "binds": ["a:1"], "max_surge": "200%"}}},
        {"apps": {"a": {"module": "a:b", "binds": ["a:1"], "env": {"1A": "x"}}}},
        {"apps": {}},
    ):
        assert not validator.is_valid(bad), bad
