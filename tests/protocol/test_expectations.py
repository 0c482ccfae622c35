"""Deadlines as pure math: reply_within, ack timeouts and TTLs, driven with explicit timestamps."""

from __future__ import annotations

from typing import Any

import pytest
from _protocol_log import ChannelLog

from accord.model.errors import AccordError
from accord.model.events import EV_CHANNEL_CLOSED, EV_EXPECTATION_VIOLATED, STATUS_ACTIVE
from accord.protocol.expectations import Due, due, next_deadline, normalize_expectations, reply_within

A, B, C = "agt_alice", "agt_bob", "agt_carol"


def violate(log: ChannelLog, d: Due, ts: float) -> None:
    """What the hub's sweeper writes for a ``violate`` Due."""
    log.hub(EV_EXPECTATION_VIOLATED, {"reason": d.reason, **d.data}, ts=ts)


def conversation(*expectations: Any, **kw: Any) -> ChannelLog:
    log = ChannelLog("conversation", A, [B], expectations=list(expectations), ts=100.0, **kw)
    log.send(B, "channel.ack", ts=101.0)
    return log


def test_reply_within_validates() -> None:
    assert reply_within(30).to_dict() == {"kind": "reply_within", "seconds": 30.0, "on_violation": "notify"}
    for bad in ((0,), (-1,), ("30",), (30, "explode")):
        with pytest.raises(AccordError) as info:
            reply_within(*bad)
        assert info.value.code == "invalid_knobs"
    assert normalize_expectations([{"kind": "reply_within", "seconds": 5}]) == [reply_within(5).to_dict()]
    with pytest.raises(AccordError):
        normalize_expectations([{"kind": "typing_within", "seconds": 5}])


def test_reply_within_auto_close() -> None:
    log = conversation(reply_within(30, on_violation="auto_close"))
    assert next_deadline(log.state) is None and due(log.state, 1e9) == []
    log.text(A, "ping", ts=110.0)
    assert log.state.expect_from == [B] and log.state.expect_deadline == 140.0
    assert next_deadline(log.state) == 140.0
    assert due(log.state, 139.999) == []
    [d] = due(log.state, 140.0)
    assert d.action == "violate" and d.reason == "reply_within"
    assert (
        d.data["awaiting"] == [B] and d.data["on_violation"] == "auto_close" and d.data["deadline"] == 140.0
    )
    violate(log, d, ts=140.5)
    assert log.state.pending_close == "expectation_violated"
    assert due(log.state, 200.0) == []  # the close is pending: nothing more falls due
    log.close_if_pending()
    assert log.state.close_reason == "expectation_violated" and next_deadline(log.state) is None


def test_reply_within_notify_keeps_the_channel_open() -> None:
    log = conversation(reply_within(30))
    log.text(A, "ping", ts=110.0)
    [d] = due(log.state, 150.0)
    assert d.data["on_violation"] == "notify"
    violate(log, d, ts=150.0)
    assert log.state.pending_close is None and log.state.status == STATUS_ACTIVE
    assert next_deadline(log.state) is None and due(log.state, 1e9) == []
    log.text(B, "late pong", ts=160.0)  # still allowed, and it starts the next expectation
    assert log.state.expect_from == [A] and next_deadline(log.state) == 190.0


def test_a_reply_satisfies_and_rearms() -> None:
    log = conversation(reply_within(30), ttl=1000.0)
    log.text(A, ts=110.0)
    log.text(B, ts=120.0)
    assert log.state.expect_from == [A] and log.state.expect_deadline == 150.0
    assert next_deadline(log.state) == 150.0  # earlier than the TTL at 1100
    log.text(B, ts=125.0)  # the same side again: still waiting for alice, from the newest turn
    assert log.state.expect_from == [A] and log.state.expect_deadline == 155.0


def test_round_robin_awaits_only_the_next_speaker_and_audience_narrows() -> None:
    log = ChannelLog("discussion", A, [B, C], expectations=[reply_within(10)], auto_accept=True)
    log.text(A, ts=1.0)
    assert log.state.expect_from == [B]
    free = ChannelLog(
        "discussion", A, [B, C], knobs={"ordering": "free"}, expectations=[reply_within(10)], auto_accept=True
    )
    free.text(A, ts=1.0)
    assert free.state.expect_from == [B, C]
    free.text(A, audience=[C], ts=2.0)
    assert free.state.expect_from == [C] and free.state.expect_deadline == 12.0


def test_consulting_answer_closes_without_a_new_expectation() -> None:
    log = ChannelLog("consulting", A, [B], expectations=[reply_within(10)], auto_accept=True)
    log.text(A, "q", ts=1.0)
    assert log.state.expect_from == [B]
    log.text(B, "r", ts=2.0)
    assert log.state.pending_close == "consulting_complete"
    assert log.state.expect_deadline is None and due(log.state, 100.0) == []


def test_ack_timeout() -> None:
    log = ChannelLog("discussion", A, [B, C], ack_timeout=5.0, ttl=60.0, ts=100.0)
    assert next_deadline(log.state) == 105.0
    assert due(log.state, 104.0) == []
    log.send(B, "channel.ack", ts=102.0)
    [d] = due(log.state, 105.0)
    assert d == Due("close", "ack_timeout", {"waiting_for": [C]})
    # both overdue while invited: the ack timeout is the one close reported
    assert [x.reason for x in due(log.state, 500.0)] == ["ack_timeout"]
    log.send(C, "channel.ack", ts=103.0)
    assert next_deadline(log.state) == 160.0  # only the TTL remains once active


def test_ttl() -> None:
    log = conversation(ttl=60.0)
    assert next_deadline(log.state) == 160.0
    assert due(log.state, 159.0) == []
    assert due(log.state, 160.0) == [Due("close", "ttl_expired", {"ttl": 60.0})]
    log.hub(EV_CHANNEL_CLOSED, {"reason": "ttl_expired"}, ts=160.0)
    assert next_deadline(log.state) is None and due(log.state, 1e9) == []
