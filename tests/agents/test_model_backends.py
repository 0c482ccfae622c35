"""OpenAIConfig and AnthropicConfig through the real SDKs against the loopback ``llm_server``.

Each test drives an ``Agent`` (so the tool loop is the production one) and asserts on the exact
request bodies the server received, the retries it saw, and the ``ModelError`` wording on failure.
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

import pytest

import accord
from accord import Agent, AnthropicConfig, OpenAIConfig, tool
from accord.agents.agent import TurnResult
from accord.model.errors import ModelError
from llm_server import Call, LLMServer, Reply

HELLO = [{"role": "system", "content": "You are Alice."}, {"role": "user", "content": "hi"}]


@tool
def forecast(city: str, days: int = 3) -> str:
    """Weather forecast for a city."""
    return f"{city}: sunny for {days} days"


def openai(server: LLMServer, **kw: Any) -> OpenAIConfig:
    kw = {"api_key": "test-key", "backoff": 0.01, **kw}
    return OpenAIConfig("gpt-test", base_url=server.openai_url, **kw)


def anthropic(server: LLMServer, **kw: Any) -> AnthropicConfig:
    kw = {"api_key": "test-key", "backoff": 0.01, **kw}
    return AnthropicConfig("claude-test", base_url=server.anthropic_url, **kw)


async def turn(config: Any, messages: list[dict[str, Any]] = HELLO, tools: Any = ()) -> TurnResult:
    agent = Agent("alice", config=config, tools=list(tools))
    try:
        return await agent.take_turn(messages)
    finally:
        if agent._model is not None:
            await agent._model.aclose()  # type: ignore[attr-defined]


def statuses(server: LLMServer) -> list[int]:
    return [r.status for r in server.requests]


# --- OpenAI-compatible ---------------------------------------------------------------------------


async def test_openai_text_turn_sends_the_exact_prompt(llm_server: LLMServer) -> None:
    llm_server.script("Hello, I am the model.")
    result = await turn(openai(llm_server, temperature=0.2))
    assert result.text == "Hello, I am the model."
    assert result.model == "gpt-test"
    [req] = llm_server.requests
    assert req.api == "openai" and req.headers["authorization"] == "Bearer test-key"
    assert req.body == {"model": "gpt-test", "messages": HELLO, "temperature": 0.2}


async def test_openai_tool_call_result_is_fed_back(llm_server: LLMServer) -> None:
    llm_server.script(Call("forecast", {"city": "Oslo", "days": 2}, id="call_abc"), "Sunny in Oslo.")
    result = await turn(openai(llm_server), tools=[forecast])
    assert result.text == "Sunny in Oslo."
    assert result.tool_calls == [
        {"name": "forecast", "arguments": {"city": "Oslo", "days": 2}, "result": "Oslo: sunny for 2 days"}
    ]
    first, second = llm_server.bodies("openai")
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "forecast",
                "description": "Weather forecast for a city.",
                "parameters": forecast.spec.parameters,
            },
        }
    ]
    assert second["messages"][2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "forecast", "arguments": '{"city":"Oslo","days":2}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": "Oslo: sunny for 2 days"},
    ]


async def test_openai_tokens_are_summed_over_the_turn(llm_server: LLMServer) -> None:
    llm_server.script(
        Reply(calls=(Call("forecast", {"city": "Rome"}),), usage=(7, 1)), Reply("ok", usage=(11, 4))
    )
    result = await turn(openai(llm_server), tools=[forecast])
    assert (result.tokens_in, result.tokens_out) == (18, 5)


async def test_openai_429_is_retried_then_succeeds(llm_server: LLMServer) -> None:
    llm_server.fail(times=2, status=429, retry_after=0)
    llm_server.script("made it")
    result = await turn(openai(llm_server, max_retries=3))
    assert result.text == "made it"
    assert statuses(llm_server) == [429, 429, 200]


async def test_openai_5xx_backs_off_without_retry_after(llm_server: LLMServer) -> None:
    llm_server.fail(times=2, status=503, retry_after=None)
    llm_server.script("made it")
    start = time.monotonic()
    result = await turn(openai(llm_server, backoff=0.1))
    # waits of ~0.1 s then ~0.2 s, each minus at most 25 % jitter
    assert time.monotonic() - start >= 0.2
    assert result.text == "made it" and statuses(llm_server) == [503, 503, 200]


async def test_openai_retry_after_is_honoured(llm_server: LLMServer) -> None:
    llm_server.fail(times=1, status=429, retry_after=0.3)
    llm_server.script("made it")
    start = time.monotonic()
    await turn(openai(llm_server, backoff=0.0))
    assert time.monotonic() - start >= 0.3


async def test_openai_5xx_beyond_max_retries_is_a_model_error(llm_server: LLMServer) -> None:
    llm_server.fail(times=3, status=500, message="upstream exploded")
    llm_server.script("never used")
    with pytest.raises(ModelError) as err:
        await turn(openai(llm_server, max_retries=2))
    message = err.value.message
    assert "HTTP 500" in message and "upstream exploded" in message and "after 3 attempts" in message
    assert "gpt-test" in message and llm_server.openai_url in message
    assert err.value.details["status"] == 500
    assert statuses(llm_server) == [500, 500, 500] and llm_server.pending == 1


async def test_openai_long_retry_after_gives_up_at_once(llm_server: LLMServer) -> None:
    llm_server.fail(times=1, status=429, retry_after=600)
    with pytest.raises(ModelError, match=r"HTTP 429.*retry after 600s"):
        await turn(openai(llm_server))
    assert len(llm_server.requests) == 1


async def test_openai_4xx_is_not_retried(llm_server: LLMServer) -> None:
    # nothing scripted: the server answers 400, which no retry would fix
    with pytest.raises(ModelError, match="HTTP 400: llm_server: no scripted reply left"):
        await turn(openai(llm_server))
    assert statuses(llm_server) == [400]


async def test_openai_timeout_is_a_model_error_and_not_retried(llm_server: LLMServer) -> None:
    llm_server.delay(3.0)
    llm_server.script("too late")
    start = time.monotonic()
    with pytest.raises(ModelError, match=r"no answer within the 0\.3s timeout"):
        await turn(openai(llm_server, timeout=0.3))
    # it gave up rather than waiting for the late answer (which comes 3 s after the request)
    assert time.monotonic() - start < 3.0
    assert len(llm_server.requests) == 1


async def test_openai_connection_refused_is_retried_then_a_model_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = OpenAIConfig("gpt-test", base_url=f"http://127.0.0.1:{port}/v1", api_key="k", backoff=0.01)
    with pytest.raises(ModelError, match=r"could not connect .*\(after 4 attempts\)"):
        await turn(config)


async def test_openai_malformed_tool_arguments_is_a_model_error(llm_server: LLMServer) -> None:
    llm_server.script(Call("forecast", arguments='{"city": "Oslo"'))
    with pytest.raises(ModelError, match="tool call 'forecast' has malformed JSON arguments"):
        await turn(openai(llm_server), tools=[forecast])
    llm_server.script(Call("forecast", arguments="[1, 2]"))
    with pytest.raises(ModelError, match="must be a JSON object, not list"):
        await turn(openai(llm_server), tools=[forecast])


async def test_openai_api_key_from_env_or_a_clear_error(
    llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ModelError, match=r"no API key.*OPENAI_API_KEY.*not-needed"):
        await turn(openai(llm_server, api_key=None))
    assert llm_server.requests == []
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    llm_server.script("hi")
    await turn(openai(llm_server, api_key=None))
    assert llm_server.requests[0].headers["authorization"] == "Bearer env-key"
    assert "env-key" not in repr(openai(llm_server, api_key="env-key"))


async def test_a_request_the_server_refuses_is_reported_with_its_reason(llm_server: LLMServer) -> None:
    orphan = [*HELLO, {"role": "tool", "tool_call_id": "call_nope", "content": "x"}]
    with pytest.raises(ModelError, match="HTTP 400: messages\\[2\\]: tool_call_id 'call_nope' answers no"):
        await turn(openai(llm_server), messages=orphan)


# --- Anthropic -----------------------------------------------------------------------------------


async def test_anthropic_text_turn_maps_system_and_messages(llm_server: LLMServer) -> None:
    llm_server.script("Hello from Claude.")
    result = await turn(anthropic(llm_server, max_tokens=256))
    assert result.text == "Hello from Claude." and result.model == "claude-test"
    [req] = llm_server.requests
    assert req.api == "anthropic" and "test-key" in (
        req.headers.get("x-api-key"),
        req.headers.get("authorization", "").removeprefix("Bearer "),
    )
    assert req.body == {
        "model": "claude-test",
        "max_tokens": 256,
        "system": "You are Alice.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }


async def test_anthropic_parallel_tool_calls_results_go_back_in_one_user_message(
    llm_server: LLMServer,
) -> None:
    calls = [
        Call("forecast", {"city": "Oslo"}, id="toolu_a"),
        Call("forecast", {"city": "Rome"}, id="toolu_b"),
    ]
    llm_server.script(
        Reply(text="Checking.", calls=tuple(calls), usage=(20, 6)), Reply("Both sunny.", usage=(30, 2))
    )
    result = await turn(anthropic(llm_server), tools=[forecast])
    assert result.text == "Both sunny." and (result.tokens_in, result.tokens_out) == (50, 8)
    first, second = llm_server.bodies("anthropic")
    assert first["tools"] == [
        {
            "name": "forecast",
            "description": "Weather forecast for a city.",
            "input_schema": forecast.spec.parameters,
        }
    ]
    assert second["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_a", "name": "forecast", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "toolu_b", "name": "forecast", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "Oslo: sunny for 3 days"},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": "Rome: sunny for 3 days"},
            ],
        },
    ]


async def test_anthropic_429_is_retried_then_succeeds(llm_server: LLMServer) -> None:
    llm_server.fail(times=1, status=429, retry_after=0)
    llm_server.script("made it")
    assert (await turn(anthropic(llm_server))).text == "made it"
    assert statuses(llm_server) == [429, 200]


async def test_anthropic_5xx_beyond_max_retries_is_a_model_error(llm_server: LLMServer) -> None:
    llm_server.fail(times=2, status=529, message="Overloaded")
    with pytest.raises(
        ModelError, match=r"Anthropic model 'claude-test'.*HTTP 529: Overloaded \(after 2 attempts\)"
    ):
        await turn(anthropic(llm_server, max_retries=1))
    assert statuses(llm_server) == [529, 529]


async def test_anthropic_timeout_is_a_model_error(llm_server: LLMServer) -> None:
    llm_server.delay(3.0)
    with pytest.raises(ModelError, match="timeout"):
        await turn(anthropic(llm_server, timeout=0.3))
    assert len(llm_server.requests) == 1


async def test_anthropic_malformed_tool_input_is_a_model_error(llm_server: LLMServer) -> None:
    llm_server.script(Call("forecast", arguments='{"city": '))
    with pytest.raises(ModelError, match="tool call 'forecast' has malformed JSON input"):
        await turn(anthropic(llm_server), tools=[forecast])


async def test_anthropic_missing_api_key(llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ModelError, match="ANTHROPIC_API_KEY"):
        await turn(anthropic(llm_server, api_key=None))


# --- optional SDKs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "config"),
    [("openai", OpenAIConfig("m", api_key="k")), ("anthropic", AnthropicConfig("m", api_key="k"))],
)
def test_a_missing_sdk_names_the_extra_to_install(
    module: str, config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` raise ImportError
    with pytest.raises(ModelError, match=rf"needs the {module} SDK.*pip install 'accord\[{module}\]'"):
        config.create()


def test_configs_are_exported_from_the_top_level() -> None:
    assert accord.OpenAIConfig is OpenAIConfig and accord.AnthropicConfig is AnthropicConfig
    assert {"OpenAIConfig", "AnthropicConfig"} <= set(accord.__all__)
