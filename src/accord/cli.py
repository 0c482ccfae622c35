"""The ``accord`` command line: serve, worker, demo, post, tail, replay, audit, orgs, keys, knowledge,
store."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from .cli_cluster import cluster_app
from .cli_common import KEY_OPTION, URL_OPTION, post_as
from .cli_errors import CliError, usage
from .cli_network import agents_app, invites_app, teams_app, threads_app, users_app
from .cli_store import STORE_OPTION, open_existing, require_store, store_app, store_url, with_hub
from .model.errors import AccordError, NotFound
from .model.records import KeyScope

if TYPE_CHECKING:
    from .client.rest import AccordClient
    from .hub import Hub
    from .store import StoreURL

app = typer.Typer(
    help="Accord: a self-hostable agent network with durable shared threads.",
    no_args_is_help=True,
    add_completion=False,
)
audit_app = typer.Typer(help="Inspect the hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
orgs_app = typer.Typer(help="Organizations: create one and get its first admin key.", no_args_is_help=True)
app.add_typer(orgs_app, name="orgs")
keys_app = typer.Typer(help="API keys: list, create, revoke (secrets are shown once).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(store_app, name="store")
app.add_typer(cluster_app, name="cluster")

#: set by the root option ``--debug`` (or ``ACCORD_DEBUG=1``): a failure also prints its traceback
_debug = False


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", envvar="ACCORD_DEBUG", help="On a failure, also print the Python traceback."
    ),
) -> None:
    global _debug
    _debug = debug


DEMO_HELP = "\n\n".join(
    (
        "Tell the two-company story on the embedded SQLite store in --data (./accord-data), or on "
        "JetStream with --store nats://HOST:PORT[?stream=NAME].",
        "Acme (a customer) and Globex (its implementation partner) each keep private teams, threads and "
        "knowledge. Acme opens the shared network acme-rollout and invites Globex; in its thread "
        "rollout-status both companies' people and agents coordinate a rollout, the agents answering "
        "through participate routines. Acme's support triage routes a customer to a specialist. Then: "
        "what each org can see, the routine runs, the audit chain.",
        "Offline by default: a deterministic model that marks its replies \\[offline model]. With "
        "--model openai:<name> --base-url URL the agents run on a real OpenAI-compatible endpoint.",
        "Each run starts over: the demo deletes the store it made in --data on an earlier run, and "
        "refuses a directory holding any other Accord store unless --fresh. On JetStream it refuses a "
        "stream that exists unless --fresh (which deletes it, when no hub serves it). Afterwards "
        "`accord replay <channel id>` prints any of its channels.",
    )
)


@app.command(help=DEMO_HELP)
def demo(
    store: str = STORE_OPTION,
    shapes: bool = typer.Option(
        False,
        "--shapes",
        help="Instead of the story, one incident through the five channel shapes (consulting, "
        "conversation, discussion, workflow, thread), with scripted models.",
    ),
    model: str = typer.Option(
        "offline",
        "--model",
        help="The story's model: offline, or openai:<model> (the key is read from "
        "ACCORD_MODEL_API_KEY or OPENAI_API_KEY).",
    ),
    base_url: str | None = typer.Option(
        None, "--base-url", help="An OpenAI-compatible endpoint, e.g. http://localhost:11434/v1."
    ),
    fresh: bool = typer.Option(
        False, "--fresh", help="Also delete a store in --data that the demo did not make."
    ),
) -> None:
    import os

    from .agents.models.base import Model
    from .agents.models.resolve import Endpoint, check_spec, config_for
    from .demo_data import NotADemoDir, reset

    engine: Model | None = None
    if shapes and (model != "offline" or base_url):
        raise usage("--model and --base-url are for the story; --shapes uses scripted models")
    if model != "offline" or base_url:
        try:
            engine = config_for(
                check_spec(model), Endpoint(base_url, os.environ.get("ACCORD_MODEL_API_KEY"))
            ).create()
        except AccordError as exc:  # the option cannot be used as given: a usage error
            raise CliError(exc.code, f"--model {model}: {exc.message}", status=2) from None
    spec = store_url(store)
    if spec.scheme == "memory":
        raise usage(
            "the demo checks its audit chain on a store it reopens: give --data DIR or --store nats://…"
        )
    try:
        if spec.scheme == "nats":
            from .demo_data import reset_stream

            asyncio.run(reset_stream(spec, force=fresh))
        else:
            assert spec.data_dir is not None
            reset(spec.data_dir, force=fresh)
    except NotADemoDir as exc:
        raise CliError("not_a_demo_dir", str(exc)) from None
    if shapes:
        from .demo import run_demo

        ok = asyncio.run(run_demo(spec, Console())).audit_ok
    else:
        from .demo_network import run_story

        label = model + (f" at {base_url}" if base_url else "")
        ok = asyncio.run(run_story(spec, Console(), engine, label)).ok
    raise typer.Exit(0 if ok else 1)


BENCH_HELP = (
    "Run Accord's side of the performance comparison (docs/PERFORMANCE.md) and print a table.\n\n"
    "W1 sequential sends, W2 concurrent conversations, W3 a discussion, W4 reopen and read, W5 idle "
    "channels' memory, each on the memory and SQLite stores (and, with --store, on a local JetStream "
    "node or 3-node cluster the bench starts), every cell in a fresh process. The "
    "side-by-side comparison with AG2 is `make bench-compare`."
)


@app.command(help=BENCH_HELP)
def bench(
    quick: bool = typer.Option(False, "--quick", help="Smoke sizes (seconds, not minutes)."),
    rounds: int = typer.Option(
        3, "--rounds", min=1, max=50, help="Runs of every cell; medians are reported."
    ),
    only: str = typer.Option("w1,w2,w3,w4,w5", "--only", help="Comma-separated workloads."),
    store: str = typer.Option(
        "memory,sqlite",
        "--store",
        help="Comma-separated stores: memory, sqlite, nats (a local JetStream node the bench starts), "
        "nats-r3 (a local 3-node cluster, R3); the last two need the nats-server binary of the dev extra.",
    ),
    durability: str = typer.Option("process", "--durability", help="SQLite durability: process|power."),
    as_json: bool = typer.Option(False, "--json", help="One JSON result per line instead of a table."),
) -> None:
    from .benchmarks.cells import ACCORD_STORES
    from .benchmarks.command import run_bench

    workloads = [w.strip() for w in only.split(",") if w.strip()]
    stores = [s.strip() for s in store.split(",") if s.strip()]
    bad = [w for w in workloads if w not in ACCORD_STORES] + [
        s for s in stores if s not in ("memory", "sqlite", "nats", "nats-r3")
    ]
    if bad or not workloads or not stores:
        raise typer.BadParameter(
            f"unknown workload or store {bad}: workloads are w1..w5, stores memory, sqlite, nats, nats-r3"
        )
    if durability not in ("process", "power"):
        raise typer.BadParameter(f"durability must be process or power, not {durability!r}")
    run_bench(
        quick=quick, rounds=rounds, only=workloads, stores=stores, durability=durability, as_json=as_json
    )


@app.command()
def replay(
    channel_id: str = typer.Argument(
        ..., help="The channel (thread) id, e.g. thr_01J…, or TEAM_ID/THREAD_ID as post and tail take it."
    ),
    store: str = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="One JSON envelope per line instead of a table."),
) -> None:
    """Print a channel's write-ahead log, and the state a fresh fold of it gives."""
    channel_id = channel_id.rsplit("/", 1)[-1]  # TEAM_ID/THREAD_ID: the thread is the channel
    spec = store_url(store)
    from .protocol import adapters as _adapters  # noqa: F401  (register built-in adapters)
    from .protocol.channel import replay as fold_all

    async def run() -> int:
        log = await open_existing(spec, readonly=True)
        try:
            envs = await log.read(channel_id)
            if not envs:
                where = spec.data_dir if spec.scheme == "sqlite" else spec.text
                raise CliError("not_found", f"no channel {channel_id} in {where}")
            if as_json:
                for env in envs:
                    sys.stdout.write(env.encoded().decode() + "\n")
                return 0
            from .demo import print_transcript

            registry = {
                e.event_data["passport"]["agent_id"]: e.event_data["passport"]["name"]
                for e in await log.read("registry")
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
            await log.close()

    raise typer.Exit(asyncio.run(run()))


@audit_app.command("verify")
def audit_verify(
    store: str = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Re-hash the audit chain and every envelope it covers; exit 1 if anything was altered."""
    from .hub.audit import verify_store

    spec = store_url(store)

    async def run() -> int:
        log = await open_existing(spec, readonly=True)
        try:
            report = await verify_store(log)
        finally:
            await log.close()
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


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (loopback by default)."),
    port: int = typer.Option(8700, "--port", min=0, max=65535, help="TCP port (0: any free one)."),
    store: str = STORE_OPTION,
    init: bool = typer.Option(
        False,
        "--init",
        help="Create an empty store (a data directory, or the JetStream stream) if there is none. "
        "Without it, serve refuses a store that does not exist (`accord orgs create NAME` also makes one).",
    ),
    durability: str = typer.Option(
        "process", "--durability", help="process (survives kill -9) or power (also survives power loss)."
    ),
    standby: bool = typer.Option(
        False,
        "--standby",
        help="nats:// only: if another hub serves the stream, wait until its writer lease ends (it "
        "stopped, or died and the lease expired), then serve. Without it, serve refuses (store_locked).",
    ),
    model: str = typer.Option(
        "offline",
        "--model",
        help="Default model of agents' routines: offline, openai:<model> or anthropic:<model>. "
        "The key is read from ACCORD_MODEL_API_KEY (or OPENAI_API_KEY / ANTHROPIC_API_KEY).",
    ),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        help="An OpenAI-compatible (or Anthropic) endpoint, e.g. http://localhost:11434/v1.",
    ),
    dev: bool = typer.Option(
        False,
        "--dev",
        help="Development only, loopback only: requests without a key act as admin of an org named 'dev'.",
    ),
    log_level: str = typer.Option("info", "--log-level", help="critical|error|warning|info|debug|trace."),
    log_format: str | None = typer.Option(
        None, "--log-format", help="json (one object per line; the default off a terminal) or text."
    ),
    socket_buffer_mib: float = typer.Option(
        8.0,
        "--socket-buffer-mib",
        help="MiB queued for one WebSocket that is not reading fast enough; over it, the socket is "
        "closed with 4008 and the client resumes from the log.",
    ),
    sockets_buffer_mib: float = typer.Option(
        256.0,
        "--sockets-buffer-mib",
        help="MiB queued for all WebSockets together; over it, the sockets holding the most are "
        "closed with 4008.",
    ),
) -> None:
    """Run the hub as a network server: REST under /v1, authenticated by API key.

    The store must exist (made by `accord orgs create NAME --store URL`, or pass --init). Startup
    checks the options and the store (a JetStream store is connected to once), binds the port, then
    takes a SQLite store's lock; any failure there is one line on stderr and creates nothing.
    "accord serve listening on URL" is logged once the port accepts connections."""
    import logging

    import uvicorn

    from .server.app import app_for_store
    from .server.logs import LOG_FORMATS, LOG_LEVELS, log_config
    from .store import LogStore, SqliteStore

    if durability not in ("process", "power"):
        raise usage("--durability is 'process' or 'power'")
    fmt = log_format or ("text" if sys.stderr.isatty() else "json")
    if fmt not in LOG_FORMATS or log_level.lower() not in LOG_LEVELS:
        raise usage(f"--log-format is json or text; --log-level is {', '.join(LOG_LEVELS)}")
    if dev and host not in ("127.0.0.1", "::1", "localhost"):
        raise usage("--dev is only allowed on a loopback host")
    socket_budget, sockets_budget = int(socket_buffer_mib * (1 << 20)), int(sockets_buffer_mib * (1 << 20))
    if socket_budget < 1 or sockets_budget < 1:
        raise usage("--socket(s)-buffer-mib must be more than 0")
    from .agents.models.resolve import check_spec

    try:
        check_spec(model)
    except AccordError as exc:
        raise CliError(exc.code, f"--model: {exc.message}", status=2) from None
    spec = store_url(store)
    if not init:
        require_store(spec)
    if standby and spec.scheme != "nats":
        raise usage("--standby is for a nats:// store (a SQLite store has one hub by its file lock)")
    if spec.scheme == "nats":
        # reachable, and the stream there (or made, with --init), before a port is bound; the hub
        # connects again inside the server's own event loop
        asyncio.run(_check_networked(spec, create=init))
    sock = _listen(host, port)  # before the store: a busy port fails with nothing created
    opened: LogStore | None = None
    try:
        if spec.scheme == "sqlite":
            assert spec.path is not None
            spec.path.parent.mkdir(parents=True, exist_ok=True)
            # a store another process holds is refused here: store_locked, with the pid in its lock file
            opened = SqliteStore(spec.path, durability=durability)  # type: ignore[arg-type]  # checked above
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    application = app_for_store(
        spec,
        durability,
        dev=dev,
        model=model,
        base_url=base_url,
        socket_budget=socket_budget,
        sockets_budget=sockets_budget,
        store=opened,
        standby=standby,
    )
    application.state.log_fields = {
        "store_url": str(spec),
        **({"data_dir": str(spec.data_dir.resolve())} if spec.data_dir is not None else {}),
        "durability": durability,
        "host": host,
        "port": port,
    }
    logging.captureWarnings(True)
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        log_config=log_config(fmt, log_level),
        log_level=log_level.lower(),
        access_log=False,  # accord.access (server/logs.py) logs requests, with the api_key redacted
        lifespan="on",
        # bounded: after 10 s the last connections are cut (every acknowledged envelope is on disk
        # already; clients reconnect and resume), so a stuck client cannot hold a restart hostage
        timeout_graceful_shutdown=10,
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:  # the hub is open and the socket accepts connections
                logging.getLogger("accord.server").info(
                    "accord serve listening on %s", url, extra={"url": url}
                )

    server = Server(config)
    server.run(sockets=[sock])  # uvicorn serves the socket bound above (it logs no address itself)
    if not server.started:
        raise typer.Exit(3)  # the app failed to start (uvicorn logged why), as uvicorn.run exits


async def _check_networked(spec: StoreURL, *, create: bool) -> None:
    """Connect to a networked store once and let go: unreachable or missing is one line, now. It
    reads only (a standby must not take the writer lease here); a missing stream is made with
    ``create``, when no hub can be writing it."""
    try:
        store = await open_existing(spec, readonly=True)
    except CliError as exc:
        if exc.code != "no_store" or not create:
            raise
        store = await open_existing(spec, create=True)
    await store.close()


def _listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (as uvicorn binds one), or a one-line refusal."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without
    # it every response waits ~40 ms for Nagle and delayed ACKs
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise CliError(
                "address_in_use",
                f"cannot listen on {where}: the port is in use",
                hint="is another `accord serve` running? Stop it, or pick another --port",
            ) from None
        raise CliError("cannot_listen", f"cannot listen on {where}: {exc.strerror or exc}") from None
    return sock


def _team_thread(ref: str) -> tuple[str, str]:
    team, sep, thread = ref.partition("/")
    if not sep or not team or not thread:
        raise usage("give the thread as TEAM_ID/THREAD_ID")
    return team, thread


@app.command()
def post(
    thread: str = typer.Argument(..., help="TEAM_ID/THREAD_ID"),
    text: str = typer.Argument(..., help="The message."),
    as_id: str | None = typer.Option(None, "--as", help="Post as this agent (agt_…) or person (usr_…)."),
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
) -> None:
    """Post a message into a team thread (admin keys say who posts with --as)."""
    from .client.rest import AccordClient

    team_id, thread_id = _team_thread(thread)
    with AccordClient(url, key) as client:
        msg = post_as(client, team_id, thread_id, text, as_id)
    print(f"{msg.id} #{msg.seq}")


@app.command()
def tail(
    thread: str = typer.Argument(..., help="TEAM_ID/THREAD_ID"),
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
    since: int = typer.Option(0, "--since", help="Start after this seq (0: from the beginning)."),
    count: int = typer.Option(0, "--count", help="Exit after this many messages (0: follow forever)."),
) -> None:
    """Stream a team thread live: history first, then new messages; reconnects and resumes by itself
    (--url may list several hub nodes, comma-separated: it moves to the next when one is lost)."""
    from .client.tail import tail_thread

    team_id, thread_id = _team_thread(thread)
    _interruptible(tail_thread(url, key, team_id, thread_id, since=since, count=count))


def _interruptible(coro: Any) -> Any:
    """``asyncio.run`` for a command that follows something until Ctrl-C: the first Ctrl-C cancels it
    (a clean exit, 130), and if the clean-up is stuck — a close handshake with a server that no longer
    answers — the process ends anyway two seconds later. A person's Ctrl-C is never lost."""
    import os
    import signal
    import threading

    def hard_exit() -> None:
        os._exit(130)

    def on_sigint(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C ends it at once
        timer = threading.Timer(2.0, hard_exit)
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        return asyncio.run(coro)
    finally:
        signal.signal(signal.SIGINT, previous)


@app.command()
def worker(
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
    model: str = typer.Option(
        "offline",
        "--model",
        help="Default model for the org's agents: offline, openai:<model> or anthropic:<model> "
        "(an agent's own model wins). The provider key is read from ACCORD_MODEL_API_KEY.",
    ),
    base_url: str | None = typer.Option(None, "--base-url", help="The model provider's endpoint."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, max=256, help="Model turns at once."),
) -> None:
    """Take your org's routine model turns from a remote hub (needs an org admin key).

    The hub still matches, caps, records and posts; this process runs the model, with its own keys."""
    from .agents.models.resolve import Endpoint, ModelPool, check_spec
    from .routines.remote import RemoteWorker

    try:
        check_spec(model)
    except AccordError as exc:
        raise CliError(exc.code, f"--model: {exc.message}", status=2) from None
    pool = ModelPool(model, Endpoint(base_url, os.environ.get("ACCORD_MODEL_API_KEY")))
    runner = RemoteWorker(url, key, pool, concurrency=concurrency)
    Console(stderr=True).print(f"accord worker: taking routine turns from {url} with model {model}")
    asyncio.run(runner.run())


@orgs_app.command("create")
def orgs_create(
    name: str = typer.Argument(..., help="The organization's display name (unique on this hub)."),
    store: str = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help='Print {"org_id", "api_key"} on one line.'),
) -> None:
    """Create an organization and print its first admin API key — once; it is stored only as a hash."""
    spec = store_url(store)

    async def act(hub: Hub) -> int:
        org, secret = await hub.create_org(name)
        if as_json:
            print(json.dumps({"org_id": org.org_id, "api_key": secret}))
        else:
            console = Console()
            console.print(f"created organization [bold]{org.name}[/bold] ({org.org_id})")
            console.print(f"admin API key (shown once, keep it safe): [bold]{secret}[/bold]")
        return 0

    raise typer.Exit(with_hub(spec, act, create=True))


@orgs_app.command("list")
def orgs_list(store: str = STORE_OPTION, as_json: bool = typer.Option(False, "--json")) -> None:
    """List the organizations on this hub."""

    async def act(hub: Hub) -> int:
        orgs = sorted(hub.registry.orgs.values(), key=lambda o: o.created_at)
        if as_json:
            print(json.dumps([o.to_dict() for o in orgs]))
        else:
            for org in orgs:
                print(f"{org.org_id}  {org.name}")
        return 0

    raise typer.Exit(with_hub(store_url(store), act))


ORG_OPTION = typer.Option(..., "--org", help="The organization id (org_…).")


@keys_app.command("list")
def keys_list(
    org: str = ORG_OPTION, store: str = STORE_OPTION, as_json: bool = typer.Option(False, "--json")
) -> None:
    """List an organization's keys (never their secrets)."""

    async def act(hub: Hub) -> int:
        if org not in hub.registry.orgs:
            raise NotFound(f"unknown organization {org}")
        keys = hub.list_keys(org)
        if as_json:
            print(json.dumps([k.public() for k in keys]))
        else:
            for k in keys:
                state = "revoked" if not k.active else "active"
                who = f" for {k.subject}" if k.subject else ""
                print(f"{k.key_id}  {k.hint}…  {k.scope}{who}  {state}  {k.label}")
        return 0

    raise typer.Exit(with_hub(store_url(store), act))


@keys_app.command("create")
def keys_create(
    org: str = ORG_OPTION,
    agent: str | None = typer.Option(None, "--agent", help="Scope the key to one agent (agt_…)."),
    user: str | None = typer.Option(None, "--user", help="Scope the key to one person (usr_…)."),
    label: str = typer.Option("", "--label", help="A note to tell keys apart."),
    store: str = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help='Print {"key_id", "api_key"} on one line.'),
) -> None:
    """Create an API key: org admin by default, or scoped to one agent or one person."""
    if agent and user:
        raise usage("a key is scoped to --agent or --user, not both")
    scope: KeyScope = "agent" if agent else "user" if user else "admin"

    async def act(hub: Hub) -> int:
        key, secret = await hub.create_key(org, scope, agent or user, label)
        if as_json:
            print(json.dumps({"key_id": key.key_id, "api_key": secret}))
        else:
            print(f"created {scope} key {key.key_id}; secret (shown once): {secret}")
        return 0

    raise typer.Exit(with_hub(store_url(store), act))


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(..., help="The key id (key_…)."),
    org: str = ORG_OPTION,
    store: str = STORE_OPTION,
) -> None:
    """Revoke a key at once: every request made with it is refused from now on."""

    async def act(hub: Hub) -> int:
        await hub.revoke_key(org, key_id)
        print(f"revoked {key_id}")
        return 0

    raise typer.Exit(with_hub(store_url(store), act))


knowledge_app = typer.Typer(
    help="Knowledge: documents your agents search (SQLite FTS5, BM25), over REST.", no_args_is_help=True
)
app.add_typer(knowledge_app, name="knowledge")
AGENT_KNOWLEDGE_OPTION = typer.Option(
    None, "--agent", help="An agent (agt_…): its private documents (with the org's, for list/search)."
)


def _over_rest(url: str, key: str, action: Callable[[AccordClient], None]) -> None:
    """Run ``action`` with a REST client. A refusal (``AccordError``) or an unreachable server just
    propagates: ``main`` prints it as one ``error (<code>): …`` line and exits 1."""
    from .client.rest import AccordClient

    with AccordClient(url, key) as client:
        action(client)


@knowledge_app.command("add")
def knowledge_add(
    file: Path = typer.Argument(..., help="A UTF-8 text file (up to 1 MiB), or - for stdin."),
    title: str | None = typer.Option(None, "--title", help="The title (default: the file's name)."),
    agent: str | None = AGENT_KNOWLEDGE_OPTION,
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the stored document as JSON."),
) -> None:
    """Add a document to your org's knowledge, or to one agent's with --agent."""
    try:
        raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
        content = raw.decode("utf-8")
    except OSError as exc:
        raise CliError("io_error", f"cannot read {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CliError("invalid_input", f"{file} is not UTF-8 text") from None
    name = title if title is not None else ("stdin" if str(file) == "-" else file.name)

    def act(client: AccordClient) -> None:
        doc = client.add_knowledge(name, content, agent_id=agent)
        if as_json:
            print(doc.model_dump_json(exclude_none=True))
        else:
            owner = f"agent {doc.agent_id}" if doc.agent_id else "org"
            print(f"{doc.id}  {doc.title}  ({doc.bytes} bytes, {owner})")

    _over_rest(url, key, act)


@knowledge_app.command("list")
def knowledge_list(
    agent: str | None = AGENT_KNOWLEDGE_OPTION,
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
    as_json: bool = typer.Option(False, "--json", help="One JSON document per line."),
) -> None:
    """List documents (an admin key without --agent: every document of the org)."""

    def act(client: AccordClient) -> None:
        cursor: str | None = None
        while True:
            page = client.list_knowledge(agent, limit=500, cursor=cursor)
            for doc in page.data:
                if as_json:
                    print(doc.model_dump_json(exclude_none=True))
                else:
                    owner = doc.agent_id or "org"
                    print(f"{doc.id}  {owner}  {doc.bytes:>8}  {doc.title}")
            cursor = page.next_cursor
            if cursor is None:
                return

    _over_rest(url, key, act)


@knowledge_app.command("search")
def knowledge_search(
    query: str = typer.Argument(..., help="Plain words; no search syntax needed."),
    agent: str | None = AGENT_KNOWLEDGE_OPTION,
    limit: int = typer.Option(5, "--limit", help="At most this many passages (1-50)."),
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
    as_json: bool = typer.Option(False, "--json", help="One JSON hit per line."),
) -> None:
    """Search your org's knowledge (plus an agent's with --agent); best passages first."""

    def act(client: AccordClient) -> None:
        hits = client.search_knowledge(query, agent_id=agent, limit=limit).data
        for hit in hits:
            if as_json:
                print(hit.model_dump_json())
            else:
                print(f"{hit.score:.3f}  {hit.doc_id}  {hit.title}")
                for line in hit.passage.splitlines():
                    print(f"    {line}")
        if not hits and not as_json:
            Console(stderr=True).print("no matching passages")

    _over_rest(url, key, act)


@knowledge_app.command("delete")
def knowledge_delete(
    doc_id: str = typer.Argument(..., help="The document id (doc_…)."),
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
) -> None:
    """Delete a document."""

    def act(client: AccordClient) -> None:
        client.delete_knowledge(doc_id)
        print(f"deleted {doc_id}")

    _over_rest(url, key, act)


visas_app = typer.Typer(
    help="Visas: what a guest org holds in your team; list, narrow, remove a participant, revoke (REST).",
    no_args_is_help=True,
)
app.add_typer(visas_app, name="visas")
GRANTS_HELP = "Grants the Visa keeps, comma-separated: post, add_members, create_threads, direct_channels."


def _print_visa(visa: Any, as_json: bool) -> None:
    if as_json:
        print(visa.model_dump_json())
        return
    who = ", ".join(p.name for p in visa.participants) or "-"
    expiry = visa.expires_at or "never"
    print(f"{visa.id}  {visa.org_name or visa.org_id}  {visa.status}  grants={','.join(visa.grants) or '-'}")
    print(f"    participants: {who}; expires: {expiry}")


@visas_app.command("list")
def visas_list(
    team_id: str = typer.Argument(..., help="The team (team_…)."),
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
    as_json: bool = typer.Option(False, "--json", help="One JSON Visa per line."),
) -> None:
    """The Visas to a team: every one for the host, your own for a guest."""

    def act(client: AccordClient) -> None:
        for visa in client.list_visas(team_id).data:
            _print_visa(visa, as_json)

    _over_rest(url, key, act)


@visas_app.command("narrow")
def visas_narrow(
    visa_id: str = typer.Argument(..., help="The Visa (visa_…)."),
    grants: str | None = typer.Option(None, "--grants", help=GRANTS_HELP),
    expires_in: float | None = typer.Option(
        None, "--expires-in", help="Seconds from now until the Visa expires (0: now)."
    ),
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the Visa as JSON."),
) -> None:
    """Change what a Visa grants, or when it expires; takes effect on the very next action."""
    if grants is None and expires_in is None:
        raise usage("give --grants and/or --expires-in")
    kept = [g.strip() for g in grants.split(",") if g.strip()] if grants is not None else None

    def act(client: AccordClient) -> None:
        if expires_in is None:
            visa = client.update_visa(visa_id, grants=kept)
        else:
            visa = client.update_visa(visa_id, grants=kept, expires_at=time.time() + max(expires_in, 0.0))
        _print_visa(visa, as_json)

    _over_rest(url, key, act)


@visas_app.command("remove-participant")
def visas_remove_participant(
    visa_id: str = typer.Argument(..., help="The Visa (visa_…)."),
    participant_id: str = typer.Argument(..., help="The guest agent or person (agt_… / usr_…)."),
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
) -> None:
    """Take one guest participant out of the team; it cannot be re-added under this Visa."""

    def act(client: AccordClient) -> None:
        client.remove_visa_participant(visa_id, participant_id)
        print(f"removed {participant_id} from {visa_id}")

    _over_rest(url, key, act)


@visas_app.command("revoke")
def visas_revoke(
    visa_id: str = typer.Argument(..., help="The Visa (visa_…)."),
    url: str = URL_OPTION,
    key: str = KEY_OPTION,
) -> None:
    """Revoke a Visa: every guest participant leaves every thread; coming back needs a new invite."""

    def act(client: AccordClient) -> None:
        client.revoke_visa(visa_id)
        print(f"revoked {visa_id}")

    _over_rest(url, key, act)


app.add_typer(agents_app, name="agents")
app.add_typer(users_app, name="users")
app.add_typer(teams_app, name="teams")
app.add_typer(threads_app, name="threads")
app.add_typer(invites_app, name="invites")


def main(argv: list[str] | None = None) -> None:
    """The console script: run the app; any failure is one ``error (<code>): <message>`` line on
    stderr (``cli_errors.describe``) and exit 1 (a refusal) or 2 (a usage error); Ctrl-C exits 130
    quietly. ``--debug`` (or ``ACCORD_DEBUG=1``) prints the traceback first."""
    import traceback

    from .cli_errors import INTERRUPTED, describe

    try:
        status = app(args=argv, standalone_mode=False)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except Exception as exc:
        if exc.__class__.__name__ == "NoArgsIsHelpError":  # `accord keys`: the help is printed already
            sys.exit(2)
        code, message, exit_status = describe(exc)
        if _debug or os.environ.get("ACCORD_DEBUG", "").lower() in ("1", "true", "yes"):
            traceback.print_exception(exc)
        sys.stdout.flush()
        sys.stderr.write(f"error ({code}): {message}\n")
        sys.exit(exit_status)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
