"""The response cache's semantic tier: a request whose last user message means the same as
one answered before (cosine of their embeddings at or above the threshold), everything else
in the request identical, gets that answer.

What must match exactly is a hash (the partition) of the caller's scope, namespace, group
and the canonical request with the last user message taken out, only the last
`max_messages` messages counted. The index maps a partition's vectors to the exact-tier key
the answer is stored under, so a semantic hit reads the same store (and its TTL). A guard
refuses a hit when the two texts differ in negation or hold opposite words ("turn on" vs
"turn off" embed close together and mean the opposite).

numpy (the `semantic` extra) is imported only when the tier is built: exact cosine over a
float32 matrix of at most `max_entries` rows (a few ms at 10k x 1536), oldest rows replaced
first. With the Redis backend the rows are shared: a stored vector goes to its partition's
Redis stream (capped at `max_entries`, expiring with the answers), and every replica reads
the entries it has not seen before it searches that partition."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from aiogw.cache.key import DELIVERY_ONLY, short
from aiogw.errors import InvalidRequest

if TYPE_CHECKING:
    import numpy as np

THRESHOLD_HEADER = "x-aiogw-cache-threshold"
# Requests that may call tools never take a neighbour's answer (the contract: exact tier only).
TOOL_FIELDS = ("tools", "functions", "tool_choice", "function_call")

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NEGATIONS = frozenset({"not", "no", "never", "none", "nothing", "nobody", "neither", "nor", "without", "cannot"})
_ANTONYMS = (
    ("on", "off"), ("enable", "disable"), ("enabled", "disabled"), ("open", "close"), ("opened", "closed"),
    ("increase", "decrease"), ("add", "remove"), ("start", "stop"), ("allow", "deny"), ("true", "false"),
    ("yes", "no"), ("up", "down"), ("in", "out"), ("before", "after"), ("max", "min"), ("maximum", "minimum"),
    ("more", "less"), ("higher", "lower"), ("accept", "reject"), ("include", "exclude"), ("lock", "unlock"),
    ("show", "hide"), ("buy", "sell"), ("left", "right"), ("first", "last"), ("above", "below"),
)  # fmt: skip
_OPPOSITE = dict(_ANTONYMS) | {b: a for a, b in _ANTONYMS}


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _negations(ws: list[str]) -> int:
    return sum(1 for w in ws if w in _NEGATIONS or w.endswith("n't"))


def opposed(a: str, b: str) -> bool:
    """Whether two texts may say opposite things: they differ in how many negations they
    hold, or one holds a word whose opposite only the other holds."""
    wa, wb = words(a), words(b)
    if _negations(wa) != _negations(wb):
        return True
    sa, sb = set(wa), set(wb)
    for w in sa ^ sb:  # a word in one text only
        o = _OPPOSITE.get(w)
        if o is not None and o in (sb if w in sa else sa) and o not in (sa if w in sa else sb):
            return True
    return False


@dataclass(slots=True)
class Query:
    """What the semantic tier needs of one request: its partition, the text to embed, the
    threshold it asked for; `vector` once embedded (stored with the answer on a miss)."""

    partition: str
    text: str
    threshold: float
    vector: Any = None  # np.ndarray (float32, unit length)


def parse_threshold(headers: Mapping[str, str], configured: float) -> float:
    """The configured threshold, or the caller's when it is higher (never lower: a caller
    cannot loosen what the operator decided counts as the same question)."""
    v = headers.get(THRESHOLD_HEADER)
    if v is None:
        return configured
    try:
        t = float(v)
    except ValueError:
        t = -1.0
    if not 0 < t <= 1:
        raise InvalidRequest(
            f"Invalid header '{THRESHOLD_HEADER}': expected a number above 0 and at most 1.",
            code="invalid_header",
            param=THRESHOLD_HEADER,
        )
    return max(t, configured)


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    # Parts: text only (an image or audio makes it not comparable).
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "\n".join(p["text"] for p in content)
    return None


def query_of(
    raw: Mapping[str, msgspec.Raw], group: str, scope: str, namespace: str, max_messages: int, threshold: float
) -> Query | None:
    """The request's semantic query, or None when it has none (tools, no user text)."""
    if any(f in raw for f in TOOL_FIELDS) or "messages" not in raw:
        return None
    messages = orjson.loads(memoryview(raw["messages"]))
    if not isinstance(messages, list):
        return None
    messages = messages[-max_messages:]
    last = next((i for i in range(len(messages) - 1, -1, -1) if _role(messages[i]) == "user"), None)
    if last is None:
        return None
    text = _text(messages[last].get("content"))
    if not text or not text.strip():
        return None
    rest = {k: orjson.loads(memoryview(v)) for k, v in raw.items() if k not in DELIVERY_ONLY and k != "messages"}
    rest["messages"] = [*messages[:last], {**messages[last], "content": None}, *messages[last + 1 :]]
    h = hashlib.sha256(f"{scope}\0{namespace}\0{group}\0".encode())
    h.update(orjson.dumps(rest, option=orjson.OPT_SORT_KEYS))
    return Query(f"{short(scope)}:{short(namespace)}:{short(group)}:{h.hexdigest()}", text, threshold)


_encode_record = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(tuple[str, str, bytes]).decode


def _role(m: Any) -> Any:
    return m.get("role") if isinstance(m, dict) else None


class SemanticIndex:
    """Unit vectors in a float32 matrix of `max_entries` rows, written round the ring (the
    oldest row is replaced first); each row knows its partition, entry key and text."""

    def __init__(self, max_entries: int) -> None:
        import numpy  # noqa: PLC0415 - the `semantic` extra, only once the tier is on

        self._np = numpy
        self.max_entries = max_entries
        self._matrix: np.ndarray | None = None  # allocated at the first vector (its width)
        self._meta: list[tuple[str, str, str] | None] = [None] * max_entries  # (partition, key, text)
        self._rows: dict[str, set[int]] = {}  # partition -> its rows
        self._next = 0

    def __len__(self) -> int:
        return sum(len(r) for r in self._rows.values())

    def unit(self, vector: list[float]) -> np.ndarray | None:
        v = self._np.asarray(vector, dtype=self._np.float32)
        n = float(self._np.linalg.norm(v))
        if v.ndim != 1 or not v.size or not n or not self._np.isfinite(n):
            return None
        return v / n

    def add(self, partition: str, key: str, text: str, v: np.ndarray) -> None:
        np_ = self._np
        if self._matrix is None:
            self._matrix = np_.zeros((self.max_entries, v.shape[0]), dtype=np_.float32)
        elif v.shape[0] != self._matrix.shape[1]:
            return  # another embedding width (the model was changed): not comparable
        row = self._next
        self._next = (row + 1) % self.max_entries
        old = self._meta[row]
        if old is not None:
            rows = self._rows[old[0]]
            rows.discard(row)
            if not rows:
                del self._rows[old[0]]
        self._matrix[row] = v
        self._meta[row] = (partition, key, text)
        self._rows.setdefault(partition, set()).add(row)

    def record(self, key: str, text: str, v: np.ndarray) -> bytes:
        """A row as bytes for another replica's `add_record` (the shared tier)."""
        return _encode_record((key, text, v.astype(self._np.float32).tobytes()))

    def add_record(self, partition: str, data: bytes) -> None:
        try:
            key, text, raw = _decode_record(data)
            v = self._np.frombuffer(raw, dtype=self._np.float32)
        except (msgspec.DecodeError, ValueError):
            return  # not ours (another version wrote it): skip rather than fail the lookup
        if v.ndim == 1 and v.size:
            self.add(partition, key, text, v)

    def nearest(self, q: Query) -> tuple[str, float] | None:
        """(entry key, cosine) of the closest row of the query's partition at or above its
        threshold whose text the guard does not set against the query's; None otherwise."""
        rows = self._rows.get(q.partition)
        if not rows or self._matrix is None or q.vector is None or q.vector.shape[0] != self._matrix.shape[1]:
            return None
        idx = self._np.fromiter(rows, dtype=self._np.intp, count=len(rows))
        sims = self._matrix[idx] @ q.vector
        for i in self._np.argsort(-sims):
            cos = float(sims[i])
            if cos < q.threshold - 1e-6:  # float32: the same text's cosine may be 0.9999999
                return None
            meta = self._meta[int(idx[i])]
            assert meta is not None
            if not opposed(q.text, meta[2]):
                return meta[1], cos
        return None
