"""The hash-chained audit log: one record per appended envelope and per refusal.

Each record carries ``prev`` (the SHA-256 of the previous record) and ``hash`` (SHA-256 of ``prev`` and
the record's canonical JSON). An envelope record also carries the SHA-256 of the envelope's stored
bytes. So ``verify`` detects an edited, inserted or deleted audit record, and an edited or deleted
channel envelope — anything short of rewriting the whole chain from the edit onwards, which an operator
can rule out by keeping the latest ``hash`` somewhere else (``accord audit verify`` prints it).

Audit records are Envelopes in the ``audit`` stream, appended in the same group commit as the
envelopes they describe: an envelope is never acknowledged without its audit record.

Each record also names the ``org`` it concerns (inside the hashed body, so it is tamper-evident too):
for a channel envelope the sender's org (the channel's own org for hub-written envelopes), for a
registry event the org it is about, for a refusal the org of the session that was refused. ``GET
/v1/audit`` shows an org exactly the records tagged with it; records without an org (written before
the field existed, or about nobody in particular) are shown to no org.

Refusals of one API key are bounded (``RefusalCoalescer``): within one second of the hub's clock,
the first ``burst`` refusals with the same (key, code, action) are recorded one by one, further ones
only counted, and the count is written as one ``audit.refusals_coalesced`` record once that second
ended. A flood of bad requests then adds at most ``burst + 1`` records per (key, code, action) and
second, and the coalescer holds a small dict per key refused in the current second only.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ..model.envelope import Envelope
from ..model.events import HUB_SENDER
from ..protocol.registry import RegistryState
from ..store.base import LogStore

AUDIT_STREAM: Final = "audit"
AU_ENVELOPE: Final = "audit.envelope"
AU_REFUSAL: Final = "audit.refusal"
AU_COALESCED: Final = "audit.refusals_coalesced"
GENESIS: Final = "0" * 64


def _chain(prev: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(prev.encode() + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _stored_json(rec: Envelope, canonical: bytes, digest: str) -> bytes:
    """``rec.encoded()`` built around the body's canonical JSON rather than by encoding it again.

    The layout is ``Envelope.encoded()``'s (same keys in the same order); only ``event_data`` differs
    in key order (sorted, then ``hash``), which JSON readers do not see. Joined pieces make a bytes
    object of its own size, as ``kept_json`` would.
    """
    return b"".join(
        (
            b'{"envelope_id":',
            orjson.dumps(rec.envelope_id),
            b',"channel_id":',
            orjson.dumps(rec.channel_id),
            b',"seq":',
            b"%d" % rec.seq,
            b',"ts":',
            orjson.dumps(rec.ts),
            b',"event_type":',
            orjson.dumps(rec.event_type),
            b',"event_data":',
            canonical[:-1],
            b',"hash":"',
            digest.encode(),
            b'"},"sender_id":',
            orjson.dumps(rec.sender_id),
            b',"audience":null,"causation_id":null}',
        )
    )


class AuditChain:
    """Builds chained audit records. Not thread-safe; the hub owns one."""

    __slots__ = ("last_hash", "last_seq")

    def __init__(self, last_seq: int = 0, last_hash: str = GENESIS) -> None:
        self.last_seq = last_seq
        self.last_hash = last_hash

    def _record(self, event_type: str, body: dict[str, Any], ts: float) -> Envelope:
        """Chain ``body`` and wrap it in the audit stream's next envelope, encoding the body once.

        The canonical (key-sorted) JSON that the hash covers is also what the record stores as its
        ``event_data``, with ``"hash"`` appended (see ``_stored_json``). A verifier decodes it, drops
        ``hash`` and re-encodes it sorted, which gives back the same canonical bytes: records written
        before (when the body was encoded again, unsorted, for storage) and after verify alike.
        """
        seq = self.last_seq = self.last_seq + 1
        prev = self.last_hash
        body["prev"] = prev
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.sha256(prev.encode() + canonical).hexdigest()
        body["hash"] = digest
        self.last_hash = digest
        # an audit record is identified by its seq in the chain
        rec = Envelope(f"aud_{seq}", AUDIT_STREAM, seq, ts, event_type, body, HUB_SENDER)
        rec._json = _stored_json(rec, canonical, digest)
        return rec

    def envelope(self, env: Envelope, stream: str, *, org: str | None = None) -> Envelope:
        body = {
            "org": org,
            "stream": stream,
            "seq": env.seq,
            "envelope_id": env.envelope_id,
            "event_type": env.event_type,
            "sender_id": env.sender_id,
            "sha256": hashlib.sha256(env.encoded()).hexdigest(),
        }
        return self._record(AU_ENVELOPE, body, env.ts)

    def refusal(
        self,
        *,
        ts: float,
        actor: str,
        action: str,
        code: str,
        message: str,
        channel_id: str | None,
        org: str | None = None,
        key_id: str | None = None,
    ) -> Envelope:
        body = {
            "org": org,
            "actor": actor,
            "action": action,
            "code": code,
            "message": message,
            "channel_id": channel_id,
        }
        if key_id is not None:
            body["key_id"] = key_id
        return self._record(AU_REFUSAL, body, ts)

    def coalesced(self, ts: float, pending: Coalesced) -> Envelope:
        """The refusals a coalescer only counted: ``count`` more of (key, code, action) in the second
        that began at ``second``, after the ones recorded one by one."""
        body = {
            "org": pending.org,
            "key_id": pending.key_id,
            "action": pending.action,
            "code": pending.code,
            "count": pending.count,
            "second": pending.second,
        }
        return self._record(AU_COALESCED, body, ts)


@dataclass(slots=True)
class Coalesced:
    """Refusals counted, not recorded, in one second: what an ``audit.refusals_coalesced`` holds."""

    key_id: str
    org: str | None
    code: str
    action: str
    second: int
    count: int = 0


_OVERFLOW: Final = "*"  # code and action of a key's refusals beyond ``max_kinds`` kinds in a second


class RefusalCoalescer:
    """Decides which refusals of an API key get a record of their own (see the module docstring).

    Memory: one small dict per key refused in the current second, each of at most ``max_kinds``
    (code, action) entries (further kinds share one ``*`` entry), and at most ``max_keys`` keys (the
    oldest window is ended early beyond that). A window is dropped as soon as its second is over.
    """

    __slots__ = ("_windows", "burst", "max_keys", "max_kinds")

    def __init__(self, burst: int = 4, max_kinds: int = 16, max_keys: int = 10_000) -> None:
        self.burst = burst
        self.max_kinds = max_kinds
        self.max_keys = max_keys
        # key → (its second, (code, action) → [refusals seen, the Coalesced to flush]); in window order
        self._windows: dict[str, tuple[int, dict[tuple[str, str], list[Any]]]] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def admit(
        self, key_id: str, code: str, action: str, org: str | None, now: float
    ) -> tuple[bool, list[Coalesced]]:
        """Whether this refusal gets a record of its own, and the counts of ended windows to write
        first (in order, so the chain reads in time order)."""
        second = int(now)
        due = self.due(now)
        window = self._windows.get(key_id)
        if window is None:
            if len(self._windows) >= self.max_keys:
                due.extend(self._end(next(iter(self._windows))))
            window = self._windows[key_id] = (second, {})
        kinds = window[1]
        kind = (code, action)
        if kind not in kinds and len(kinds) >= self.max_kinds:
            kind = (_OVERFLOW, _OVERFLOW)
        entry = kinds.get(kind)
        if entry is None:
            entry = kinds[kind] = [0, Coalesced(key_id, org, kind[0], kind[1], window[0])]
        entry[0] += 1
        if entry[0] <= self.burst and kind[0] != _OVERFLOW:
            return True, due
        entry[1].count += 1
        return False, due

    def due(self, now: float, *, everything: bool = False) -> list[Coalesced]:
        """End the windows whose second is over (all of them with ``everything``): their counts."""
        second = int(now)
        out: list[Coalesced] = []
        while self._windows:
            key_id, (started, _) = next(iter(self._windows.items()))
            if started >= second and not everything:
                break  # windows are kept in the order they began: the rest are current too
            out.extend(self._end(key_id))
        return out

    def pending(self) -> bool:
        return any(e[1].count for _, kinds in self._windows.values() for e in kinds.values())

    def _end(self, key_id: str) -> list[Coalesced]:
        _, kinds = self._windows.pop(key_id)
        return [e[1] for e in kinds.values() if e[1].count]


def registry_org(state: RegistryState, env: Envelope) -> str | None:
    """The org a registry event is about (``state`` already folded it), or None when it is nobody's
    in particular (``resume.observed`` batches, the rows of a removed membership)."""
    d = env.event_data

    def text(key: str, within: dict[str, Any] = d) -> str | None:
        value = within.get(key)
        return value if isinstance(value, str) else None

    passport = d.get("passport")
    org = text("org_id") or (text("org_id", passport) if isinstance(passport, dict) else None)
    if org is not None:
        return org
    member = state.members.get(text("agent_id") or "")
    if member is not None:
        return member.passport.org_id
    key = state.keys.get(text("key_id") or "")
    if key is not None:
        return key.org_id
    visa = state.visas.get(text("visa_id") or "")
    if visa is not None:
        return visa.org_id
    invite = state.invites.get(text("invite_id") or "")
    team = state.teams.get(invite.team_id if invite is not None else text("team_id") or "")
    return team.org_id if team is not None else None


def render(rec: Envelope) -> dict[str, Any]:
    """An audit record as ``GET /v1/audit`` shows it: the chain link (``prev``) stays inside."""
    body = {k: v for k, v in rec.event_data.items() if k not in ("prev", "hash", "org")}
    return {
        "seq": rec.seq,
        "ts": rec.ts,
        "type": rec.event_type.removeprefix("audit."),
        "org": rec.event_data.get("org"),
        "hash": rec.event_data.get("hash"),
        "data": body,
    }


async def read_org(
    store: LogStore, org_id: str, *, after_seq: int = 0, limit: int = 100, scan: int = 20_000
) -> tuple[list[Envelope], int]:
    """The audit records tagged with ``org_id`` after ``after_seq``, at most ``limit`` of them.

    Scans at most about ``scan`` records per call, so one org's read costs bounded work however busy
    the other orgs are: the page may then hold fewer than ``limit`` records. Returns the records and
    the seq to continue from (0 once the end of the log was reached).
    """
    out: list[Envelope] = []
    cursor = after_seq
    scanned = 0
    while len(out) < limit and scanned < scan:
        batch = await store.read(AUDIT_STREAM, after_seq=cursor, limit=min(max(limit * 4, 500), scan))
        if not batch:
            return out, 0
        scanned += len(batch)
        for rec in batch:
            cursor = rec.seq
            if rec.event_data.get("org") == org_id:
                out.append(rec)
                if len(out) == limit:
                    break
    more = await store.read(AUDIT_STREAM, after_seq=cursor, limit=1)
    return out, cursor if more else 0


@dataclass
class VerifyReport:
    records: int = 0
    envelopes_checked: int = 0
    refusals: int = 0
    last_hash: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify(
    records: AsyncIterator[Envelope],
    fetch: Callable[[str, int], Awaitable[Envelope | None]],
    stream_lengths: dict[str, int] | None = None,
    max_problems: int = 50,
) -> VerifyReport:
    """Walk the chain; re-hash every record and every envelope it points at.

    ``fetch(stream, seq)`` returns the stored envelope; ``stream_lengths`` (stream → last seq) lets
    verify also notice envelopes that were appended without an audit record or deleted.
    """
    report = VerifyReport()
    prev = GENESIS
    expected_seq = 1
    covered: dict[str, int] = {}

    def problem(text: str) -> None:
        if len(report.problems) < max_problems:
            report.problems.append(text)

    async for rec in records:
        report.records += 1
        if rec.seq != expected_seq:
            problem(f"audit seq {rec.seq} follows {expected_seq - 1}: records missing or reordered")
        expected_seq = rec.seq + 1
        body = dict(rec.event_data)
        stated = body.pop("hash", None)
        if body.get("prev") != prev:
            problem(f"audit #{rec.seq}: prev hash does not match the previous record")
        if _chain(str(body.get("prev")), body) != stated:
            problem(f"audit #{rec.seq}: record hash mismatch (the record was edited)")
        prev = str(stated)
        if rec.event_type == AU_REFUSAL:
            report.refusals += 1
        elif rec.event_type == AU_COALESCED:
            report.refusals += int(body.get("count") or 0)
        elif rec.event_type == AU_ENVELOPE:
            stream, seq = str(body["stream"]), int(body["seq"])
            covered[stream] = max(covered.get(stream, 0), seq)
            env = await fetch(stream, seq)
            if env is None:
                problem(f"audit #{rec.seq}: envelope {stream}#{seq} is missing from its log")
            else:
                report.envelopes_checked += 1
                if hashlib.sha256(env.encoded()).hexdigest() != body["sha256"]:
                    problem(f"audit #{rec.seq}: envelope {stream}#{seq} was modified after it was appended")
    report.last_hash = prev
    for stream, last in sorted((stream_lengths or {}).items()):
        if covered.get(stream, 0) < last:
            seen = covered.get(stream, 0)
            problem(f"stream {stream} has envelopes up to #{last} but the audit log covers #{seen}")
    return report


async def verify_store(store: LogStore) -> VerifyReport:
    """Verify the whole audit chain of a store, paging through it (``accord audit verify``)."""

    async def records() -> AsyncIterator[Envelope]:
        after = 0
        while True:
            batch = await store.read(AUDIT_STREAM, after_seq=after, limit=5000)
            if not batch:
                return
            for rec in batch:
                yield rec
            after = batch[-1].seq

    async def fetch(stream: str, seq: int) -> Envelope | None:
        got = await store.read(stream, after_seq=seq - 1, limit=1)
        return got[0] if got and got[0].seq == seq else None

    lengths = {s: await store.last_seq(s) for s in await store.streams() if s != AUDIT_STREAM}
    return await verify(records(), fetch, lengths)
