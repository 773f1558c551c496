"""Configuration: one JSON schema (``schemas/config.schema.yaml``) for the Snakefile and the CLI.

The Snakefile validates with ``snakemake.utils.validate``; the CLI validates with :func:`load_config`.
Both fill the schema's defaults, so a step sees the same values whichever way it is started.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_NAME = "config.schema.yaml"


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's floats: ``5e-5`` and ``1E3`` are numbers (PyYAML's 1.1 rules read them as strings,
    which would also mis-read the JSON that the rules pass to every step)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


class ConfigError(ValueError):
    """A configuration that does not match the schema; the message names the key."""


def load_schema(name: str = SCHEMA_NAME) -> dict[str, Any]:
    text = resources.files("aiev").joinpath("schemas", name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _extend_with_default(validator_class: type) -> type:
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _extend_with_default(jsonschema.Draft202012Validator)


def _where(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "(top level)"


def validate_config(config: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate ``config`` in place (defaults filled) and return it; raise ConfigError naming the key."""
    schema = schema or load_schema()
    validator = _Validator(schema)
    # Fill defaults first: best_match on a half-filled instance can point at the wrong place.
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  - at '{_where(e)}': {e.message}" for e in errors]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines))
    return config


def load_config(source: str | Path | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Load a config from a YAML/JSON file, an inline JSON object, a mapping, or nothing (all defaults)."""
    if source is None:
        data: Any = {}
    elif isinstance(source, Mapping):
        data = copy.deepcopy(dict(source))
    else:
        text = str(source)
        if text.lstrip().startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"inline config is not valid JSON: {exc}") from exc
        else:
            path = Path(text)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            try:
                data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping of sections (seeds, dedup, ...)")
    return validate_config(data)


def with_overrides(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with dotted keys replaced (``{"decontam.threshold": 0.8}``), validated again.

    The one place where command-line flags (and tests) change a config: every step's flags arrive here."""
    out = copy.deepcopy(dict(config))
    for dotted, value in overrides.items():
        if value is None:
            continue
        *path, key = dotted.split(".")
        node = out
        for part in path:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"cannot override '{dotted}': '{part}' is not a section")
            node = node[part]
        node[key] = value
    return validate_config(out)


def exact_decimal(
    value: float | int | str | Fraction, lo: Fraction = Fraction(0), hi: Fraction = Fraction(1)
) -> Fraction:
    """A config number as the exact rational it is written as (a float is read as its shortest decimal:
    0.9 is 9/10), checked to lie within [lo, hi]. Thresholds and fractions are compared in exact arithmetic."""
    if isinstance(value, Fraction):
        out = value
    elif isinstance(value, float):
        out = Fraction(repr(value))
    else:
        out = Fraction(value)
    if not lo <= out <= hi:
        raise ValueError(f"{value} is not within [{lo}, {hi}]")
    return out


def reference_markdown(schema: dict[str, Any] | None = None) -> str:
    """A Markdown table of every config key (type, default, meaning), generated from the schema."""
    schema = schema or load_schema()
    rows = [
        "# Configuration reference",
        "",
        "Generated from `aiev/schemas/config.schema.yaml` by `aiev config --reference` (a test keeps it in",
        "sync). Unknown keys are errors; omitted keys take these defaults. `config.yaml` is the laptop default,",
        "`config/paper.yaml` the paper's scale.",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]

    def typ(sub: dict[str, Any]) -> str:
        if "enum" in sub:
            return " \\| ".join(f"`{v}`" for v in sub["enum"])
        if "$ref" in sub:
            return "object"
        t = sub.get("type", "")
        return " \\| ".join(t) if isinstance(t, list) else t

    def walk(props: dict[str, Any], prefix: str) -> None:
        for key, sub in props.items():
            path = f"{prefix}{key}"
            default = sub.get("default", {})
            shown = "" if default == {} else json.dumps(default)
            if isinstance(default, list | dict) and len(shown) > 40:
                shown = "(see config.yaml)"
            desc = " ".join(str(sub.get("description", "")).split()).replace("|", "\\|")
            rows.append(f"| `{path}` | {typ(sub)} | {shown and f'`{shown}`'} | {desc} |")
            if sub.get("type") == "object" and "properties" in sub:
                walk(sub["properties"], f"{path}.")
            items = sub.get("items", {})
            if "$ref" in items:
                ref = items["$ref"].split("/")[-1]
                walk(schema["$defs"][ref]["properties"], f"{path}[].")

    walk(schema["properties"], "")
    return "\n".join(rows) + "\n"
