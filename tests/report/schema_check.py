"""A small JSON Schema validator: the subset our own report schemas use.

``jsonschema`` is not a dependency of tinytelem, and the Perfetto output's schema only needs a
handful of keywords, so this validates them directly: ``type``, ``enum``, ``const``,
``properties``, ``required``, ``additionalProperties`` (bool or schema), ``minProperties``,
``items``, ``minimum``, ``oneOf``, ``anyOf``, ``allOf`` and local ``$ref`` (``#/$defs/...``).
Unknown keywords are ignored, as the JSON Schema specification says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["schema_errors"]

_TYPES: dict[str, Any] = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
}


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def schema_errors(instance: Any, schema: Mapping[str, Any], *, limit: int = 20) -> list[str]:
    """Every violation of ``schema`` by ``instance`` (up to ``limit``), as 'path: problem'."""
    errors: list[str] = []
    _check(instance, schema, schema, "$", errors, limit)
    return errors[:limit]


def _resolve(root: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref are supported, got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node  # type: ignore[no-any-return]


def _check(x: Any, s: Mapping[str, Any], root: Mapping[str, Any], path: str,
           errors: list[str], limit: int) -> None:
    if len(errors) >= limit:
        return
    if "$ref" in s:
        _check(x, _resolve(root, s["$ref"]), root, path, errors, limit)
    t = s.get("type")
    if t is not None:
        names = [t] if isinstance(t, str) else list(t)
        if not any(_is_type(x, n) for n in names):
            errors.append(f"{path}: expected {t}, got {type(x).__name__}")
            return
    if "const" in s and x != s["const"]:
        errors.append(f"{path}: expected {s['const']!r}, got {x!r}")
    if "enum" in s and x not in s["enum"]:
        errors.append(f"{path}: {x!r} is not one of {s['enum']}")
    if "minimum" in s and _is_type(x, "number") and x < s["minimum"]:
        errors.append(f"{path}: {x} is below the minimum {s['minimum']}")
    if isinstance(x, dict):
        _check_object(x, s, root, path, errors, limit)
    if isinstance(x, list) and "items" in s:
        for i, item in enumerate(x):
            _check(item, s["items"], root, f"{path}[{i}]", errors, limit)
            if len(errors) >= limit:
                return
    for sub in s.get("allOf", ()):
        _check(x, sub, root, path, errors, limit)
    if "anyOf" in s and not any(not schema_errors_at(x, sub, root) for sub in s["anyOf"]):
        errors.append(f"{path}: matches none of anyOf")
    if "oneOf" in s:
        n = sum(1 for sub in s["oneOf"] if not schema_errors_at(x, sub, root))
        if n != 1:
            errors.append(f"{path}: matches {n} of oneOf (exactly one required)")


def _check_object(x: dict[str, Any], s: Mapping[str, Any], root: Mapping[str, Any], path: str,
                  errors: list[str], limit: int) -> None:
    for key in s.get("required", ()):
        if key not in x:
            errors.append(f"{path}: missing required key {key!r}")
    if "minProperties" in s and len(x) < s["minProperties"]:
        errors.append(f"{path}: fewer than {s['minProperties']} keys")
    props = s.get("properties", {})
    extra = s.get("additionalProperties", True)
    for key, value in x.items():
        if key in props:
            _check(value, props[key], root, f"{path}.{key}", errors, limit)
        elif extra is False:
            errors.append(f"{path}: unexpected key {key!r}")
        elif isinstance(extra, Mapping):
            _check(value, extra, root, f"{path}.{key}", errors, limit)


def schema_errors_at(x: Any, s: Mapping[str, Any], root: Mapping[str, Any]) -> list[str]:
    """Violations of sub-schema ``s`` (with ``root`` for $ref), for oneOf/anyOf."""
    errors: list[str] = []
    _check(x, s, root, "$", errors, 1)
    return errors
