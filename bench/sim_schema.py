"""A small, deterministic JSON Schema instance generator for the simulators: structured
output (OpenAI `json_schema`, Gemini `responseJsonSchema` / `responseSchema`, Anthropic
`output_config.format` and tool inputs) answers with a value the requested schema accepts,
as a real model does.

It covers what clients send in practice: the strict schemas the official SDKs derive from
pydantic / zod models (objects with `required` and `additionalProperties: false`, `$defs`
+ `$ref`, `anyOf` for optional fields, `enum`, `const`), nested objects and arrays, string
formats and numeric bounds, and Gemini's OpenAPI-style schemas (upper-case `type`,
`nullable`). Not a validator and not a full implementation (`pattern` is not honoured).
"""

from __future__ import annotations

from typing import Any

_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00",
    "email": "simulated@example.com",
    "uri": "https://example.com/simulated",
    "url": "https://example.com/simulated",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
}
# Past this depth, recursive schemas (a tree node holding nodes) take their smallest valid
# value: null where allowed, empty arrays where allowed.
_SHALLOW_DEPTH = 8


def instance(schema: Any, text: str = "simulated") -> Any:
    """A value valid against `schema`; a free-form object carries `text` as its `answer`."""
    return _value(schema, schema, text, "value", 0)


def _resolve(ref: str, root: Any) -> Any:
    node = root
    for key in ref.removeprefix("#/").split("/") if ref.startswith("#/") else ():
        key = key.replace("~1", "/").replace("~0", "~")
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return node if ref.startswith("#") else {}


def _type(schema: dict[str, Any]) -> str | None:
    t = schema.get("type")
    if isinstance(t, list):  # ["string", "null"]: the first non-null type
        t = next((x for x in t if str(x).lower() != "null"), "null")
    return t.lower() if isinstance(t, str) else None


def _value(schema: Any, root: Any, text: str, name: str, depth: int) -> Any:
    if depth > 8 * _SHALLOW_DEPTH:
        return None  # a schema with no finite instance: give up rather than recurse forever
    deep = depth > _SHALLOW_DEPTH
    if not isinstance(schema, dict):  # `true` or `{}`-like: anything goes
        return text
    if "$ref" in schema:
        return _value(_resolve(schema["$ref"], root), root, text, name, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            # The first option that is not null (optional fields are `anyOf: [T, null]`),
            # or null itself once deep in a recursive schema.
            nulls = [o for o in options if isinstance(o, dict) and _type(o) == "null"]
            others = [o for o in options if not any(o is n for n in nulls)]
            picked = (nulls or others)[0] if deep else (others or options)[0]
            return _value(picked, root, text, name, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _resolve(part["$ref"], root) if isinstance(part, dict) and "$ref" in part else part
            if isinstance(part, dict):
                merged = {**part, **merged, "properties": {**part.get("properties", {}), **merged.get("properties", {})},
                          "required": [*part.get("required", []), *merged.get("required", [])]}  # fmt: skip
        return _value(merged, root, text, name, depth + 1)
    t = _type(schema)
    if t is None:
        t = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if t == "null":
        return None
    if t == "boolean":
        return True
    if t in ("integer", "number"):
        return _number(schema, t == "integer")
    if t == "string":
        return _string(schema, name)
    if t == "array":
        items = schema.get("items") or {}
        if isinstance(schema.get("prefixItems"), list):
            return [_value(s, root, text, name, depth + 1) for s in schema["prefixItems"]]
        n = int(schema.get("minItems") or 0)
        n = n if deep else max(1, n)
        if isinstance(schema.get("maxItems"), int):
            n = min(n, schema["maxItems"])
        return [_value(items, root, text, name, depth + 1) for _ in range(n)]
    return _object(schema, root, text, depth)


def _object(schema: dict[str, Any], root: Any, text: str, depth: int) -> dict[str, Any]:
    props = schema.get("properties")
    if not props:
        # A free-form object (OpenAI's json_object, a bare {"type": "object"}): one field
        # holding the answer, unless the schema forbids any (a tool without parameters).
        if "properties" in schema or schema.get("additionalProperties") is False:
            return {}
        return {"answer": text}
    order = schema.get("propertyOrdering") or list(props)  # Gemini's ordering, when given
    return {k: _value(props[k], root, text, k, depth + 1) for k in order if k in props}


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    low, high = schema.get("minimum"), schema.get("maximum")
    # Numeric exclusive bounds (draft 6 on); draft 4's boolean flags are not numbers.
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(ex_low, int | float) and not isinstance(ex_low, bool):
        low = ex_low + (1 if integer else 0.5)
    if isinstance(ex_high, int | float) and not isinstance(ex_high, bool):
        high = ex_high - (1 if integer else 0.5)
    value: float = 1
    if isinstance(low, int | float) and value < low:
        value = low
    if isinstance(high, int | float) and value > high:
        value = high
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and step > 0:
        value = step * -(-value // step)  # the first multiple at or above the value
    return int(-(-value // 1)) if integer else value


def _string(schema: dict[str, Any], name: str) -> str:
    value = _FORMATS.get(str(schema.get("format")), f"simulated {name}")
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(value) < low:
        value += "x" * (low - len(value))
    if isinstance(high, int):
        value = value[:high]
    return value
