"""Files under deploy/ that can be validated here are validated."""

from pathlib import Path

from aiogw import config
from aiogw.runtime import Runtime

DEPLOY = Path(__file__).parents[2] / "deploy"


def test_example_config_is_accepted():
    cfg = config.load(DEPLOY / "aiogw.yaml", env={"OPENAI_API_KEY": "sk-test"})
    assert [t.id for t in Runtime.build(cfg).resolve("default").targets] == ["openai/gpt-4o-mini", "local/qwen3-8b"]


def test_dockerfile_runs_as_non_root_with_a_healthcheck():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "USER 10001" in text and "HEALTHCHECK" in text and "/healthz" in text
