"""Conformance: the official `openai` Python client against a running chatgate proxy.

usage: python3 tests/conformance/openai_client.py BASE_URL
Prints one line per check and a closing 'N passed, N failed' line; exits 1 on any failure.
"""
import sys

import openai
from openai import OpenAI

base = sys.argv[1].rstrip("/")
client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=20)
alt = OpenAI(base_url=base + "/api/v1/compatibility/openai/v1", api_key="unused", max_retries=0, timeout=20)
passed = failed = 0


def check(name, fn):
    global passed, failed
    try:
        fn()
        passed += 1
        print(f"ok   {name}")
    except Exception as e:  # noqa: BLE001 - report every failure
        failed += 1
        print(f"FAIL {name}: {type(e).__name__}: {e}")


def plain():
    r = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "Hello there"}])
    assert r.object == "chat.completion", r
    assert r.choices[0].message.content == "Hello there", r
    assert r.choices[0].finish_reason == "stop", r
    assert r.usage.completion_tokens == 2 and r.usage.total_tokens == r.usage.prompt_tokens + 2, r.usage


def mlflow_path():
    r = alt.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}], n=2)
    assert [c.message.content for c in r.choices] == ["hi", "hi"], r


def stream_with_usage():
    chunks = list(client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "one two three"}],
        stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three", text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3, chunks[-1]
    assert len({c.id for c in chunks}) == 1


def max_tokens_length():
    r = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "a b c d"}], max_tokens=2)
    assert r.choices[0].finish_reason == "length" and r.choices[0].message.content == "a b", r


def tool_call():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    r = client.chat.completions.create(model="echo", tools=tools,
                                       messages=[{"role": "user", "content": 'call get_weather {"city":"Paris"}'}])
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and call.function.arguments == '{"city":"Paris"}', r
    assert r.choices[0].finish_reason == "tool_calls"
    # Streamed, the SDK's accumulated fragments give the same call.
    args = ""
    for c in client.chat.completions.create(model="echo", tools=tools, stream=True,
                                            messages=[{"role": "user", "content": 'call get_weather {"city":"Paris"}'}]):
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            args += tc.function.arguments or ""
    assert args == '{"city":"Paris"}', args


def unknown_model_404():
    try:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    except openai.NotFoundError as e:
        assert e.status_code == 404 and e.code == "model_not_found", e.body
        return
    raise AssertionError("no error")


def invalid_422():
    try:
        client.chat.completions.create(model="echo", messages=[])
    except openai.UnprocessableEntityError as e:
        detail = e.response.json()["detail"]
        assert detail[0]["loc"] == ["body", "messages"] and detail[0]["type"] == "too_short", detail
        return
    raise AssertionError("no error")


def models_list():
    ids = [m.id for m in client.models.list()]
    assert "echo" in ids, ids


def model_retrieve():
    m = client.models.retrieve("echo")
    assert m.id == "echo" and m.object == "model", m
    try:
        client.models.retrieve("nope")
    except openai.NotFoundError:
        return
    raise AssertionError("no error for an unknown model")


def max_completion_tokens():
    r = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "a b c d"}],
                                       max_completion_tokens=1)
    assert r.choices[0].finish_reason == "length" and r.choices[0].message.content == "a", r


def agent_loop_terminates():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    messages = [{"role": "user", "content": 'call get_weather {"city":"Paris"}'}]
    for _ in range(5):
        r = client.chat.completions.create(model="echo", tools=tools, messages=messages)
        msg = r.choices[0].message
        if not msg.tool_calls:
            assert "sunny" in (msg.content or ""), msg
            return
        messages.append(msg.model_dump(exclude_none=True))
        for call in msg.tool_calls:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
    raise AssertionError("the loop did not end")


def request_id_header():
    raw = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-request-id": "conf-1"})
    assert raw.headers.get("x-request-id") == "conf-1", raw.headers


for name, fn in [("plain", plain), ("mlflow path, n=2", mlflow_path), ("stream with usage", stream_with_usage),
                 ("max_tokens", max_tokens_length), ("tool call", tool_call), ("404", unknown_model_404),
                 ("422", invalid_422), ("models", models_list), ("models.retrieve", model_retrieve),
                 ("max_completion_tokens", max_completion_tokens), ("agent loop", agent_loop_terminates),
                 ("x-request-id", request_id_header)]:
    check(name, fn)
print(f"openai-python: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
