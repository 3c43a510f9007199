"""CORS for browsers calling aiogw directly (`server.cors`): the preflight answer and the
headers on every response, streams included. Nothing is installed when it is not configured."""

from __future__ import annotations

import re

from aiohttp import web

from aiogw.config import Cors
from aiogw.errors import Forbidden

# What a browser client sends: the OpenAI JS SDK adds x-stainless-* and openai-* headers.
_DEFAULT_HEADERS = ("authorization", "content-type", "x-request-id", "x-api-key")
_DEFAULT_PATTERN = r"x-aiogw-[a-z0-9-]+|x-stainless-[a-z0-9-]+|openai-[a-z0-9-]+"
# Response headers a page's script may read (the playground shows them).
EXPOSED = "x-request-id, x-aiogw-provider, x-aiogw-model, x-aiogw-attempts, x-aiogw-cost-usd, retry-after"
_METHODS = "GET, POST, OPTIONS"


class CorsPolicy:
    __slots__ = ("_any", "_headers", "_origins", "credentials", "max_age")

    def __init__(self, cfg: Cors) -> None:
        self._any = "*" in cfg.allow_origins
        self._origins = frozenset(o.rstrip("/") for o in cfg.allow_origins if o != "*")
        self.credentials = cfg.allow_credentials
        names = "|".join(re.escape(h.lower()) for h in (*_DEFAULT_HEADERS, *cfg.allow_headers))
        self._headers = re.compile(rf"^(?:{names}|{_DEFAULT_PATTERN})$")
        self.max_age = cfg.max_age

    def allowed(self, origin: str) -> bool:
        return self._any or origin in self._origins

    def origin_headers(self, origin: str) -> dict[str, str]:
        # "*" cannot be combined with credentials; echoing the origin is always valid.
        allow = "*" if self._any and not self.credentials else origin
        headers = {"Access-Control-Allow-Origin": allow, "Vary": "Origin"}
        if self.credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers

    def preflight(self, request: web.Request) -> web.Response:
        """Answer an OPTIONS preflight: 204 with the grant, or 403 saying what was refused."""
        origin = request.headers.get("Origin", "")
        if not origin or not self.allowed(origin):
            raise Forbidden(
                f"Origin {origin or '(none)'} is not allowed by this gateway's CORS policy (server.cors.allow_origins).",
                code="cors_origin_not_allowed",
            )
        asked = [
            h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",") if h.strip()
        ]
        refused = [h for h in asked if not self._headers.match(h)]
        if refused:
            raise Forbidden(
                f"Header(s) {', '.join(refused)} are not allowed by this gateway's CORS policy "
                "(add them to server.cors.allow_headers).",
                code="cors_header_not_allowed",
            )
        headers = self.origin_headers(origin)
        headers["Access-Control-Allow-Methods"] = _METHODS
        if asked:
            headers["Access-Control-Allow-Headers"] = ", ".join(asked)
        headers["Access-Control-Max-Age"] = str(self.max_age)
        headers["Vary"] = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        return web.Response(status=204, headers=headers)


def install(app: web.Application, policy: CorsPolicy) -> None:
    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin and policy.allowed(origin) and request.method != "OPTIONS":
            response.headers.update(policy.origin_headers(origin))
            response.headers["Access-Control-Expose-Headers"] = EXPOSED

    app.on_response_prepare.append(on_prepare)
