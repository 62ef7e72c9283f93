"""The real openai.OpenAI client against tests/local_llm.py, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import openai
import pytest
from local_llm import LocalLLM, Reply

pytestmark = pytest.mark.timeout(5)

MESSAGES = [{"role": "system", "content": "You answer in JSON."}, {"role": "user", "content": "Signal for BTC/USDT?"}]
SCHEMA = {
    "name": "signal",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"side": {"type": "string"}},
        "required": ["side"],
        "additionalProperties": False,
    },
}


@pytest.fixture
def llm() -> Iterator[LocalLLM]:
    with LocalLLM() as server:
        yield server


def client(server: LocalLLM, timeout: float = 2.0) -> openai.OpenAI:
    # No retries: each test asserts exactly which request got which scripted reply.
    return openai.OpenAI(base_url=server.base_url, api_key="test-key", timeout=timeout, max_retries=0)


def test_scripted_reply_usage_and_request_log(llm: LocalLLM) -> None:
    llm.script(Reply(content='{"side": "buy"}', prompt_tokens=11, completion_tokens=7))
    completion = client(llm).chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert completion.choices[0].message.content == '{"side": "buy"}'
    assert completion.choices[0].message.refusal is None
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-test"
    assert completion.usage is not None
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 7, 18)
    [logged] = llm.requests
    assert logged["model"] == "gpt-test" and logged["messages"] == MESSAGES
    assert (logged["_path"], logged["_status"]) == ("/v1/chat/completions", 200)
    # The script is used up: the default reply answers from now on.
    assert client(llm).chat.completions.create(model="gpt-test", messages=MESSAGES).choices[0].message.content == "{}"


def test_authorization_header_reaches_server(llm: LocalLLM) -> None:
    client(llm).chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert llm.requests[0]["_headers"]["authorization"] == "Bearer test-key"


def test_rejected_json_schema_keeps_reply_for_json_object_fallback(llm: LocalLLM) -> None:
    llm.script(Reply(content='{"side": "sell"}', reject_json_schema=True), Reply(content="second"))
    api = client(llm)
    with pytest.raises(openai.BadRequestError) as info:
        api.chat.completions.create(
            model="gpt-test", messages=MESSAGES, response_format={"type": "json_schema", "json_schema": SCHEMA}
        )
    assert "json_schema is not supported" in info.value.message
    fallback = api.chat.completions.create(model="gpt-test", messages=MESSAGES, response_format={"type": "json_object"})
    assert fallback.choices[0].message.content == '{"side": "sell"}'
    assert [(r["response_format"]["type"], r["_status"]) for r in llm.requests] == [
        ("json_schema", 400),
        ("json_object", 200),
    ]
    assert api.chat.completions.create(model="gpt-test", messages=MESSAGES).choices[0].message.content == "second"


def test_rejected_json_object_falls_back_to_plain(llm: LocalLLM) -> None:
    llm.script(Reply(content="plain", reject_json_object=True))
    api = client(llm)
    with pytest.raises(openai.BadRequestError):
        api.chat.completions.create(model="gpt-test", messages=MESSAGES, response_format={"type": "json_object"})
    assert api.chat.completions.create(model="gpt-test", messages=MESSAGES).choices[0].message.content == "plain"


def test_refusal(llm: LocalLLM) -> None:
    llm.script(Reply(refusal="I can't help with that."))
    message = client(llm).chat.completions.create(model="gpt-test", messages=MESSAGES).choices[0].message
    assert message.refusal == "I can't help with that." and message.content is None


@pytest.mark.parametrize(("status", "error"), [(429, openai.RateLimitError), (500, openai.InternalServerError)])
def test_error_statuses_map_to_openai_errors(llm: LocalLLM, status: int, error: type[openai.APIStatusError]) -> None:
    llm.script(Reply(status=status))
    with pytest.raises(error) as info:
        client(llm).chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert info.value.status_code == status
    assert isinstance(info.value.body, dict) and info.value.body["message"]
    if status == 429:
        assert info.value.response.headers["retry-after"] == "0"


def test_slow_reply_times_out_and_stop_cuts_it_short() -> None:
    server = LocalLLM(default=Reply(content="late", delay_s=1.0)).start()
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client(server, timeout=0.3).chat.completions.create(model="gpt-test", messages=MESSAGES)
    server.stop()  # must not wait out the rest of the 1 s delay
    assert time.monotonic() - started < 0.9


def test_models_unknown_paths_and_bad_json(llm: LocalLLM) -> None:
    assert [m.id for m in client(llm).models.list()] == ["local-test"]
    with pytest.raises(openai.NotFoundError):
        client(llm).completions.create(model="gpt-test", prompt="legacy endpoint")
    request = urllib.request.Request(
        llm.base_url + "/chat/completions",
        data=b"{not json",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=2)
    assert info.value.code == 400 and "error" in json.loads(info.value.read())
    assert [(r["_path"], r["_status"]) for r in llm.requests] == [
        ("/v1/models", 200),
        ("/v1/completions", 404),
        ("/v1/chat/completions", 400),
    ]
