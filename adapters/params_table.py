"""The README's parameter-rules table, generated from every adapter's ParamMap so the
documentation cannot drift from the code (a test compares them).

    python -m aiogw.adapters.params_table            # print the table
    python -m aiogw.adapters.params_table README.md  # rewrite it in place, between the markers
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiogw.adapters import REGISTRY
from aiogw.types import ChatRequest

START, END = "<!-- params-table:start -->", "<!-- params-table:end -->"
STRUCTURAL = ("model", "messages", "stream", "stream_options")


def fate(provider: str, field: str) -> str:
    params = REGISTRY[provider].params
    if params is None:
        return "?"
    if field in params.reject:
        return f"400: {params.reject[field]}"
    if field in params.drop:
        return f"dropped: {params.drop[field]}"
    return params.translated_as if field in params.translated else "?"


def table() -> str:
    providers = [p for p in REGISTRY if p != "openai-compatible"]  # same rules as openai
    fields = [f for f in ChatRequest.__struct_fields__ if f not in STRUCTURAL]
    lines = [
        "| field | " + " | ".join(providers) + " |",
        "| --- | " + " | ".join("---" for _ in providers) + " |",
    ]
    for f in fields:
        lines.append(f"| `{f}` | " + " | ".join(fate(p, f) for p in providers) + " |")
    return "\n".join(lines)


def splice(text: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    if not argv:
        print(table())
        return 0
    path = Path(argv[0])
    path.write_text(splice(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
