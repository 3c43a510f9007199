"""The simulators' structured-output generator: every value it makes is valid against its
schema (checked by jsonschema), for the schemas clients send."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

import jsonschema
import pydantic
import pytest
from openai.lib._pydantic import to_strict_json_schema

from aiogw.bench.sim_schema import instance


class Color(StrEnum):
    red = "red"
    blue = "blue"


class Address(pydantic.BaseModel):
    street: str
    zip_code: int


class Node(pydantic.BaseModel):
    label: str
    children: list[Node]


class Person(pydantic.BaseModel):
    name: str
    age: int = pydantic.Field(ge=18, le=99)
    score: float
    active: bool
    tags: list[str]
    color: Color
    kind: Literal["a", "b"]
    home: Address
    past: list[Address]
    nickname: str | None
    tree: Node | None


HAND_WRITTEN = [
    {"type": "object"},
    {"type": "object", "properties": {}, "additionalProperties": False},
    {"type": "integer", "minimum": 5, "maximum": 7, "multipleOf": 3},
    {"type": "number", "exclusiveMinimum": 2},
    {"type": "string", "minLength": 40, "maxLength": 45},
    {"type": "string", "format": "date-time"},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 3, "maxItems": 3},
    {"type": ["string", "null"]},
    {"const": 42},
    {
        "allOf": [{"$ref": "#/$defs/a"}],
        "$defs": {"a": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}},
    },
    {"type": "object", "properties": {"p": {"oneOf": [{"type": "null"}, {"enum": ["u", "v"]}]}}, "required": ["p"]},
]


@pytest.mark.parametrize(
    "schema",
    [to_strict_json_schema(Person), Person.model_json_schema(), *HAND_WRITTEN],
    ids=["pydantic-strict", "pydantic", *(str(i) for i in range(len(HAND_WRITTEN)))],
)
def test_every_instance_is_valid_against_its_schema(schema):
    value = instance(schema, "the answer")
    jsonschema.validate(value, schema)
    assert instance(schema, "the answer") == value  # deterministic


def test_pydantic_models_parse_and_free_form_objects_carry_the_answer():
    Person.model_validate(instance(to_strict_json_schema(Person)))
    assert instance({"type": "object"}, "the answer") == {"answer": "the answer"}
    assert instance({"type": "object", "properties": {}}) == {}  # a tool without parameters


def test_gemini_openapi_schemas_follow_property_ordering():
    schema = {"type": "OBJECT", "properties": {"b": {"type": "STRING", "nullable": True}, "a": {"type": "INTEGER"}},
              "propertyOrdering": ["a", "b"], "required": ["a", "b"]}  # fmt: skip
    value = instance(schema)
    assert list(value) == ["a", "b"] and isinstance(value["a"], int) and isinstance(value["b"], str)
