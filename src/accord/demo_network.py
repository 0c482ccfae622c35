"""``accord demo``: two companies, one shared thread — and what each of them can *not* see.

Acme (the customer) and Globex (its implementation partner) each get private teams, threads and
knowledge. Acme opens the shared network ``acme-rollout`` and invites Globex; in its thread
``rollout-status`` both companies' people and agents coordinate a rollout, the agents answering through
``participate`` routines run by the routine worker. Acme's support network routes a customer's request
from Intake to a specialist with the triage script. Then the demo shows what each org can see, the
routine runs and the audit chain. Everything is real (hub, SQLite log, routines, knowledge search,
privacy checks) except, by default, the model: see ``demo_story``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from . import demo_report as report
from . import demo_story as story
from .agents.models.base import Model
from .demo_data import verify_chain
from .hub import Hub
from .hub.audit import VerifyReport
from .hub.session import Session
from .model.envelope import Envelope, Proposal
from .model.errors import NotFound
from .model.events import EV_TEXT
from .model.identity import Passport
from .model.records import Org
from .routines.worker import RoutineWorker
from .store import StoreURL, open_store, parse_store_url


@dataclass
class Side:
    """One company as the demo built it."""

    company: story.Company
    org: Org
    session: Session
    ids: dict[str, str] = field(default_factory=dict)  # participant name → id
    private_threads: dict[str, str] = field(default_factory=dict)  # channel id → title
    doc_ids: set[str] = field(default_factory=set)
    private_texts: list[str] = field(default_factory=list)  # what must never reach the other org


@dataclass
class SupportCase:
    request: str
    routed_to: str | None = None
    specialist: str | None = None
    answer: str | None = None


@dataclass
class StoryResult:
    acme: Side
    globex: Side
    team_id: str = ""
    thread_id: str = ""
    transcript: list[tuple[str, str, str, str]] = field(default_factory=list)  # who, org, kind, text
    support: list[SupportCase] = field(default_factory=list)
    privacy: list[tuple[str, str, str]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    audit: VerifyReport | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        runs_ok = all(r["status"] == "succeeded" for r in self.runs)
        return self.audit is not None and self.audit.ok and runs_ok


async def _company(hub: Hub, co: story.Company) -> Side:
    org, _key = await hub.create_org(co.name)
    side = Side(co, org, hub.agent_session(org.org_id))
    s = side.session
    for person in (co.liaison, *co.extra_people):
        side.ids[person] = (await hub.register(s, Passport(name=person, kind="human"))).agent_id
    for spec in (co.agent, *co.extra_agents):
        passport = Passport(name=spec.name, lookup_key=spec.lookup_key, identity=spec.identity)
        side.ids[spec.name] = (await hub.register(s, passport)).agent_id
    for agent_id in side.ids.values():
        hub.detach(s, agent_id)  # the routine worker acts for them, through the org's session
    team = await hub.teams.create(s, co.private_team, f"{co.name} only")
    for member in (co.liaison, co.agent.name):
        await hub.teams.add_member(s, team.team_id, side.ids[member])
    for title, note in co.private_notes:
        thread = await hub.teams.create_thread(s, team.team_id, title)
        side.private_threads[thread.channel_id] = title
        await _say(hub, s, side.ids[co.liaison], thread.channel_id, note)
        side.private_texts.append(note)
    for doc in co.docs:
        side.doc_ids.add((await hub.knowledge.add(s, doc.title, doc.content)).doc_id)
        side.private_texts.append(doc.title)  # a passage in a prompt always comes with its title
    return side


async def _say(hub: Hub, s: Session, who: str, channel_id: str, text: str) -> Envelope:
    return await hub.submit(s, Proposal(channel_id, EV_TEXT, {"text": text}, who))


async def _routine(hub: Hub, s: Session, agent_id: str, name: str, **how: Any) -> None:
    routine = await hub.routines.create(s, agent_id, name=name, event_type="thread.message_added", **how)
    await hub.routines.set_status(s, routine.routine_id, "active")


async def _shared_network(hub: Hub, acme: Side, globex: Side, result: StoryResult) -> None:
    """Acme creates acme-rollout and its thread, invites Globex; each side adds its liaison and agent,
    whose participate routine answers its own company's people there."""
    team = await hub.teams.create(acme.session, story.SHARED_TEAM, "Acme x Globex: the billing migration")
    for who in (acme.company.liaison, acme.company.agent.name):
        await hub.teams.add_member(acme.session, team.team_id, acme.ids[who])
    thread = await hub.teams.create_thread(acme.session, team.team_id, story.SHARED_THREAD)
    _invite, code = await hub.teams.create_invite(acme.session, team.team_id)
    await hub.teams.join(globex.session, code, globex.ids[globex.company.liaison])
    await hub.teams.add_member(globex.session, team.team_id, globex.ids[globex.company.agent.name])
    result.team_id, result.thread_id = team.team_id, thread.channel_id
    for side in (acme, globex):
        await _routine(
            hub,
            side.session,
            side.ids[side.company.agent.name],
            "rollout_participate",
            handler_type="preset",
            preset_name="participate",
            event_config={
                "thread_id": [thread.channel_id],
                "subject_is_agent": False,  # people only: agents never answer each other, so it ends
                "sender_org": [side.org.org_id],  # its own company's people
            },
        )


async def _support_network(hub: Hub, acme: Side) -> dict[str, str]:
    """The seed's support network in Acme: triage script on Intake, specialists on their threads."""
    s = acme.session
    team = await hub.teams.create(s, story.SUPPORT_TEAM, "Triage routes customers to specialists")
    for who in (story.TRIAGE.name, story.TECHNICAL.name, story.BILLING.name, story.CUSTOMER):
        await hub.teams.add_member(s, team.team_id, acme.ids[who])
    threads = {}
    for title in story.SUPPORT_THREADS:
        threads[title] = (await hub.teams.create_thread(s, team.team_id, title)).channel_id
        acme.private_threads[threads[title]] = title
    scoped = {title: {"thread.message_added": {"thread_id": [cid]}} for title, cid in threads.items()}
    await _routine(
        hub,
        s,
        acme.ids[story.TRIAGE.name],
        "triage_intake",
        handler_type="script",
        script=story.TRIAGE_SCRIPT,
        event_config=scoped["Intake"],
    )
    for spec, title in ((story.TECHNICAL, "Technical"), (story.BILLING, "Billing")):
        await _routine(
            hub,
            s,
            acme.ids[spec.name],
            f"{title.lower()}_participate",
            handler_type="preset",
            preset_name="participate",
            event_config=scoped[title],
        )
    return threads


async def _support_case(hub: Hub, acme: Side, threads: dict[str, str], sent: Envelope) -> SupportCase:
    case = SupportCase(str(sent.event_data["text"]))
    for title in ("Technical", "Billing"):
        log = await hub.read_wal(threads[title])
        routed = next((e for e in log if e.causation_id == sent.envelope_id), None)
        if routed is None:
            continue
        case.routed_to = title
        answer = next((e for e in log if e.causation_id == routed.envelope_id), None)
        if answer is not None:
            case.specialist = hub.registry.members[answer.sender_id].passport.name
            case.answer = str(answer.event_data.get("text", ""))
    return case


async def _transcript(hub: Hub, viewer: Side, result: StoryResult) -> None:
    """The shared thread as Globex reads it (the same four messages Acme reads)."""
    envs, _ = await hub.teams.read_thread(viewer.session, result.team_id, result.thread_id)
    for env in envs:
        passport = hub.registry.members[env.sender_id].passport
        org = hub.registry.orgs[passport.org_id].name
        kind = "person" if passport.kind == "human" else "agent"
        result.transcript.append((passport.name, org, kind, str(env.event_data.get("text", ""))))


async def _view(hub: Hub, me: Side, other: Side, result: StoryResult, shown: str) -> list[str]:
    """What ``me``'s org sees (its admin session, i.e. the widest view it has), and what it does not."""
    s = me.session
    teams = hub.teams.list_teams(s)
    threads = sum(len(hub.teams.threads(s, t.team_id)) for t in teams)
    visible = 0
    for cid in other.private_threads:  # probe every private thread of the other org, by id
        try:
            await hub.read_visible(s, cid)
            visible += 1
        except NotFound:
            pass  # refused, exactly like an id never issued, and audited
    docs = await hub.knowledge.list(s)
    hits = await hub.knowledge.search(s, story.PRIVACY_QUERY, limit=10)
    foreign = sum(1 for h in hits if h.doc_id in other.doc_ids)
    members = hub.teams.members(s, result.team_id)
    messages, _ = await hub.teams.read_thread(s, result.team_id, result.thread_id)
    leaked = sum(1 for text in other.private_texts if text in shown)
    agent = me.company.agent.name
    return [
        f"{len(teams)}: " + ", ".join(t.name for t in teams),
        str(threads),
        f"{visible} of {len(other.private_threads)} (not_found)",
        f"{len(members)}",
        f"{len(messages)}",
        f"{len(docs)}, all {me.org.name}'s"
        if all(d.org_id == me.org.org_id for d in docs)
        else str(len(docs)),
        f"{len(hits)} hit{'s' * (len(hits) != 1)}, {foreign} from {other.org.name}",
        f"{leaked} of {len(other.private_texts)} ({agent})",
    ]


PRIVACY_ROWS = (
    "teams",
    "threads",
    "the other org's private threads (read by id)",
    f"members of {story.SHARED_TEAM}",
    f"messages in {story.SHARED_THREAD}",
    "knowledge documents",
    f'knowledge search "{story.PRIVACY_QUERY}"',
    "the other org's private texts in its agent's model input",
)


async def _runs(hub: Hub, sides: tuple[Side, ...], titles: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for side in sides:
        for routine in hub.routines.list_routines(side.session):
            agent = hub.registry.members[routine.agent_id].passport.name
            for run in await hub.routines.runs(side.session, routine.routine_id):
                rows.append(
                    {
                        "org": side.org.name,
                        "agent": agent,
                        "routine": routine.preset_name or routine.handler_type,
                        "thread": titles.get(run.channel_id or "", run.channel_id or ""),
                        "status": run.status,
                        "duration_ms": run.duration_ms,
                        "model": run.model or "",
                        "tokens": f"{run.tokens_in}/{run.tokens_out}",
                        "error": run.error or "",
                        "queued_at": run.queued_at,
                    }
                )
    return sorted(rows, key=lambda r: r["queued_at"])


async def run_story(
    where: Path | StoreURL, console: Console, model: Model | None = None, model_label: str = "offline"
) -> StoryResult:
    """Tell the story on a fresh store: a data directory (``demo_data.reset``) or a store URL."""
    started = time.perf_counter()
    spec = where if isinstance(where, StoreURL) else parse_store_url(where)
    store = open_store(spec)
    hub = await Hub.open(store, ttl_sweep_interval=0)
    recorder = story.Recorder(model if model is not None else story.StoryModel())
    worker = RoutineWorker(hub, model_for=lambda _passport: recorder)
    report.header(console, store.describe(), model_label)
    try:
        acme = await _company(hub, story.ACME_CO)
        globex = await _company(hub, story.GLOBEX_CO)
        result = StoryResult(acme, globex)
        await _shared_network(hub, acme, globex, result)
        threads = await _support_network(hub, acme)
        report.setup(console, result, threads)
        await worker.start()

        people = {acme.company.liaison: acme, globex.company.liaison: globex}
        for who, text in story.ROLLOUT:
            side = people.get(who)
            if side is None:
                continue  # an agent's line: its participate routine is to say it
            await _say(hub, side.session, side.ids[who], result.thread_id, text)
            await worker.drain()  # its company's agent answers before the next person speaks
        await _transcript(hub, globex, result)
        report.transcript(console, result)

        for text in story.SUPPORT_REQUESTS:
            acme.private_texts.append(text)
            sent = await _say(hub, acme.session, acme.ids[story.CUSTOMER], threads["Intake"], text)
            await worker.drain()
            result.support.append(await _support_case(hub, acme, threads, sent))
        report.support(console, result)

        await worker.stop()
        views = [
            await _view(hub, acme, globex, result, recorder.shown_to(acme.company.agent.name)),
            await _view(hub, globex, acme, result, recorder.shown_to(globex.company.agent.name)),
        ]
        result.privacy = [(row, a, g) for row, a, g in zip(PRIVACY_ROWS, *views, strict=True)]
        report.privacy(console, result)

        titles = {**acme.private_threads, **globex.private_threads, result.thread_id: story.SHARED_THREAD}
        result.runs = await _runs(hub, (acme, globex), titles)
        report.runs(console, result)
    finally:
        await worker.stop()
        await hub.close()

    result.audit = await verify_chain(spec)
    result.seconds = time.perf_counter() - started
    report.footer(console, result, spec)
    return result
