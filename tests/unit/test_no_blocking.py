"""The suite runs with blockbuster active (tests/conftest.py): a blocking call made by
aiogw's code on a running event loop fails the test that made it."""

from __future__ import annotations

import pytest
from blockbuster import BlockingError

from aiogw.accounting import cost


async def test_a_blocking_read_by_aiogw_on_the_loop_fails_the_test():
    with pytest.raises(BlockingError):
        cost._load()  # reads the price table from disk: done at import, never on the loop


def test_the_same_read_off_the_loop_is_fine():
    assert cost._load()
