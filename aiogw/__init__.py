"""aiogw: an asyncio, OpenAI-compatible gateway in front of many LLM providers."""
