"""Any server that speaks OpenAI's Chat Completions (vLLM, Ollama, Groq, Together, LM Studio…).

Streams go through the normalising decoder rather than the byte pass-through, because
these servers restate tool-call ids, skip the role chunk, report `stop` after tool calls or
put usage in odd places (docs/providers.md §9); the client still sees OpenAI's exact shape.
"""

from aiogw.adapters.openai import openai_like

NAME = "openai-compatible"

# No public endpoint: the config must give `base_url` (ending where /chat/completions is
# appended). Local servers such as Ollama ignore the key, so none is required.
ADAPTER = openai_like(NAME, "", requires_base_url=True, requires_api_key=False)
