"""How a provider account's connections leave the gateway: its own TLS trust and client
certificate, and an HTTP proxy (configured, or from `HTTPS_PROXY` / `HTTP_PROXY` /
`NO_PROXY`). Built once per account when the runtime is built; an account with none of it
has no `Egress` and takes the client's default path, which costs nothing extra.
"""

from __future__ import annotations

import base64
import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy. `str()` and `repr()` show host and port only, never the credentials."""

    host: str
    port: int
    authorization: bytes | None = field(default=None, repr=False)  # Proxy-Authorization value

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, eq=False)  # compared by identity: one per account, a pool key
class Egress:
    ssl_context: ssl.SSLContext | None = None  # None: the client's default (system CAs)
    proxy: Proxy | None = None  # None: direct


def parse_proxy(url: str) -> Proxy:
    """`http://[user:password@]host[:port]` (no scheme means http://). Raises ValueError
    with a message that never repeats the URL, which may hold a password."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme.lower() != "http":
        raise ValueError(
            f"only http:// proxies are supported, not {parts.scheme}:// (https upstreams are tunnelled through "
            "them with CONNECT, so TLS still runs end to end)"
        )
    try:
        host, port = parts.hostname, parts.port or 80
    except ValueError:
        raise ValueError("the proxy URL has an invalid port") from None
    if not host:
        raise ValueError("the proxy URL has no host")
    auth = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = b"Basic " + base64.b64encode(pair.encode())
    return Proxy(host, port, auth)


def env_proxy(scheme: str, host: str, port: int, env: Mapping[str, str]) -> tuple[str, str] | None:
    """The environment's proxy for an upstream, as (variable name, URL), or None for a
    direct connection: `https_proxy`/`HTTPS_PROXY` for https, `http_proxy`/`HTTP_PROXY`
    for http (lower case first, as curl and requests read them), unless `NO_PROXY` lists
    the host or it is a loopback address (as Go does: a proxy meant for the internet is
    not meant for a model server on the same machine)."""
    for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY"):
        url = env.get(name)
        if url:
            break
    else:
        return None
    if _loopback(host) or _no_proxy(host, port, env.get("no_proxy") or env.get("NO_PROXY") or ""):
        return None
    return name, url


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _no_proxy(host: str, port: int, spec: str) -> bool:
    """`NO_PROXY`: comma-separated `*`, host names (matching their subdomains too; a leading
    `.` or `*.` is allowed), IP addresses or CIDR ranges, each with an optional `:port`."""
    host = host.lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for entry in spec.replace(" ", "").lower().split(","):
        if not entry:
            continue
        if entry == "*":
            return True
        name, want = entry, None
        if entry.startswith("[") and "]" in entry:  # [v6]:port
            name, _, rest = entry[1:].partition("]")
            want = rest[1:] if rest.startswith(":") else None
        elif entry.count(":") == 1:
            name, want = entry.split(":")
        if want is not None and want != str(port):
            continue
        if ip is not None:
            try:
                if ip in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = name.removeprefix("*").lstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


class TLSFileError(ValueError):
    """A TLS file that cannot be used; `key` is its config key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _no_password() -> str:
    # Without a callback OpenSSL would ask for the password on the terminal.
    raise TLSFileError("client_key", "the private key is encrypted; give an unencrypted PEM key")


def tls_context(ca_bundle: str | None, client_cert: str | None, client_key: str | None) -> ssl.SSLContext:
    """A client context trusting `ca_bundle` (PEM; instead of the system store when given)
    and presenting `client_cert` (PEM, with `client_key` or the key inside the same file).
    Raises TLSFileError naming the key whose file is missing or unusable."""
    try:
        ctx = ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise TLSFileError("ca_bundle", f"cannot load CA certificates from {ca_bundle}: {_why(exc)}") from None
    if client_cert:
        try:
            ctx.load_cert_chain(client_cert, client_key, password=_no_password)
        except (OSError, ssl.SSLError) as exc:
            files = f"{client_cert} and {client_key}" if client_key else client_cert
            hint = "" if client_key or not isinstance(exc, ssl.SSLError) else " (no private key in it? set client_key)"
            raise TLSFileError(
                "client_cert", f"cannot load the client certificate from {files}: {_why(exc)}{hint}"
            ) from None
    return ctx


def _why(exc: OSError) -> str:
    return exc.strerror if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.strerror else str(exc)
