"""Which way each provider account's connections go (`Runtime.build` -> `Egress`): its own
TLS files, a configured proxy, or HTTPS_PROXY / HTTP_PROXY / NO_PROXY; and the config errors
for what cannot be used, which never repeat a proxy's password."""

from __future__ import annotations

import pytest
import trustme

from aiogw.config_load import from_builtins
from aiogw.errors import ConfigError
from aiogw.runtime import Runtime


def _runtime(env: dict[str, str] | None = None, **account) -> Runtime:
    base = {"type": "openai-compatible", "base_url": "https://api.example.com/v1"}
    cfg = from_builtins({"providers": {"p": {**base, **account}}}, env={})
    return Runtime.build(cfg, env=env or {})


def _proxy(env: dict[str, str], **account) -> str | None:
    way = _runtime(env, **account).egress.get("p")
    return None if way is None or way.proxy is None else str(way.proxy)


def test_an_account_with_nothing_set_has_no_egress_and_takes_the_default_path():
    assert _runtime().egress == {}


@pytest.mark.parametrize(
    ("env", "account", "expected"),
    [
        ({"HTTPS_PROXY": "http://envproxy:3128"}, {}, "envproxy:3128"),
        ({"https_proxy": "lower:1", "HTTPS_PROXY": "upper:2"}, {}, "lower:1"),  # lower case first; no scheme = http://
        ({"HTTP_PROXY": "http://envproxy:3128"}, {}, None),  # http_proxy is for http upstreams
        ({"HTTP_PROXY": "http://envproxy:3128"}, {"base_url": "http://api.example.com/v1"}, "envproxy:3128"),
        ({"HTTPS_PROXY": "http://envproxy:3128"}, {"proxy": "http://mine:8080"}, "mine:8080"),  # configured wins
        ({"HTTPS_PROXY": "http://envproxy:3128"}, {"proxy": ""}, "envproxy:3128"),  # "" is unset
        ({}, {"proxy": "http://mine:8080", "base_url": "http://127.0.0.1:8000/v1"}, "mine:8080"),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"}, {}, None),  # subdomains match
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".example.com"}, {}, None),
        ({"HTTPS_PROXY": "http://p:1", "no_proxy": "other.org, *"}, {}, None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com:8443"}, {}, "p:1"),  # another port
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "ample.com"}, {}, "p:1"),  # not a suffix at a dot
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, {"base_url": "https://10.2.3.4/v1"}, None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, {"base_url": "https://11.2.3.4/v1"}, "p:1"),
        ({"HTTPS_PROXY": "http://p:1"}, {"base_url": "https://127.0.0.1:8000/v1"}, None),  # loopback: direct
        ({"HTTPS_PROXY": "http://p:1"}, {"base_url": "https://localhost:8000/v1"}, None),
        ({"HTTPS_PROXY": "http://p:1"}, {"base_url": "https://[::1]:8000/v1"}, None),
    ],
)
def test_which_proxy_an_account_uses(env, account, expected):
    assert _proxy(env, **account) == expected


def test_proxy_credentials_become_basic_auth_and_stay_out_of_reprs():
    way = _runtime(proxy="http://us%40er:pa%3Ass@proxy:3128").egress["p"]
    assert way.proxy.authorization == b"Basic dXNAZXI6cGE6c3M="  # base64("us@er:pa:ss")
    assert repr(way.proxy) == "Proxy(host='proxy', port=3128)" and str(way.proxy) == "proxy:3128"


@pytest.mark.parametrize(
    ("env", "account", "path", "words"),
    [
        ({}, {"proxy": "socks5://u:s3cret@p:1"}, "providers.p.proxy", "only http:// proxies"),
        ({}, {"proxy": "http://u:s3cret@p:99999"}, "providers.p.proxy", "invalid port"),
        ({"HTTPS_PROXY": "https://u:s3cret@p:1"}, {}, "providers.p.proxy (from HTTPS_PROXY)", "only http:// proxies"),
    ],
)
def test_an_unusable_proxy_is_a_config_error_without_its_password(env, account, path, words):
    with pytest.raises(ConfigError) as exc:
        _runtime(env, **account)
    assert exc.value.path == path and words in exc.value.expected
    assert "s3cret" not in str(exc.value)


def test_tls_files_that_cannot_be_used_are_config_errors_naming_their_key(tmp_path):
    ca = trustme.CA()
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf = ca.issue_cert("client.test")
    leaf.cert_chain_pems[0].write_to_path(str(cert_file))
    leaf.private_key_pem.write_to_path(str(key_file))
    way = _runtime(ca_bundle=str(ca_file), client_cert=str(cert_file), client_key=str(key_file)).egress["p"]
    assert way.ssl_context is not None and way.proxy is None

    cases = [
        ({"ca_bundle": str(tmp_path / "missing.pem")}, "providers.p.ca_bundle", "No such file"),
        ({"ca_bundle": str(key_file)}, "providers.p.ca_bundle", "cannot load CA certificates"),
        ({"client_cert": str(cert_file)}, "providers.p.client_cert", "set client_key"),  # the key is elsewhere
    ]
    for account, path, words in cases:
        with pytest.raises(ConfigError) as exc:
            _runtime(**account)
        assert exc.value.path == path and words in exc.value.expected, exc.value


def test_a_client_key_without_its_certificate_is_refused_when_the_config_loads():
    with pytest.raises(ConfigError) as exc:
        from_builtins({"providers": {"p": {"type": "openai", "api_key": "k", "client_key": "/k.pem"}}}, env={})
    assert exc.value.path == "providers.p" and "client_key is set without client_cert" in exc.value.expected
