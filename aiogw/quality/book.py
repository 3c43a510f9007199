"""The quality learner: per (group, task, bucket, target, metric) a Beta posterior over the
target's quality, fed by priors (`quality.json`), feedback and spot checks, read by the
`quality` strategy on every request of a quality group.

The estimate, simply:
- a task-level cell per (metric, task, target) holds the prior's pseudo-counts (a prior
  counts as `n` observations, capped at `prior_weight`, so feedback can overturn it) and
  every observation of that task; its posterior is Beta(a + 1/2, b + 1/2) (Jeffreys at the
  root, so a target nobody knows anything about reads 0.5 with almost no confidence);
- a bucket cell per (metric, task, bucket, target) holds only that bucket's observations.
  The bucket's posterior is its own evidence plus the rest of the task's, the latter
  weighted by BACKOFF / (BACKOFF + bucket's n): with no bucket evidence it is the task's
  estimate, and as its own evidence grows it moves to it (hierarchical shrinkage);
- decay: each observation first multiplies a cell's evidence (prior included) by
  0.5 ** (1 / half_life), so evidence loses half its weight after `half_life` newer
  observations and a target that got worse is noticed.

Intervals and the floor test use the normal approximation of the Beta (mean, variance
mean(1 - mean)/(n + 1)): a few float operations instead of an incomplete-beta inverse, and
close enough where it decides (n of ten or more).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from statistics import NormalDist

from aiogw.adapters._base import Target
from aiogw.config import QualityConfig
from aiogw.quality.prior import QualityFile, TaskPrior, target_keys

SOURCES = ("feedback", "spot_check", "prior")
BACKOFF = 10.0  # bucket evidence weighs as much as the rest of its task at this many observations
ROOT = 0.5  # Jeffreys: Beta(1/2, 1/2) under every estimate
Z95 = NormalDist().inv_cdf(0.975)
MAX_TASKS = 256  # per group and metric; more distinct tasks share "other" (x-aiogw-task is client-chosen)
MAX_BUCKETS = 64  # per task; a bucket beyond (not one features.py makes) updates its task only
MAX_TASK_LABELS = 32  # per group, as a metrics label; beyond: "other"
RECENT_PICKS = 500  # per (group, task): the window traffic shares are counted over
OTHER = "other"
UNPRICED = 1e6  # USD per token: ranks an unpriced target after every priced one (inf * 0 would be nan)


@dataclass(slots=True)
class Cell:
    """Decayed evidence: `pa`/`pb` from the prior, `a`/`b` from observations (successes and
    failures; a score of 0.7 is 0.7 of each's complement)."""

    pa: float = 0.0
    pb: float = 0.0
    a: float = 0.0
    b: float = 0.0
    observed: int = 0  # observations ever (undecayed), for the admin view

    def add(self, value: float, decay: float) -> None:
        self.pa *= decay
        self.pb *= decay
        self.a = self.a * decay + value
        self.b = self.b * decay + (1.0 - value)
        self.observed += 1


@dataclass(frozen=True, slots=True)
class Estimate:
    mean: float
    n: float  # evidence behind it (decayed observations and prior), without the root
    lower: float  # the floor test: P(quality >= lower) = the group's confidence
    sd: float

    def interval(self) -> tuple[float, float]:
        return max(0.0, self.mean - Z95 * self.sd), min(1.0, self.mean + Z95 * self.sd)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def beta_estimate(alpha: float, beta: float, z: float, evidence: float) -> Estimate:
    n = alpha + beta
    mean = alpha / n
    sd = math.sqrt(mean * (1.0 - mean) / (n + 1.0))
    return Estimate(mean, evidence, mean - z * sd, sd)


@dataclass(slots=True)
class View:
    """The estimates of one (task, bucket) as the strategy reads them: per target in group
    order, the targets by estimate (best first), and the reason strings made so far (each
    depends only on these estimates, so it is formatted once per version, not per request)."""

    version: int
    ests: list[Estimate]
    by_mean: list[int]
    reasons: dict[tuple[object, ...], str] = field(default_factory=dict)


@dataclass(slots=True)
class TaskBook:
    """One (metric, task) of a group: its cells and the views made from them, per bucket,
    remade only after an observation (`version`)."""

    cells: dict[str, Cell]  # target id -> task-level cell
    buckets: dict[tuple[str, str], Cell] = field(default_factory=dict)  # (bucket, target id)
    version: int = 0
    made: dict[str, View] = field(default_factory=dict)


@dataclass(slots=True)
class PriorInfo:
    """What a loaded prior said of one (task, target), for the admin view."""

    n: float
    mean: float
    cost_per_item_usd: float | None
    latency_p95_ms: float | None
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # bucket -> (n, mean)


class GroupBook:
    """A quality group's estimates, priors and recent picks."""

    def __init__(self, name: str, cfg: QualityConfig, targets: tuple[Target, ...]) -> None:
        self.name = name
        self.cfg = cfg
        self.targets = targets
        self.ids = tuple(t.id for t in targets)
        # USD per token (input, output) per target; an unpriced target costs "more than any".
        self.prices = tuple(
            (t.price.input / 1e6, t.price.output / 1e6) if t.price is not None else (UNPRICED, UNPRICED)
            for t in targets
        )
        self.decay = 0.5 ** (1.0 / cfg.half_life)
        self.z = NormalDist().inv_cdf(cfg.confidence)
        self.metrics = cfg.known_metrics
        self.tasks: dict[tuple[str, str], TaskBook] = {}
        # (metric, task or "*", target id) -> the prior's pseudo-counts and what it said
        self.priors: dict[tuple[str, str, str], PriorInfo] = {}
        self.prior_source = ""  # where the loaded prior came from (a path, "admin")
        self.recent: dict[str, deque[str]] = {}  # task -> the last picks' target ids
        self.shares: dict[tuple[str, str], int] = {}  # (task, target id) -> picks among `recent`
        self.picks_total: dict[tuple[str, str], int] = {}  # (task label, target id) -> picks since start
        self.labels: set[str] = set()  # the task labels of picks_total (bounded: a metrics label)

    # --- the estimates ------------------------------------------------------------------

    def task_book(self, metric: str, task: str) -> TaskBook:
        tb = self.tasks.get((metric, task))
        if tb is None:
            if sum(1 for m, _ in self.tasks if m == metric) >= MAX_TASKS:
                task = OTHER
                tb = self.tasks.get((metric, task))
                if tb is not None:
                    return tb
            tb = self.tasks[(metric, task)] = TaskBook({tid: self._prior_cell(metric, task, tid) for tid in self.ids})
            self._seed_buckets(metric, task, tb)
        return tb

    def _seed_buckets(self, metric: str, task: str, tb: TaskBook) -> None:
        """The prior's per-bucket pseudo-counts into the task's bucket cells (others' to 0)."""
        for old in tb.buckets.values():
            old.pa = old.pb = 0.0
        for tid in self.ids:
            p = self.priors.get((metric, task, tid)) or self.priors.get((metric, "*", tid))
            for bucket, (n, mean) in (p.buckets if p is not None else {}).items():
                cell = tb.buckets.get((bucket, tid))
                if cell is None:
                    if len({b for b, _ in tb.buckets}) >= MAX_BUCKETS:
                        continue
                    cell = tb.buckets[(bucket, tid)] = Cell()
                cell.pa, cell.pb = mean * n, (1.0 - mean) * n

    def _prior_cell(self, metric: str, task: str, tid: str) -> Cell:
        p = self.priors.get((metric, task, tid)) or self.priors.get((metric, "*", tid))
        if p is None:
            return Cell()
        return Cell(pa=p.mean * p.n, pb=(1.0 - p.mean) * p.n)

    def view(self, task: str, bucket: str) -> View:
        """The routing metric's estimates for (task, bucket)."""
        tb = self.task_book(self.cfg.metric, task)
        v = tb.made.get(bucket)
        if v is not None and v.version == tb.version:
            return v
        ests = self._estimates(tb, bucket)
        v = View(tb.version, ests, sorted(range(len(ests)), key=lambda i: -ests[i].mean))
        if bucket in tb.made or len(tb.made) < MAX_BUCKETS:
            tb.made[bucket] = v
        return v

    def estimates(self, task: str, bucket: str) -> list[Estimate]:
        """The routing metric's estimates for (task, bucket), one per target in group order."""
        return self.view(task, bucket).ests

    def _estimates(self, tb: TaskBook, bucket: str) -> list[Estimate]:
        """Per target: the bucket's own evidence plus the rest of its task as the bucket's
        prior. That prior counts as at most `prior_weight` observations (as a loaded prior
        does), shrunk by BACKOFF / (BACKOFF + the bucket's n) as the bucket learns: uncapped,
        a task with hundreds of graded easy answers would outweigh any record of its hard
        tenth for ever. And its mean is moved by the bucket's difficulty, learnt on every
        target: how far, in log-odds, the other targets' record in this bucket lies from
        their record in the rest of the task (shrunk to 0 over BACKOFF observations). So once
        the cheap target has failed a task's hard tenth a few times, the next cheapest is not
        trusted there at its task-wide record either: each target's rank stays, the level drops."""
        z, cap = self.z, self.cfg.prior_weight
        rows = []  # per target: own (a, b) in the bucket, the rest of its task (ra, rb)
        for tid in self.ids:
            t = tb.cells[tid]
            ta, tb_ = t.pa + t.a, t.pb + t.b
            cell = tb.buckets.get((bucket, tid)) if bucket else None
            if cell is None:
                rows.append((0.0, 0.0, ta, tb_))
            else:  # own: the bucket's prior and observations; the rest: the task's less those observations
                rows.append((cell.pa + cell.a, cell.pb + cell.b, max(ta - cell.a, 0.0), max(tb_ - cell.b, 0.0)))
        if not bucket:
            return [beta_estimate(ra + ROOT, rb + ROOT, z, ra + rb) for _, _, ra, rb in rows]
        resid = []  # (n, n * log-odds residual) of each target with evidence both in and out of the bucket
        for a, b, ra, rb in rows:
            n, s = a + b, ra + rb
            if n > 0.0 and s > 0.0:
                w = cap / s if s > cap else 1.0  # the rest as the bucket sees it: a long perfect record is not logit 7
                resid.append((n, n * (_logit((a + ROOT) / (n + 1.0)) - _logit((ra * w + ROOT) / (s * w + 1.0)))))
            else:
                resid.append((0.0, 0.0))
        sum_n = sum(n for n, _ in resid)
        sum_r = sum(r for _, r in resid)
        out = []
        for (a, b, ra, rb), (n_i, r_i) in zip(rows, resid, strict=True):
            n, s = a + b, ra + rb
            if s > 0.0:
                # This target's own residual is left out: its own evidence counts once.
                shift = (sum_r - r_i) / (BACKOFF + sum_n - n_i)
                if shift:
                    # Smoothed before log-odds: two failures elsewhere in the task are not logit -7.
                    mean = 1.0 / (1.0 + math.exp(-(_logit((ra + ROOT) / (s + 1.0)) + shift)))
                    ra, rb = s * mean, s * (1.0 - mean)
                weight = BACKOFF / (BACKOFF + n) * (cap / s if s > cap else 1.0)
                ra, rb = ra * weight, rb * weight
            out.append(beta_estimate(a + ra + ROOT, b + rb + ROOT, z, n + ra + rb))
        return out

    def observe(self, task: str, bucket: str, tid: str, metric: str, value: float) -> None:
        if tid not in self.ids:
            return  # a fallback outside the group answered: not this group's to learn
        tb = self.task_book(metric, task)
        tb.cells[tid].add(value, self.decay)
        if bucket:
            cell = tb.buckets.get((bucket, tid))
            if cell is None and len({b for b, _ in tb.buckets}) < MAX_BUCKETS:
                cell = tb.buckets[(bucket, tid)] = Cell()
            if cell is not None:
                cell.add(value, self.decay)
        tb.version += 1

    # --- priors and reset ---------------------------------------------------------------

    def load_prior(self, q: QualityFile, source: str, public: Mapping[str, Target]) -> list[str]:
        """Replace the prior with `q`'s; the model keys it matched (ValueError if none).
        A key names a target by its id, `<type>/<model>`, its upstream model, or a public
        model name whose only target it is (`public`)."""
        if q.metric not in self.metrics:
            raise ValueError(
                f"the file's metric {q.metric!r} is not one of model '{self.name}''s metrics ({', '.join(self.metrics)})"
            )
        priors: dict[tuple[str, str, str], PriorInfo] = {}
        matched = []
        for key, tasks in q.models.items():
            tids = self._targets_of(key, public)
            if not tids:
                continue
            matched.append(key)
            for task, p in tasks.items():
                for tid in tids:
                    priors[(q.metric, task, tid)] = _prior_info(p, self.cfg.prior_weight)
        if not matched:
            raise ValueError(
                f"no model in the file names a target of model '{self.name}' (its targets: {', '.join(self.ids)}; "
                f"the file's models: {', '.join(sorted(q.models)) or 'none'})"
            )
        self.priors, self.prior_source = priors, source
        for (metric, task), tb in self.tasks.items():
            for tid, cell in tb.cells.items():
                fresh = self._prior_cell(metric, task, tid)
                cell.pa, cell.pb = fresh.pa, fresh.pb
            self._seed_buckets(metric, task, tb)
            tb.version += 1
        return matched

    def _targets_of(self, key: str, public: Mapping[str, Target]) -> list[str]:
        out = [t.id for t in self.targets if key in target_keys(t.id, t.type, t.model)]
        if not out and (t := public.get(key)) is not None and t.id in self.ids:
            out.append(t.id)
        return out

    def reset(self) -> None:
        """Forget every observation and pick; the loaded prior stays."""
        self.tasks.clear()
        self.recent.clear()
        self.shares.clear()

    # --- traffic ------------------------------------------------------------------------

    def record_pick(self, task: str, tid: str) -> None:
        q = self.recent.get(task)
        if q is None:
            if len(self.recent) >= MAX_TASKS:
                task = OTHER
                q = self.recent.get(task)
            if q is None:
                q = self.recent[task] = deque()
        shares = self.shares
        if len(q) >= RECENT_PICKS:
            shares[(task, q.popleft())] -= 1
        q.append(tid)
        key = (task, tid)
        shares[key] = shares.get(key, 0) + 1
        if task not in self.labels:
            if len(self.labels) >= MAX_TASK_LABELS:
                task = OTHER
                key = (task, tid)
            self.labels.add(task)
        totals = self.picks_total
        totals[key] = totals.get(key, 0) + 1


def _prior_info(p: TaskPrior, cap: float) -> PriorInfo:
    buckets = {b: (min(bp.n, cap), bp.mean) for b, bp in (p.buckets or {}).items() if bp.n > 0}
    return PriorInfo(min(p.n, cap), p.mean, p.cost_per_item_usd, p.latency_p95_ms, buckets)


class QualityBook:
    """Every quality group's `GroupBook`, by group name: what `request.app[QUALITY]` holds."""

    def __init__(self, groups: Iterable[tuple[str, QualityConfig, tuple[Target, ...]]]) -> None:
        self.groups: dict[str, GroupBook] = {name: GroupBook(name, cfg, targets) for name, cfg, targets in groups}

    def group(self, name: str) -> GroupBook | None:
        return self.groups.get(name)

    def record_pick(self, group: str, task: str, target_id: str) -> None:
        g = self.groups.get(group)
        if g is not None:
            g.record_pick(task, target_id)

    def observe(
        self,
        group: str,
        task: str,
        bucket: str,
        target_id: str,
        metric: str,
        value: float,
        *,
        source: str = "feedback",
    ) -> None:
        """One graded answer: `value` in [0, 1] (True/False -> 1.0/0.0). ValueError for a
        value out of range, an unknown source or a metric the group does not declare; a group
        that is not (or no longer) a quality group, or a target outside it, is ignored."""
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
        v = float(value)
        if not 0.0 <= v <= 1.0:  # also false for NaN
            raise ValueError(f"a quality value must be between 0 and 1, got {value!r}")
        g = self.groups.get(group)
        if g is None:
            return
        if metric not in g.metrics:
            raise ValueError(f"unknown metric {metric!r} for model '{group}' (known: {', '.join(g.metrics)})")
        g.observe(task, bucket, target_id, metric, v)
