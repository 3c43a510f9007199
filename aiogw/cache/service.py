"""The cache stage: which requests it may answer (the policy), the entry a request would
read and fill, the lookup, one upstream call for identical concurrent misses, writes off
the request path, and failing open (a store that errors is a miss, never a failure)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from aiogw.cache import entry as entries
from aiogw.cache.controls import CacheControls, parse_controls
from aiogw.cache.key import entry_key, native_fields, purge_pattern, request_hash, scope_of
from aiogw.cache.semantic import Query, SemanticIndex, parse_threshold, query_of
from aiogw.config import CacheConfig, Config
from aiogw.telemetry.logs import get_logger
from aiogw.types import ParsedChat

if TYPE_CHECKING:
    from aiogw.cache.stores import BoundedMemoryCache, RedisStore

log = get_logger("aiogw.cache")
MAX_MODEL_COUNTS = 256  # model groups counted apart; the rest are counted together
OTHER_MODELS = "(other)"


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    """The cache settings of one model group: the top level with its overrides applied."""

    enabled: bool
    ttl_s: float
    policy: str
    tasks: frozenset[str]
    tool_calls: bool


class Decision(msgspec.Struct):
    """What the cache does with one request. `key` is None when it neither reads nor writes
    (a bypass: `reads` and `writes` False)."""

    status: str  # "lookup" | "bypass"
    reason: str  # why not cached ("" when cacheable)
    controls: CacheControls
    key: str | None = None
    ttl_s: float = 0.0
    tool_calls: bool = False
    semantic: Query | None = None  # the semantic tier's part (None: exact tier only)
    group: str = ""  # the public model group (the per-model hit counts)
    reads: bool = False
    writes: bool = False


@dataclass(slots=True)
class Flight:
    """An upstream call for a key that identical requests wait on rather than repeat."""

    done: asyncio.Future[entries.Entry | None]
    waiters: int = 0


@dataclass(slots=True)
class Counts:
    hits: int = 0
    misses: int = 0
    bypass: dict[str, int] = field(default_factory=dict)
    stored: int = 0
    saved_usd: float = 0.0
    errors: int = 0  # store calls that failed (the request went on as a miss)
    semantic_hits: int = 0
    embed_errors: int = 0  # embedding calls that failed (the request went on as a miss)
    by_model: dict[str, ModelCounts] = field(default_factory=dict)  # by public model group


@dataclass(slots=True)
class ModelCounts:
    hits: int = 0
    misses: int = 0
    saved_usd: float = 0.0


class ResponseCache:
    def __init__(self, config: Config) -> None:
        cfg = self.config = config.cache
        self._prefix = f"{config.state.key_prefix}:cache"
        self._groups = {g.name: _policy(cfg, g.cache) for g in config.models}
        self._default = _policy(cfg, None)
        self.memory: BoundedMemoryCache | None = None
        self.redis: RedisStore | None = None
        # aiocache (and through it the redis client) is imported only once a cache is built.
        from aiogw.cache.stores import BoundedMemoryCache, RedisStore  # noqa: PLC0415

        if cfg.backend == "redis":
            assert config.state.redis_url is not None  # checked with the config
            self.redis = RedisStore(config.state.redis_url, cfg.timeout_ms / 1000)
            self._store: Any = self.redis.cache
        else:
            self.memory = self._store = BoundedMemoryCache(cfg.max_bytes)
        self._flights: dict[str, Flight] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self.healthy = True
        self.counts = Counts()
        self.semantic = SemanticIndex(cfg.semantic.max_entries) if cfg.semantic.enabled else None
        # With Redis: per partition, the id of the last shared vector read into our index.
        self._read_up_to: dict[str, str] = {}

    # --- the policy ---------------------------------------------------------------------

    def prepare(
        self,
        headers: Mapping[str, str],
        parsed: ParsedChat,
        group: str,
        key_id: str | None,
        team: str | None,
        task: str,
        client_api: str = "",
    ) -> Decision | None:
        """None when the group's cache is off (the request goes on untouched). `client_api`:
        the API the client speaks when it is not Chat Completions (e.g. "anthropic.messages"):
        its entries hold that API's bytes, so they live apart, streamed apart from not (an
        entry is replayed as it was sent), and the semantic tier (OpenAI entries) is off."""
        g = self._groups.get(group, self._default)
        if not g.enabled:
            return None
        c = parse_controls(headers)
        if c.mode == "off":
            return self._bypass(c, "off")
        req = parsed.req
        opted = c.mode is not None  # on, read or write: the caller asks for the cache
        deterministic = req.temperature == 0 or isinstance(req.seed, int) or task in g.tasks
        if g.policy == "opt_in" and not opted:
            return self._bypass(c, "not_opted_in")
        if g.policy == "deterministic" and not (deterministic or opted):
            return self._bypass(c, "creative")
        if not (c.reads or c.writes):
            return self._bypass(c, "no_store")
        cap = self.config.max_ttl_s
        ttl = min(c.ttl_s if c.ttl_s is not None else g.ttl_s, cap)
        fields = parsed.raw
        if client_api:
            # Everything the client sent counts (the native body: fields a translation drops
            # still reach a target that speaks the API), in a partition of its own.
            fields = native_fields(parsed.native.body) if parsed.native is not None else fields
            digest = request_hash(f"{group}\0{client_api}\0{'sse' if req.is_stream else 'json'}", fields)
        else:
            digest = request_hash(group, fields)
        scope = scope_of(self.config.scope, key_id, team)
        key = entry_key(self._prefix, scope, c.namespace, group, digest)
        q = None
        if self.semantic is not None and not client_api:
            sc = self.config.semantic
            q = query_of(parsed.raw, group, scope, c.namespace, sc.max_messages, parse_threshold(headers, sc.threshold))
        return Decision("lookup", "", c, key, ttl, g.tool_calls, q, group, c.reads, c.writes)

    def _bypass(self, c: CacheControls, reason: str) -> Decision:
        b = self.counts.bypass
        b[reason] = b.get(reason, 0) + 1
        return Decision("bypass", reason, c)

    def storable(self, d: Decision, finish_reasons: Sequence[str]) -> str:
        """ "" when an answer that ended so may be stored, else why not."""
        if not finish_reasons:
            return "no_finish_reason"
        for r in finish_reasons:
            if r == "tool_calls" and not d.tool_calls:
                return "tool_calls"
            if r not in ("stop", "tool_calls"):
                return f"finish_{r}"
        return ""

    # --- reading ------------------------------------------------------------------------

    async def lookup(self, d: Decision) -> entries.Entry | None:
        if not d.reads:
            return None
        assert d.key is not None
        try:
            raw = self.memory.peek(d.key) if self.memory is not None else await self._store.get(d.key)
        except Exception as exc:  # fail open: any store failure is a miss
            self._failed(exc)
            return None
        self._ok()
        if raw is None:
            return None
        e = entries.load(raw)
        if e is None:
            return None
        if d.controls.max_age_s is not None and time.time() - e.created > d.controls.max_age_s:
            return None
        return e

    async def nearest(self, d: Decision, vector: list[float]) -> entries.Entry | None:
        """The semantic tier's answer for a request the exact tier missed (its query's
        vector is kept for the store on a miss)."""
        q, index = d.semantic, self.semantic
        assert q is not None and index is not None
        q.vector = index.unit(vector)
        if not d.reads:
            return None
        if self.redis is not None:
            await self._pull(q.partition)
        found = index.nearest(q)
        if found is None:
            return None
        return await self.lookup(
            Decision(d.status, d.reason, d.controls, found[0], group=d.group, reads=True, writes=d.writes)
        )

    def hit(self, e: entries.Entry, group: str, semantic: bool = False) -> None:
        c = self.counts
        c.hits += 1
        c.semantic_hits += semantic
        c.saved_usd += e.cost_usd
        m = self._model(group)
        m.hits += 1
        m.saved_usd += e.cost_usd

    def miss(self, group: str) -> None:
        self.counts.misses += 1
        self._model(group).misses += 1

    def _model(self, group: str) -> ModelCounts:
        by = self.counts.by_model
        m = by.get(group)
        if m is None:
            if len(by) >= MAX_MODEL_COUNTS:  # `<provider>/<model>` names are the client's text
                group = OTHER_MODELS
                m = by.get(group)
            if m is None:
                m = by[group] = ModelCounts()
        return m

    # --- single flight ------------------------------------------------------------------

    def join(self, key: str) -> Flight | None:
        """The flight already under way for `key` (wait on it), or None: the caller leads
        one and must `land` it."""
        f = self._flights.get(key)
        if f is not None:
            f.waiters += 1
            return f
        self._flights[key] = Flight(asyncio.get_running_loop().create_future())
        return None

    def land(self, key: str, e: entries.Entry | None) -> None:
        f = self._flights.pop(key, None)
        if f is not None and not f.done.done():
            f.done.set_result(e)

    # --- writing ------------------------------------------------------------------------

    def store(self, d: Decision, e: entries.Entry) -> None:
        """Write once the answer is on its way to the client: in memory, a callback on the
        loop's next turn (an insertion costs less than a task would); in Redis, a task."""
        if not d.writes:
            return
        assert d.key is not None
        loop = asyncio.get_running_loop()
        if self.memory is not None:
            loop.call_soon(self._put, d.key, e, d.ttl_s, d.semantic)
            return
        task = loop.create_task(self._write(d.key, e, d.ttl_s, d.semantic))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _put(self, key: str, e: entries.Entry, ttl_s: float, q: Query | None) -> None:
        assert self.memory is not None
        if self.memory.put(key, entries.dump(e), ttl_s):
            self.counts.stored += 1
            if q is not None and q.vector is not None and self.semantic is not None:
                self.semantic.add(q.partition, key, q.text, q.vector)

    async def _write(self, key: str, e: entries.Entry, ttl_s: float, q: Query | None = None) -> None:
        try:
            await self._store.set(key, entries.dump(e), ttl=ttl_s)
        except Exception as exc:  # fail open
            self._failed(exc)
            return
        self._ok()
        self.counts.stored += 1
        if q is not None and q.vector is not None and self.semantic is not None:
            if self.redis is None:
                self.semantic.add(q.partition, key, q.text, q.vector)
                return
            # Shared: every replica (this one too) reads it from the partition's stream.
            record = self.semantic.record(key, q.text, q.vector)
            try:
                await self.redis.append(self._vectors(q.partition), record, ttl_s, self.semantic.max_entries)
            except Exception as exc:  # fail open: the answer is stored, only its vector is lost
                self._failed(exc)

    def _vectors(self, partition: str) -> str:
        return f"{self._prefix}:{partition}:vec"  # under the partition: a purge takes it too

    async def _pull(self, partition: str) -> None:
        """The vectors other replicas (and this one) stored in the partition since the last
        read; a Redis failure leaves the index as it is (fail open)."""
        assert self.redis is not None and self.semantic is not None
        index, seen = self.semantic, self._read_up_to
        try:
            rows = await self.redis.read_after(self._vectors(partition), seen.get(partition), index.max_entries)
        except Exception as exc:
            self._failed(exc)
            return
        self._ok()
        last = seen.get(partition)
        for rid, data in rows:
            if last is not None and _stream_id(rid) <= _stream_id(last):
                continue  # read by a concurrent pull meanwhile
            index.add_record(partition, data)
            last = rid
        if last is not None:
            seen.pop(partition, None)
            seen[partition] = last  # most recent last: the oldest partitions are forgotten first
            if len(seen) > index.max_entries:
                del seen[next(iter(seen))]

    async def purge(self, namespace: str | None, group: str | None) -> int:
        pattern = purge_pattern(self._prefix, namespace, group)
        if self.memory is not None:
            return self.memory.purge(pattern)
        assert self.redis is not None
        return await self.redis.purge(pattern)

    # --- failing open -------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        self.counts.errors += 1
        if self.healthy:  # one line per transition, not one per request
            self.healthy = False
            log.warning("cache.store_down", backend=self.config.backend, error=repr(exc)[:200])

    def embed_failed(self, exc: BaseException) -> None:
        self.counts.embed_errors += 1
        log.warning("cache.embedding_failed", model=self.config.semantic.embedding_model, error=repr(exc)[:200])

    def _ok(self) -> None:
        if not self.healthy:
            self.healthy = True
            log.info("cache.store_up", backend=self.config.backend)

    async def close(self) -> None:
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=2)
        if self.redis is not None:
            await self.redis.close()


def _stream_id(rid: str) -> tuple[int, int]:
    ms, _, seq = rid.partition("-")
    return int(ms), int(seq or 0)


def _policy(cfg: CacheConfig, o: Any) -> GroupPolicy:
    def pick(name: str, default: Any) -> Any:
        v = getattr(o, name, None) if o is not None else None
        return default if v is None else v

    return GroupPolicy(
        enabled=pick("enabled", cfg.enabled),
        ttl_s=min(pick("ttl_s", cfg.ttl_s), cfg.max_ttl_s),
        policy=pick("policy", cfg.policy),
        tasks=frozenset(pick("deterministic_tasks", cfg.deterministic_tasks)),
        tool_calls=pick("cache_tool_calls", cfg.cache_tool_calls),
    )
