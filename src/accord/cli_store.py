"""Where the CLI finds a network's state: ``--store URL`` (``--data DIR`` is the same option).

Every command that opens a store takes it, parses it with ``accord.store.parse_store_url`` before
anything else happens (a bad URL is a usage error, exit 2), and creates a store only when it says so
(``orgs create``, ``serve --init``): any other command gives ``no_store`` and creates nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import typer

from .cli_errors import CliError, usage
from .model.errors import AccordError, InvalidInput

if TYPE_CHECKING:
    from .hub import Hub
    from .store import Durability, LogStore, StoreURL

STORE_OPTION = typer.Option(
    "accord-data",
    "--store",
    "--data",
    metavar="URL",
    help="Where the network's state is: a data directory or sqlite:///DIR (default ./accord-data), "
    "memory://, or nats://HOST:PORT[,HOST:PORT…] for JetStream. --data DIR is the same option.",
)


def store_url(value: str) -> StoreURL:
    """``--store`` parsed; a usage error naming what to write instead."""
    from .store import parse_store_url

    try:
        return parse_store_url(value)
    except InvalidInput as exc:
        raise usage(f"--store: {exc.message}") from None


def no_store(spec: StoreURL) -> CliError:
    if spec.scheme == "sqlite":
        data = spec.data_dir
        create = f"`accord orgs create NAME --data {data}` or `accord serve --init --data {data}`"
        return CliError("no_store", f"no Accord store in {data}", hint=f"create one with {create}")
    create = f"`accord orgs create NAME --store {spec.text}` or `accord serve --init --store {spec.text}`"
    return CliError(
        "no_store", f"no Accord stream {spec.stream} on {spec.text}", hint=f"create one with {create}"
    )


def require_store(spec: StoreURL) -> StoreURL:
    """``spec`` when a local store exists there; ``no_store`` otherwise (nothing is created). A
    networked store is checked when it is opened (``open_existing``)."""
    if spec.scheme == "sqlite":
        assert spec.path is not None
        if not spec.path.is_file():
            raise no_store(spec)
    return spec


async def open_existing(
    spec: StoreURL, *, readonly: bool = False, create: bool = False, durability: Durability = "process"
) -> LogStore:
    """The store ``spec`` names, opened (connected); ``no_store`` unless it exists or ``create``."""
    from .model.errors import NoStore
    from .store import open_store

    if not create:
        require_store(spec)
    if spec.scheme == "sqlite" and spec.path is not None and create:
        spec.path.parent.mkdir(parents=True, exist_ok=True)
    try:
        store = open_store(spec, durability=durability, readonly=readonly, create=create)
        await store.open()
    except NoStore:
        raise no_store(spec) from None
    except AccordError as exc:
        if exc.code == "store_locked":
            raise
        raise CliError(exc.code, f"cannot open {spec.text}: {exc.message}") from None
    return store


def with_hub(spec: StoreURL, action: Callable[[Hub], Awaitable[int]], *, create: bool = False) -> int:
    """Open the hub on the store (taking a SQLite store's lock), run ``action``, close.

    Used by commands that write the registry before (or without) a running server; while a server
    holds a SQLite store they fail with a clear ``store_locked`` message instead of racing it. Only
    with ``create`` (``accord orgs create``) is a missing store made; otherwise it is ``no_store``.
    """
    from .hub import Hub

    async def run() -> int:
        store = await open_existing(spec, create=create)
        hub = await Hub.open(store, ttl_sweep_interval=0)
        try:
            return await action(hub)
        finally:
            await hub.close()

    return asyncio.run(run())


store_app = typer.Typer(help="Stores: copy a whole network from one to another.", no_args_is_help=True)


@store_app.command("copy")
def store_copy(
    src: str = typer.Argument(..., metavar="SRC_URL", help="The store to copy (opened read-only)."),
    dst: str = typer.Argument(
        ..., metavar="DST_URL", help="An empty store to copy into (created if missing)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as one JSON object."),
) -> None:
    """Copy every log (same seqs, same bytes: the audit chain still verifies), each log's snapshot
    and every knowledge document into an empty store — e.g. a SQLite network onto JetStream:
    `accord store copy ./accord-data nats://127.0.0.1:4222`. The source may be served meanwhile, but
    what its hub writes after the copy began may be missed: stop it first for an exact copy."""
    import json

    from .store.copy import copy_store

    source_spec, target_spec = store_url(src), store_url(dst)
    if str(source_spec) == str(target_spec):
        raise usage("SRC_URL and DST_URL name the same store")

    async def run() -> int:
        source = await open_existing(source_spec, readonly=True)
        try:
            target = await open_existing(target_spec, create=True)
            knowledge = []
            try:
                has_docs = source_spec.scheme == "nats" or (
                    source_spec.scheme == "sqlite"
                    and source_spec.data_dir is not None
                    and (source_spec.data_dir / "knowledge.db").is_file()
                )
                if has_docs:
                    knowledge = [source.knowledge(), target.knowledge()]
                report = await copy_store(
                    source,
                    target,
                    src_knowledge=knowledge[0] if knowledge else None,
                    dst_knowledge=knowledge[1] if knowledge else None,
                )
            finally:
                for k in knowledge:
                    k.close()
                await target.close()
        finally:
            await source.close()
        if as_json:
            print(
                json.dumps(
                    {
                        "logs": report.logs,
                        "envelopes": report.envelopes,
                        "snapshots": report.snapshots,
                        "documents": report.documents,
                        "seconds": round(report.seconds, 3),
                    }
                )
            )
        else:
            print(
                f"copied {report.logs} logs, {report.envelopes} envelopes, {report.snapshots} snapshots "
                f"and {report.documents} documents from {source_spec.text} to {target_spec.text} "
                f"in {report.seconds:.1f} s"
            )
        return 0

    raise typer.Exit(asyncio.run(run()))
