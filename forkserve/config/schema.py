"""JSON Schema (draft 2020-12) of site files, generated from the models so it cannot drift from them.

Editors use the committed copy, `schemas/forkserve.schema.json`: taplo (Even Better TOML) through a
`#:schema ../../schemas/forkserve.schema.json` first line, yaml-language-server through
`# yaml-language-server: $schema=../../schemas/forkserve.schema.json`. A test keeps the copy equal to
`schema_text()`.

pydantic's export is adjusted where it is looser than the models: names of apps and env variables are
restricted (`additionalProperties: false` next to `patternProperties`), and the count-or-percentage keys carry
their ranges.
"""

from __future__ import annotations

import json
from typing import Any

from forkserve.config.models import RATIO_RE, SiteConfig

SCHEMA_ID = "urn:forkserve:schema:site:v1"
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _count_or_ratio(prop: dict[str, Any]) -> None:
    prop["anyOf"] = [
        {"type": "integer", "minimum": 0, "maximum": 1024},
        {"type": "string", "pattern": RATIO_RE.pattern},
    ]


def site_schema() -> dict[str, Any]:
    """The schema as a dict: `$schema` and `$id` first, then pydantic's export, tightened."""
    body = SiteConfig.model_json_schema(mode="validation")
    app = body["$defs"]["AppConfig"]["properties"]
    body["properties"]["apps"]["additionalProperties"] = False
    app["env"]["additionalProperties"] = False
    _count_or_ratio(app["max_surge"])
    _count_or_ratio(app["max_unavailable"])
    body["title"] = "forkserve site file"
    return {"$schema": DRAFT, "$id": SCHEMA_ID, **body}


def schema_text() -> str:
    """What `forkserve schema` prints and `schemas/forkserve.schema.json` holds (stable key order, final newline)."""
    return json.dumps(site_schema(), indent=2, ensure_ascii=False) + "\n"
