"""Every canonical request field has a decided fate at every provider: translated, dropped
with a reason, or refused with a 400 naming it. A new ChatRequest field fails this test
until each adapter decides."""

import pytest

from aiogw.adapters import REGISTRY
from aiogw.types import ChatRequest

STRUCTURAL = {"model", "messages", "stream", "stream_options"}
FIELDS = set(ChatRequest.__struct_fields__) - STRUCTURAL


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_request_field_is_classified(name):
    params = REGISTRY[name].params
    assert params is not None, f"{name} declares no ParamMap"
    assert FIELDS - params.classified() == set()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_refusal_and_drop_gives_a_reason(name):
    params = REGISTRY[name].params
    assert params is not None
    assert all(params.reject.values()) and all(params.drop.values())


def test_readme_parameter_table_is_generated_from_the_adapters():
    from pathlib import Path

    from aiogw.adapters import params_table

    readme = (Path(__file__).parents[3] / "README.md").read_text(encoding="utf-8")
    assert params_table.START in readme, "README lacks the parameter table markers"
    assert params_table.splice(readme) == readme, "run: python -m aiogw.adapters.params_table README.md"
