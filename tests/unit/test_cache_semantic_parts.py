"""The semantic tier's parts without a server: the negation/antonym guard, the partition
(everything but the last user message), and the bounded index."""

from __future__ import annotations

import orjson
import pytest

from aiogw.cache.semantic import Query, SemanticIndex, opposed, query_of
from aiogw.ingress.chat import parse_chat


def raw(body: dict) -> dict:
    return parse_chat(orjson.dumps(body)).raw


def body(*texts: str, **kw) -> dict:
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]
    return {"model": "fast", "messages": msgs, "temperature": 0, **kw}


@pytest.mark.parametrize(
    "a,b",
    [
        ("turn on the lights", "turn off the lights"),
        ("enable the alarm", "disable the alarm"),
        ("is it true", "is it false"),
        ("open the door", "close the door"),
        ("should I start the job", "should I stop the job"),
        ("the test passed", "the test did not pass"),
        ("I can do it", "I can't do it"),
        ("with sugar", "without sugar"),
        ("answer yes", "answer no"),
    ],
)
def test_the_guard_refuses_opposite_texts(a, b):
    assert opposed(a, b) and opposed(b, a)


@pytest.mark.parametrize(
    "a,b",
    [
        ("please turn on the lights", "turn on the lights please"),
        ("Turn ON the lights!", "turn on the lights"),
        ("do not stop", "don't stop"),
        ("on or off?", "off or on?"),  # both words in both texts
    ],
)
def test_the_guard_lets_rewordings_through(a, b):
    assert not opposed(a, b)


def test_the_partition_is_everything_but_the_last_user_message():
    def part(b: dict, **kw) -> str | None:
        q = query_of(raw(b), "fast", "team:a", kw.get("ns", ""), kw.get("max_messages", 4), 0.95)
        return q.partition if q else None

    base = part(body("hi", "hello", "turn on the lights"))
    assert base == part(body("hi", "hello", "lights on please"))  # the last user message: not in it
    assert base != part(body("hi", "hey", "turn on the lights"))  # any other message: in it
    assert base != part(body("hi", "hello", "turn on the lights", top_p=0.5))  # any other field
    assert base == part(body("hi", "hello", "turn on the lights", stream=True, user="u"))  # delivery only
    assert base != part(body("hi", "hello", "turn on the lights"), ns="other")
    assert part(body("a", "b", "c"), max_messages=1) == part(body("x", "y", "c"), max_messages=1)
    assert part(body("turn on", tools=[{"type": "function", "function": {"name": "f"}}])) is None
    image = [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
    assert part({"model": "fast", "messages": [{"role": "user", "content": image}]}) is None


def test_the_index_keeps_at_most_max_entries_and_replaces_the_oldest():
    index = SemanticIndex(2)
    vec = {name: index.unit(v) for name, v in (("a", [1, 0, 0]), ("b", [0, 1, 0]), ("c", [0, 0, 1]))}
    for name in "abc":
        index.add("p", f"key-{name}", name, vec[name])
    assert len(index) == 2
    assert index.nearest(Query("p", "a", 0.9, vec["a"])) is None  # the oldest left
    assert index.nearest(Query("p", "c", 0.9, vec["c"])) == ("key-c", pytest.approx(1.0))
    assert index.nearest(Query("other", "c", 0.9, vec["c"])) is None  # another partition
    assert index.unit([0, 0, 0]) is None  # no direction: never compared
