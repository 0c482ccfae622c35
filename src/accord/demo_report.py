"""What ``accord demo`` prints, section by section, with rich (``demo_network`` tells the story)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from . import demo_story as story

if TYPE_CHECKING:
    from .demo_network import StoryResult
    from .store import StoreURL

ORG_STYLE = {story.ACME: "cyan", story.GLOBEX: "magenta"}


def _table(title: str) -> Table:
    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )


def _org(name: str) -> str:
    return f"[{ORG_STYLE.get(name, 'white')}]{escape(name)}[/]"


def header(console: Console, where: str, model_label: str) -> None:
    console.print("[bold]Accord demo[/bold] — two companies, one shared thread")
    console.print(f"[dim]hub on {escape(where)}[/dim]")
    if model_label == "offline":
        console.print(
            "[dim]Model: offline — deterministic, no network, no LLM; every agent reply is marked "
            f"{escape(story.OFFLINE_MARK)}. For a real one: accord demo --model openai:<name> "
            "--base-url URL[/dim]\n"
        )
    else:
        console.print(f"[dim]Model: {escape(model_label)}[/dim]\n")


def setup(console: Console, result: StoryResult, support_threads: dict[str, str]) -> None:
    table = _table("The two companies")
    table.add_column("org", no_wrap=True)
    table.add_column("private teams: threads", no_wrap=True)
    table.add_column("private knowledge", overflow="fold")
    table.add_column(f"in {story.SHARED_TEAM}", overflow="fold")
    for side, how in (
        (result.acme, "created it, made the invite code"),
        (result.globex, "joined with the invite code"),
    ):
        co = side.company
        threads = [f"{co.private_team}:", *(f"  {t}" for t, _ in co.private_notes)]
        if side is result.acme:
            threads += [f"{story.SUPPORT_TEAM}:", *(f"  {t}" for t in support_threads)]
        docs = "\n".join(d.title for d in co.docs)
        table.add_row(
            f"{_org(co.name)}\n[dim]{co.role}[/dim]",
            escape("\n".join(threads)),
            escape(docs),
            escape(f"{co.liaison}, {co.agent.name}") + f"\n[dim]{how}[/dim]",
        )
    console.print(table)


def transcript(console: Console, result: StoryResult) -> None:
    table = Table(show_header=True, header_style="bold", expand=True, box=None, pad_edge=False)
    table.add_column("#", justify="right", style="dim", width=2)
    table.add_column("who", no_wrap=True)
    table.add_column("org", no_wrap=True)
    table.add_column("message", overflow="fold")
    for i, (who, org, kind, text) in enumerate(result.transcript, 1):
        name = f"[bold]{escape(who)}[/bold]" if kind == "agent" else escape(who)
        table.add_row(str(i), name, _org(org), escape(text))
    title = (
        f"{story.SHARED_TEAM} › {story.SHARED_THREAD}  [dim]shared by Acme and Globex · agents in bold[/dim]"
    )
    console.print(Panel(table, title=title, title_align="left"))


def support(console: Console, result: StoryResult) -> None:
    table = _table(f"{story.SUPPORT_TEAM}: {story.TRIAGE.name} routes, a specialist answers (Acme only)")
    table.add_column("thread", no_wrap=True)
    table.add_column("who", no_wrap=True)
    table.add_column("message", overflow="fold")
    for case in result.support:
        table.add_row("Intake", escape(story.CUSTOMER), escape(case.request))
        if case.routed_to is None:
            table.add_row("", escape(story.TRIAGE.name), "[red]not routed[/red]", end_section=True)
            continue
        action = escape(f'{{route: "{case.routed_to.lower()}"}}')
        routed = f"[dim]the triage script routed it here ({action})[/dim]"
        table.add_row(case.routed_to, escape(story.TRIAGE.name), routed)
        answer = escape(case.answer) if case.answer is not None else "[red]no answer[/red]"
        table.add_row(
            case.routed_to, f"[bold]{escape(case.specialist or '')}[/bold]", answer, end_section=True
        )
    console.print(table)


def privacy(console: Console, result: StoryResult) -> None:
    table = _table("What each org can see (each through its own admin session)")
    table.add_column("")
    table.add_column(f"{story.ACME}'s view", style=ORG_STYLE[story.ACME])
    table.add_column(f"{story.GLOBEX}'s view", style=ORG_STYLE[story.GLOBEX])
    for row, acme, globex in result.privacy:
        table.add_row(escape(row), escape(acme), escape(globex))
    console.print(table)


def runs(console: Console, result: StoryResult) -> None:
    table = _table("Routine runs")
    table.add_column("agent · routine", no_wrap=True)
    table.add_column("thread", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("duration_ms", justify="right", no_wrap=True)
    table.add_column("model", no_wrap=True)
    table.add_column("tokens", justify="right", no_wrap=True)
    failed = False
    for r in result.runs:
        status = r["status"]
        failed = failed or status != "succeeded"
        style = "green" if status == "succeeded" else "red"
        ms = "" if r["duration_ms"] is None else f"{r['duration_ms']:.1f}"
        table.add_row(
            f"{escape(r['agent'])}\n[dim]{escape(r['org'])} · {escape(r['routine'])}[/dim]",
            escape(r["thread"]),
            f"[{style}]{status}[/]",
            ms,
            escape(r["model"]),
            r["tokens"],
        )
    console.print(table)
    for r in result.runs:
        if r["error"]:
            console.print(f"[red]{escape(r['agent'])}: {escape(r['error'])}[/red]")


def footer(console: Console, result: StoryResult, spec: StoreURL) -> None:
    audit = result.audit
    if audit is not None and audit.ok:
        console.print(
            f"\n[green]audit chain verified[/green]: {audit.records} records, {audit.envelopes_checked} "
            f"envelopes re-hashed (routine run records included), {audit.refusals} refusals "
            "(the privacy probes above among them)."
        )
    else:
        problems = len(audit.problems) if audit is not None else "?"
        console.print(f"\n[red]audit chain BROKEN[/red] ({problems} problems):")
        for problem in audit.problems if audit is not None else []:
            console.print(f"  - {escape(problem)}")
    if spec.scheme == "sqlite":
        where, option = f"{spec.path}", f"--data {spec.data_dir}"
    else:
        where, option = f"JetStream stream {spec.stream} on {spec.text}", f"--store '{spec.text}'"
    console.print(
        f"Durable in {where}; {result.seconds:.2f}s. "
        f"Replay the shared thread: [bold].venv/bin/accord replay {result.thread_id} {option}[/bold]"
    )
    console.print(
        "The five channel shapes (consulting, conversation, discussion, workflow, thread): "
        "[bold]accord demo --shapes[/bold]"
    )
