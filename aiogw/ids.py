"""Identifiers for requests, completions and tool calls: unique and cheap.

They name things in logs and responses and are not secrets, so a PRNG seeded from the OS
(re-seeded in forked children) serves; `secrets` would cost a getrandom syscall per id.
"""

from __future__ import annotations

import os
import random

_rng = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(16)))

_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def hex_id(nbytes: int) -> str:
    return f"{_rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"


def alnum_id(length: int) -> str:
    """[0-9a-zA-Z]{length}: valid as a tool-call id for every provider's rules."""
    return "".join(_rng.choices(_ALNUM, k=length))
