"""How the gateway's upstream connections leave it, end to end: a provider account's own CA
bundle and client certificate (an HTTPS simulator with a throwaway CA that requires client
certificates), and an egress proxy (a small CONNECT / absolute-form proxy written here, in
front of the simulator, that records what it was asked)."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from urllib.parse import urlsplit

import aiohttp
import openai
import pytest
import trustme
from openai import AsyncOpenAI

from aiogw.bench.simulator import start_simulator
from aiogw.config_load import from_builtins

MSG = [{"role": "user", "content": "hi"}]
KEY = "sk-sim-egress-0123456789"


class Pki:
    """A throwaway CA, the simulator's certificate (127.0.0.1 and sim.test) and a client
    certificate, written as PEM files the config can name."""

    def __init__(self, tmp_path) -> None:
        self.ca = trustme.CA()
        self.server = self.ca.issue_cert("127.0.0.1", "sim.test")
        client = self.ca.issue_cert("gateway@example.test")
        self.ca_file = str(tmp_path / "ca.pem")
        self.cert_file, self.key_file = str(tmp_path / "client.pem"), str(tmp_path / "client.key")
        self.ca.cert_pem.write_to_path(self.ca_file)
        client.cert_chain_pems[0].write_to_path(self.cert_file)
        client.private_key_pem.write_to_path(self.key_file)

    def server_context(self, *, require_client_cert: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(ctx)
        if require_client_cert:
            self.ca.configure_trust(ctx)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path)


class Proxy:
    """An HTTP proxy: CONNECT tunnels, and absolute-form requests forwarded in origin form.
    Names in `hosts` resolve here (the gateway cannot resolve them itself), and `refuse`
    answers every request with that status instead. `seen` holds each request head."""

    def __init__(self, hosts: dict[str, str], refuse: int | None = None) -> None:
        self.hosts, self.refuse = hosts, refuse
        self.seen: list[str] = []

    async def __aenter__(self) -> Proxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            self.seen.append(head)
            method, target, _ = head.split("\r\n", 1)[0].split(" ")
            if self.refuse:
                writer.write(
                    f"HTTP/1.1 {self.refuse} Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n".encode()
                )
                await writer.drain()
                return
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                up_r, up_w = await asyncio.open_connection(self.hosts.get(host, host), int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:  # absolute form: one connection upstream, the request line in origin form
                url = urlsplit(target)
                up_r, up_w = await asyncio.open_connection(self.hosts.get(url.hostname, url.hostname), url.port or 80)
                rest = head.split("\r\n", 1)[1]
                up_w.write(f"{method} {url.path} HTTP/1.1\r\n{rest}".encode("latin-1"))
            await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        finally:
            dst.close()


def _config(providers: dict, models: list[str]) -> object:
    return from_builtins(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "providers": providers,
            "models": [{"name": name, "targets": [{"provider": name, "model": "sim-gpt-fast"}]} for name in models],
        },
        env={},
    )


async def _post(url: str, model: str) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{url}/chat/completions", json={"model": model, "messages": MSG}) as r,
    ):
        return r.status, json.loads(await r.read())


async def test_an_account_trusts_its_own_ca_and_presents_its_client_certificate(pki, make_gateway):
    sim = await start_simulator(ssl_context=pki.server_context(require_client_cert=True))
    try:
        base = sim.base_url()  # https://127.0.0.1:<port>/v1
        tls = {"ca_bundle": pki.ca_file, "client_cert": pki.cert_file, "client_key": pki.key_file}
        cfg = _config(
            {
                "mtls": {"type": "openai", "base_url": base, "api_key": KEY, **tls},
                "no-client-cert": {"type": "openai", "base_url": base, "api_key": KEY, "ca_bundle": pki.ca_file},
                "system-cas": {"type": "openai", "base_url": base, "api_key": KEY},
            },
            ["mtls", "no-client-cert", "system-cas"],
        )
        url, _ = await make_gateway(cfg)
        async with AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) as client:
            reply = await client.chat.completions.create(model="mtls", messages=MSG)
            assert reply.choices[0].message.content.startswith("Simulated reply")
            for model in ("no-client-cert", "system-cas"):  # the server refuses it / it cannot verify the server
                with pytest.raises(openai.APIStatusError) as exc:
                    await client.chat.completions.create(model=model, messages=MSG)
                assert exc.value.status_code == 502, model
            assert "(TLS: self-signed certificate in certificate chain)" in str(exc.value)  # not an errno's words
        assert sim.stats()["requests"] == 1
    finally:
        await sim.close()


async def test_an_https_upstream_is_tunnelled_through_the_accounts_proxy_with_its_credentials(pki, make_gateway):
    sim = await start_simulator(ssl_context=pki.server_context(require_client_cert=False))
    try:
        port = urlsplit(sim.url).port
        async with Proxy({"sim.test": "127.0.0.1"}) as proxy:
            cfg = _config(
                {"corp": {
                    "type": "openai", "base_url": f"https://sim.test:{port}/v1", "api_key": KEY, "ca_bundle": pki.ca_file,
                    "proxy": f"http://egress%40corp:s3cret%21@127.0.0.1:{proxy.port}",
                }},
                ["corp"],
            )  # fmt: skip
            url, _ = await make_gateway(cfg)
            async with AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) as client:
                for _ in range(2):  # the second reuses the tunnel
                    reply = await client.chat.completions.create(model="corp", messages=MSG)
                    assert reply.choices[0].message.content.startswith("Simulated reply")
            assert len(proxy.seen) == 1
            head = proxy.seen[0]
            assert head.startswith(f"CONNECT sim.test:{port} HTTP/1.1\r\n")
            assert f"Proxy-Authorization: Basic {base64.b64encode(b'egress@corp:s3cret!').decode()}\r\n" in head
            # The tunnel carries TLS end to end: the API key never crosses the proxy in clear.
            assert KEY not in head
    finally:
        await sim.close()


async def test_http_proxy_from_the_environment_gets_absolute_form_requests(sim, make_gateway, monkeypatch):
    port = urlsplit(sim.url).port
    async with Proxy({"sim.test": "127.0.0.1"}) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("NO_PROXY", "example.org")
        cfg = _config(
            {
                "remote": {"type": "openai", "base_url": f"http://sim.test:{port}/v1", "api_key": KEY},
                "local": {"type": "openai", "base_url": sim.base_url(), "api_key": KEY},  # loopback: direct
            },
            ["remote", "local"],
        )
        url, _ = await make_gateway(cfg)
        for model in ("remote", "local"):
            status, body = await _post(url, model)
            assert status == 200, body
        assert len(proxy.seen) == 1
        assert proxy.seen[0].startswith(f"POST http://sim.test:{port}/v1/chat/completions HTTP/1.1\r\n")
        assert f"Host: sim.test:{port}\r\n" in proxy.seen[0]
        assert "Proxy-Authorization" not in proxy.seen[0]


async def test_a_proxy_refusing_the_tunnel_is_named_in_the_error_without_its_credentials(make_gateway):
    async with Proxy({}, refuse=407) as proxy:
        cfg = _config(
            {"corp": {"type": "openai", "base_url": "https://sim.test/v1", "api_key": KEY,
                      "proxy": f"http://egress:s3cret@127.0.0.1:{proxy.port}"}},
            ["corp"],
        )  # fmt: skip
        url, _ = await make_gateway(cfg)
        status, body = await _post(url, "corp")
    assert status == 502
    message = body["error"]["message"]
    assert f"cannot connect to sim.test:443 (proxy 127.0.0.1:{proxy.port}: refused the tunnel: 407" in message, message
    assert "s3cret" not in message
