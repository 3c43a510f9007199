"""The floor of bench/peers/run.py: the least a Python proxy on aiohttp does per request.

aiohttp's server takes the request, aiohttp's client (one shared session, no connection
cap) sends the same bytes upstream with the caller's Authorization, and the answer goes
back piece by piece as it arrives, JSON or SSE alike. Nothing is parsed, routed, limited,
logged or counted: a gateway does all of that on top, so its cost over this one is what
its features cost.

    python bench/peers/bare_proxy.py --port 9200 --upstream http://127.0.0.1:9100/v1
"""

from __future__ import annotations

import argparse

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

SESSION = web.AppKey("session", ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def relay(request: web.Request) -> web.StreamResponse:
    headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
    if auth := request.headers.get("Authorization"):
        headers["Authorization"] = auth
    body = await request.read()
    async with request.app[SESSION].post(request.app[UPSTREAM], data=body, headers=headers) as upstream:
        resp = web.StreamResponse(status=upstream.status)
        resp.content_type = upstream.content_type
        await resp.prepare(request)
        try:
            async for piece in upstream.content.iter_any():
                await resp.write(piece)
            await resp.write_eof()
        except ConnectionResetError:  # the load generator stopped mid-answer
            pass
        return resp


async def health(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/") + "/chat/completions"

    async def session(app: web.Application):
        app[SESSION] = ClientSession(connector=TCPConnector(limit=0), timeout=ClientTimeout(total=300))
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session)
    app.router.add_post("/v1/chat/completions", relay)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="the upstream's base URL, ending in /v1")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(make_app(args.upstream), host=args.host, port=args.port, access_log=None, print=None, backlog=4096)


if __name__ == "__main__":
    main()
