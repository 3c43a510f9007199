"""Runtime: the immutable, resolved snapshot of a config that request handling reads.

Built once at startup (a reload would build a new one and swap the reference): every
target with its adapter, URL, key and timeouts, the public model groups, and direct
`<provider>/<model>` addressing.
"""

from __future__ import annotations

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
)
from aiogw.errors import ConfigError, InvalidRequest, ModelNotFound
from aiogw.names import MAX_DIRECT_TARGETS, Recent, model_name_problem


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
    configured: dict[str, Target] = field(default_factory=dict)  # every group's targets, by id
    # Memo of direct addressing: clients choose these names, so only the recent ones.
    _direct: Recent[str, ModelRoute] = field(default_factory=lambda: Recent(MAX_DIRECT_TARGETS))

    @classmethod
    def build(cls, config: Config, *, file: str = "<config>") -> Runtime:
        for name, account in config.providers.items():
            adapter = REGISTRY.get(account_type(account))
            if adapter is None:
                raise ConfigError(file, f"providers.{name}.type", f"provider type '{account_type(account)}' is not available in this build")
            if adapter.requires_base_url and not account.base_url:
                raise ConfigError(file, f"providers.{name}.base_url", "a base_url is required for this type")
            if adapter.requires_api_key and account.api_key is None:
                raise ConfigError(file, f"providers.{name}.api_key", "an api_key is required for this type")
        routing = config.routing
        routes: dict[str, ModelRoute] = {}
        policies: dict[str, BreakerConfig] = {}
        configured: dict[str, Target] = {}
        for g in config.models:
            targets = tuple(make_target(config.providers[t.provider], t.provider, t) for t in g.targets)
            routes[g.name] = ModelRoute(g.name, g.strategy, targets, retry=g.retry or routing.retry, hedge=g.hedge)
            for t in targets:  # a target in several groups: the first group's settings
                configured.setdefault(t.id, t)
            if g.breaker is not None:
                for t in targets:  # a target shared by several groups keeps the first group's policy
                    policies.setdefault(t.id, g.breaker)
        return cls(
            config=config,
            routes=routes,
            accounts=dict(config.providers),
            breaker_default=routing.breaker,
            breaker_policies=policies,
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
            raise InvalidRequest(f"Invalid model name {shown!r}: the name {problem}.", code="invalid_model_name", param="model")
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
