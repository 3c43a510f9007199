"""Names that clients choose: the rule a model name must pass (checked once at the edge, and
for configured names at load), and the caps on state keyed by such names.

Any `<provider>/<anything>` addresses a target, and `x-aiogw-tags` any set of tags, so state
kept per target or per tag set is bounded here: configured targets keep theirs for good;
the others (names only a client made up) keep theirs for the most recently used
`MAX_DIRECT_TARGETS`, and forgotten state simply starts fresh when its name comes back.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Container, ItemsView, Iterator
from typing import Generic, TypeVar

# Enough for every provider's ids (`ft:gpt-4o-mini:org:custom:id`, `models/gemini-2.5-flash`,
# `meta-llama/Llama-3.1-8B-Instruct`, `anthropic.claude-3-5-sonnet-20240620-v1:0`,
# `claude-3-5-sonnet@20240620`, vLLM's `/models/llama`), and nothing that can change the
# meaning of a URL, a header, a log line or a comma-separated list.
MODEL_NAME_MAX = 256
MODEL_NAME_CHARS = "letters, digits and - . _ : / @ +"
_OUTSIDE = re.compile(r"[^A-Za-z0-9._:/@+-]")  # the first character outside the rule

# Directly addressed targets that are not configured: state kept for this many, most
# recently used first (health windows, limits, memos). A few MB at most.
MAX_DIRECT_TARGETS = 1000
# Label sets per metric and rows of the spend ledger; past this, new ones count as `other`.
MAX_SERIES = 2000
MAX_SPEND_ROWS = 2000
OTHER = "other"


def model_name_problem(name: str) -> str | None:
    """Why `name` cannot be a model name (a phrase to follow "the model name ..."), or None."""
    if not name:
        return "is empty"
    if len(name) > MODEL_NAME_MAX:
        return f"is {len(name)} characters long (at most {MODEL_NAME_MAX})"
    outside = _OUTSIDE.search(name)
    if outside is None:
        if "." in name and any(seg in (".", "..") for seg in name.split("/")):
            return "has a '.' or '..' path segment"
        return None
    bad = outside.group()
    if bad < " " or bad == "\x7f":
        return f"contains the control character U+{ord(bad):04X}"
    return f"contains {bad!r}; model names are {MODEL_NAME_CHARS}"


K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """A dict of at most `cap` entries that forgets the least recently used."""

    __slots__ = ("_d", "cap")

    def __init__(self, cap: int) -> None:
        self._d: OrderedDict[K, V] = OrderedDict()
        self.cap = cap

    def get(self, key: K) -> V | None:
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key: K, value: V) -> V:
        d = self._d
        d[key] = value
        d.move_to_end(key)
        if len(d) > self.cap:
            d.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._d)

    def __iter__(self) -> Iterator[K]:
        return iter(self._d)

    def items(self) -> ItemsView[K, V]:
        return self._d.items()


class PerTarget(Generic[V]):
    """State per target id: configured targets' kept for good, the others' for the
    `MAX_DIRECT_TARGETS` most recently used. `configured=None` keeps everything (a store
    built by hand, without a runtime to say what is configured)."""

    __slots__ = ("_configured", "_kept", "_recent")

    def __init__(self, configured: Container[str] | None, cap: int = MAX_DIRECT_TARGETS) -> None:
        self._configured = configured
        self._kept: dict[str, V] = {}
        self._recent: Recent[str, V] = Recent(cap)

    def is_configured(self, target_id: str) -> bool:
        return self._configured is None or target_id in self._configured

    def get(self, target_id: str) -> V | None:
        v = self._kept.get(target_id)
        return v if v is not None else self._recent.get(target_id)

    def put(self, target_id: str, value: V) -> V:
        if self.is_configured(target_id):
            self._kept[target_id] = value
            return value
        return self._recent.put(target_id, value)

    def configured(self) -> dict[str, V]:
        """The configured targets' state: the live dict (a caller's hot path reads it first)."""
        return self._kept

    def all(self) -> dict[str, V]:
        if not self._recent:
            return self._kept
        out = dict(self._kept)
        out.update(self._recent.items())
        return out

    def __len__(self) -> int:
        return len(self._kept) + len(self._recent)
