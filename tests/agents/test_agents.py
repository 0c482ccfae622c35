"""Agents without a hub: ``@tool`` schemas and validation, ``Agent.take_turn``, TestConfig, OfflineConfig."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from accord import Agent, Handoff, OfflineConfig, Tool, tool
from accord.agents import ModelRequest
from accord.model.errors import InvalidInput, ModelError
from accord.testing import ScriptedModel, TestConfig, ToolCall


@tool
def forecast(city: str, days: int = 3, metric: bool = True) -> str:
    """Weather forecast for a city."""
    return f"{city}: sunny for {days} days ({'C' if metric else 'F'})"


@tool(name="add_numbers", description="Add two numbers.")
def _add(a: float, b: float) -> float:
    return a + b


@tool
async def slow_echo(text: str, times: int = 1) -> str:
    """Echo after yielding to the loop."""
    await asyncio.sleep(0)
    return " ".join([text] * times)


@tool
def boom(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"exploded: {reason}")


@tool
def hand_to(target: str, reason: str = "") -> Handoff:
    """Pass the turn to someone else."""
    return Handoff(target=target, reason=reason)


# --- @tool ---------------------------------------------------------------------------------------


def test_tool_schema_from_signature() -> None:
    assert isinstance(forecast, Tool)
    spec = forecast.spec
    assert spec.name == "forecast"
    assert spec.description == "Weather forecast for a city."
    params = spec.parameters
    assert params["type"] == "object"
    assert "title" not in params
    assert list(params["properties"]) == ["city", "days", "metric"]
    assert params["properties"]["city"]["type"] == "string"
    assert params["properties"]["days"]["type"] == "integer"
    assert params["properties"]["days"]["default"] == 3
    assert params["properties"]["metric"]["type"] == "boolean"
    assert params["required"] == ["city"]
    assert params.get("additionalProperties") is False


def test_tool_name_and_description_overrides() -> None:
    assert _add.name == "add_numbers"
    spec = _add.spec
    assert spec.name == "add_numbers" and spec.description == "Add two numbers."
    assert spec.parameters["properties"]["a"]["type"] == "number"
    assert sorted(spec.parameters["required"]) == ["a", "b"]


def test_tool_without_parameters_has_an_empty_object_schema() -> None:
    @tool
    def ping() -> str:
        return "pong"

    params = ping.spec.parameters
    assert params["type"] == "object"
    assert params.get("properties", {}) == {}
    assert not params.get("required")
    assert ping.spec.description == ""


def test_decorated_function_is_still_callable() -> None:
    assert forecast("Oslo", days=1) == "Oslo: sunny for 1 days (C)"
    assert _add(2, 3) == 5


async def test_tool_validates_arguments() -> None:
    assert await forecast.invoke({"city": "Oslo"}) == "Oslo: sunny for 3 days (C)"
    assert await forecast.invoke({"city": "Oslo", "days": 2, "metric": False}) == "Oslo: sunny for 2 days (F)"
    with pytest.raises(InvalidInput, match="forecast"):
        await forecast.invoke({"city": 5})
    with pytest.raises(InvalidInput):
        await forecast.invoke({"city": "Oslo", "days": "many"})
    with pytest.raises(InvalidInput):
        await forecast.invoke({})  # city is required
    with pytest.raises(InvalidInput):
        await forecast.invoke({"city": "Oslo", "country": "NO"})  # extra arguments are refused


async def test_async_tool() -> None:
    assert slow_echo.is_async
    assert await slow_echo.invoke({"text": "hi", "times": 3}) == "hi hi hi"
    assert slow_echo.spec.parameters["required"] == ["text"]


def test_agent_wraps_plain_functions_as_tools() -> None:
    def lookup(key: str) -> str:
        """Look a key up."""
        return key

    agent = Agent("a", tools=[lookup, forecast])
    assert sorted(agent.tools) == ["forecast", "lookup"]
    assert agent.tools["lookup"].spec.parameters["required"] == ["key"]


# --- Agent.take_turn -----------------------------------------------------------------------------


def model_of(agent: Agent) -> ScriptedModel:
    model = agent.model
    assert isinstance(model, ScriptedModel)
    return model


USER = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "bob: hello?"}]


async def test_text_turn() -> None:
    agent = Agent("alice", prompt="Be brief.", config=TestConfig("hi bob", "unused"))
    messages = list(USER)
    result = await agent.take_turn(messages)
    assert result.text == "hi bob"
    assert result.handoff is None and result.tool_calls == []
    assert result.model == "test"
    assert result.tokens_out == 2 and result.tokens_in > 0
    model = model_of(agent)
    assert len(model.requests) == 1
    req = model.requests[0]
    assert req.messages == USER
    assert req.agent_name == "alice"
    assert req.tools == []
    assert messages == USER  # the caller's list is not modified


async def test_tool_call_result_is_fed_back_in_the_next_request() -> None:
    agent = Agent(
        "alice",
        config=TestConfig(ToolCall("forecast", {"city": "Oslo", "days": 2}), "Sunny, take shades."),
        tools=[forecast],
    )
    seen: list[dict[str, Any]] = []

    async def on_tool_call(record: dict[str, Any]) -> None:
        seen.append(record)

    result = await agent.take_turn(USER, on_tool_call)
    assert result.text == "Sunny, take shades."
    record = {
        "name": "forecast",
        "arguments": {"city": "Oslo", "days": 2},
        "result": "Oslo: sunny for 2 days (C)",
    }
    assert result.tool_calls == [record]
    assert seen == [record]

    model = model_of(agent)
    assert len(model.requests) == 2
    first, second = model.requests
    assert [t.name for t in first.tools] == ["forecast"]
    assert first.messages[: len(USER)] == USER
    assert second.messages[: len(USER)] == USER
    call_msg, tool_msg = second.messages[len(USER) :]
    assert call_msg["role"] == "assistant"
    (call,) = call_msg["tool_calls"]
    assert call["function"] == {"name": "forecast", "arguments": {"city": "Oslo", "days": 2}}
    assert tool_msg == {"role": "tool", "tool_call_id": call["id"], "content": "Oslo: sunny for 2 days (C)"}
    assert call["id"]  # the tool message is linked to the call


async def test_recorded_model_requests_are_what_the_model_was_shown() -> None:
    """Each request must be a snapshot: the first model call saw only the conversation, not the
    tool-call and tool-result messages the agent appended to the same list afterwards."""
    agent = Agent(
        "alice", config=TestConfig(ToolCall("forecast", {"city": "Oslo"}), "done"), tools=[forecast]
    )
    await agent.take_turn(USER)
    first, second = model_of(agent).requests
    assert len(second.messages) == len(USER) + 2
    assert first.messages == USER, "the first recorded request was mutated after the model call"
    assert first.messages is not second.messages


async def test_async_tool_in_a_turn() -> None:
    agent = Agent(
        "a", config=TestConfig(ToolCall("slow_echo", {"text": "ok", "times": 2}), "done"), tools=[slow_echo]
    )
    result = await agent.take_turn(USER)
    assert result.tool_calls[0]["result"] == "ok ok"
    assert model_of(agent).requests[1].messages[-1]["content"] == "ok ok"


async def test_wrong_argument_types_become_an_error_string_for_the_model() -> None:
    agent = Agent(
        "alice",
        config=TestConfig(ToolCall("forecast", {"city": 42, "days": "many"}), "Sorry, let me retry."),
        tools=[forecast],
    )
    result = await agent.take_turn(USER)  # does not raise
    assert result.text == "Sorry, let me retry."
    error = result.tool_calls[0]["result"]
    assert isinstance(error, str) and error.startswith("error: ")
    assert "forecast" in error and "city" in error and "days" in error
    fed_back = model_of(agent).requests[1].messages[-1]
    assert fed_back["role"] == "tool" and fed_back["content"] == error


async def test_unknown_tool_becomes_an_error_string_listing_the_tools() -> None:
    agent = Agent("alice", config=TestConfig(ToolCall("teleport", {}), "ok"), tools=[forecast, _add])
    result = await agent.take_turn(USER)
    error = result.tool_calls[0]["result"]
    assert error.startswith("error: ")
    assert "teleport" in error
    assert "forecast" in error and "add_numbers" in error
    assert model_of(agent).requests[1].messages[-1]["content"] == error


async def test_unknown_tool_with_no_tools_at_all() -> None:
    agent = Agent("alice", config=TestConfig(ToolCall("teleport"), "ok"))
    result = await agent.take_turn(USER)
    assert result.tool_calls[0]["result"].startswith("error: ")
    assert "none" in result.tool_calls[0]["result"]


async def test_a_crashing_tool_becomes_an_error_string() -> None:
    agent = Agent("alice", config=TestConfig(ToolCall("boom", {"reason": "disk"}), "recovered"), tools=[boom])
    result = await agent.take_turn(USER)
    assert result.text == "recovered"
    assert result.tool_calls[0]["result"] == "error: RuntimeError: exploded: disk"


async def test_a_handoff_ends_the_turn() -> None:
    agent = Agent(
        "reviewer",
        config=TestConfig(ToolCall("hand_to", {"target": "writer", "reason": "add detail"}), "never said"),
        tools=[hand_to],
    )
    result = await agent.take_turn(USER)
    assert result.handoff == Handoff(target="writer", reason="add detail")
    assert result.text is None
    assert result.tool_calls == [
        {
            "name": "hand_to",
            "arguments": {"target": "writer", "reason": "add detail"},
            "result": {"handoff": {"target": "writer", "reason": "add detail"}},
        }
    ]
    model = model_of(agent)
    assert len(model.requests) == 1  # no model call after the handoff
    assert model.position == 1


async def test_exactly_max_tool_rounds_is_allowed() -> None:
    agent = Agent(
        "a",
        config=TestConfig(ToolCall("forecast", {"city": "A"}), ToolCall("forecast", {"city": "B"}), "done"),
        tools=[forecast],
        max_tool_rounds=2,
    )
    result = await agent.take_turn(USER)
    assert result.text == "done"
    assert len(result.tool_calls) == 2
    assert len(model_of(agent).requests) == 3


async def test_more_than_max_tool_rounds_is_a_model_error() -> None:
    calls = [ToolCall("forecast", {"city": str(i)}) for i in range(5)]
    agent = Agent("looper", config=TestConfig(*calls, "never"), tools=[forecast], max_tool_rounds=2)
    with pytest.raises(ModelError) as info:
        await agent.take_turn(USER)
    assert info.value.code == "model_error"
    assert "looper" in info.value.message and "2" in info.value.message
    assert len(model_of(agent).requests) == 3  # max_tool_rounds + 1 model calls, then it gives up


async def test_exhausted_script_is_a_model_error_with_a_clear_message() -> None:
    agent = Agent("alice", config=TestConfig("only line"))
    assert (await agent.take_turn(USER)).text == "only line"
    assert model_of(agent).exhausted
    with pytest.raises(ModelError) as info:
        await agent.take_turn(USER)
    message = info.value.message
    assert "exhausted" in message and "alice" in message and "1 turn" in message


async def test_empty_script_is_exhausted_at_once() -> None:
    agent = Agent("bob", config=TestConfig())
    with pytest.raises(ModelError, match="exhausted"):
        await agent.take_turn(USER)


@pytest.mark.parametrize("bad", [5, None, b"bytes", {"text": "x"}, ("a", "b")], ids=repr)
def test_test_config_refuses_turns_that_are_not_str_or_toolcall(bad: Any) -> None:
    with pytest.raises(TypeError, match="str or a ToolCall"):
        TestConfig("fine", bad)


async def test_each_agent_gets_its_own_script_cursor() -> None:
    config = TestConfig("one", "two")
    a, b = Agent("a", config=config), Agent("b", config=config)
    assert (await a.take_turn(USER)).text == "one"
    assert (await b.take_turn(USER)).text == "one"
    assert (await a.take_turn(USER)).text == "two"
    assert a.model is not b.model


# --- OfflineConfig ---------------------------------------------------------------------------------


async def test_offline_is_the_default_model() -> None:
    agent = Agent("x")
    assert isinstance(agent.config, OfflineConfig)
    result = await agent.take_turn(USER)
    assert result.text and result.text.startswith("[offline model]")
    assert result.model == "offline"


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "system", "content": "Only a prompt."}],
        [{"role": "user", "content": ""}],
        [{"role": "user", "content": "   "}],
        [{"role": "user", "content": None}],
        [
            {
                "role": "user",
                "content": "alice: how do we fail over the payments gateway when 5xx spikes above 10%?",
            }
        ],
        [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}],
    ],
    ids=["empty", "system-only", "blank", "spaces", "none", "long", "assistant-last"],
)
async def test_offline_is_deterministic_and_never_empty(messages: list[dict[str, Any]]) -> None:
    m1, m2 = OfflineConfig().create(), OfflineConfig().create()
    r1 = await m1.complete(ModelRequest(messages, [], "alice"))
    r2 = await m2.complete(ModelRequest(list(messages), [], "alice"))
    r3 = await m1.complete(ModelRequest(messages, [], "alice"))
    assert r1.text == r2.text == r3.text
    assert r1.text and r1.text.strip()
    assert "[offline model]" in r1.text
    assert not r1.tool_calls
    assert r1.tokens_out == len(r1.text.split())


async def test_offline_reply_reflects_the_last_user_message() -> None:
    model = OfflineConfig().create()
    reply = await model.complete(
        ModelRequest(
            [{"role": "user", "content": "first"}, {"role": "user", "content": "bob: status?"}], [], "a"
        )
    )
    assert reply.text is not None and "bob: status?" in reply.text and "first" not in reply.text
    long = " ".join(f"w{i}" for i in range(30))
    reply = await model.complete(ModelRequest([{"role": "user", "content": long}], [], "a"))
    assert (
        reply.text is not None
        and "w11" in reply.text
        and "w12" not in reply.text
        and reply.text.endswith("…")
    )


async def test_offline_agents_agree_across_instances() -> None:
    a1 = await Agent("same", config=OfflineConfig()).take_turn(USER)
    a2 = await Agent("same", config=OfflineConfig()).take_turn(USER)
    assert a1.text == a2.text


async def test_tool_schema_survives_postponed_annotations_of_local_types() -> None:
    """Under ``from __future__ import annotations`` a return type imported inside the enclosing
    function cannot be resolved, and is not needed: the schema comes from the parameters; a parameter
    whose type cannot be resolved either is taken as any value rather than failing."""
    from _postponed_tools import handoff_tool, local_type_tool

    from accord import Handoff

    transfer = handoff_tool()
    schema = transfer.spec.parameters
    assert schema["properties"]["reason"]["type"] == "string" and schema["required"] == ["reason"]
    assert schema["properties"]["times"]["type"] == "integer"
    result = await transfer.invoke({"reason": "billing"})
    assert isinstance(result, Handoff) and result.reason == "billing"
    pack = local_type_tool()
    assert pack.spec.parameters["properties"]["label"]["type"] == "string"
    assert await pack.invoke({"box": {"size": 3}, "label": "fragile"}) == "fragile"
