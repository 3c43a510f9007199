"""The Gemini adapter: request translation, responses, errors, recorded streams, embeddings."""

from __future__ import annotations

import json

import pytest
from adapter_calls import USER, upstream_call
from replay import FIXTURES, expected, replay

from aiogw.adapters import gemini, gemini_reply
from aiogw.adapters._base import Target
from aiogw.errors import FailureClass, InvalidRequest, UpstreamError
from aiogw.types import EmbeddingRequest, Secret

T = Target(
    id="g/gemini-2.5-flash", provider="g", type="gemini", model="gemini-2.5-flash",
    base_url="https://generativelanguage.googleapis.com", api_key=Secret("AIza-test"),
)  # fmt: skip
T3 = Target(id="g/gemini-3-pro", provider="g", type="gemini", model="gemini-3-pro", base_url="http://x")
DIR = FIXTURES / "gemini"


def call(target=T, **body):
    return upstream_call(gemini.build_call, target, **body)


def test_urls_and_key_header():
    c, body = call()
    assert c.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    assert c.headers["x-goog-api-key"] == "AIza-test" and "key=" not in c.url
    c, _ = call(stream=True)
    assert c.url.endswith(":streamGenerateContent?alt=sse")
    assert "model" not in body


def test_contents_roles_system_images_and_tool_round():
    _, body = call(messages=[
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]},
        {"role": "user", "content": "And the weather?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "{\"time\": \"noon\"}"},
    ])  # fmt: skip
    assert body["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBO"}},
        {"text": "And the weather?"},
    ]
    model_parts = body["contents"][1]["parts"]
    assert model_parts[1] == {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    assert model_parts[2]["functionCall"]["args"] == {}
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"result": "18C"}}},
        {"functionResponse": {"name": "get_time", "response": {"time": "noon"}}},
    ]


def test_thought_signature_round_trips_through_the_call_id():
    call_id = gemini_reply.make_call_id("CiQB0e2Kb...")
    _, body = call(messages=[*USER, {"role": "assistant", "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "ok"}])  # fmt: skip
    assert body["contents"][1]["parts"][0]["thoughtSignature"] == "CiQB0e2Kb..."
    # Gemini 3 wants a signature on the current loop's first call; unknown ones get Google's stand-in.
    _, body = call(T3, messages=[*USER, {"role": "assistant", "tool_calls": [
        {"id": "toolu_from_claude", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "toolu_from_claude", "content": "ok"}])  # fmt: skip
    assert body["contents"][1]["parts"][0]["thoughtSignature"] == gemini.SKIP_SIGNATURE


def test_generation_config_tools_and_json_schema():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    c, body = call(temperature=1.5, top_p=0.9, top_k=20, n=2, max_tokens=100, stop=["END"], seed=7,
                   presence_penalty=0.5, user="u", parallel_tool_calls=False,
                   tools=[{"type": "function", "function": {"name": "f", "description": "d", "parameters": schema}}],
                   tool_choice={"type": "function", "function": {"name": "f"}},
                   response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})  # fmt: skip
    g = body["generationConfig"]
    assert g == {"temperature": 1.5, "topP": 0.9, "topK": 20, "seed": 7, "presencePenalty": 0.5, "candidateCount": 2,
                 "maxOutputTokens": 100, "stopSequences": ["END"], "responseMimeType": "application/json",
                 "responseJsonSchema": schema}  # fmt: skip
    assert body["tools"] == [
        {"functionDeclarations": [{"name": "f", "description": "d", "parametersJsonSchema": schema}]}
    ]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}
    assert {n.split("'")[1] for n in c.notes} == {"user", "parallel_tool_calls"}
    _, body = call(reasoning_effort="low")
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024, "includeThoughts": True}
    _, body = call(T3, reasoning_effort="high")
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "HIGH", "includeThoughts": True}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://e.com/a.png"}}]}
                ]
            },
            "messages[0].content[0].image_url.url",
        ),
        ({"tools": [{"type": "function", "function": {"name": "1bad"}}]}, "tools[0].function.name"),
        ({"messages": [*USER, {"role": "tool", "tool_call_id": "nope", "content": "x"}]}, "messages[1].tool_call_id"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ],
)
def test_refusals_name_the_parameter(extra, param):
    with pytest.raises(InvalidRequest) as exc:
        call(**extra)
    assert exc.value.param == param


def test_response_with_thoughts_and_a_function_call():
    reply = gemini.decode_response((DIR / "response_thought_call.json").read_bytes(), T)
    body = json.loads(reply.body)
    assert body["id"] == "chatcmpl-wzCjaPa4As7shMIP2Mei0AI" and body["model"] == "gemini-2.5-flash"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"  # STOP after a call
    msg = choice["message"]
    assert msg["content"] == "Let me check that." and msg["reasoning_content"] == "**Reasoning about the request**"
    tc = msg["tool_calls"][0]
    assert tc["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert gemini_reply.split_call_id(tc["id"])[1] == "CiQB0e2Kb..."
    assert body["usage"] == {"prompt_tokens": 96, "completion_tokens": 201, "total_tokens": 297,
                             "prompt_tokens_details": {"cached_tokens": 0},
                             "completion_tokens_details": {"reasoning_tokens": 180}}  # fmt: skip


def test_blocked_prompt_is_an_empty_filtered_answer():
    body = json.loads(gemini.decode_response((DIR / "response_blocked.json").read_bytes(), T).body)
    assert body["choices"][0]["finish_reason"] == "content_filter"
    assert body["choices"][0]["message"]["content"] is None


def _normalise_ids(chunks):
    for c in chunks:
        if isinstance(c, dict):
            for ch in c.get("choices", []):
                for tc in ch["delta"].get("tool_calls", []):
                    if "id" in tc:
                        assert tc["id"].startswith("call_")
                        tc["id"] = "<synthesized>"
    return chunks


@pytest.mark.parametrize("name", ["stream_text", "stream_thought_call"])
@pytest.mark.parametrize("seed", range(6))
def test_recorded_streams_become_exact_openai_chunks(name, seed):
    data = (DIR / f"{name}.sse").read_bytes()
    model = json.loads(data.split(b"\r\n")[0][6:])["modelVersion"]
    got = _normalise_ids(replay(gemini.StreamDecoder(T), data, seed, model=model))
    assert got == expected(DIR / f"{name}.expected.jsonl")


def test_stream_without_finish_reason_is_truncated_and_error_events_fail():
    with pytest.raises(UpstreamError, match="truncated"):
        replay(gemini.StreamDecoder(T), (DIR / "stream_truncated.sse").read_bytes(), 0, model="m")
    with pytest.raises(UpstreamError) as exc:
        replay(gemini.StreamDecoder(T), (DIR / "stream_error.sse").read_bytes(), 1, model="m")
    assert exc.value.failure_class is FailureClass.OVERLOADED


def test_malformed_function_call_is_an_error_not_a_clean_stop():
    data = b'data: {"candidates": [{"content": {"parts": []}, "finishReason": "MALFORMED_FUNCTION_CALL"}]}\r\n\r\n'
    with pytest.raises(UpstreamError, match="MALFORMED_FUNCTION_CALL"):
        replay(gemini.StreamDecoder(T), data, 0, model="m")


@pytest.mark.parametrize(
    ("status", "gstatus", "reason", "cls"),
    [
        (429, "RESOURCE_EXHAUSTED", None, FailureClass.RATE_LIMIT),
        (503, "UNAVAILABLE", None, FailureClass.OVERLOADED),
        (400, "INVALID_ARGUMENT", None, FailureClass.CALLER_FAULT),
        (400, "INVALID_ARGUMENT", "API_KEY_INVALID", FailureClass.CREDENTIAL),
        (403, "PERMISSION_DENIED", None, FailureClass.CREDENTIAL),
        (404, "NOT_FOUND", None, FailureClass.MODEL_GONE),
        (504, "DEADLINE_EXCEEDED", None, FailureClass.TIMEOUT),
        (500, "INTERNAL", None, FailureClass.TRANSIENT),
    ],
)
def test_errors_are_classified(status, gstatus, reason, cls):
    details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}] if reason else []
    details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "38s"})
    body = json.dumps([{"error": {"code": status, "message": "m", "status": gstatus, "details": details}}]).encode()
    err = gemini.decode_error(status, {}, body, T)
    assert err.failure_class is cls
    assert err.retry_after_s == 38


def test_context_length_message_is_recognised():
    body = json.dumps(
        {
            "error": {
                "code": 400,
                "status": "INVALID_ARGUMENT",
                "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
            }
        }
    )
    assert gemini.decode_error(400, {}, body.encode(), T).failure_class in (
        FailureClass.CONTEXT_LENGTH,
        FailureClass.CALLER_FAULT,
    )


def test_embeddings_single_and_batch():
    one = gemini.build_embeddings_call(EmbeddingRequest(model="e", input="hello", dimensions=4), T)
    assert one.url.endswith(":embedContent")
    assert json.loads(one.body) == {"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 4}
    many_req = EmbeddingRequest(model="e", input=["a", "b"])
    many = gemini.build_embeddings_call(many_req, T)
    assert many.url.endswith(":batchEmbedContents")
    assert [r["model"] for r in json.loads(many.body)["requests"]] == ["models/gemini-2.5-flash"] * 2
    out = json.loads(gemini.decode_embeddings(b'{"embeddings": [{"values": [0.1]}, {"values": [0.2]}]}', T, many_req))
    assert [d["embedding"] for d in out["data"]] == [[0.1], [0.2]] and out["usage"]["prompt_tokens"] == 0
    with pytest.raises(InvalidRequest) as exc:
        gemini.build_embeddings_call(EmbeddingRequest(model="e", input=[[1, 2, 3]]), T)
    assert exc.value.param == "input"


LOGPROBS = {"chosenCandidates": [{"token": "Hi", "tokenId": 7, "logProbability": -0.25},
                                 {"token": " there", "tokenId": 9, "logProbability": -1.5}],
            "topCandidates": [{"candidates": [{"token": "Hi", "logProbability": -0.25}, {"token": "Hey", "logProbability": -2.0}]},
                              {"candidates": [{"token": " there", "logProbability": -1.5}]}]}  # fmt: skip
OPENAI_LOGPROBS = {"content": [
    {"token": "Hi", "logprob": -0.25, "bytes": [72, 105], "top_logprobs": [
        {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]}, {"token": "Hey", "logprob": -2.0, "bytes": [72, 101, 121]}]},
    {"token": " there", "logprob": -1.5, "bytes": list(b" there"), "top_logprobs": [
        {"token": " there", "logprob": -1.5, "bytes": list(b" there")}]},
], "refusal": None}  # fmt: skip


def test_logprobs_result_becomes_openai_logprobs_streaming_and_not():
    cand = {"content": {"role": "model", "parts": [{"text": "Hi there"}]}, "finishReason": "STOP", "index": 0,
            "logprobsResult": LOGPROBS}  # fmt: skip
    body = json.loads(gemini.decode_response(json.dumps({"candidates": [cand]}).encode(), T).body)
    assert body["choices"][0]["logprobs"] == OPENAI_LOGPROBS
    deltas = gemini.StreamDecoder(T).feed("", json.dumps({"candidates": [cand]}).encode())
    texts = [d for d in deltas if d.content]
    assert [json.loads(bytes(d.logprobs)) for d in texts] == [OPENAI_LOGPROBS]
    no_lp = {**cand, "logprobsResult": None}
    assert (
        json.loads(gemini.decode_response(json.dumps({"candidates": [no_lp]}).encode(), T).body)["choices"][0][
            "logprobs"
        ]
        is None
    )
