"""Runtime: the immutable, resolved snapshot of a config that request handling reads.

Built once at startup (a reload would build a new one and swap the reference): every
target with its adapter, URL, key and timeouts, the public model groups, and direct
`<provider>/<model>` addressing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiogw.adapters import REGISTRY
from aiogw.adapters._base import Adapter, Target
from aiogw.config import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_TOTAL_TIMEOUT_S,
    Account,
    BreakerConfig,
    Config,
    HedgeConfig,
    RetryConfig,
    TargetConfig,
    Timeouts,
    account_problems,
)
from aiogw.errors import ConfigError, ModelNotFound


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """A public model name and the targets that may serve it, in configured order."""

    name: str
    strategy: str
    targets: tuple[Target, ...]
    retry: RetryConfig = RetryConfig()
    hedge: HedgeConfig | None = None


@dataclass(frozen=True, slots=True)
class Runtime:
    config: Config
    routes: dict[str, ModelRoute]
    accounts: dict[str, Account]
    breaker_default: BreakerConfig = BreakerConfig()
    breaker_policies: dict[str, BreakerConfig] = field(default_factory=dict)  # per target id
    _direct: dict[str, ModelRoute] = field(default_factory=dict)  # memo of direct addressing
    loaded_at: int = field(default_factory=lambda: int(time.time()))  # `created` of /v1/models

    @classmethod
    def build(cls, config: Config, *, file: str = "<config>") -> Runtime:
        problems = [e for name, account in config.providers.items() for e in account_problems(name, account, file)]
        if problems:
            raise ConfigError.of(problems)
        routing = config.routing
        routes: dict[str, ModelRoute] = {}
        policies: dict[str, BreakerConfig] = {}
        for g in config.models:
            targets = tuple(make_target(config.providers[t.provider], t.provider, t) for t in g.targets)
            routes[g.name] = ModelRoute(g.name, g.strategy, targets, retry=g.retry or routing.retry, hedge=g.hedge)
            if g.breaker is not None:
                for t in targets:  # a target shared by several groups keeps the first group's policy
                    policies.setdefault(t.id, g.breaker)
        return cls(
            config=config,
            routes=routes,
            accounts=dict(config.providers),
            breaker_default=routing.breaker,
            breaker_policies=policies,
        )

    def adapter(self, target: Target) -> Adapter:
        return REGISTRY[target.type]

    def resolve(self, model: str) -> ModelRoute:
        """A public model name, or `<provider>/<model>` for any configured provider."""
        route = self.routes.get(model) or self._direct.get(model)
        if route is not None:
            return route
        provider, sep, upstream_model = model.partition("/")
        account = self.accounts.get(provider)
        if not sep or account is None or not upstream_model:
            raise ModelNotFound(
                f"The model '{model}' does not exist on this gateway. Use one of the names "
                f"listed by GET /v1/models, or '<provider>/<model>' with a configured provider "
                f"({', '.join(sorted(self.accounts)) or 'none configured'})."
            )
        target = make_target(account, provider, TargetConfig(provider=provider, model=upstream_model))
        route = ModelRoute(model, "priority", (target,), retry=self.config.routing.retry)
        if len(self._direct) < 10_000:  # bounded: clients choose these names
            self._direct[model] = route
        return route

    def known_target(self, target_id: str) -> Target | None:
        """A target by id, among configured groups and direct addresses seen so far."""
        for route in (*self.routes.values(), *self._direct.values()):
            for t in route.targets:
                if t.id == target_id:
                    return t
        return None

    def targets(self, seen: Iterable[str] = ()) -> dict[str, Target]:
        """Every configured target by id, plus the directly addressed ones among `seen`
        (ids the health store has met)."""
        out = {t.id: t for r in self.routes.values() for t in r.targets}
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
        total_timeout_s=tmo.total or DEFAULT_TOTAL_TIMEOUT_S,
        weight=t.weight,
        context_window=t.context_window,
        max_output_tokens=t.max_output_tokens,
        price_input=price.input if price else None,
        price_output=price.output if price else None,
        price_cached_input=price.cached_input if price else None,
        rpm=limits.rpm if limits else None,
        tpm=limits.tpm if limits else None,
        concurrency=limits.concurrency if limits else None,
    )


def _merge_timeouts(account: Timeouts, target: Timeouts | None) -> Timeouts:
    if target is None:
        return account
    return Timeouts(
        connect=target.connect or account.connect,
        first_token=target.first_token or account.first_token,
        total=target.total or account.total,
    )
