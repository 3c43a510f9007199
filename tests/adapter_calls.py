"""The upstream call an adapter builds for an OpenAI request body, the body parsed by the
gateway's own request parser: the adapters' unit tests start from what a client sends."""

from __future__ import annotations

import json

from aiogw.ingress.chat import parse_chat

USER = [{"role": "user", "content": "hi"}]


def upstream_call(build_call, target, **body):
    """(Call, its JSON body) for `body`; `model` and `messages` default to a one-line chat."""
    body.setdefault("model", "m")
    body.setdefault("messages", USER)
    c = build_call(parse_chat(json.dumps(body).encode()), target)
    return c, json.loads(c.body)
