"""WsLink against a real `accord serve`: reconnects, typed errors, back-pressure, catch-up, takeover.

Every test talks to a separate ``accord serve`` process over loopback through
``HubClient(WsLink(url, key))``; nothing of the link or of the server is mocked or patched. Where a
test needs the network to misbehave on cue — a socket that stays down while things happen, or one
that dies without the server noticing — the link's TCP goes through ``Relay``, a small relay in the
test that can cut, refuse or silently swallow connections.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import websockets
from test_rest import Server, cli

from accord import (
    EV_CHANNEL_CLOSED,
    EV_TEXT,
    Envelope,
    Hub,
    HubClient,
    HumanClient,
    LocalLink,
    MemoryStore,
    Passport,
    RemoteHub,
    Rule,
    WsLink,
)
from accord.client.rest import AsyncAccordClient
from accord.link.ws import WsConnection
from accord.model.errors import (
    AccessDenied,
    Disconnected,
    InboxFull,
    InvalidInput,
    NameTaken,
    NotFound,
    Unauthenticated,
    UnknownTarget,
)
from accord.model.events import EV_PARTICIPANT_ADDED, EV_PARTICIPANT_REMOVED

# --- helpers ------------------------------------------------------------------------------------------


class _Pair:
    __slots__ = ("client", "frozen", "upstream")

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.frozen = False


class Relay:
    """A TCP relay in front of the server that the test controls.

    ``cut()`` aborts every relayed connection on both sides (the server notices at once);
    ``blocked`` makes it accept and immediately reset new connections (the link's reconnect attempts
    fail until it is cleared); ``stall()`` kills the client side of every connection but keeps the
    server side open and silent, as a dead NAT or a pulled cable would: the server does not notice.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.blocked = False
        self.refused = 0
        self.pairs: set[_Pair] = set()
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for pair in list(self.pairs):
            pair.frozen = False
            pair.client.transport.abort()
            pair.upstream.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = _Pair(writer, up_writer)
        self.pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer, pair), self._pipe(up_reader, writer, pair))
        finally:
            self.pairs.discard(pair)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, pair: _Pair) -> None:
        try:
            while data := await src.read(1 << 16):
                if not pair.frozen:
                    dst.write(data)
                    await dst.drain()
        except OSError:
            if not pair.frozen:
                dst.transport.abort()
            return
        if not pair.frozen:
            dst.close()

    def cut(self) -> None:
        for pair in list(self.pairs):
            pair.client.transport.abort()
            pair.upstream.transport.abort()

    def stall(self) -> None:
        for pair in list(self.pairs):
            pair.frozen = True
            pair.client.transport.abort()

    def end_stalled(self) -> None:
        """Close the server side of the stalled connections at last (it finally times out)."""
        for pair in list(self.pairs):
            if pair.frozen:
                pair.upstream.transport.abort()


async def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def expected_for(wal: list[Envelope], me: str, away_after: int | None = None) -> list[int]:
    """The seqs fan-out delivers to ``me`` from a channel's log: the audience rule, the sender excluded,
    from its ``participant.added`` on, and its own ``participant.removed`` last.

    ``away_after``: ``me`` was away after that seq and, when it came back, no longer took part; catch-up
    then gives it only its own removals (the visibility function is asked at the moment: DESIGN §7)."""
    out: list[int] = []
    member = False
    for env in wal:
        if away_after is not None and env.seq > away_after:
            if env.event_type == EV_PARTICIPANT_REMOVED and env.event_data.get("participant") == me:
                out.append(env.seq)
            continue
        if env.seq == 1:
            member = me in env.event_data.get("participants", ())
        concerns_me = env.event_data.get("participant") == me
        if env.event_type == EV_PARTICIPANT_ADDED and concerns_me:
            member = True
        elif env.event_type == EV_PARTICIPANT_REMOVED and concerns_me:
            out.append(env.seq)
            member = False
            continue
        if member and env.sender_id != me and env.visible_to(me):
            out.append(env.seq)
    return out


def conn_of(hc: HubClient) -> WsConnection:
    conn = hc._conn
    assert isinstance(conn, WsConnection)
    return conn


async def fill(
    send: Callable[[str], Awaitable[Any]], label: str, landed: Callable[[], Awaitable[None]] | None = None
) -> int:
    """Send until the hub refuses with inbox_full, then once more after ``landed()`` made sure every
    credit the reader returned has reached the hub (so the count does not depend on timing)."""
    n = 0
    while True:
        try:
            await send(f"{label}{n}")
            n += 1
        except InboxFull:
            if landed is not None:
                await landed()
            try:
                await send(f"{label}{n}")
                n += 1
            except InboxFull:
                return n


async def restart(server: Server, *, hard: bool) -> None:
    """Stop the server (SIGTERM, or kill -9) and start it again on the same port and data dir."""
    proc = server.proc
    assert proc is not None
    if hard:
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 20)
        server.proc = None
    else:
        code = await asyncio.to_thread(server.stop)
        assert code in (0, -signal.SIGTERM)
    await asyncio.to_thread(server.start)


# --- 1. reconnect ×20 ---------------------------------------------------------------------------------


async def test_twenty_cuts_every_envelope_once_in_order(served) -> None:  # type: ignore[no-untyped-def]
    """The issue's acceptance test: 400 numbered messages from a producer on its own link reach a
    consumer whose socket is cut 20 times — 10 client-side aborts, 10 server restarts (SIGTERM and
    kill -9 alternating) — exactly once and in seq order, and no retried send is appended twice."""
    server: Server = served[0]
    key: str = served[1]
    total, cap = 400, 25
    started = time.monotonic()
    received: list[Envelope] = []
    gate = asyncio.Event()
    gate.set()

    async def on_envelope(env: Envelope) -> None:
        await gate.wait()
        received.append(env)

    consumer_hc = HubClient(WsLink(server.url, key, max_backoff=0.2))
    producer_hc = HubClient(WsLink(server.url, key, max_backoff=0.2))
    wal_hub = RemoteHub(server.url, key)
    try:
        consumer = await consumer_hc.register_human(
            Passport(name="consumer"), rule=Rule(inbox_cap=cap), on_envelope=on_envelope
        )
        producer = await producer_hc.register(None, Passport(name="producer"))
        channel = await producer.open("conversation", "consumer")
        cid = channel.channel_id
        sent = 0
        inbox_full = 0

        async def send(text: str) -> None:
            nonlocal inbox_full
            while True:
                try:
                    await producer.send(cid, text)
                    return
                except InboxFull:  # the consumer is behind by `cap`: a retryable refusal
                    inbox_full += 1
                    await asyncio.sleep(0.01)

        async def produce() -> None:
            nonlocal sent
            for i in range(total):
                await send(f"n{i}")
                sent += 1
                await asyncio.sleep(0.002)

        producing = asyncio.create_task(produce())
        drops = soft = hard = 0
        for cut in range(20):
            # every cut hits a link that is back and delivering: the previous cut's reconnect is done
            # and the consumer has received something since
            seen_before = len(received)
            await eventually(
                lambda c=cut, n=seen_before: (
                    conn_of(consumer_hc).reconnects >= c
                    and ((sent >= (c + 1) * total // 22 and len(received) > n) or producing.done())
                ),
                30,
                f"deliveries before cut {cut}",
            )
            if cut % 2 == 0:
                await conn_of(consumer_hc).drop()
                if cut % 4 == 0:
                    await conn_of(producer_hc).drop()  # the producer's in-flight send is retried
                drops += 1
            else:
                await restart(server, hard=cut % 4 == 3)
                hard += cut % 4 == 3
                soft += cut % 4 == 1
        await producing

        def caught_up() -> bool:
            return bool(received) and received[-1].event_data.get("text") == f"n{total - 1}"

        await eventually(caught_up, 30, "the consumer to catch up")

        # no credit leaked across 20 reconnects: with the consumer's handler held, the hub accepts
        # exactly cap + 1 more sends (cap in the link's inbox, one in the dispatcher's hand)
        gate.clear()
        extra = await fill(channel.send, "extra", _landed(consumer_hc, cid))
        assert extra == cap + 1
        gate.set()
        await channel.close()
        await eventually(lambda: received[-1].event_type == EV_CHANNEL_CLOSED, 10, "the close")

        wal = await wal_hub.read_wal(cid)
        mine = [e for e in received if e.channel_id == cid]
        assert [e.seq for e in mine] == expected_for(wal, consumer.agent_id)  # once each, in order
        assert [e.envelope_id for e in mine] == [e.envelope_id for e in wal if e.seq in {m.seq for m in mine}]
        texts = [e.event_data["text"] for e in wal if e.event_type == EV_TEXT]
        assert texts == [f"n{i}" for i in range(total)] + [f"extra{i}" for i in range(extra)]
        reconnects = conn_of(consumer_hc).reconnects
        assert reconnects >= 20
        assert conn_of(producer_hc).reconnects >= 10
        print(
            f"\nwslink x20: {drops} client-side kills, {soft} SIGTERM + {hard} kill -9 restarts; "
            f"{len(mine)} envelopes delivered once and in order ({total} texts + {extra} to check credit); "
            f"consumer reconnects {reconnects}, producer reconnects {conn_of(producer_hc).reconnects}; "
            f"inbox_full retries {inbox_full}; {time.monotonic() - started:.1f}s"
        )
    finally:
        await consumer_hc.close()
        await producer_hc.close()
        await wal_hub.close()


async def test_sends_in_flight_when_the_socket_drops_are_appended_once(served) -> None:  # type: ignore[no-untyped-def]
    """Bursts of concurrent sends with the sender's socket cut mid-burst: the link retries what got no
    answer with the same client_msg_id, and the hub appends each exactly once — including the sends it
    was appending at the moment the socket died (the server must not forget those)."""
    server: Server = served[0]
    key: str = served[1]
    consumer_hc = HubClient(WsLink(server.url, key))
    producer_hc = HubClient(WsLink(server.url, key))
    wal_hub = RemoteHub(server.url, key)
    try:
        await consumer_hc.register_human(Passport(name="reader"), on_envelope=lambda env: None)
        producer = await producer_hc.register(None, Passport(name="writer"))
        channel = await producer.open("conversation", "reader")
        conn = conn_of(producer_hc)
        rounds, burst = 12, 40
        for r in range(rounds):
            # each cut must hit a live socket (a cut while the last one is still reconnecting is a no-op)
            await eventually(lambda r=r: conn.reconnects == r and conn._ready.is_set(), 10, f"round {r}")
            sends = [asyncio.create_task(channel.send(f"r{r}-{i}")) for i in range(burst)]
            await asyncio.sleep(0.002 * (r % 4))
            await conn.drop()
            envs = await asyncio.gather(*sends)
            assert [e.event_data["text"] for e in envs] == [f"r{r}-{i}" for i in range(burst)]
        wal = await wal_hub.read_wal(channel.channel_id)
        texts = [e.event_data["text"] for e in wal if e.event_type == EV_TEXT]
        assert sorted(texts) == sorted(f"r{r}-{i}" for r in range(rounds) for i in range(burst))
        # the last cut may land after its burst was answered: its reconnect can still be under way
        await eventually(lambda: conn.reconnects == rounds, 10, "the last reconnect")
        print(f"\n{rounds} cuts under {burst} concurrent sends: {len(texts)} texts, none twice")
    finally:
        await consumer_hc.close()
        await producer_hc.close()
        await wal_hub.close()


# --- 2. typed errors over the wire ---------------------------------------------------------------------


async def test_typed_errors_over_the_wire(served) -> None:  # type: ignore[no-untyped-def]
    server: Server = served[0]
    acme_key: str = served[1]
    globex_key: str = served[2]

    # a bad key is refused at connect, before anything else
    with pytest.raises(Unauthenticated):
        await HubClient(WsLink(server.url, "ak_not_a_key")).register_human(Passport(name="x"))
    with pytest.raises(Unauthenticated):
        await WsLink(server.url, acme_key + "x").connect()
    with pytest.raises(InvalidInput):
        WsLink("ftp://example.com", acme_key)

    async with AsyncAccordClient(server.url, acme_key) as rest:
        bot = await rest.create_agent("scoped-bot")
        await rest.create_agent("other-bot")
    # scoped keys are made with the CLI, which opens the store: stop the server for a moment
    server.stop()
    scoped_key = json.loads(
        cli("keys", "create", "--org", bot.org_id, "--agent", bot.id, "--json", "--data", server.data)
    )
    server.start()

    acme = HubClient(WsLink(server.url, acme_key))
    globex = HubClient(WsLink(server.url, globex_key))
    scoped = HubClient(WsLink(server.url, scoped_key["api_key"], max_backoff=0.2))
    try:
        alice = await acme.register_human(Passport(name="alice"), on_envelope=lambda env: None)
        bob = await acme.register(None, Passport(name="bob"))
        with pytest.raises(UnknownTarget):
            await alice.open("conversation", "nobody-by-that-name")
        channel = await alice.open("conversation", "bob")
        cid = channel.channel_id
        await channel.send("acme only")

        # another org's channel does not exist, whatever the call
        gina = await globex.register_human(Passport(name="gina"), on_envelope=lambda env: None)
        gconn = conn_of(globex)
        with pytest.raises(NotFound):
            await gconn.read_wal(cid)
        with pytest.raises(NotFound):
            await gina.channel_info(cid)
        with pytest.raises(NotFound):
            await gina.send(cid, "let me in")
        with pytest.raises(NotFound):
            await gina.close_channel(cid)
        with pytest.raises(NotFound):
            await gina.history(cid)
        with pytest.raises(UnknownTarget):  # Acme's people are not reachable by name from Globex
            await gina.open("conversation", "alice")
        assert [e.event_data.get("text") for e in await conn_of(acme).read_wal(cid)][-1] == "acme only"
        info = await alice.channel_info(cid)
        assert info["status"] == "active"

        # an agent-scoped key acts as its agent and nobody else
        me = await scoped.register(None, Passport(name="scoped-bot"))
        assert me.agent_id == bot.id
        with pytest.raises(AccessDenied):
            await scoped.register(None, Passport(name="brand-new"))
        with pytest.raises(AccessDenied):
            await scoped.register(None, Passport(name="other-bot"))
        with pytest.raises(AccessDenied):
            await scoped.attach("other-bot")
        with pytest.raises(NotFound):  # a channel its agent is not in does not exist for this key
            await (await scoped.connection()).close_channel(bob.agent_id, cid, "no")
        with pytest.raises(NotFound):  # and does not see a channel its agent is not in
            await conn_of(scoped).read_wal(cid)
        with pytest.raises(AccessDenied):
            await scoped.register_human(Passport(name="alice"))

        # the same link still works after every refusal
        assert (await channel.send("still fine")).event_data["text"] == "still fine"

        # a key revoked while its link is away: the reconnect is refused for good, and callers hear it
        await asyncio.to_thread(server.stop)
        revoke = ("keys", "revoke", scoped_key["key_id"], "--org", bot.org_id, "--data", server.data)
        await asyncio.to_thread(cli, *revoke)
        await asyncio.to_thread(server.start)
        await eventually(lambda: me.inbox.closed, 10, "the refused reconnect")
        with pytest.raises(Unauthenticated):
            await conn_of(scoped).read_wal(cid)
        with pytest.raises(Unauthenticated):
            await me.send(cid, "anyone there?")
        assert (await channel.send("the admin key still works")).seq > 0
    finally:
        for hc in (acme, globex, scoped):
            await hc.close()


async def test_malformed_hub_frames_get_an_error_reply_and_the_socket_lives(served) -> None:  # type: ignore[no-untyped-def]
    server: Server = served[0]
    key: str = served[1]
    url = f"ws://127.0.0.1:{server.port}/v1/socket/websocket?vsn=2.0.0"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        refs = iter(range(1, 1000))

        async def call(event: str, payload: Any, topic: str = "hub") -> dict[str, Any]:
            ref = str(next(refs))
            await ws.send(json.dumps(["1", ref, topic, event, payload]))
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if frame[1] == ref:
                    assert frame[3] == "phx_reply" and frame[2] == topic
                    return frame[4]  # type: ignore[no-any-return]

        # before joining `hub`, its calls are refused
        assert (await call("read_wal", {"channel_id": "thr_x"}))["response"]["code"] == "unmatched_topic"
        assert (await call("phx_join", {}))["status"] == "ok"
        bad: list[tuple[str, Any, str]] = [
            ("no_such_call", {}, "unknown_event"),
            ("register", {}, "invalid_input"),
            ("register", {"passport": "me"}, "invalid_input"),
            ("register", {"passport": {}}, "invalid_input"),
            ("register", {"passport": {"name": 5}}, "invalid_input"),
            ("register", {"passport": {"name": "p1"}, "resume": "x"}, "invalid_input"),
            ("register", {"passport": {"name": "p2"}, "rule": [1]}, "invalid_input"),
            ("register", {"passport": {"name": "p3"}, "rule": {"inbox_cap": "x"}}, "invalid_input"),
            ("register", {"passport": {"name": "p4"}, "queued": "x"}, "invalid_input"),
            ("attach", None, "invalid_input"),
            ("attach", {"name": "nobody", "resume": 5}, "invalid_input"),
            ("attach", {"name": "nobody", "resume": {"channels": {"c": -1}, "since": 0}}, "invalid_cursor"),
            ("attach", {"name": "x", "resume": {"channels": {"c": 2**63}, "since": 0}}, "invalid_cursor"),
            ("open", {"targets": "bob"}, "invalid_input"),
            ("open", {"targets": ["bob"], "initiator": "a", "adapter": "x", "knobs": []}, "invalid_input"),
            ("open", {"targets": ["bob"], "initiator": "a", "adapter": "x", "ttl": "1"}, "invalid_input"),
            ("send", "text", "invalid_input"),
            ("send", [1, 2], "invalid_input"),
            ("send", {"proposal": {}}, "invalid_input"),
            (
                "send",
                {"proposal": {"channel_id": "thr_x", "event_type": 1, "sender_id": "a"}},
                "invalid_input",
            ),
            ("close", {"actor": "a", "channel_id": "thr_x", "reason": 5}, "invalid_input"),
            ("history", {"actor": "a", "channel_id": "thr_x", "last": "10"}, "invalid_input"),
            ("read_wal", {"channel_id": ["thr_x"]}, "invalid_input"),
            ("read_wal", {"channel_id": "thr_x", "after_seq": -1}, "invalid_cursor"),
            ("read_wal", {"channel_id": "thr_nope"}, "not_found"),
            ("unregister", {"agent_id": "agt_not_mine"}, "access_denied"),
            ("report_failure", {"agent_id": "a", "capability": 5}, "invalid_input"),
        ]
        for event, payload, code in bad:
            reply = await call(event, payload)
            assert reply["status"] == "error", (event, payload, reply)
            assert reply["response"]["code"] == code, (event, payload, reply)
            assert reply["response"].get("message"), (event, payload, reply)
        # frames that are not Phoenix frames, and acks that make no sense, are ignored without a word
        await ws.send("{not json")
        await ws.send(json.dumps(["1", "x", "hub"]))
        await ws.send(json.dumps(["1", None, "hub", "ack", {"agent_id": "nobody", "n": "many"}]))
        await ws.send(json.dumps(["1", None, "hub", "ack", []]))

        # the socket is still fully usable: heartbeat, and a real register + read
        assert (await call("heartbeat", {}, topic="phoenix")) == {"status": "ok", "response": {}}
        reply = await call("register", {"passport": {"name": "survivor", "kind": "human"}})
        assert reply["status"] == "ok" and reply["response"]["passport"]["name"] == "survivor"
        assert reply["response"]["inbox_cap"] == 1000


# --- 3. back-pressure across the network ---------------------------------------------------------------


async def _drain(human: HumanClient, until: Callable[[list[Envelope]], bool]) -> list[Envelope]:
    """Read until ``until(what was read)`` holds, however long each envelope takes to arrive."""
    out: list[Envelope] = []
    while not until(out):
        out.append(await human.next_envelope(timeout=30))
    return out


def _invited(got: list[Envelope]) -> bool:
    return any(e.event_type == "channel.invite" for e in got)


def _count(n: int) -> Callable[[list[Envelope]], bool]:
    return lambda got: len(got) >= n


def _landed(hc: HubClient, channel_id: str) -> Callable[[], Awaitable[None]]:
    """Credit returned by ``hc``'s reader has reached the hub: the pending acks are flushed onto the
    socket, then a call on the same socket comes back — the hub handles its frames in order."""

    async def landed() -> None:
        conn = conn_of(hc)
        conn._send_acks()
        for _ in range(3):  # let the ack frames' send tasks write to the socket first
            await asyncio.sleep(0)
        await conn.read_wal(channel_id, last=1)

    return landed


async def _accepted_in_process(cap: int) -> int:
    """The same experiment on an in-process hub: how many sends a non-reading person absorbs."""
    hub = await Hub.open(MemoryStore(), ttl_sweep_interval=0)
    hc = HubClient(LocalLink(hub), hub=hub)
    try:
        slow = await hc.register_human(Passport(name="slow"), rule=Rule(inbox_cap=cap))
        fast = await hc.register(None, Passport(name="fast"))
        channel = await fast.open("conversation", "slow")
        await _drain(slow, _invited)
        return await fill(channel.send, "m")
    finally:
        await hc.close()
        await hub.close()


async def test_back_pressure_across_the_network(served) -> None:  # type: ignore[no-untyped-def]
    """A person who stops reading costs the sender ``inbox_full`` after a bounded number of sends —
    the same number as in-process — and reading again returns the credit over the socket (``ack``),
    also after a reconnect whose replay was taken out before the link was ready again."""
    server: Server = served[0]
    key: str = served[1]
    cap = 5
    # a HumanClient holds cap envelopes in its pull queue, one in its dispatcher's hand, cap in the inbox
    assert await _accepted_in_process(cap) == 2 * cap + 1
    async with Relay(server.port) as relay:
        slow_hc = HubClient(WsLink(relay.url, key, max_backoff=0.1))
        fast_hc = HubClient(WsLink(server.url, key))
        try:
            slow = await slow_hc.register_human(Passport(name="slow"), rule=Rule(inbox_cap=cap))
            assert slow.inbox.cap == cap  # the hub's rule reached the link
            fast = await fast_hc.register(None, Passport(name="fast"))
            channel = await fast.open("conversation", "slow")
            await _drain(slow, _invited)  # the invitation and the rest of the opening
            landed = _landed(slow_hc, channel.channel_id)

            accepted = await fill(channel.send, "a", landed)
            assert accepted == 2 * cap + 1
            with pytest.raises(InboxFull) as refused:
                await channel.send("one too many")
            assert refused.value.details == {"recipient": slow.agent_id}

            # one read frees one slot, and only one
            assert (await slow.next_envelope(timeout=5)).event_data["text"] == "a0"
            await eventually(lambda: len(slow.inbox) == cap - 1, 5, "the dispatcher to move one on")
            assert await fill(channel.send, "b", landed) == 1
            # reading everything returns all the credit
            got = [e.event_data["text"] for e in await _drain(slow, _count(accepted))]
            assert got == [f"a{i}" for i in range(1, accepted)] + ["b0"]
            assert await fill(channel.send, "c", landed) == 2 * cap + 1
            await _drain(slow, _count(2 * cap + 1))

            # credit survives reconnects: sends made while the person's socket is down are replayed
            # on reconnect and read at once; every one of those reads is credited
            for rnd in range(3):
                relay.blocked = True
                relay.cut()
                await eventually(lambda: relay.refused > 0, 5, "a refused reconnect")
                relay.refused = 0
                away = [f"away{rnd}-{i}" for i in range(cap - 1)]
                for text in away:
                    await channel.send(text)
                relay.blocked = False
                got = [(await slow.next_envelope(timeout=5)).event_data["text"] for _ in away]
                assert got == away
                assert await fill(channel.send, f"r{rnd}-", landed) == 2 * cap + 1
                await _drain(slow, _count(2 * cap + 1))
            assert conn_of(slow_hc).reconnects == 3
        finally:
            await slow_hc.close()
            await fast_hc.close()


# --- 4. catch-up edge cases ----------------------------------------------------------------------------


async def test_catch_up_of_what_happened_while_the_socket_was_down(served) -> None:  # type: ignore[no-untyped-def]
    """dana's socket is cut and kept down (the relay refuses her reconnects) while things happen
    around her; when she is let back in, she gets exactly what fan-out would have pushed meanwhile:
    (a) a channel opened and closed, (b) a thread she was added to — from her participant.added on,
    (c) a thread she was removed from — her participant.removed last, (d) a thread she was added to
    and removed from again, (e) as (a) with a hub restart in the gap."""
    server: Server = served[0]
    key: str = served[1]
    got: list[Envelope] = []
    async with Relay(server.port) as relay, AsyncAccordClient(server.url, key) as rest:
        dana_hc = HubClient(WsLink(relay.url, key, max_backoff=0.1))
        ops_hc = HubClient(WsLink(server.url, key, max_backoff=0.2))
        try:
            # auto_accept off: accepting an invitation to a closed channel fails, and the client then
            # skips its handler for that invitation; here every delivered envelope must be seen
            dana = await dana_hc.register_human(
                Passport(name="dana"), on_envelope=got.append, auto_accept=False
            )
            ops = await ops_hc.register(None, Passport(name="ops"))
            me = dana.agent_id
            log = conn_of(ops_hc)

            async def while_away(happen: Callable[[], Awaitable[None]], *, restart_hub: bool = False) -> None:
                relay.blocked = True
                relay.cut()
                await eventually(lambda: relay.refused > 0, 5, "dana's link to try again")
                before = conn_of(dana_hc).reconnects
                await happen()
                if restart_hub:
                    await restart(server, hard=False)
                relay.refused = 0
                relay.blocked = False
                await eventually(lambda: conn_of(dana_hc).reconnects == before + 1, 5, "the reconnect")

            def of(cid: str) -> list[Envelope]:
                return [e for e in got if e.channel_id == cid]

            def texts(cid: str) -> list[str]:
                return [e.event_data["text"] for e in of(cid) if e.event_type == EV_TEXT]

            # (a) a channel to her is opened and closed while she is away
            quick: list[str] = []

            async def open_and_close() -> None:
                channel = await ops.open("conversation", "dana", wait=False)
                quick.append(channel.channel_id)
                await channel.close()

            await while_away(open_and_close)
            (cid,) = quick
            await eventually(lambda: bool(of(cid)) and of(cid)[-1].event_type == EV_CHANNEL_CLOSED, 5, "a")
            wal = await log.read_wal(cid)
            assert [e.seq for e in of(cid)] == expected_for(wal, me)
            assert "channel.invite" in [e.event_type for e in of(cid)]

            # (b) added to a team thread while away: she hears from her participant.added on
            team = await rest.create_team("ops-team")
            await rest.add_member(team.id, agent_id=ops.agent_id)
            thread = await rest.create_thread(team.id, "status")
            tid = thread.id
            await ops.send(tid, "early-1")
            joined: list[Any] = []

            async def add_her() -> None:
                await ops.send(tid, "early-2")
                joined.append(await rest.add_member(team.id, user_id=me))
                await ops.send(tid, "late-1")
                await ops.send(tid, "late-2")

            await while_away(add_her)
            await eventually(lambda: texts(tid) == ["late-1", "late-2"], 5, "b")
            first = of(tid)[0]
            assert first.event_type == EV_PARTICIPANT_ADDED and first.event_data["participant"] == me
            assert [e.seq for e in of(tid)] == expected_for(await log.read_wal(tid), me)

            # (c) removed while away: her own participant.removed is the last she gets of the thread,
            # and what was said while she was away is not hers any more (she may no longer read it)
            left_at = of(tid)[-1].seq

            async def remove_her() -> None:
                await ops.send(tid, "bye-1")
                await rest.remove_member(joined[0].id)
                await ops.send(tid, "after-removal")

            await while_away(remove_her)
            await eventually(lambda: of(tid)[-1].event_type == EV_PARTICIPANT_REMOVED, 5, "c")
            await ops.send(tid, "live-after-removal")
            marker = await ops.open("conversation", "dana", wait=False)  # a later envelope she does get
            await eventually(lambda: bool(of(marker.channel_id)), 5, "the marker")
            last = of(tid)[-1]
            assert last.event_type == EV_PARTICIPANT_REMOVED and last.event_data["participant"] == me
            assert texts(tid) == ["late-1", "late-2"]
            assert [e.seq for e in of(tid)] == expected_for(await log.read_wal(tid), me, left_at)

            # (d) added and removed again, all while away, in a thread she never heard of before
            brief = await rest.create_thread(team.id, "brief")
            bid = brief.id

            async def in_and_out() -> None:
                await ops.send(bid, "before her")
                membership = await rest.add_member(team.id, user_id=me)
                await ops.send(bid, "while she is in")
                await rest.remove_member(membership.id)
                await ops.send(bid, "after her")

            await while_away(in_and_out)
            await eventually(
                lambda: bool(of(bid)) and of(bid)[-1].event_type == EV_PARTICIPANT_REMOVED, 5, "d"
            )
            assert texts(bid) == []  # gone again when she came back: only her removal reaches her
            assert [e.seq for e in of(bid)] == expected_for(await log.read_wal(bid), me, 0)

            # the first thread re-added and removed her too (team membership spans threads)
            def removals(cid: str) -> int:
                return sum(e.event_type == EV_PARTICIPANT_REMOVED for e in of(cid))

            await eventually(lambda: removals(tid) == 2, 5, "d: the first thread's second removal")
            assert [e.seq for e in of(tid)] == expected_for(await log.read_wal(tid), me, left_at)

            # (e) as (a), with a hub restart in the gap: what the hub remembers of recent closes
            # must survive it, or the channel is never heard of
            quick.clear()
            await while_away(open_and_close, restart_hub=True)
            (cid2,) = quick
            await eventually(lambda: bool(of(cid2)) and of(cid2)[-1].event_type == EV_CHANNEL_CLOSED, 10, "e")
            assert [e.seq for e in of(cid2)] == expected_for(await log.read_wal(cid2), me)
            assert conn_of(dana_hc).reconnects == 5
        finally:
            await dana_hc.close()
            await ops_hc.close()


# --- 5. takeover -------------------------------------------------------------------------------------


async def test_takeover_when_the_server_has_not_noticed_the_dead_socket(served) -> None:  # type: ignore[no-untyped-def]
    server: Server = served[0]
    key: str = served[1]
    got: list[Envelope] = []
    async with Relay(server.port) as relay:
        erin_hc = HubClient(WsLink(relay.url, key, max_backoff=0.1))
        ops_hc = HubClient(WsLink(server.url, key))
        rival_hc = HubClient(WsLink(server.url, key))  # same key, another process
        try:
            erin = await erin_hc.register_human(Passport(name="erin"), on_envelope=got.append)
            ops = await ops_hc.register(None, Passport(name="ops"))
            channel = await ops.open("conversation", "erin")

            def texts() -> list[str]:
                return [e.event_data["text"] for e in got if e.event_type == EV_TEXT]

            await channel.send("before")
            await eventually(lambda: texts() == ["before"], 5, "before")

            # her socket dies silently: her side sees it, the server's side stays open and quiet
            relay.blocked = True
            relay.stall()
            await eventually(lambda: relay.refused > 0, 5, "erin's link to try again")
            with pytest.raises(NameTaken):
                await rival_hc.register_human(Passport(name="erin"))
            with pytest.raises(NameTaken):
                await rival_hc.attach("erin")
            await channel.send("during")  # pushed into the dead socket: only the resume can save it

            # her link's reconnect attaches with takeover and gets what the dead socket swallowed
            relay.blocked = False
            await eventually(lambda: texts() == ["before", "during"], 5, "the replay")
            assert conn_of(erin_hc).reconnects == 1
            assert erin.agent_id in {p.agent_id for p in erin_hc.participants}

            # the old socket finally closes server-side: that must not detach her from the new one
            relay.end_stalled()
            await asyncio.sleep(0.3)
            await channel.send("after")
            await eventually(lambda: texts() == ["before", "during", "after"], 5, "after")
            with pytest.raises(NameTaken):
                await rival_hc.attach("erin")
            assert len(got) == len({e.envelope_id for e in got})
        finally:
            await erin_hc.close()
            await ops_hc.close()
            await rival_hc.close()


# --- 6. close and unregister ---------------------------------------------------------------------------


async def test_close_detaches_cleanly_and_unregister_works_remotely(served) -> None:  # type: ignore[no-untyped-def]
    server: Server = served[0]
    key: str = served[1]
    hc = HubClient(WsLink(server.url, key))
    other = HubClient(WsLink(server.url, key))
    try:
        frank = await hc.register_human(Passport(name="frank"))
        gus = await hc.register(None, Passport(name="gus"))
        conn = conn_of(hc)

        # one participant closed: detached at once, while the link stays up for the other
        await frank.close()
        frank2 = await other.register_human(Passport(name="frank"))  # name_taken if still attached
        assert frank2.agent_id == frank.agent_id
        with pytest.raises(NameTaken):
            await other.attach("gus")

        # HubClient.close(): every participant detached, the socket closed, nothing left running
        await hc.close()
        assert hc.participants == [] and hc._conn is None
        assert conn._runner is not None and conn._runner.done()
        assert gus.inbox.closed and frank.inbox.closed
        with pytest.raises(Disconnected):
            await conn.read_wal("thr_whatever")
        gus2 = await other.attach("gus")  # free at once: no waiting for the server to time out
        assert gus2.agent_id == gus.agent_id
        channel = await frank2.open("conversation", "gus")
        assert (await channel.send("hello gus")).seq > 0

        # unregister: the identity is gone for good, and its name can be taken by a new one
        await gus2.unregister()
        with pytest.raises(UnknownTarget):
            await frank2.open("conversation", gus.agent_id)
        with pytest.raises(UnknownTarget):
            await frank2.open("conversation", "gus")
        fresh = await other.register(None, Passport(name="gus"))
        assert fresh.agent_id != gus.agent_id
        with pytest.raises(AccessDenied):
            await conn_of(other).report_failure(gus.agent_id, "turn")
    finally:
        await hc.close()
        await other.close()
