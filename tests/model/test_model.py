"""The value layer: ids, Envelope, Passport/Resume/Observed/Rule and the typed errors. Pure, no I/O."""

from __future__ import annotations

import re
import time
from itertools import pairwise
from typing import Any

import orjson
import pytest

from accord.model import errors
from accord.model.envelope import Envelope
from accord.model.errors import AccordError, InvalidInput
from accord.model.identity import DEFAULT_ORG, Observed, Passport, Resume, Rule
from accord.model.ids import PREFIXES, _Monotonic, has_prefix, new_id, new_ulid, ulid_ms

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")


def crockford_decode(body: str) -> int:
    """An independent Crockford base32 decoder (no I, L, O, U) for checking ids."""
    value = 0
    for ch in body:
        digit = CROCKFORD.find(ch)
        assert digit >= 0, f"{ch!r} is not a Crockford base32 digit"
        value = value * 32 + digit
    return value


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- ids -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", sorted(PREFIXES))
def test_new_id_has_prefix_and_length(prefix: str) -> None:
    value = new_id(prefix)
    assert value.startswith(prefix + "_")
    assert len(value) == len(prefix) + 1 + 26
    assert ULID_RE.match(value.removeprefix(prefix + "_"))
    assert has_prefix(value, prefix)
    other = "env" if prefix != "env" else "thr"
    assert not has_prefix(value, other)


def test_new_ulid_is_bare_26_chars() -> None:
    value = new_ulid()
    assert len(value) == 26
    assert ULID_RE.match(value)


@pytest.mark.parametrize("prefix", ["", "x", "ENV", "env_", "thread", "agent"])
def test_unknown_prefix_is_a_value_error(prefix: str) -> None:
    with pytest.raises(ValueError, match="unknown id prefix"):
        new_id(prefix)


def test_100k_ids_are_unique_and_generated_in_sorted_order() -> None:
    ids = [new_id("env") for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids
    # strictly increasing, not merely non-decreasing
    assert all(a < b for a, b in pairwise(ids))
    # 100k ids take a few tens of ms: many of them share a millisecond
    assert len({ulid_ms(i) for i in ids}) < len(ids)


def test_many_ids_in_one_millisecond_stay_strictly_ordered() -> None:
    gen = _Monotonic()
    ms = 1_700_000_000_123
    ulids = [gen.next(ms) for _ in range(20_000)]
    assert all(ulid_ms(u) == ms for u in ulids)
    assert len(set(ulids)) == len(ulids)
    assert sorted(ulids) == ulids
    # the random part grows by an unpredictable step of at least 2^32 within a millisecond
    rand = [crockford_decode(u) & ((1 << 80) - 1) for u in ulids]
    assert all(b - a >= 1 << 32 for a, b in pairwise(rand))


def test_successive_ids_do_not_predict_each_other() -> None:
    """A thread id and its first envelope id must not differ by one in the last digit (CSPRNG steps)."""
    ids = [new_id("env") for _ in range(10_000)]
    values = [crockford_decode(i.split("_", 1)[1]) for i in ids]
    assert all(a < b for a, b in pairwise(values))
    low = [(b - a) & ((1 << 64) - 1) for a, b in pairwise(values)]
    assert all(d > 1 << 32 for d in low)
    assert len(set(low)) == len(low)  # no fixed step either
    # the random parts of the last digits are spread, not counting up
    assert len({i[-4:] for i in ids}) > 9_000
    ms = max(now_ms(), ulid_ms(new_ulid())) + 5
    assert ulid_ms(new_id("thr", now_ms=ms)) == ms
    assert ulid_ms(new_id("env", now_ms=ms)) == ms


def test_ids_never_use_the_random_module(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect
    import random

    from accord.model import ids

    source = inspect.getsource(ids)
    assert not re.search(r"^\s*(import random|from random import)", source, re.MULTILINE)

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("ids must come from os.urandom, not random")

    monkeypatch.setattr(random, "Random", refuse)
    monkeypatch.setattr(random, "getrandbits", refuse)
    monkeypatch.setattr(random, "randrange", refuse)
    gen = _Monotonic()
    values = [gen.next(7_000_000) for _ in range(2_000)]  # > 512: the CSPRNG pool is refilled
    assert sorted(values) == values and len(set(values)) == len(values)


def test_a_clock_going_backwards_does_not_break_the_order() -> None:
    gen = _Monotonic()
    first = gen.next(2_000_000)
    earlier = gen.next(1_000_000)  # the clock stepped back
    assert earlier > first
    assert ulid_ms(earlier) == 2_000_000
    later = gen.next(3_000_000)
    assert later > earlier and ulid_ms(later) == 3_000_000


def test_exhausted_random_part_borrows_the_next_millisecond() -> None:
    gen = _Monotonic()
    ms = 5_000_000
    first = gen.next(ms)
    gen._last_rand = (1 << 80) - 1  # as if 2^80 ids had been minted in this millisecond
    nxt = gen.next(ms)
    assert nxt > first
    assert ulid_ms(nxt) == ms + 1


def test_public_ids_with_the_same_now_ms_sort_in_generation_order() -> None:
    # slightly ahead of the clock and of the shared generator, so it cannot be past ``ms`` already
    ms = max(now_ms(), ulid_ms(new_ulid())) + 2
    ids = [new_id("thr", now_ms=ms) for _ in range(5_000)]
    assert {ulid_ms(i) for i in ids} == {ms}
    assert sorted(ids) == ids and len(set(ids)) == len(ids)


def test_ulid_ms_round_trip_with_an_explicit_time() -> None:
    ms = max(now_ms(), ulid_ms(new_ulid())) + 3
    value = new_id("env", now_ms=ms)
    assert ulid_ms(value) == ms
    body = value.split("_", 1)[1]
    assert ulid_ms(body) == ms  # bare ULIDs too
    assert ulid_ms(body.lower()) == ms  # Crockford is case-insensitive
    assert crockford_decode(body) >> 80 == ms
    assert crockford_decode(body) < 1 << 128


def test_ulid_ms_round_trip_with_the_clock() -> None:
    previous = ulid_ms(new_ulid())
    before = now_ms()
    value = new_id("agt")
    after = now_ms()
    body = value.split("_", 1)[1]
    assert ULID_RE.match(body)
    ms = ulid_ms(value)
    assert crockford_decode(body) >> 80 == ms
    # a monotonic id never goes back behind the previous one, even if that one ran ahead of the clock
    assert before <= ms <= max(after, previous)
    assert ms >= previous


# --- Envelope --------------------------------------------------------------------------------------


def make_env(**over: Any) -> Envelope:
    fields: dict[str, Any] = {
        "envelope_id": "env_01JD0000000000000000000000",
        "channel_id": "thr_01JD0000000000000000000001",
        "seq": 7,
        "ts": 1_700_000_000.25,
        "event_type": "text",
        "event_data": {"text": "naïve ✓", "n": [1, 2, {"x": None}]},
        "sender_id": "agt_a",
        "audience": ["agt_b"],
        "causation_id": "env_01JD0000000000000000000002",
    }
    fields.update(over)
    return Envelope(**fields)


def test_envelope_dict_round_trip() -> None:
    env = make_env()
    data = env.to_dict()
    assert set(data) == {
        "envelope_id",
        "channel_id",
        "seq",
        "ts",
        "event_type",
        "event_data",
        "sender_id",
        "audience",
        "causation_id",
    }
    back = Envelope.from_dict(data)
    assert back == env
    assert back.to_dict() == data


def test_envelope_defaults_round_trip() -> None:
    env = make_env(audience=None, causation_id=None, event_data={})
    back = Envelope.decode(env.encoded())
    assert back == env
    assert back.audience is None and back.causation_id is None


def test_envelope_encoded_decode_round_trip() -> None:
    env = make_env()
    raw = env.encoded()
    assert orjson.loads(raw) == env.to_dict()
    back = Envelope.decode(raw)
    assert back == env
    assert back.encoded() == raw
    assert hash(back) == hash(env)


def test_encoded_is_cached() -> None:
    env = make_env()
    first = env.encoded()
    assert isinstance(first, bytes)
    assert env.encoded() is first
    assert env.encoded() is first


def test_decode_keeps_the_exact_stored_bytes() -> None:
    # bytes that are valid but not in orjson's canonical form (spaces, key order)
    raw = (
        b'{"seq": 1, "envelope_id": "env_x", "channel_id": "thr_x", "ts": 1.5, "event_type": "text",'
        b' "event_data": {"text": "hi"}, "sender_id": "agt_a", "audience": null, "causation_id": null}'
    )
    env = Envelope.decode(raw)
    assert env.encoded() == raw  # the audit chain hashes the stored bytes: they must not be re-encoded
    assert env.encoded() is env.encoded()


def test_envelope_equality_is_by_content() -> None:
    assert make_env() == make_env()
    assert make_env() != make_env(seq=8)
    assert make_env() != "not an envelope"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("envelope_id"),
        lambda d: d.pop("channel_id"),
        lambda d: d.pop("seq"),
        lambda d: d.pop("ts"),
        lambda d: d.pop("event_type"),
        lambda d: d.pop("sender_id"),
        lambda d: d.update(seq="seven"),
        lambda d: d.update(seq=None),
        lambda d: d.update(ts="noon"),
        lambda d: d.update(ts=[1]),
        lambda d: d.update(event_data="text"),
        lambda d: d.update(event_data=[1, 2]),
        lambda d: d.update(audience=5),
    ],
    ids=[
        "no-envelope_id",
        "no-channel_id",
        "no-seq",
        "no-ts",
        "no-event_type",
        "no-sender_id",
        "seq-not-int",
        "seq-none",
        "ts-not-float",
        "ts-list",
        "event_data-str",
        "event_data-list",
        "audience-int",
    ],
)
def test_from_dict_of_malformed_data_is_invalid_input(mutate: Any) -> None:
    data = make_env().to_dict()
    mutate(data)
    with pytest.raises(InvalidInput) as info:
        Envelope.from_dict(data)
    assert info.value.code == "invalid_input"


@pytest.mark.parametrize("data", [[1, 2], None, "envelope"], ids=["list", "none", "str"])
def test_from_dict_of_a_non_dict_is_invalid_input(data: Any) -> None:
    # from_dict's contract: malformed data → InvalidInput, whatever its shape
    with pytest.raises(InvalidInput) as info:
        Envelope.from_dict(data)
    assert info.value.code == "invalid_input"


def test_from_dict_refuses_a_string_audience() -> None:
    # list("agt_b") would silently become ['a', 'g', 't', '_', 'b']: an audience nobody is in
    data = make_env().to_dict()
    data["audience"] = "agt_b"
    with pytest.raises(InvalidInput):
        Envelope.from_dict(data)


@pytest.mark.parametrize("raw", [b"not json", b"{", b"[1, 2]"], ids=repr)
def test_decode_of_malformed_bytes_is_invalid_input(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as info:
        Envelope.decode(raw)
    assert info.value.code == "invalid_input"


def test_visible_to_audience_rule() -> None:
    public = make_env(audience=None, sender_id="agt_a")
    assert public.visible_to("agt_a")
    assert public.visible_to("agt_b")
    assert public.visible_to("agt_anyone")

    addressed = make_env(audience=["agt_b", "agt_c"], sender_id="agt_a")
    assert addressed.visible_to("agt_a")  # the sender always sees its own envelope
    assert addressed.visible_to("agt_b")
    assert addressed.visible_to("agt_c")
    assert not addressed.visible_to("agt_d")

    empty = make_env(audience=[], sender_id="agt_a")  # addressed to nobody but its sender
    assert empty.visible_to("agt_a")
    assert not empty.visible_to("agt_b")


# --- Passport, Rule, Resume, Observed --------------------------------------------------------------


def test_passport_defaults_and_round_trip() -> None:
    p = Passport(name="alice")
    assert p.agent_id == "" and p.org_id == DEFAULT_ORG and p.kind == "agent"
    full = Passport(name="dana", agent_id="usr_1", org_id="org_x", owner="ops", model=None, kind="human")
    assert Passport.from_dict(full.to_dict()) == full
    assert Passport.from_dict({"name": "bob"}) == Passport(name="bob")


@pytest.mark.parametrize("name", ["", "   ", "\t\n", None, 5, "x" * 129])
def test_passport_refuses_a_bad_name(name: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        Passport(name=name)
    assert info.value.code == "invalid_input"


def test_passport_name_at_the_length_limit_is_fine() -> None:
    assert Passport(name="x" * 128).name == "x" * 128


@pytest.mark.parametrize("kind", ["robot", "", "Agent", None])
def test_passport_refuses_a_bad_kind(kind: Any) -> None:
    with pytest.raises(InvalidInput, match="kind"):
        Passport(name="alice", kind=kind)


def test_passport_from_dict_validates_too() -> None:
    with pytest.raises(InvalidInput):
        Passport.from_dict({"name": "alice", "kind": "robot"})
    with pytest.raises(InvalidInput):
        Passport.from_dict({"name": ""})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate_per_minute": -1.0},
        {"rate_per_minute": 0},
        {"burst": 0},
        {"burst": -3},
        {"inbox_cap": 0},
        {"inbox_cap": -1},
        {"max_open_channels": 0},
        {"turn_budget": -1},
    ],
    ids=repr,
)
def test_rule_refuses_bad_limits(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        Rule(**kwargs)
    assert info.value.code == "invalid_input"


def test_rule_accepts_edge_values_and_round_trips() -> None:
    rule = Rule(
        allow_from=["alice"],
        deny_from=["mallory"],
        rate_per_minute=0.5,
        burst=1,
        inbox_cap=1,
        channel_types=["consulting"],
        max_open_channels=1,
        turn_budget=0,
    )
    assert Rule.from_dict(rule.to_dict()) == rule
    assert Rule.from_dict({**Rule().to_dict(), "future_field": 1}) == Rule()  # unknown keys ignored
    with pytest.raises(InvalidInput):
        Rule.from_dict({"inbox_cap": 0})


def test_observed_round_trip() -> None:
    obs = Observed(
        turns=5,
        channels_opened=2,
        replies_on_time=3,
        replies_late=1,
        failures={"turn": 2, "tool": 1},
        last_active_ts=1_700_000_000.5,
    )
    assert Observed.from_dict(obs.to_dict()) == obs
    assert Observed.from_dict({}) == Observed()
    assert Observed.from_dict(orjson.loads(orjson.dumps(obs.to_dict()))) == obs


def test_resume_round_trip() -> None:
    resume = Resume(
        claimed_capabilities=["triage", "search"],
        domains=["payments"],
        summary="On call.",
        observed=Observed(turns=3, failures={"turn": 1}),
    )
    data = resume.to_dict()
    assert Resume.from_dict(data) == resume
    assert Resume.from_dict(orjson.loads(orjson.dumps(data))) == resume
    assert Resume.from_dict({}) == Resume()
    # to_dict hands out copies: editing them does not change the record
    data["claimed_capabilities"].append("x")
    data["observed"]["failures"]["turn"] = 99
    assert resume.claimed_capabilities == ["triage", "search"]
    assert resume.observed.failures == {"turn": 1}


# --- errors ---------------------------------------------------------------------------------------


def all_error_classes() -> list[type[AccordError]]:
    out: list[type[AccordError]] = []
    todo = [AccordError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub.__module__ == errors.__name__:
                out.append(sub)
                todo.append(sub)
    return out


def test_there_are_many_error_classes() -> None:
    classes = all_error_classes()
    assert len(classes) >= 25
    for name in ("InvalidInput", "NotFound", "SeqConflict", "ModelError", "NotYourTurn", "InboxFull"):
        assert getattr(errors, name) in classes


def test_every_error_has_a_unique_non_empty_code() -> None:
    classes = all_error_classes()
    codes = [cls.code for cls in classes]
    for cls in classes:
        assert isinstance(cls.code, str) and cls.code.strip(), cls
        assert re.fullmatch(r"[a-z][a-z_]*", cls.code), cls.code
        assert cls.code != AccordError.code, cls
        assert isinstance(cls.http_status, int) and 400 <= cls.http_status < 600
        assert isinstance(cls.retryable, bool)
    dupes = sorted({c for c in codes if codes.count(c) > 1})
    assert not dupes, f"duplicate error codes: {dupes}"


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_error_round_trips_through_its_dict(cls: type[AccordError]) -> None:
    err = cls(f"{cls.__name__} happened", details={"stream": "thr_x", "n": 3})
    data = err.to_dict()
    assert data == {
        "code": cls.code,
        "message": f"{cls.__name__} happened",
        "details": {"stream": "thr_x", "n": 3},
    }
    back = errors.from_dict(orjson.loads(orjson.dumps(data)))
    assert type(back) is cls
    assert back.message == err.message
    assert str(back) == str(err)
    assert back.details == err.details
    assert back.code == cls.code
    assert errors.error_class(cls.code) is cls


def test_unknown_error_code_falls_back_to_the_base_class() -> None:
    back = errors.from_dict({"code": "from_the_future", "message": "?"})
    assert type(back) is AccordError
    assert back.message == "?"
    assert type(errors.from_dict({})) is AccordError
    base = AccordError("base")
    assert type(errors.from_dict(base.to_dict())) is AccordError


def test_error_repr_and_details_default() -> None:
    err = errors.NotYourTurn("wait")
    assert err.details == {}
    assert "not_your_turn" in repr(err) and "wait" in repr(err)


@pytest.mark.parametrize(
    "data",
    [
        {"allow_from": 5},
        {"deny_from": "bob"},
        {"channel_types": [1]},
        {"inbox_cap": "10"},
        {"burst": 1.5},
        {"rate_per_minute": "fast"},
        {"turn_budget": True},
    ],
)
def test_a_rule_from_the_wire_is_type_checked(data: dict[str, object]) -> None:
    """A remote client's Rule fails where it is given, not later in someone else's open."""
    with pytest.raises(InvalidInput):
        Rule.from_dict(data)


@pytest.mark.parametrize("data", [{"name": "a", "owner": 3}, {"name": "a", "model": []}, {"owner": "x"}, []])
def test_a_passport_from_the_wire_is_type_checked(data: object) -> None:
    with pytest.raises(InvalidInput):
        Passport.from_dict(data)  # type: ignore[arg-type]
