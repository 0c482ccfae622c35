"""The ``accord`` command line: demo, replay, audit verify (more commands arrive with the server)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from .model.errors import AccordError

if TYPE_CHECKING:
    from .store import SqliteStore

app = typer.Typer(
    help="Accord: a self-hostable agent network with durable shared threads.",
    no_args_is_help=True,
    add_completion=False,
)
audit_app = typer.Typer(help="Inspect the hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

DATA_OPTION = typer.Option(Path("accord-data"), "--data", help="Data directory holding accord.db.")


def _open_readonly(data: Path) -> SqliteStore:
    """Open the store for reading, or exit 2 with a one-line error (never a traceback)."""
    from .store import SqliteStore

    db = data / "accord.db"
    err = Console(stderr=True)
    if not db.exists():
        err.print(f"[red]error:[/red] no Accord store at {db} (run `accord demo` or pass --data)")
        raise typer.Exit(2)
    try:
        return SqliteStore.open_readonly(db)
    except AccordError as exc:
        err.print(f"[red]error:[/red] cannot read {db}: {exc.message}")
        raise typer.Exit(2) from None


@app.command()
def demo(
    data: Path = DATA_OPTION,
    fresh: bool = typer.Option(False, "--fresh", help="Delete the data directory's store first."),
) -> None:
    """Run a scripted incident across all five channel types, offline, on the embedded SQLite store."""
    from .demo import run_demo

    if fresh:
        for suffix in ("", "-wal", "-shm", ".lock"):
            (data / f"accord.db{suffix}").unlink(missing_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run_demo(data, Console()))
    raise typer.Exit(0 if result.audit_ok else 1)


@app.command()
def replay(
    channel_id: str = typer.Argument(..., help="The channel (thread) id, e.g. thr_01J…"),
    data: Path = DATA_OPTION,
    as_json: bool = typer.Option(False, "--json", help="One JSON envelope per line instead of a table."),
) -> None:
    """Print a channel's write-ahead log, and the state a fresh fold of it gives."""
    from .protocol import adapters as _adapters  # noqa: F401  (register built-in adapters)
    from .protocol.channel import replay as fold_all

    async def run() -> int:
        store = _open_readonly(data)
        try:
            envs = await store.read(channel_id)
            if not envs:
                Console(stderr=True).print(f"[red]error:[/red] no channel {channel_id} in {data}")
                return 2
            if as_json:
                for env in envs:
                    sys.stdout.write(env.encoded().decode() + "\n")
                return 0
            from .demo import print_transcript

            registry = {
                e.event_data["passport"]["agent_id"]: e.event_data["passport"]["name"]
                for e in await store.read("registry")
                if e.event_type == "passport.registered"
            }
            console = Console()
            print_transcript(console, channel_id, envs, registry)
            state = fold_all(envs)
            assert state is not None
            console.print(
                f"adapter={state.adapter} status={state.status} reason={state.close_reason} "
                f"envelopes={len(envs)} texts={state.text_count}"
            )
            return 0
        finally:
            await store.close()

    raise typer.Exit(asyncio.run(run()))


@audit_app.command("verify")
def audit_verify(
    data: Path = DATA_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Re-hash the audit chain and every envelope it covers; exit 1 if anything was altered."""
    from .hub.audit import verify_store

    async def run() -> int:
        store = _open_readonly(data)
        try:
            report = await verify_store(store)
        finally:
            await store.close()
        if as_json:
            print(
                json.dumps(
                    {
                        "ok": report.ok,
                        "records": report.records,
                        "envelopes_checked": report.envelopes_checked,
                        "refusals": report.refusals,
                        "last_hash": report.last_hash,
                        "problems": report.problems,
                    }
                )
            )
        else:
            console = Console()
            if report.ok:
                console.print(
                    f"[green]audit chain verified[/green]: {report.records} records, "
                    f"{report.envelopes_checked} envelopes re-hashed, {report.refusals} refusals; "
                    f"head {report.last_hash}"
                )
            else:
                console.print(f"[red]audit chain BROKEN[/red] ({len(report.problems)} problems):")
                for problem in report.problems:
                    console.print(f"  - {problem}")
        return 0 if report.ok else 1

    raise typer.Exit(asyncio.run(run()))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
