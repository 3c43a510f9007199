"""The prompt-feature bucket: a cheap, coarse description of a request ("long+code") under
which quality is estimated within a task, so that the hard tenth of a task (a long prompt,
code, another language, tools) can go to another target than its easy bulk.

Design: few buckets (3 length bands x 3 flags = 24 at most), because every bucket splits
the feedback a task gets; each feature is read in C-speed string operations from what the
request already has (the memoised prompt estimate, the tools list, the last user message's
text), so a bucket costs about a microsecond. Features that need a tokenizer or an embedding
are left out on purpose: a bucket that is not cheap would cost every request of the group.

- length band, from the prompt's token estimate: `short` (< 500), `mid` (< 4000), `long`;
- `tools`: the request offers tools (tool-use is its own skill);
- `code`: the last user message looks like code: a fence, or several lines of which one
  starts with a keyword or ends in `;` / `{` (one line of prose is not searched);
- `intl`: the last user message is mostly non-ASCII text (another script or language).

The bucket is the band, then the flags present, joined by "+" in that fixed order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from aiogw.adapters._base import content_text
from aiogw.streaming.encode import estimate_tokens
from aiogw.types import ChatRequest, ParsedChat, UserMessage

SHORT_TOKENS = 500
LONG_TOKENS = 4000
SAMPLE_CHARS = 4096  # of the last user message: enough to tell code or a script, bounded cost
# More than this many extra UTF-8 bytes per character: mostly another script (CJK is ~2,
# accented Latin ~0.05).
INTL_EXTRA_BYTES = 0.3

_CODE = re.compile(
    r"```|^\s*(?:def|class|function|import|from|#include|SELECT|public|fn|func)\b|[;{]\s*$", re.MULTILINE
)


def length_band(prompt_tokens: int) -> str:
    return "short" if prompt_tokens < SHORT_TOKENS else "mid" if prompt_tokens < LONG_TOKENS else "long"


def bucket_of(parsed: ParsedChat, prompt_tokens: int) -> str:
    """The request's bucket; `prompt_tokens` is the request's (memoised) prompt estimate."""
    out = length_band(prompt_tokens)
    if parsed.req.tools:
        out += "+tools"
    text = ""
    for m in reversed(parsed.req.messages):
        if isinstance(m, UserMessage):
            text = content_text(m.content)[:SAMPLE_CHARS]
            break
    if text:
        if "```" in text or ("\n" in text and _CODE.search(text) is not None):
            out += "+code"
        if not text.isascii() and len(text.encode("utf-8", "surrogatepass")) - len(text) > INTL_EXTRA_BYTES * len(text):
            out += "+intl"
    return out


def bucket_of_body(body: Mapping[str, Any]) -> str:
    """The bucket the gateway gives a chat request body as a client sends it (`aiogw eval`
    writes each item's, so its quality.json can say how a model did per bucket); "" for a
    body the gateway would not take as a chat request."""
    fields = {"model": "m", "messages": body.get("messages")}
    if body.get("tools"):
        fields["tools"] = body["tools"]
    try:
        req = msgspec.convert(fields, ChatRequest)
    except (msgspec.ValidationError, TypeError):
        return ""
    # The prompt estimate as the gateway makes it (attempts.walk.prompt_tokens_estimate).
    chars = sum(len(content_text(getattr(m, "content", None))) for m in req.messages)
    return bucket_of(ParsedChat(req=req, raw={}), estimate_tokens(chars))
