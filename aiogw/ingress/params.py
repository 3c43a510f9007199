"""Parameter names in errors, as the client's API spells them. Adapters and upstreams name
the canonical (Chat Completions) field at fault; a Messages or Responses client sent the
same setting under another name (`reasoning.effort`, not `reasoning_effort`), and an error
whose `param` names a field the client never sent leaves it guessing."""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from aiogw.errors import GatewayError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_HEAD = re.compile(r"^([A-Za-z_]+)(.*)$", re.DOTALL)
_TOOL = re.compile(r"^tools\[(\d+)\]\.function(?:\.(\w+))?(.*)$", re.DOTALL)


def renamed(param: str | None, heads: Mapping[str, str], tool_fields: Mapping[str, str]) -> str | None:
    """`param` with its first field renamed by `heads` (`messages[2].content` -> `input...`
    keeps the rest), and a chat tool's `tools[i].function.<field>` as the API's flat tool."""
    if not param:
        return param
    if (t := _TOOL.match(param)) is not None:
        index, field, rest = t.groups()
        return f"tools[{index}]" + (f".{tool_fields.get(field, field)}" if field else "") + rest
    m = _HEAD.match(param)
    if m is None or m.group(1) not in heads:
        return param
    return heads[m.group(1)] + m.group(2)


def in_client_params(handler: Handler, heads: Mapping[str, str], tool_fields: Mapping[str, str]) -> Handler:
    """`handler` whose errors name the client's own fields."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as exc:
            exc.param = renamed(exc.param, heads, tool_fields)
            raise

    return wrapped
