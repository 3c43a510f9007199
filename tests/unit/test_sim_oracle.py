"""The simulator's oracle and judge (bench/sim_core.py) and the routing workload generator
(bench/routing_data.py): known accuracy per task and level, answers fixed per (model, item)."""

from __future__ import annotations

import orjson
import pytest

from aiogw.bench import routing_data
from aiogw.bench.sim_core import Answer, Profile, oracle_text, wrong_answer

QUALITY = {"math": {"easy": 0.9, "hard": 0.3}, "*": {"easy": 1.0, "hard": 0.0}}


def _ask(text: str, profile: Profile, model: str = "sim-small", **extra) -> Answer:
    return Answer({"model": model, "messages": [{"role": "user", "content": text}], **extra}, profile)


def test_an_item_is_answered_right_at_the_profiles_accuracy_and_the_same_every_time():
    p = Profile(quality=QUALITY)
    rows = list(routing_data.items(2000, seed=3, tasks=("math",), hard_share=0.5))
    right = {"easy": 0, "hard": 0}
    count = {"easy": 0, "hard": 0}
    for row in rows:
        text = row["messages"][0]["content"]
        got = _ask(text, p).text(0)
        assert got == _ask(text, p).text(0)  # deterministic by (model, item)
        right[row["level"]] += got == str(row["expected"])
        count[row["level"]] += 1
    assert abs(right["easy"] / count["easy"] - 0.9) < 0.04
    assert abs(right["hard"] / count["hard"] - 0.3) < 0.05


def test_the_catch_all_task_and_accuracy_one_and_zero():
    p = Profile(quality=QUALITY)
    for row in routing_data.items(50, seed=1, tasks=("code",), hard_share=0.5):
        got = _ask(row["messages"][0]["content"], p).text(0)
        assert (got == row["expected"]) == (row["level"] == "easy")


@pytest.mark.parametrize("answer", ["42", "0", "-3.5", "A", "c", "itertools.groupby", '{"a":[[1]]}', "The council."])
def test_a_wrong_answer_is_never_the_answer_nor_contains_it(answer):
    for item in ("x1", "x2", "x3", "x4"):
        wrong = wrong_answer(answer, item)
        assert wrong != answer and answer.lower() not in wrong.lower()
        try:
            assert abs(float(wrong) - float(answer)) > 0.5 * (abs(float(answer)) + 1)
        except ValueError:
            pass


def test_no_marker_or_no_quality_is_the_usual_answer():
    marked = routing_data.marker("i1", "math", "easy", "7")
    assert oracle_text(Profile(), "m", [{"role": "user", "content": marked}]) is None
    assert oracle_text(Profile(quality=QUALITY), "m", [{"role": "user", "content": "hello"}]) is None
    # The marker counts only in the last user message.
    msgs = [{"role": "user", "content": marked}, {"role": "assistant", "content": "7"}, {"role": "user", "content": "thanks"}]  # fmt: skip
    assert oracle_text(Profile(quality={"*": {"easy": 1.0}}), "m", msgs) is None


def test_the_oracle_answer_is_verbatim_even_in_json_mode_and_streamed_pieces_join_to_it():
    answer = '{"name":"Hana","age":60,"city":"Oslo"}'
    text = "Extract.\n" + routing_data.marker("e1", "extract", "easy", answer)
    a = _ask(text, Profile(quality={"*": {"easy": 1.0}}), response_format={"type": "json_object"})
    assert a.text(0) == answer
    assert "".join(a.pieces(0, 2)) == answer


@pytest.mark.parametrize("candidate,verdict", [("The council approved a bike lane.", "pass"), ("lorem ipsum", "fail")])
def test_the_judge_grades_a_candidate_against_the_expected_answer_or_the_marker(candidate, verdict):
    judge = Profile(judge=True)
    expected = "The council approved a bike lane."
    by_expected = f"Grade.\n<candidate>{candidate}</candidate>\n<expected>{expected}</expected>"
    by_marker = (
        f"Grade.\n<candidate>{candidate}</candidate>\nQ: {routing_data.marker('s1', 'summarize', 'easy', expected)}"
    )
    for prompt in (by_expected, by_marker):
        got = orjson.loads(_ask(prompt, judge, response_format={"type": "json_object"}).text(0))
        assert got["verdict"] == verdict and got["score"] == (1.0 if verdict == "pass" else 0.0) and got["reason"]


def test_the_generator_is_deterministic_has_every_task_about_a_tenth_hard_and_splits():
    a = list(routing_data.items(1000, seed=5))
    assert a == list(routing_data.items(1000, seed=5))
    assert a != list(routing_data.items(1000, seed=6))
    assert {r["task"] for r in a} == set(routing_data.TASKS)
    hard = sum(r["level"] == "hard" for r in a) / len(a)
    assert 0.07 < hard < 0.13
    for r in a:
        shown = r["expected"] if isinstance(r["expected"], str) else orjson.dumps(r["expected"]).decode()
        assert r["messages"][-1]["content"].endswith(routing_data.marker(r["id"], r["task"], r["level"], shown))
    dev, test = routing_data.split(a, 0.3, seed=5)
    assert len(dev) + len(test) == 1000 and 200 < len(dev) < 400
    assert not {r["id"] for r in dev} & {r["id"] for r in test}


def test_the_generator_cli_writes_the_split(tmp_path):
    assert routing_data.main(["--n", "40", "--seed", "2", "--split", "0.5", "--out", str(tmp_path)]) == 0
    dev = (tmp_path / "dev.jsonl").read_bytes().splitlines()
    test = (tmp_path / "test.jsonl").read_bytes().splitlines()
    assert len(dev) + len(test) == 40 and all(orjson.loads(line)["id"] for line in dev + test)
