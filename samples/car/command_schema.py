"""A small JSON Schema (draft 2020-12) validator for the subset the cabin commands use.

Supported keywords: type, enum, const, minimum, maximum, minLength, maxLength, required, properties,
additionalProperties, oneOf, and the OpenAPI-style ``discriminator`` that picks the one ``oneOf``
branch by a property's ``const`` (so an error names what is wrong with *that* command, not why it
failed all nine branches). Unknown keywords raise: a schema edited to use something this validator
ignores must not silently pass every instance.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["SchemaError", "load_schema", "validate", "SCHEMA_PATH"]

SCHEMA_PATH = Path(__file__).with_name("commands.schema.json")

_KNOWN = {
    "$schema",
    "$id",
    "title",
    "description",
    "type",
    "enum",
    "const",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "required",
    "properties",
    "additionalProperties",
    "oneOf",
    "discriminator",
}

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


class SchemaError(ValueError):
    """The schema itself uses something this validator does not implement."""


def load_schema(path=SCHEMA_PATH) -> dict:
    schema = json.loads(Path(path).read_text(encoding="utf-8"))
    _check_keywords(schema, "#")
    return schema


def _check_keywords(schema: Any, where: str) -> None:
    if not isinstance(schema, dict):
        raise SchemaError(f"{where}: a schema must be an object")
    unknown = sorted(set(schema) - _KNOWN)
    if unknown:
        raise SchemaError(f"{where}: unsupported keyword(s) {', '.join(unknown)}")
    for name, sub in schema.get("properties", {}).items():
        _check_keywords(sub, f"{where}/properties/{name}")
    for i, sub in enumerate(schema.get("oneOf", ())):
        _check_keywords(sub, f"{where}/oneOf/{i}")
    if isinstance(schema.get("additionalProperties"), dict):
        _check_keywords(schema["additionalProperties"], f"{where}/additionalProperties")


def _is_type(value: Any, name: str) -> bool:
    # JSON has no booleans-as-numbers: True must not pass as the integer 1.
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if name not in _TYPES:
        raise SchemaError(f"unsupported type {name!r}")
    return isinstance(value, _TYPES[name])


def validate(instance: Any, schema: dict, path: str = "") -> list[str]:
    """Every way ``instance`` breaks ``schema``, as readable messages (empty: valid)."""
    at = path or "command"
    errors: list[str] = []
    if "type" in schema and not _is_type(instance, schema["type"]):
        return [f"{at}: expected {schema['type']}, got {json.dumps(instance)}"]
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{at}: must be {json.dumps(schema['const'])}, got {json.dumps(instance)}")
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{at}: {json.dumps(instance)} is not one of {', '.join(map(json.dumps, schema['enum']))}")
    if _is_type(instance, "number"):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(f"{at}: {instance} is below the minimum {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(f"{at}: {instance} is above the maximum {schema['maximum']}")
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            errors.append(f"{at}: must not be empty" if schema["minLength"] == 1 else f"{at}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errors.append(f"{at}: longer than {schema['maxLength']} characters")
    if isinstance(instance, dict):
        errors += _validate_object(instance, schema, path)
    if "oneOf" in schema:
        errors += _validate_one_of(instance, schema, path)
    return errors


def _validate_object(instance: dict, schema: dict, path: str) -> list[str]:
    errors = [f"{path + '.' if path else ''}{name}: required" for name in schema.get("required", ()) if name not in instance]
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, value in instance.items():
        sub = f"{path}.{name}" if path else name
        if name in props:
            errors += validate(value, props[name], sub)
        elif extra is False:
            errors.append(f"{sub}: not allowed here")
        elif isinstance(extra, dict):
            errors += validate(value, extra, sub)
    return errors


def _validate_one_of(instance: Any, schema: dict, path: str) -> list[str]:
    branches = schema["oneOf"]
    key = schema.get("discriminator", {}).get("propertyName")
    if key is not None and isinstance(instance, dict):
        tags = {b.get("properties", {}).get(key, {}).get("const"): b for b in branches}
        tag = instance.get(key)
        if tag not in tags:
            return [f"{path + '.' if path else ''}{key}: {json.dumps(tag)} is not one of {', '.join(map(json.dumps, tags))}"]
        return validate(instance, tags[tag], path)
    passing = [i for i, b in enumerate(branches) if not validate(instance, b, path)]
    if len(passing) == 1:
        return []
    return [f"{path or 'command'}: matches {len(passing)} of the oneOf branches, not exactly one"]
