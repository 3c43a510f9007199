"""Messages passed through to targets whose provider speaks Messages (`Adapter.native_api`:
Anthropic): the client's body goes as it came (the adapter sets the upstream model), the
answer comes back as Anthropic sent it, read only for accounting, and a stream's content
events are forwarded as they arrive (`NativeRelay`)."""

from __future__ import annotations

from aiogw.accounting.cost import cost_field
from aiogw.adapters._base import Adapter, Call, Target
from aiogw.streaming.relay import NativeRelay
from aiogw.types import NativeBody, Reply


class MessagesNative:
    """The `Native` of one Messages request."""

    __slots__ = ("_body",)

    def __init__(self, body: NativeBody) -> None:
        self._body = body

    def call(self, target: Target, adapter: Adapter) -> Call | None:
        build = adapter.build_native_call
        if build is None or adapter.native_api != self._body.api:
            return None  # translated from the canonical request
        return build(self._body, target)

    def reply(self, body: bytes, target: Target, adapter: Adapter) -> Reply:
        assert adapter.decode_native is not None  # an adapter that takes its native calls reads their answers
        return adapter.decode_native(body, target)

    def relay(self, target: Target, adapter: Adapter) -> NativeRelay:
        return NativeRelay(
            adapter.stream_decoder(target),
            target=target.id,
            content_events=adapter.native_content_events,
            usage_extra=cost_field(target.price),
        )
