"""``accord cluster up``: a 3-node JetStream cluster and two hub nodes on loopback, the first serving and
the second standing by; Ctrl-C stops every process it started. Waits are for events (its one JSON
line, /healthz) under hang backstops."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from accord.client.rest import AccordClient
from accord.nats_local import free_port

ACCORD = Path(sys.executable).parent / "accord"


def test_cluster_up_serves_a_network_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [str(ACCORD), "cluster", "up", "--dir", str(tmp_path), "--port", str(port), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once every node is up
        assert line, proc.stderr.read() if proc.stderr else ""
        info = json.loads(line)
        assert len(info["nats"]) == 3 and "replicas=3" in info["store"]
        assert info["hubs"] == [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
        serving = info["hubs"][0]
        assert httpx.get(f"{serving}/healthz", timeout=10).json()["store"].startswith("nats ")
        with AccordClient(serving, info["keys"]["Acme"]) as acme:
            team = acme.create_team("rollout")
            assert [t.name for t in acme.list_teams().data] == [team.name]
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(120) == 0
        for url in info["hubs"]:
            try:
                httpx.get(f"{url}/healthz", timeout=2)
                raise AssertionError(f"{url} still answers")
            except httpx.TransportError:
                pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
