"""The dependency direction between the project's layers, checked from the source folders with `ast`
(works whatever the install mode)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"aiogw": "aiogw", "adapters": "aiogw.adapters", "streaming": "aiogw.streaming", "bench": "aiogw.bench"}

# module prefix -> aiogw modules it may import (prefix match)
ALLOWED = {
    "aiogw.types": set(),
    "aiogw.errors": set(),
    "aiogw.adapters": {"aiogw.types", "aiogw.errors", "aiogw.ids", "aiogw.adapters._base", "aiogw.adapters.openai", "aiogw.adapters"},
    "aiogw.ids": set(),
    "aiogw.streaming": {"aiogw.types", "aiogw.errors", "aiogw.streaming"},
    # Simulators (bench/sim*.py) model providers independently of our adapters; the rest of
    # bench/ measures the gateway and may import anything.
    "aiogw.bench.sim": {"aiogw.bench"},
    "aiogw.config": {"aiogw.types", "aiogw.errors", "aiogw.adapters", "aiogw.extras"},
    "aiogw.extras": set(),  # importlib only: it finds the optional packages, never imports them
    "aiogw.supervise": set(),
    # The prober sends through dispatch and drives health; it knows nothing of the server.
    "aiogw.health_check": {
        "aiogw.adapters", "aiogw.config", "aiogw.cost", "aiogw.dispatch", "aiogw.errors", "aiogw.health",
        "aiogw.runtime", "aiogw.supervise", "aiogw.telemetry", "aiogw.types",
    },
}


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
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith(("aiogw", "aiohttp"))}


def rule_for(module: str) -> set[str] | None:
    if module.startswith("aiogw.bench.sim"):
        return ALLOWED["aiogw.bench.sim"]
    best = max((k for k in ALLOWED if module == k or module.startswith(k + ".")), key=len, default=None)
    return None if best is None else ALLOWED[best]


def test_every_module_imports_only_what_its_layer_allows():
    bad = []
    for module, path in modules():
        allowed = rule_for(module)
        if allowed is None:
            continue
        for imp in imports(path):
            if imp.startswith("aiohttp"):
                if module.startswith(("aiogw.adapters", "aiogw.streaming", "aiogw.types", "aiogw.errors")):
                    bad.append(f"{module} imports {imp}")
                continue
            if not any(imp == a or imp.startswith(a + ".") for a in allowed):
                bad.append(f"{module} imports {imp}")
    assert bad == []


def test_no_adapter_imports_another_except_the_openai_family_base():
    for module, path in modules():
        if not module.startswith("aiogw.adapters.") or module.endswith(("_base", "openai")):
            continue
        others = {i for i in imports(path) if i.startswith("aiogw.adapters.")} - {"aiogw.adapters._base", "aiogw.adapters.openai"}
        assert others == set(), module
