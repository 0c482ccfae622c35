"""``accord demo``: one support incident told through all five channel shapes, offline, on SQLite.

Every model here is scripted (``TestConfig``) — no network, no LLM — so the demo runs anywhere and
prints the same transcripts each time. What is real is everything around the models: the hub, its
durable SQLite log, turn enforcement, handoffs, auto-closes, audience addressing and the audit chain.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from .agents import Agent, tool
from .client import HubClient
from .demo_data import verify_chain
from .hub import Hub
from .link import LocalLink
from .model.envelope import Envelope
from .model.events import (
    EV_CHANNEL_CLOSED,
    EV_HANDOFF,
    EV_TEXT,
    EV_TOOL_CALL,
    HUB_SENDER,
    ORDERING_ROUND_ROBIN,
)
from .model.identity import Passport, Resume
from .protocol.graph import (
    AgentTarget,
    FromSpeaker,
    Handoff,
    TerminateTarget,
    ToolCalled,
    Transition,
    TransitionGraph,
)
from .store import StoreURL, open_store, parse_store_url
from .testing import TestConfig, ToolCall


@dataclass
class DemoResult:
    channels: dict[str, str] = field(default_factory=dict)  # title → channel id
    envelopes: int = 0
    audit_ok: bool = False
    seconds: float = 0.0


def _describe(env: Envelope, names: dict[str, str]) -> tuple[str, str, str]:
    who = names.get(env.sender_id, env.sender_id)
    d = env.event_data
    if env.event_type == EV_TEXT:
        body = str(d.get("text", ""))
        if env.audience:
            body = f"[to {', '.join(names.get(a, a) for a in env.audience)}] {body}"
        return who, "text", body
    if env.event_type == EV_TOOL_CALL:
        return who, "tool", f"{d.get('name')}({d.get('arguments') or ''}) → {d.get('result')}"
    if env.event_type == EV_HANDOFF:
        return who, "handoff", f"→ {names.get(str(d.get('target')), d.get('target'))}: {d.get('reason', '')}"
    if env.event_type == "channel.opened":
        targets = ", ".join(names.get(p, p) for p in d.get("participants", [])[1:])
        knobs = {k: v for k, v in (d.get("knobs") or {}).items() if k != "graph"}
        return who, env.event_type, f"{d.get('adapter')} with {targets}" + (f" {knobs}" if knobs else "")
    return who, env.event_type, str(d.get("reason", ""))


def print_transcript(console: Console, title: str, envs: list[Envelope], names: dict[str, str]) -> None:
    names = {**names, HUB_SENDER: "hub"}
    table = Table(show_header=True, header_style="bold", expand=True, box=None, pad_edge=False)
    table.add_column("#", justify="right", style="dim", width=3)
    table.add_column("from", style="cyan", no_wrap=True, width=12)
    table.add_column("event", style="magenta", no_wrap=True, width=15)
    table.add_column("content", overflow="fold")
    for env in envs:
        who, kind, body = _describe(env, names)
        table.add_row(str(env.seq), escape(who), kind, escape(body))
    console.print(Panel(table, title=title, title_align="left"))


@tool
def search_runbook(topic: str) -> str:
    """Look up the runbook section for a topic."""
    runbook = {
        "payments-5xx": "1) check the gateway error rate 2) fail over to the standby region "
        "3) page payments on-call",
    }
    return runbook.get(topic, "no runbook entry")


@tool
def request_changes(reason: str) -> Handoff:
    """Send the postmortem draft back to the writer."""
    return Handoff(target="scribe", reason=reason)


@tool
def approve() -> str:
    """Approve the postmortem."""
    return "approved"


async def run_demo(where: Path | StoreURL, console: Console) -> DemoResult:
    """The five shapes on a fresh store: a data directory (``demo_data.reset``) or a store URL."""
    started = time.perf_counter()
    result = DemoResult()
    spec = where if isinstance(where, StoreURL) else parse_store_url(where)
    store = open_store(spec)
    hub = await Hub.open(store, ttl_sweep_interval=0)
    link = LocalLink(hub)
    hc = HubClient(link, hub=hub)
    people = HubClient(link, hub=hub)
    console.print(f"[bold]Accord demo[/bold] — hub on {store.describe()}")
    console.print("[dim]Models are scripted (offline TestConfig): no network, no LLM.[/dim]\n")

    triage = await hc.register(
        Agent(
            "triage",
            prompt="You triage incidents.",
            config=TestConfig(
                "Checking the runbook now.",
                "Gateway 5xx is at 12%. Failing over to the standby region per the runbook.",
            ),
            tools=[search_runbook],
        ),
        Passport(name="triage"),
        Resume(claimed_capabilities=["triage"]),
    )
    kb = await hc.register(
        Agent(
            "kb",
            prompt="You answer from the knowledge base.",
            config=TestConfig(
                ToolCall("search_runbook", {"topic": "payments-5xx"}),
                "Runbook payments-5xx: check the gateway error rate, fail over to standby, "
                "page payments on-call.",
            ),
            tools=[search_runbook],
        ),
        Passport(name="kb"),
        Resume(claimed_capabilities=["knowledge"]),
    )
    dana = await people.register_human(Passport(name="dana", kind="human"))
    sam = await people.register_human(Passport(name="sam", kind="human"))
    sre = await hc.register(
        Agent(
            "sre",
            config=TestConfig("Error budget for payments is 90% spent this month.", "Agreed: add a canary."),
        ),
        Passport(name="sre"),
    )
    dev = await hc.register(
        Agent(
            "dev",
            config=TestConfig(
                "The deploy at 09:12 changed the gateway pool size.", "I'll own the canary work."
            ),
        ),
        Passport(name="dev"),
    )
    scribe = await hc.register(
        Agent(
            "scribe",
            config=TestConfig(
                "Draft: a config change exhausted the gateway pool; failover restored service in 14 minutes.",
                "Draft v2: at 09:12 a deploy shrank the gateway pool to 8; 5xx peaked at 12%; "
                "failover at 09:26 restored service. Action: canary config changes.",
            ),
        ),
        Passport(name="scribe"),
    )
    reviewer = await hc.register(
        Agent(
            "reviewer",
            config=TestConfig(
                ToolCall("request_changes", {"reason": "Add the timeline and the action item."}),
                ToolCall("approve"),
                "Approved for publication.",
            ),
            tools=[request_changes, approve],
        ),
        Passport(name="reviewer"),
    )
    names = {p.agent_id: p.name for p in (triage, kb, dana, sam, sre, dev, scribe, reviewer)}

    # 1. consulting: one question, one answer, auto-close
    ch = await triage.open(type="consulting", target="kb")
    await ch.send("What does the runbook say for payments 5xx?")
    await triage.wait_for_channel_event(
        ch.channel_id, lambda e: e.event_type == EV_CHANNEL_CLOSED, timeout=10
    )
    result.channels["consulting · triage asks kb"] = ch.channel_id

    # 2. conversation: a person and an agent, free-form, closed explicitly
    ch = await dana.open(type="conversation", target="triage")
    await ch.send("Payments is throwing 5xx. What do you see?")
    await dana.wait_for_channel_event(ch.channel_id, lambda e: e.event_type == EV_TEXT, timeout=10)
    await ch.send("Thanks, go ahead.")
    await dana.wait_for_channel_event(
        ch.channel_id,
        lambda e: e.event_type == EV_TEXT and "Failing over" in e.event_data["text"],
        timeout=10,
    )
    await ch.close()
    result.channels["conversation · dana and triage"] = ch.channel_id

    # 3. discussion: round-robin, the hub enforces the order
    ch = await dana.open(
        type="discussion", target=["sre", "dev"], knobs={"ordering": ORDERING_ROUND_ROBIN, "max_turns": 5}
    )
    await ch.send("Retro: why did payments fail, and what do we change?")
    await dana.wait_for_channel_event(
        ch.channel_id, lambda e: e.event_type == EV_TEXT and e.sender_id == dev.agent_id
    )
    await ch.send("Good. Let's add a canary for config changes.")
    await dana.wait_for_channel_event(ch.channel_id, lambda e: e.event_type == EV_CHANNEL_CLOSED, timeout=10)
    result.channels["discussion · round-robin retro"] = ch.channel_id

    # 4. workflow: a graph with a handoff that supersedes it
    graph = TransitionGraph(
        initial_speaker=dana.agent_id,
        transitions=[
            Transition(when=ToolCalled("approve"), then=TerminateTarget("approved")),
            Transition(when=FromSpeaker(dana.agent_id), then=AgentTarget(scribe.agent_id)),
            Transition(when=FromSpeaker(scribe.agent_id), then=AgentTarget(reviewer.agent_id)),
        ],
        max_turns=10,
    )
    ch = await dana.open(type="workflow", target=["scribe", "reviewer"], knobs={"graph": graph.to_dict()})
    await ch.send("Write the postmortem for the payments incident.")
    await dana.wait_for_channel_event(ch.channel_id, lambda e: e.event_type == EV_CHANNEL_CLOSED, timeout=10)
    result.channels["workflow · postmortem with review"] = ch.channel_id

    # 5. thread: N-party, free-form, stays open; an aside addressed to one person only
    ch = await dana.open(type="thread", target=["sam", "dev"], knobs={"title": "incident-2231"})
    await ch.send("Incident closed. Who owns the canary follow-up?")
    await dana.wait_for_channel_event(
        ch.channel_id, lambda e: e.event_type == EV_TEXT and e.sender_id == dev.agent_id, timeout=10
    )
    await ch.send("Sam, can you review dev's canary plan on Monday?", audience=[sam.agent_id])
    await sam.wait_for_channel_event(
        ch.channel_id, lambda e: e.sender_id == dana.agent_id and bool(e.audience)
    )
    result.channels["thread · incident-2231 (stays open)"] = ch.channel_id

    for title, cid in result.channels.items():
        envs = await hub.read_wal(cid)
        result.envelopes += len(envs)
        print_transcript(console, f"{title}  [dim]{cid}[/dim]", envs, names)

    await hc.close()
    await people.close()
    await hub.close()

    report = await verify_chain(spec)
    result.audit_ok = report.ok
    result.seconds = time.perf_counter() - started
    durable_in = spec.path if spec.scheme == "sqlite" else f"JetStream stream {spec.stream} on {spec.text}"
    console.print(
        f"\n{len(result.channels)} channels, {result.envelopes} envelopes, durable in {durable_in}; "
        f"audit chain: {'[green]verified[/green]' if report.ok else '[red]BROKEN[/red]'} "
        f"({report.records} records). {result.seconds:.2f}s."
    )
    first = next(iter(result.channels.values()))
    option = f" --data {spec.data_dir}" if spec.scheme == "sqlite" else f" --store '{spec.text}'"
    console.print(f"Replay any channel from its log: [bold].venv/bin/accord replay {first}{option}[/bold]")
    return result
