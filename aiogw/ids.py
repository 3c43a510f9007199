"""Identifiers for requests, completions and tool calls: unique and cheap.

They name things in logs and responses and are not secrets, so a PRNG seeded from the OS
(re-seeded in forked children) serves; `secrets` would cost a getrandom syscall per id.
"""

from __future__ import annotations

import itertools
import os
import random

_rng = random.Random(os.urandom(16))
_process = f"{_rng.getrandbits(32):08x}"  # this process's tag in time-ordered ids
_counter = itertools.count()


def _forked() -> None:
    global _process
    _rng.seed(os.urandom(16))
    _process = f"{_rng.getrandbits(32):08x}"


os.register_at_fork(after_in_child=_forked)

_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def hex_id(nbytes: int) -> str:
    return f"{_rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"


def time_ordered_id(prefix: str, now: float) -> str:
    """`prefix`, the microseconds (hex), this process's random tag and a counter: ids sort by
    time, so a row inserted with one lands at the end of its index (half the cost per row
    in SQLite), and processes of a fleet writing one table never collide."""
    return "%s%014x%s%06x" % (prefix, int(now * 1_000_000), _process, next(_counter) & 0xFFFFFF)  # noqa: UP031 - the faster form on a hot path


def alnum_id(length: int) -> str:
    """[0-9a-zA-Z]{length}: valid as a tool-call id for every provider's rules."""
    return "".join(_rng.choices(_ALNUM, k=length))
