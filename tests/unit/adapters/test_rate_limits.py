"""Every adapter that reads rate-limit headers reads a count the same way."""

from __future__ import annotations

import pytest

from aiogw.adapters import anthropic, mistral, openai

REMAINING_REQUESTS = [
    (openai.rate_limits, "x-ratelimit-remaining-requests"),
    (anthropic.rate_limits, "anthropic-ratelimit-requests-remaining"),
    (mistral.rate_limits, "x-ratelimit-remaining-req-minute"),
]


@pytest.mark.parametrize(("rate_limits", "header"), REMAINING_REQUESTS)
@pytest.mark.parametrize(("value", "count"), [("7", 7), ("0", 0), ("", None), ("12.5", None), ("lots", None)])
def test_a_count_that_is_no_whole_number_is_unknown(rate_limits, header, value, count):
    assert rate_limits({header: value}).remaining_requests == count
