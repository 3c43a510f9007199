"""Hostile model names against every adapter: whatever a name holds, the upstream URL keeps
its path and query, and the name is one percent-encoded path segment where it is in the
path at all. (The edge refuses most of these names; the adapters must not rely on it.)"""

import json
from urllib.parse import quote, unquote, urlsplit

import msgspec
import pytest

from aiogw.adapters import REGISTRY
from aiogw.adapters._base import Target
from aiogw.types import ChatRequest, EmbeddingRequest, ParsedChat, Secret
from aiogw.upstream.http import check_request_target

HOSTILE = [
    "../../x",
    "..",
    "%2e%2e/x",
    "x?key=stolen",
    "x#fragment",
    "x:streamGenerateContent?alt=sse&key=k",
    "models/../../tunedModels/x",
    "x/../../../v1/files",
    "x\r\nHost: evil.example",
    "x\nb",
    "x\x00y",
    "x\ty",
    "x y",
    "x%zz",
    "ü-model",
    "a" * 300,
]
BENIGN = "benign-model"


def _target(adapter_name: str, model: str) -> Target:
    return Target(
        id=f"p/{model}",
        provider="p",
        type=adapter_name,
        model=model,
        base_url="https://upstream.example/base",
        api_key=Secret("sk-test"),
    )


def _chat(stream: bool) -> ParsedChat:
    raw = json.dumps({"model": "public", "messages": [{"role": "user", "content": "hi"}], "stream": stream}).encode()
    return ParsedChat(
        req=msgspec.json.decode(raw, type=ChatRequest), raw=msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
    )


def _urls(adapter_name: str, model: str) -> list[str]:
    adapter = REGISTRY[adapter_name]
    t = _target(adapter_name, model)
    urls = [adapter.build_call(_chat(stream), t).url for stream in (False, True)]
    if adapter.build_embeddings_call is not None:
        for inp in ("one", ["one", "two"]):
            urls.append(adapter.build_embeddings_call(EmbeddingRequest(model="public", input=inp), t).url)
    return urls


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
@pytest.mark.parametrize("adapter_name", sorted(REGISTRY))
def test_a_hostile_name_stays_one_encoded_segment_of_its_own_url(adapter_name, name):
    for url, benign in zip(_urls(adapter_name, name), _urls(adapter_name, BENIGN), strict=True):
        check_request_target(url)  # every byte the name brought is percent-encoded
        got, want = urlsplit(url), urlsplit(benign)
        assert (got.scheme, got.netloc, got.query, got.fragment) == (
            want.scheme,
            want.netloc,
            want.query,
            want.fragment,
        )
        segments = got.path.split("/")
        assert len(segments) == len(want.path.split("/")) and not {".", ".."} & set(segments)
        if got.path != want.path:  # the name is in the path: exactly where the benign one was
            segment = quote(name.removeprefix("models/"), safe="")
            assert got.path == want.path.replace(BENIGN, segment, 1), url
            assert unquote(segment) == name.removeprefix("models/")


def test_gemini_ids_are_unchanged_by_the_encoding():
    url = _urls("gemini", "models/gemini-2.5-flash")[1]
    assert url == "https://upstream.example/base/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
