"""A labelled routing workload: items of several task types, easy and hard, whose answers are
known, written as `aiogw eval` dataset lines.

Every prompt ends with the simulator oracle's item marker (sim_core.ITEM_MARKER), so a
simulated account with a `quality` profile answers each item right or wrong by (model, item),
deterministically: the ground truth of an evaluation or a routing run is known. The prompts
read like real ones (a review to classify, a sum to work out) so that prompt features (length,
code, language) differ between tasks and levels as they would: every prompt starts with its
task's standing instructions (as an application sends them, a few hundred characters), and a
hard item quotes its material in a fenced block (a review thread, a CRM export, a stock table,
a code snippet, a whole article), which is what the quality strategy's `+code` bucket sees
(aiogw/quality/features.py), so the hard tenth of a task is told apart by a cheap feature.

    python -m aiogw.bench.routing_data --n 500 --seed 7 --split 0.5 --out data/

writes data/dev.jsonl and data/test.jsonl (or one file with --split 0).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

TASKS = ("classify", "extract", "math", "code", "summarize")
HARD_SHARE = 0.1  # the tenth of requests that genuinely need a frontier model

_REVIEWS = {
    "A": ["Loved it, works perfectly", "Great value and fast delivery", "Exactly what I wanted"],
    "B": ["Broke after two days", "Terrible support, never again", "Arrived damaged and late"],
    "C": ["It is a phone case", "Delivered on Tuesday", "Comes in three colours"],
}
_HARD_REVIEWS = {  # sarcasm, mixed signals: what small models get wrong
    "A": ["I expected to hate it and, annoyingly, I cannot stop using it"],
    "B": ["Oh great, another charger that charges nothing. Five stars for the packaging"],
    "C": ["Some parts are brilliant and some are awful; on balance it is simply a lamp"],
}
_NAMES = ["Alice", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun"]
_CITIES = ["Lisbon", "Osaka", "Lagos", "Quito", "Tallinn", "Perth", "Nairobi", "Oslo"]
_FUNCS = [
    ("returns the length of a list", "len"),
    ("sorts a list into a new list", "sorted"),
    ("adds up the numbers of a list", "sum"),
    ("turns a string into an integer", "int"),
    ("pairs the items of two lists", "zip"),
]
_HARD_FUNCS = [
    ("caches a function's results by its arguments (functools)", "functools.lru_cache"),
    ("merges several sorted iterables into one sorted iterator (heapq)", "heapq.merge"),
    ("groups consecutive equal items of an iterable (itertools)", "itertools.groupby"),
]
_TOPICS = [
    ("the city council", "approved a new bike lane on the main road", "The council approved a bike lane."),
    ("the bakery", "will close for two weeks in August for repairs", "The bakery closes for repairs in August."),
    ("the school", "won the regional chess final on Saturday", "The school won the chess final."),
    ("the library", "extended its opening hours to 10 pm", "The library now opens until 10 pm."),
]


# Each task's standing instructions, sent before every item (prose: no line looks like code).
PREAMBLE = {
    "classify": (
        "You label customer reviews for the support team's weekly report. Read the review, decide whether "
        "the customer is happy, unhappy or simply stating facts, and answer with one letter. Reviews may be "
        "short or rambling, polite or rude; judge the customer's overall feeling about the product, not the "
        "delivery or the packaging alone. Do not explain your answer."
    ),
    "extract": (
        "You fill the CRM from free text written by the sales team. Find the person the note is about and "
        "give their name as written, their age in years as a number and the city they live in now. Answer "
        "with a single JSON object and nothing else: no comments, no code fence, no extra keys."
    ),
    "math": (
        "You check the numbers in warehouse reports before they are sent to accounting. Work the question "
        "out carefully and answer with the final number only, as digits, without units, commas or words. "
        "If the question mentions broken or missing items, they are not counted."
    ),
    "code": (
        "You answer questions from the developer help channel about the Python standard library. Name the "
        "one function that does what is asked, spelled as it would be called, with its module when it is "
        "not a builtin. Answer with the name only, without parentheses or explanation."
    ),
    "summarize": (
        "You write the one-line summaries shown on the local news front page. Keep the main fact and who "
        "did it, leave out quotes, dates of meetings and reactions. One sentence, plain words, under "
        "twenty words, ending with a full stop."
    ),
}


def fenced(material: str) -> str:
    """A hard item's material, quoted as a client pastes it (the `+code` feature sees the fence)."""
    return f"\n```\n{material}\n```"


def marker(item_id: str, task: str, level: str, answer: str) -> str:
    """The simulator oracle's marker (bench/sim_core.py ITEM_MARKER); it ends the prompt."""
    return f"[[item id={item_id} task={task} level={level} answer={answer}]]"


def _classify(rnd: random.Random, hard: bool) -> tuple[str, Any, Any]:
    label = rnd.choice("ABC")
    text = rnd.choice((_HARD_REVIEWS if hard else _REVIEWS)[label])
    prompt = f'Classify the sentiment of this review.\nReview: "{text}"\n'
    if hard:  # the thread it came from: replies that pull the other way
        prompt += "The thread it was posted in:" + fenced(
            f"> {text}\n>> reply: {rnd.choice(_REVIEWS['A'])}?\n>>> reply: {rnd.choice(_REVIEWS['B'])}, really?"
        )
    prompt += "\nOptions: A) positive B) negative C) neutral\nAnswer with the letter only."
    return prompt, label, {"type": "choice", "choices": ["A", "B", "C"]}


def _extract(rnd: random.Random, hard: bool) -> tuple[str, Any, Any]:
    name, city, age = rnd.choice(_NAMES), rnd.choice(_CITIES), rnd.randint(19, 80)
    if hard:  # two people and a distractor age: the question names whom it is about
        other = rnd.choice([n for n in _NAMES if n != name])
        text = f"the export below. Extract {name}." + fenced(
            f"id,note\n7,{other} (30) moved to {rnd.choice(_CITIES)} last year\n"
            f"8,{name}, her neighbour, turned {age} in spring and still lives in {city}"
        )
    else:
        text = f"{name} is {age} years old and lives in {city}."
    prompt = f'Extract the person\'s name, age and city as JSON with keys "name", "age", "city".\nText: {text}'
    return prompt, {"name": name, "age": age, "city": city}, "json_match"


def _math(rnd: random.Random, hard: bool) -> tuple[str, Any, Any]:
    if hard:
        a, b, c, d = (rnd.randint(12, 99) for _ in range(4))
        prompt = "How many whole items arrived, by this delivery note?" + fenced(
            f"crate size: {a} boxes\nbox size: {b} items\ncrates arrived: {c}\nitems broken: {d}"
        )
        answer = a * b * c - d
    else:
        a, b = rnd.randint(2, 50), rnd.randint(2, 50)
        prompt = f"What is {a} + {b}?"
        answer = a + b
    return prompt + "\nAnswer with the number only.", answer, "numeric"


def _code(rnd: random.Random, hard: bool) -> tuple[str, Any, Any]:
    what, name = rnd.choice(_HARD_FUNCS if hard else _FUNCS)
    prompt = f"Which Python function {what}? Answer with its name only, e.g. `math.floor`."
    if hard:  # the snippet the question is about
        prompt += fenced(f"def slow(xs):\n    # {what}, by hand\n    out = []\n    return out")
    return prompt, name, "exact"


def _summarize(rnd: random.Random, hard: bool) -> tuple[str, Any, Any]:
    who, what, summary = rnd.choice(_TOPICS)
    filler = " Residents were asked for comments at a meeting that ran late."
    if hard:  # the whole article, quoted
        prompt = "Summarize in one sentence the article below." + fenced(f"{who.capitalize()} {what}.{filler * 4}")
    else:
        prompt = f"Summarize in one sentence.\nNews: {who.capitalize()} {what}.{filler}"
    return prompt, summary, "llm_judge"


MAKERS: dict[str, Callable[[random.Random, bool], tuple[str, Any, Any]]] = {
    "classify": _classify,
    "extract": _extract,
    "math": _math,
    "code": _code,
    "summarize": _summarize,
}


def items(
    n: int, seed: int = 0, tasks: tuple[str, ...] = TASKS, hard_share: float = HARD_SHARE
) -> Iterator[dict[str, Any]]:
    """`n` dataset items, tasks in turn, each hard with probability `hard_share`: the same
    items for the same arguments. Each carries `level` (easy|hard) beside the contract's keys."""
    rnd = random.Random(seed)
    for i in range(n):
        task = tasks[i % len(tasks)]
        hard = rnd.random() < hard_share
        level = "hard" if hard else "easy"
        prompt, expected, grader = MAKERS[task](rnd, hard)
        item_id = f"{task}-{seed}-{i:05d}"
        shown = expected if isinstance(expected, str) else orjson.dumps(expected).decode()
        yield {
            "id": item_id,
            "task": task,
            "level": level,
            "messages": [
                {"role": "user", "content": f"{PREAMBLE[task]}\n\n{prompt}\n{marker(item_id, task, level, shown)}"}
            ],
            "expected": expected,
            "grader": grader,
        }


def split(rows: list[dict[str, Any]], dev_share: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(dev, test): each item goes to dev with probability `dev_share`, drawn by seed."""
    rnd = random.Random(seed ^ 0x5EED)
    dev, test = [], []
    for row in rows:
        (dev if rnd.random() < dev_share else test).append(row)
    return dev, test


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aiogw.bench.routing_data", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500, help="items in all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    ap.add_argument("--hard-share", type=float, default=HARD_SHARE)
    ap.add_argument("--split", type=float, default=0.0, help="dev share: writes dev.jsonl and test.jsonl")
    ap.add_argument("--out", default="-", help="a .jsonl file, a folder with --split, or - for stdout")
    args = ap.parse_args(argv)
    tasks = tuple(t for t in args.tasks.split(",") if t)
    unknown = [t for t in tasks if t not in MAKERS]
    if unknown:
        ap.error(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    rows = list(items(args.n, args.seed, tasks, args.hard_share))
    if args.split:
        out = Path(args.out if args.out != "-" else ".")
        out.mkdir(parents=True, exist_ok=True)
        dev, test = split(rows, args.split, args.seed)
        write(out / "dev.jsonl", dev)
        write(out / "test.jsonl", test)
        print(f"{len(dev)} dev items in {out / 'dev.jsonl'}, {len(test)} test items in {out / 'test.jsonl'}")
    elif args.out == "-":
        sys.stdout.buffer.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    else:
        write(Path(args.out), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
