"""What gets installed: pyproject's requirements and extras, the exact pins of
constraints.txt, and the commands that install them (the README's, which CI runs)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from aiogw import config, extras

ROOT = Path(__file__).parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
OPTIONAL = PROJECT["optional-dependencies"]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)$")


def constraint_lines() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines())
    return [line for line in lines if line]


PINS = {canonicalize_name(m.group(1)): Version(m.group(2)) for m in map(_PIN.match, constraint_lines()) if m}


def own_requirements(wanted: set[str]) -> list[Requirement]:
    """aiogw's requirements with the extras `wanted`, its self-references (`aiogw[otlp]`)
    expanded."""
    out = [Requirement(r) for r in PROJECT["dependencies"]]
    todo, seen = list(wanted), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in map(Requirement, OPTIONAL[extra]):
            if canonicalize_name(req.name) == "aiogw":
                todo += req.extras
            else:
                out.append(req)
    return out


def sh_block_after(text: str, heading: str) -> str:
    """The first line of the first ```sh block after `heading` in the README."""
    m = re.search(re.escape(heading) + r"[^\n]*\s*```sh\n(.+?)\n", text)
    assert m, heading
    return m.group(1).strip()


def test_every_constraint_is_one_exact_pin():
    lines = constraint_lines()
    assert lines and [line for line in lines if not _PIN.match(line)] == []  # no ranges, markers or URLs
    assert len(PINS) == len(lines)  # no package twice
    assert "aiogw" not in PINS


def test_the_pins_are_within_pyproject_bounds():
    """A pin outside pyproject's range would make `pip install -c constraints.txt` fail, or
    leave the lower bound untested."""
    reqs = own_requirements(set(OPTIONAL)) + [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    bad = [
        f"{r}: pinned {PINS.get(canonicalize_name(r.name), 'nowhere')}"
        for r in reqs
        if canonicalize_name(r.name) not in PINS
        or not r.specifier.contains(PINS[canonicalize_name(r.name)], prereleases=True)
    ]
    assert bad == []


def test_everything_aiogw_and_its_extras_install_is_pinned():
    """The whole dependency tree, read from the metadata of what is installed here at the
    pinned versions (as CI installs it): a transitive dependency left unpinned would float
    between two builds of one commit."""
    todo = [r for r in own_requirements(set(OPTIONAL)) if r.marker is None or r.marker.evaluate({"extra": ""})]
    seen: set[tuple[str, frozenset[str]]] = set()
    unpinned = set()
    off_pin: list[str] = []
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name not in PINS:
            unpinned.add(str(req))
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:  # an extra not installed here (lint): its pin is checked above
            continue
        if name in PINS and Version(dist.version) != PINS[name]:
            off_pin.append(f"{dist.name} {dist.version}")  # its requirements are not the pinned version's
            continue
        requires = dist.requires or []
        for spec in map(Requirement, requires):
            if spec.marker is None or any(spec.marker.evaluate({"extra": e}) for e in (req.extras or {""})):
                todo.append(spec)
    if off_pin:  # CI installs with the constraints, so it never skips
        pytest.skip(
            f"installed without constraints.txt ({', '.join(sorted(off_pin)[:3])}, ...): the tree cannot be read"
        )
    assert unpinned == set()
    walked = {name for name, _ in seen}
    assert {
        "aiohttp",
        "multidict",
        "yarl",
        "redis",
        "opentelemetry-api",
        "protobuf",
    } <= walked  # deep, not just the top


def test_ci_runs_exactly_the_readme_test_command_and_both_install_the_pinned_versions():
    readme = (ROOT / "README.md").read_text()
    tests = sh_block_after(readme, "Run the whole test suite:")
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert tests in ci
    assert "pip install -c constraints.txt '.[test,lint]'" in tests
    assert tests.endswith("tests/lint && .venv/bin/pytest")  # lint and types, then the whole suite
    demo = sh_block_after(readme, "Run the demo")
    assert "pip install -c constraints.txt . " in demo  # no extra: the demo needs none (tests/e2e/test_process.py)


def test_every_optional_part_names_an_extra_that_the_tests_install():
    test_extras = {
        e for r in map(Requirement, OPTIONAL["test"]) if canonicalize_name(r.name) == "aiogw" for e in r.extras
    }
    all_extras = {e for r in map(Requirement, OPTIONAL["all"]) for e in r.extras}
    for key, (extra, modules) in extras.OPTIONAL.items():
        present = config.Config(store=config.StoreConfig())  # the optional sections, with their defaults
        value = present
        for part in key.split("."):  # a real config key
            value = getattr(value, part)
        assert key not in extras.needed(present) and key not in extras.needed(config.Config()), key  # off by default
        assert extra in OPTIONAL and extra in test_extras and extra in all_extras, (key, extra)
        assert all(extras.installed(m) for m in modules), (key, modules)  # the names are right
