"""Typed keys for what lives on the application and on each request."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from aiogw.dispatch import Dispatcher, Outcome
from aiogw.runtime import Runtime
from aiogw.server.lifecycle import Lifecycle

RUNTIME = web.AppKey("runtime", Runtime)
HTTP = web.AppKey("http_session", aiohttp.ClientSession)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)

# Per-request values (aiohttp request keys are plain strings).
REQUEST_ID = "aiogw.request_id"
OUTCOME = "aiogw.outcome"
PUBLIC_MODEL = "aiogw.model"
STREAM = "aiogw.stream"

__all__ = ["DISPATCHER", "HTTP", "LIFECYCLE", "OUTCOME", "PUBLIC_MODEL", "REQUEST_ID", "RUNTIME", "STREAM", "Outcome"]
