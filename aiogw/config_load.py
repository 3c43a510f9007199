"""Loading a config file into `aiogw.config.Config`, with precise errors.

Four steps: read and decode to builtins (YAML, JSON or TOML by extension); expand `${VAR}` /
`${VAR:-default}` while walking the tree with its key path; convert to `Config` with
msgspec; when that fails, search the tree for every invalid value and raise them as
`ConfigError(file, path, expected)` (the first, carrying all in `.errors`). Apart from the
Structs because it changes with the file format and the error report, not with what a key
means.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
import yaml

from aiogw.config import Account, AccountConfig, Config
from aiogw.errors import ConfigError
from aiogw.extras import missing_extras
from aiogw.names import model_name_problem
from aiogw.quality.prior import read_prior, target_keys
from aiogw.types import Secret

# ${VAR}, ${VAR:-default} (unset or empty: default), ${VAR-default} (unset: default), $$.
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)-([^}]*))?\}")


def _expand(value: Any, path: str, file: str, env: dict[str, str], missing: list[ConfigError]) -> Any:
    """`value` with variables expanded; an unset variable without default is added to
    `missing` (every one is reported, not only the first)."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":  # `$$` escapes a literal dollar
                return "$"
            name, colon, default = m.group(1), m.group(2), m.group(3)
            value = env.get(name)
            if default is not None and (value is None or (colon and not value)):
                return default  # as in the shell: `:-` also covers a variable set to "", `-` does not
            if value is not None:
                return value
            missing.append(ConfigError(file, path, f"environment variable {name} is not set"))
            return ""

        return _VAR.sub(sub, value) if "$" in value else value
    if isinstance(value, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k), file, env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", file, env, missing) for i, v in enumerate(value)]
    return value


def _dec_hook(typ: type, obj: Any) -> Any:
    if typ is Secret:
        if not isinstance(obj, str):
            raise TypeError("Expected `str`")
        if not obj:
            raise ValueError("an API key must not be empty")
        return Secret(obj)
    raise NotImplementedError


_PATH_IN_MESSAGE = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.DOTALL)


def _read(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            return json.loads(text)
        if suffix == ".toml":
            return tomllib.loads(text)
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        # PyYAML names the stream `<unicode string>`; the file is named by ConfigError.
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = "; ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise ConfigError(str(path), "", f"cannot parse yaml{where}: {what}") from None
    except (ValueError, yaml.YAMLError) as exc:  # JSON and TOML errors give the line themselves
        raise ConfigError(str(path), "", f"cannot parse {suffix.lstrip('.') or 'yaml'}: {exc}") from None


def from_builtins(
    data: Any, *, file: str = "<config>", env: dict[str, str] | None = None, base_dir: Path | None = None
) -> Config:
    """Expand variables, convert and cross-check an already-decoded config tree. Raises the
    first ConfigError found, carrying every one in `.errors`. `base_dir`: where relative
    paths in the file (a quality group's prior) start; None: the working directory."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, "$", "expected a mapping at the top level")
    missing: list[ConfigError] = []
    expanded = _expand(data, "", file, dict(os.environ) if env is None else env, missing)
    quality_problems = _quality_priors(expanded, file, base_dir)
    try:
        config = msgspec.convert(expanded, Config, dec_hook=_dec_hook, strict=False)  # "${PORT}" is a string
    except msgspec.ValidationError:
        config = None
    problems = list(missing)
    if config is None:  # the slow path: find every invalid value, not only msgspec's first
        unset = tuple(e.path for e in missing)  # their "" would only repeat the same fault
        problems += [e for e in _problems(expanded, Config, "", file) if not _under(e.path, unset)]
        providers = expanded.get("providers")
        for name, account in providers.items() if isinstance(providers, dict) else ():
            if not _under(f"providers.{name}", unset) and not _problems(account, AccountConfig, "", file):
                problems += account_problems(
                    name, msgspec.convert(account, AccountConfig, dec_hook=_dec_hook, strict=False), file
                )
    problems += _reference_problems(expanded, file) + quality_problems
    if config is not None:  # a part switched on whose extra is not installed
        problems += [ConfigError(file, key, why) for key, why in missing_extras(config)]
    if problems:
        raise ConfigError.of(problems)
    assert config is not None
    return config


def load(path: str | os.PathLike[str], *, env: dict[str, str] | None = None) -> Config:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(p), "", "file not found")
    return from_builtins(_read(p), file=str(p), env=env, base_dir=p.parent)


def account_problems(name: str, account: Account, file: str) -> list[ConfigError]:
    """What a provider account lacks for its type (checked once the config converts, by
    Runtime.build, and here for check-config's report when something else is invalid)."""
    from aiogw.adapters import REGISTRY  # noqa: PLC0415 - adapters import types, not config

    tag = type(account).__struct_config__.tag
    adapter = REGISTRY.get(tag) if isinstance(tag, str) else None
    if adapter is None:
        return [ConfigError(file, f"providers.{name}.type", f"provider type '{tag}' is not available in this build")]
    out = []
    if adapter.requires_base_url and not account.base_url:
        out.append(ConfigError(file, f"providers.{name}.base_url", "a base_url is required for this type"))
    if adapter.requires_api_key and account.api_key is None:
        out.append(ConfigError(file, f"providers.{name}.api_key", "an api_key is required for this type"))
    return out


def _reference_problems(data: dict[str, Any], file: str) -> list[ConfigError]:
    """Duplicate model names and targets naming an unconfigured provider, read from the raw
    tree so they are reported alongside any invalid value."""
    providers = data.get("providers")
    known = sorted(providers) if isinstance(providers, dict) else []
    models = data.get("models")
    out, seen = [], set()
    for i, group in enumerate(models if isinstance(models, list) else ()):
        if not isinstance(group, dict):
            continue
        name = group.get("name")
        if isinstance(name, str):
            if (problem := model_name_problem(name)) is not None:
                out.append(ConfigError(file, f"models[{i}].name", f"invalid model name {name!r}: the name {problem}"))
            if name in seen:
                out.append(ConfigError(file, f"models[{i}].name", f"duplicate model name '{name}'"))
            seen.add(name)
        targets = group.get("targets")
        for j, target in enumerate(targets if isinstance(targets, list) else ()):
            model = target.get("model") if isinstance(target, dict) else None
            if isinstance(model, str) and (problem := model_name_problem(model)) is not None:
                out.append(
                    ConfigError(
                        file, f"models[{i}].targets[{j}].model", f"invalid model name {model!r}: the name {problem}"
                    )
                )
            provider = target.get("provider") if isinstance(target, dict) else None
            if isinstance(provider, str) and provider not in known:
                out.append(ConfigError(
                    file, f"models[{i}].targets[{j}].provider",
                    f"unknown provider '{provider}' (providers: {', '.join(known) or 'none configured'})",
                ))  # fmt: skip
    names = {g.get("name") for g in models if isinstance(g, dict)} if isinstance(models, list) else set()
    for i, group in enumerate(models if isinstance(models, list) else ()):
        quality = group.get("quality") if isinstance(group, dict) else None
        spot = quality.get("spot_check") if isinstance(quality, dict) else None
        judge = spot.get("judge") if isinstance(spot, dict) else None
        if isinstance(judge, str) and judge not in names and judge.partition("/")[0] not in known:
            out.append(ConfigError(
                file, f"models[{i}].quality.spot_check.judge",
                f"unknown judge model '{judge}': name a model group or '<provider>/<model>' with a configured provider",
            ))  # fmt: skip
    return out


def _quality_priors(data: dict[str, Any], file: str, base_dir: Path | None) -> list[ConfigError]:
    """Each quality group's prior path made absolute (relative to the config file) in
    `data`, and the file read and checked now, so a bad prior stops the start with its
    reason rather than leaving the group without one."""
    models = data.get("models")
    out = []
    for i, group in enumerate(models if isinstance(models, list) else ()):
        quality = group.get("quality") if isinstance(group, dict) else None
        if not isinstance(quality, dict) or not isinstance(prior := quality.get("prior"), str) or not prior:
            continue
        path = Path(prior).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        quality["prior"] = str(path)
        try:
            q = read_prior(path)
        except ValueError as exc:
            out.append(ConfigError(file, f"models[{i}].quality.prior", str(exc)))
            continue
        keys = _prior_keys(data, group)
        if keys and not keys.intersection(q.models):
            out.append(ConfigError(
                file, f"models[{i}].quality.prior",
                f"no model in {path.name} names a target of this group (the file's models: "
                f"{', '.join(sorted(q.models)) or 'none'}; a key is a target's <provider>/<model>, <type>/<model>, "
                "upstream model, or a one-target model group's name)",
            ))  # fmt: skip
    return out


def _prior_keys(data: dict[str, Any], group: dict[str, Any]) -> set[str]:
    """Every quality.json model key that names one of `group`'s targets (see target_keys);
    empty when the tree is too broken to tell (its own errors are reported elsewhere)."""
    providers = data.get("providers") if isinstance(data.get("providers"), dict) else {}

    def ids_and_keys(g: Any) -> list[tuple[str, tuple[str, ...]]]:
        targets = g.get("targets") if isinstance(g, dict) else None
        out = []
        for t in targets if isinstance(targets, list) else ():
            provider, model = (t.get("provider"), t.get("model")) if isinstance(t, dict) else (None, None)
            account = providers.get(provider) if isinstance(provider, str) else None  # type: ignore[union-attr]
            if isinstance(model, str) and isinstance(account, dict):
                tid = f"{provider}/{model}"
                out.append((tid, target_keys(tid, str(account.get("type", "")), model)))
        return out

    own = ids_and_keys(group)
    keys = {k for _, ks in own for k in ks}
    ids = {tid for tid, _ in own}
    for g in data.get("models") or ():
        one = ids_and_keys(g)
        if len(one) == 1 and one[0][0] in ids and isinstance(g.get("name"), str):
            keys.add(g["name"])
    return keys


# --- every invalid value, for the report ----------------------------------------------------


def _problems(obj: Any, typ: Any, path: str, file: str) -> list[ConfigError]:
    """Every invalid value under `obj` for type `typ`, each with its key path; [] when it
    converts. msgspec stops at the first error, so a failing container is searched part by
    part; when no part fails alone (a rule across fields), the container's own error stands."""
    try:
        msgspec.convert(obj, typ, dec_hook=_dec_hook, strict=False)
        return []
    except msgspec.ValidationError as exc:
        m = _PATH_IN_MESSAGE.match(str(exc))
        assert m is not None
        where = _join(path, (m.group(2) or "").lstrip("."))
        whole = ConfigError(file, where, m.group(1))
    return _part_problems(obj, typ, path, file) or [whole]


def _part_problems(obj: Any, typ: Any, path: str, file: str) -> list[ConfigError]:
    origin, args = get_origin(typ), get_args(typ)
    if origin is Annotated:
        return _part_problems(obj, args[0], path, file)
    if origin is Literal:
        return [ConfigError(file, path, f"Invalid value {obj!r}; expected one of {', '.join(map(str, args))}")]
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if obj is not None and len(options) == 1:
            return _problems(obj, options[0], path, file)
        tags = {a.__struct_config__.tag: a for a in options if isinstance(a, type) and issubclass(a, msgspec.Struct)}
        tag_field = options[0].__struct_config__.tag_field if tags and len(tags) == len(options) else None
        if tag_field and isinstance(obj, dict):
            if obj.get(tag_field) in tags:
                return _problems(obj, tags[obj[tag_field]], path, file)
            got = f"Invalid value {obj[tag_field]!r}" if tag_field in obj else "missing"
            return [ConfigError(file, _join(path, tag_field), f"{got}; expected one of {', '.join(map(str, tags))}")]
        words = [str(v) for a in options if get_origin(a) is Literal for v in get_args(a)]
        if words and isinstance(obj, str):  # e.g. a number or "p95"
            others = [
                getattr(get_args(a)[0] if get_origin(a) is Annotated else a, "__name__", str(a))
                for a in options
                if get_origin(a) is not Literal
            ]
            return [
                ConfigError(
                    file, path, f"Invalid value {obj!r}; expected one of {', '.join(words)}, or a {' or '.join(others)}"
                )
            ]
        return []
    if isinstance(typ, type) and issubclass(typ, msgspec.Struct) and isinstance(obj, dict):
        return _struct_problems(obj, typ, path, file)
    if origin is list and isinstance(obj, list):
        return [e for i, v in enumerate(obj) for e in _problems(v, args[0], f"{path}[{i}]", file)]
    if origin is dict and isinstance(obj, dict):
        return [e for k, v in obj.items() for e in _problems(v, args[1], _join(path, str(k)), file)]
    return []


def _struct_problems(obj: dict[str, Any], typ: type[msgspec.Struct], path: str, file: str) -> list[ConfigError]:
    fields = {f.encode_name: f for f in msgspec.structs.fields(typ)}
    config = typ.__struct_config__
    out = []
    for key, value in obj.items():
        if key in fields:
            out += _problems(value, fields[key].type, _join(path, str(key)), file)
        elif config.forbid_unknown_fields and key != config.tag_field:
            out.append(ConfigError(file, path, f"unknown field `{key}`; expected one of {', '.join(fields)}"))
    out += [
        ConfigError(file, path, f"missing required field `{name}`")
        for name, f in fields.items()
        if f.required and name not in obj
    ]
    return out


def _join(path: str, key: str) -> str:
    if not key:
        return path
    return f"{path}{key}" if not path or key.startswith("[") else f"{path}.{key}"


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith((r + ".", r + "[")) for r in roots)
