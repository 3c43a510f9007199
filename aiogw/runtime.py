"""Runtime: the immutable, resolved snapshot of a config that request handling reads.

Built once at startup (a reload would build a new one and swap the reference): every
target with its adapter, URL, key and timeouts, the public model groups, and direct
`<provider>/<model>` addressing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiogw.accounting.cost import resolve_price
from aiogw.adapters import REGISTRY
from aiogw.adapters._base import Adapter, Target
from aiogw.config import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_TOTAL_TIMEOUT_S,
    Account,
    BreakerConfig,
    Config,
    HealthCheckConfig,
    HedgeConfig,
    QualityConfig,
    RetryConfig,
    SLOConfig,
    TargetConfig,
    Timeouts,
)
from aiogw.config_load import account_problems
from aiogw.errors import ConfigError, InvalidRequest, ModelNotFound
from aiogw.names import MAX_DIRECT_TARGETS, Recent, model_name_problem
from aiogw.upstream.egress import Egress, TLSFileError, env_proxy, parse_proxy, tls_context


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """A public model name and the targets that may serve it, in configured order."""

    name: str
    strategy: str
    targets: tuple[Target, ...]
    retry: RetryConfig = RetryConfig()  # noqa: RUF009 - a frozen struct: one shared default is safe
    hedge: HedgeConfig | None = None
    slo: SLOConfig | None = None  # its targets out of it are ranked after those within
    quality: QualityConfig | None = None  # strategy quality's settings (set only with that strategy)


@dataclass(frozen=True, slots=True)
class Runtime:
    config: Config
    routes: dict[str, ModelRoute]
    accounts: dict[str, Account]
    breaker_default: BreakerConfig = BreakerConfig()  # noqa: RUF009 - a frozen struct, as above
    breaker_policies: dict[str, BreakerConfig] = field(default_factory=dict)  # per target id
    # Targets with active health checks (enabled ones only), by id: configured targets only.
    health_checks: dict[str, tuple[Target, HealthCheckConfig]] = field(default_factory=dict)
    # Per account name, for accounts with their own TLS settings or a proxy (none: direct).
    egress: dict[str, Egress] = field(default_factory=dict)
    configured: dict[str, Target] = field(default_factory=dict)  # every group's targets, by id
    # Memo of direct addressing: clients choose these names, so only the recent ones.
    _direct: Recent[str, ModelRoute] = field(default_factory=lambda: Recent(MAX_DIRECT_TARGETS))
    loaded_at: int = field(default_factory=lambda: int(time.time()))  # `created` of /v1/models

    @classmethod
    def build(cls, config: Config, *, file: str = "<config>", env: Mapping[str, str] | None = None) -> Runtime:
        """`env`: where HTTPS_PROXY / HTTP_PROXY / NO_PROXY are read (the process environment)."""
        problems = [e for name, account in config.providers.items() for e in account_problems(name, account, file)]
        if problems:
            raise ConfigError.of(problems)
        egress: dict[str, Egress] = {}
        for name, account in config.providers.items():
            adapter = REGISTRY[account_type(account)]
            base_url = account.base_url or adapter.default_base_url
            way = _egress(account, base_url, f"providers.{name}", file, os.environ if env is None else env)
            if way is not None:
                egress[name] = way
        routing = config.routing
        routes: dict[str, ModelRoute] = {}
        policies: dict[str, BreakerConfig] = {}
        explicit: dict[str, HealthCheckConfig] = {}
        configured: dict[str, Target] = {}
        for g in config.models:
            targets = tuple(make_target(config.providers[t.provider], t.provider, t) for t in g.targets)
            routes[g.name] = ModelRoute(
                g.name,
                g.strategy,
                targets,
                retry=g.retry or routing.retry,
                hedge=g.hedge,
                slo=g.slo,
                quality=g.quality if g.strategy == "quality" else None,
            )
            for t in targets:  # a target shared by several groups keeps the first group's settings
                configured.setdefault(t.id, t)
                if g.breaker is not None:
                    policies.setdefault(t.id, g.breaker)
                if g.health_check is not None:
                    explicit.setdefault(t.id, g.health_check)
        health_checks: dict[str, tuple[Target, HealthCheckConfig]] = {}
        for route in routes.values():
            for t in route.targets:
                check = explicit.get(t.id, routing.health_check)
                if check is not None and check.enabled:
                    health_checks.setdefault(t.id, (t, check))
        return cls(
            config=config,
            routes=routes,
            accounts=dict(config.providers),
            breaker_default=routing.breaker,
            breaker_policies=policies,
            health_checks=health_checks,
            egress=egress,
            configured=configured,
        )

    def adapter(self, target: Target) -> Adapter:
        return REGISTRY[target.type]

    def resolve(self, model: str) -> ModelRoute:
        """A public model name, or `<provider>/<model>` for any configured provider. A name
        outside the model-name rule is a 400 naming `model` (configured names passed it at
        load, so only names that miss the table are checked)."""
        route = self.routes.get(model) or self._direct.get(model)
        if route is not None:
            return route
        if (problem := model_name_problem(model)) is not None:
            shown = model if len(model) <= 80 else model[:80] + "..."
            raise InvalidRequest(
                f"Invalid model name {shown!r}: the name {problem}.", code="invalid_model_name", param="model"
            )
        target = self._direct_target(model)
        if target is None:
            raise ModelNotFound(
                f"The model '{model}' does not exist on this gateway. Use one of the names "
                f"listed by GET /v1/models, or '<provider>/<model>' with a configured provider "
                f"({', '.join(sorted(self.accounts)) or 'none configured'})."
            )
        return self._direct.put(model, ModelRoute(model, "priority", (target,), retry=self.config.routing.retry))

    def _direct_target(self, name: str) -> Target | None:
        """The target `<provider>/<model>` names, built the same way every time (so a name
        forgotten by the memo comes back identical)."""
        provider, sep, upstream_model = name.partition("/")
        account = self.accounts.get(provider)
        if not sep or account is None or not upstream_model:
            return None
        return make_target(account, provider, TargetConfig(provider=provider, model=upstream_model))

    def known_target(self, target_id: str) -> Target | None:
        """A target by id: configured, or addressed directly (its id is its direct name)."""
        t = self.configured.get(target_id)
        if t is not None:
            return t
        route = self._direct.get(target_id)
        if route is not None:
            return route.targets[0]
        return self._direct_target(target_id) if model_name_problem(target_id) is None else None

    def targets(self, seen: Iterable[str] = ()) -> dict[str, Target]:
        """Every configured target by id, plus the directly addressed ones among `seen`
        (ids the health store holds). Linear in both: scraped several times per /metrics."""
        out = dict(self.configured)
        for tid in seen:
            if tid not in out and (t := self.known_target(tid)) is not None:
                out[tid] = t
        return out

    def public_models(self) -> list[str]:
        return list(self.routes)

    def owner(self, model: str) -> str:
        """`owned_by` of a model name `resolve` accepts: a public group is the gateway's own,
        `<provider>/<model>` belongs to that provider account."""
        return "aiogw" if model in self.routes else model.partition("/")[0]


def account_type(account: Account) -> str:
    tag = type(account).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def _egress(account: Account, base_url: str, path: str, file: str, env: Mapping[str, str]) -> Egress | None:
    """The account's TLS context and proxy; None when it has neither (the default path)."""
    ctx = None
    if account.ca_bundle or account.client_cert:
        try:
            ctx = tls_context(account.ca_bundle, account.client_cert, account.client_key)
        except TLSFileError as exc:
            raise ConfigError(file, f"{path}.{exc.key}", str(exc)) from None
    url, where = account.proxy, f"{path}.proxy"
    if not url:  # unset or "" (`${CORP_PROXY:-}`): the environment decides
        parts = urlsplit(base_url)
        found = env_proxy(
            parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), env
        )
        if found is not None:
            var, url = found
            where = f"{path}.proxy (from {var})"
    proxy = None
    if url:
        try:
            proxy = parse_proxy(url)
        except ValueError as exc:
            raise ConfigError(file, where, str(exc)) from None
    return Egress(ctx, proxy) if ctx is not None or proxy is not None else None


def make_target(account: Account, name: str, t: TargetConfig) -> Target:
    adapter = REGISTRY[account_type(account)]
    tmo = _merge_timeouts(account.timeouts, t.timeouts)
    price, limits = t.price, t.limits
    return Target(
        id=f"{name}/{t.model}",
        provider=name,
        type=adapter.name,
        model=t.model,
        base_url=(account.base_url or adapter.default_base_url).rstrip("/"),
        api_key=account.api_key,
        headers=dict(account.headers),
        connect_timeout_s=tmo.connect or DEFAULT_CONNECT_TIMEOUT_S,
        first_token_timeout_s=tmo.first_token,
        idle_timeout_s=tmo.idle or DEFAULT_IDLE_TIMEOUT_S,
        total_timeout_s=tmo.total or DEFAULT_TOTAL_TIMEOUT_S,
        weight=t.weight,
        context_window=t.context_window,
        max_output_tokens=t.max_output_tokens,
        price=resolve_price(
            adapter.name,
            t.model,
            *((price.input, price.output, price.cached_input) if price else (None, None, None)),
            cache_write=price.cache_write if price else None,
        ),
        rpm=limits.rpm if limits else None,
        tpm=limits.tpm if limits else None,
        concurrency=limits.concurrency if limits else None,
        responses_api=getattr(account, "responses_api", None),
    )


def _merge_timeouts(account: Timeouts, target: Timeouts | None) -> Timeouts:
    if target is None:
        return account
    return Timeouts(
        connect=target.connect or account.connect,
        first_token=target.first_token or account.first_token,
        idle=target.idle or account.idle,
        total=target.total or account.total,
    )
