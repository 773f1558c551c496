"""The documented record types every step reads and writes (see docs/records.md)."""

from __future__ import annotations

from functools import cache
from typing import Any

import jsonschema

from aiev.config import load_schema


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def record_errors(record: dict[str, Any], kind: str) -> list[str]:
    """Messages for every way ``record`` breaks the ``kind`` schema ('seed', 'entry', ...)."""
    validator = _validator(f"{kind}.schema.yaml")
    out = []
    for err in validator.iter_errors(record):
        where = ".".join(str(p) for p in err.absolute_path) or "(record)"
        out.append(f"{where}: {err.message}")
    return out
