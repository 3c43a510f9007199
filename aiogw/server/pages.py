"""The built-in pages, `GET /playground` and `GET /dashboard`: plain HTML with one script
each, read once at start from package data and served with a strict CSP (no inline
script, nothing from other origins)."""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

_DIR = files("aiogw.server") / "pages"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _load() -> dict[str, tuple[bytes, str]]:
    out = {}
    for entry in _DIR.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if suffix in _TYPES:
            out[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return out


# Read at import, before any event loop runs: file reads on a running loop would block it.
_ASSETS = _load()


def install(app: web.Application) -> None:
    assets = _ASSETS

    def serve(name: str) -> web.Response:
        body, ctype = assets[name]
        return web.Response(body=body, content_type=ctype, charset="utf-8", headers=_HEADERS)

    async def page(request: web.Request) -> web.Response:
        return serve(request.path.strip("/") + ".html")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in assets or name.endswith(".html"):
            raise web.HTTPNotFound()
        return serve(name)

    app.router.add_get("/playground", page)
    app.router.add_get("/dashboard", page)
    app.router.add_get("/pages/{name}", asset)
