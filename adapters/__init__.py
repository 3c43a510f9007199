"""Provider adapters, keyed by the config `type`. Installed as `aiogw.adapters`."""

from aiogw.adapters import anthropic, deepseek, gemini, mistral, openai, openai_compatible, qwen
from aiogw.adapters._base import Adapter

REGISTRY: dict[str, Adapter] = {
    a.name: a
    for a in (
        openai.ADAPTER,
        openai_compatible.ADAPTER,
        anthropic.ADAPTER,
        gemini.ADAPTER,
        mistral.ADAPTER,
        deepseek.ADAPTER,
        qwen.ADAPTER,
    )
}
