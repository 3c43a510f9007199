"""The dependency direction between the project's layers, checked from the source folders with `ast`
(works whatever the install mode)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"aiogw": "aiogw", "adapters": "aiogw.adapters", "streaming": "aiogw.streaming", "bench": "aiogw.bench"}

# The request path in stages, each a package: ingress (wire formats in and out) -> admission
# (limits) -> routing (router, health, retry budgets) -> attempts (the loop, hedging,
# deadlines, sending) -> upstream (the HTTP client); accounting prices and records what an
# answer cost, state shares admission's and routing's state across replicas. A stage may
# import the stages after it on the path and the shared ground (types, errors, config,
# runtime, names, ids, adapters, streaming, telemetry); never one before it.
#
# Every module has a rule: the longest key that is the module or a package above it.
# The value: the aiogw modules (or packages, by prefix) it may import.
GROUND = {"aiogw.types", "aiogw.errors", "aiogw.ids", "aiogw.names", "aiogw.version"}
ALLOWED: dict[str, set[str]] = {
    "aiogw": set(),  # the package itself: empty
    # Shared ground: data shapes and errors know nothing else.
    "aiogw.types": set(),
    "aiogw.errors": set(),
    "aiogw.ids": set(),
    "aiogw.names": set(),
    "aiogw.version": set(),
    "aiogw.extras": set(),  # importlib only: it finds the optional packages, never imports them
    "aiogw.supervise": set(),
    "aiogw.adapters": {
        "aiogw.types",
        "aiogw.errors",
        "aiogw.ids",
        "aiogw.adapters._base",
        "aiogw.adapters.openai",
        "aiogw.adapters",
    },
    "aiogw.streaming": {"aiogw.types", "aiogw.errors", "aiogw.streaming"},
    # The config's shape (Structs and defaults) apart from loading a file into it: the loader
    # checks accounts against the adapters and names against their rule. alerts.sink: the
    # event names a webhook may subscribe to.
    "aiogw.config": {"aiogw.types", "aiogw.errors", "aiogw.alerts.sink"},
    "aiogw.config_load": {
        "aiogw.types",
        "aiogw.errors",
        "aiogw.config",
        "aiogw.adapters",
        "aiogw.names",
        "aiogw.extras",
        "aiogw.quality.prior",  # a quality group's prior is read and checked at load
    },
    # Quality: the learner, its priors and the prompt-feature bucket (the router reads them),
    # the request memory, the feedback rows, the judge's rubric and the spot checks' queue
    # (which feed the learner; the server wires them to the dispatcher).
    "aiogw.quality": {
        *GROUND,
        "aiogw.adapters._base",
        "aiogw.streaming.encode",  # the prompt estimate of a body (features.bucket_of_body)
        "aiogw.streaming.sse",  # a captured stream's data lines (spot_check reads its answer)
        "aiogw.config",
        "aiogw.store",
        "aiogw.telemetry.logs",
        "aiogw.quality",
    },
    "aiogw.telemetry": {"aiogw.config", "aiogw.names", "aiogw.version", "aiogw.telemetry"},
    # The durable store: SQL over SQLite or PostgreSQL, knowing nothing of what it holds
    # beyond the schema; admission (keys, budgets) and accounting (the ledger) use it.
    "aiogw.store": {*GROUND, "aiogw.store"},
    # Alerts: the sink interface any stage may fire into; delivery (webhooks) behind it.
    "aiogw.alerts": {
        *GROUND,
        "aiogw.config",
        "aiogw.telemetry",
        "aiogw.store",
        "aiogw.upstream",
        "aiogw.supervise",
        "aiogw.alerts",
    },
    # The resolved config; prices are set on its targets when it is built.
    "aiogw.runtime": {
        *GROUND,
        "aiogw.adapters",
        "aiogw.config",
        "aiogw.config_load",
        "aiogw.accounting.cost",
        "aiogw.upstream.egress",
    },
    # The stages, in path order.
    "aiogw.upstream": {*GROUND, "aiogw.upstream"},
    "aiogw.accounting": {*GROUND, "aiogw.adapters._base", "aiogw.store", "aiogw.alerts.sink", "aiogw.accounting"},
    "aiogw.admission": {
        *GROUND,
        "aiogw.adapters._base",
        "aiogw.config",
        "aiogw.store",
        "aiogw.alerts.sink",
        "aiogw.admission",
    },
    "aiogw.routing": {
        *GROUND,
        "aiogw.adapters._base",
        "aiogw.config",
        "aiogw.runtime",
        "aiogw.accounting.cost",
        "aiogw.alerts.sink",
        "aiogw.supervise",  # the SLO evaluation timer
        "aiogw.telemetry.logs",
        "aiogw.quality",
        "aiogw.routing",
    },
    # Shared state backs admission's buckets and routing's breakers and windows.
    "aiogw.state": {
        *GROUND,
        "aiogw.adapters._base",
        "aiogw.config",
        "aiogw.admission",
        "aiogw.routing.health",
        "aiogw.supervise",
        "aiogw.telemetry.logs",
        "aiogw.state",
    },
    # Its parts, composed only by `shared` (the facade): the connection knows no part; the
    # buckets and the breakers know the connection, not each other; the sync loops feed both.
    "aiogw.state.scripts": set(),
    "aiogw.state.records": {*GROUND, "aiogw.telemetry.logs"},
    "aiogw.state.link": {*GROUND, "aiogw.config", "aiogw.routing.health", "aiogw.telemetry.logs"},
    "aiogw.state.leases": {*GROUND, "aiogw.adapters._base", "aiogw.admission.limits"},
    "aiogw.state.buckets": {
        *GROUND,
        "aiogw.adapters._base",
        "aiogw.state.leases",
        "aiogw.state.link",
        "aiogw.state.scripts",
    },
    "aiogw.state.breakers": {
        *GROUND,
        "aiogw.routing.health",
        "aiogw.state.link",
        "aiogw.state.records",
        "aiogw.state.scripts",
    },
    "aiogw.state.sync": {*GROUND, "aiogw.routing.health", "aiogw.state"},
    # The response cache: between admission and routing (a hit never reaches routing).
    "aiogw.cache": {*GROUND, "aiogw.config", "aiogw.telemetry.logs", "aiogw.cache"},
    "aiogw.attempts": {
        *GROUND,
        "aiogw.adapters",
        "aiogw.config",
        "aiogw.runtime",
        "aiogw.streaming",
        "aiogw.telemetry",
        "aiogw.supervise",
        "aiogw.accounting.cost",
        "aiogw.admission",
        "aiogw.routing",
        "aiogw.quality",
        "aiogw.upstream",
        "aiogw.attempts",
    },
    # Each attempt's bookkeeping is the one module of the stage that charges the ledger and
    # calls shared state: the loop, hedging and sending reach them only through it.
    "aiogw.attempts.bookkeeping": {
        *GROUND,
        "aiogw.adapters._base",
        "aiogw.runtime",
        "aiogw.telemetry",
        "aiogw.accounting",
        "aiogw.admission",
        "aiogw.routing",
        "aiogw.state",
        "aiogw.attempts",
    },
    # An ingress decodes a wire format, calls the attempt stage, encodes the answer; the app's
    # typed keys are its only import from the server.
    "aiogw.ingress": {
        *GROUND,
        "aiogw.adapters._base",
        "aiogw.runtime",
        "aiogw.streaming",
        "aiogw.accounting.cost",
        "aiogw.routing.router",
        "aiogw.attempts.outcome",
        "aiogw.attempts.walk",  # the request's token estimate, for a virtual key's tpm
        "aiogw.cache",
        "aiogw.server.keys",
        "aiogw.ingress",
    },
    # The Responses ingress keeps stored responses in the durable store (and logs a failed write).
    "aiogw.ingress.responses": {
        *GROUND,
        "aiogw.adapters._base",
        "aiogw.runtime",
        "aiogw.streaming",
        "aiogw.attempts.outcome",
        "aiogw.attempts.walk",
        "aiogw.server.keys",
        "aiogw.store.base",
        "aiogw.telemetry.logs",
        "aiogw.ingress",
    },
    # The server assembles the stages (constructor injection, in build order) and serves them.
    "aiogw.server": {
        *GROUND,
        "aiogw.adapters._base",
        "aiogw.config",
        "aiogw.runtime",
        "aiogw.telemetry",
        "aiogw.streaming",
        "aiogw.ingress",
        "aiogw.admission",
        "aiogw.routing",
        "aiogw.attempts",
        "aiogw.state",
        "aiogw.upstream",
        "aiogw.accounting",
        "aiogw.store",
        "aiogw.alerts",
        "aiogw.supervise",  # the budgets' refresh loop
        "aiogw.cache",
        "aiogw.quality",
        "aiogw.server",
    },
    # `aiogw eval`: a client of the gateway over HTTP; only its command starts one in process
    # (--config), so the server, the config loader and the logs are the CLI module's alone.
    # quality.judge: the judge's prompt and verdict (one for eval and spot checks);
    # quality.features: each item's prompt bucket, the same as the router computes it
    "aiogw.eval": {*GROUND, "aiogw.extras", "aiogw.eval", "aiogw.quality.judge", "aiogw.quality.features"},
    "aiogw.eval.cli": {
        *GROUND,
        "aiogw.extras",
        "aiogw.config_load",
        "aiogw.server.app",
        "aiogw.telemetry.logs",
        "aiogw.eval",
    },
    # Entry points: anything.
    "aiogw.cli": {"aiogw"},
    "aiogw.demo": {"aiogw"},
    "aiogw.__main__": {"aiogw"},
    # Simulators (bench/sim*.py, simulator.py) model providers independently of our adapters;
    # the rest of bench/ measures the gateway and may import anything.
    "aiogw.bench": {"aiogw"},
    "aiogw.bench.sim": {"aiogw.bench"},
}
# Modules that may talk HTTP through aiohttp: none of the shared ground, and none of the
# stages below ingress (the upstream client is our own, on asyncio).
NO_AIOHTTP = (
    "aiogw.adapters", "aiogw.streaming", "aiogw.types", "aiogw.errors", "aiogw.accounting", "aiogw.admission", "aiogw.store",
    "aiogw.alerts", "aiogw.cache",
    "aiogw.routing", "aiogw.attempts", "aiogw.upstream", "aiogw.state", "aiogw.runtime", "aiogw.config",
    "aiogw.config_load",
)  # fmt: skip


def modules():
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield ".".join([package, *parts]), path


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            # `from aiogw.adapters import openai` imports aiogw.adapters.openai (a name that is
            # not a module only makes the entry longer, under the same package)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith(("aiogw", "aiohttp"))}


def rule_for(module: str) -> set[str] | None:
    if module.startswith("aiogw.bench.sim"):
        return ALLOWED["aiogw.bench.sim"]
    best = max((k for k in ALLOWED if module == k or module.startswith(k + ".")), key=len, default=None)
    return None if best is None else ALLOWED[best]


def test_every_module_has_a_rule():
    assert [m for m, _ in modules() if rule_for(m) is None or (m != "aiogw" and rule_for(m) is ALLOWED["aiogw"])] == []


def test_every_module_imports_only_what_its_layer_allows():
    bad = []
    for module, path in modules():
        allowed = rule_for(module)
        assert allowed is not None, f"{module} has no rule in ALLOWED"
        for imp in imports(path):
            if imp.startswith("aiohttp"):
                if module.startswith(NO_AIOHTTP):
                    bad.append(f"{module} imports {imp}")
                continue
            if not any(imp == a or imp.startswith(a + ".") for a in allowed):
                bad.append(f"{module} imports {imp}")
    assert bad == []


def provider_of(module: str) -> str:
    """A provider's request side is `adapters/<p>.py`, its reply side `adapters/<p>_reply.py`,
    its passthrough of clients speaking its own API `adapters/<p>_native.py`."""
    return module.rsplit(".", 1)[1].removesuffix("_reply").removesuffix("_native")


def test_no_adapter_imports_another_except_the_openai_family_base():
    family_base = {"aiogw.adapters._base", "aiogw.adapters.openai"}
    adapters = {m for m, _ in modules() if m.startswith("aiogw.adapters.")}
    bad = []
    for module, path in modules():
        if module not in adapters or module.endswith("_base"):
            continue
        for imp in imports(path) & adapters:
            # A provider's two sides import each other one way (the request side declares the
            # adapter from the reply side's decoders); another provider only via the family base.
            if (module.endswith("_reply") and imp == module.removesuffix("_reply")) or (
                imp not in family_base and provider_of(imp) != provider_of(module)
            ):
                bad.append(f"{module} imports {imp}")
    assert bad == []
