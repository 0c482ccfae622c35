"""``accord demo``: the two-company story (Acme, Globex, acme-rollout, Acme's support triage), offline.

The CLI runs as a real subprocess on a temporary data directory; nothing here reaches a network: the
``--model`` tests fail before any request is made, and the injected-model test runs in-process.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from accord.demo import run_demo
from accord.demo_network import run_story
from accord.demo_story import ROLLOUT, SUPPORT_REQUESTS
from accord.testing import TestConfig

ACCORD = Path(sys.executable).parent / "accord"
THREAD_ID = r"thr_[0-9A-HJKMNP-TV-Z]{26}"


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def flat(self) -> str:
        return " ".join(self.out.split())

    @property
    def shared_thread(self) -> str:
        found = re.search(rf"accord replay ({THREAD_ID})", self.flat)
        assert found, self.out
        return found.group(1)


def accord(*args: str | Path, **env: str) -> Run:
    clean = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ACCORD_MODEL_API_KEY")}
    full = {**clean, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", **env}
    proc = subprocess.run(
        [str(ACCORD), *map(str, args)], capture_output=True, text=True, timeout=60, env=full
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run]:
    data = tmp_path_factory.mktemp("story") / "data"
    return data, accord("demo", "--data", data)


def test_the_story_runs_offline_and_tells_the_seed_conversation(story: tuple[Path, Run]) -> None:
    data, run = story
    assert run.code == 0, run.out + run.err
    assert "Traceback" not in run.err
    flat = run.flat
    assert "Acme" in flat and "Globex" in flat
    assert "acme-rollout" in flat and "rollout-status" in flat
    assert "offline" in flat and "no network" in flat
    for who, text in ROLLOUT:  # the four lines, in order, each with its speaker
        assert f"{who} " in flat and text in flat, text
    positions = [flat.index(text) for _, text in ROLLOUT]
    assert positions == sorted(positions)
    # the agents' lines came from the (offline) model through the routine worker, and say so
    assert flat.count("[offline model] I checked the customer-side launch checklist") == 1
    assert flat.count("[offline model] The partner rollout plan still shows") == 1
    assert (data / "accord.db").exists()


def test_the_support_request_is_routed_and_answered(story: tuple[Path, Run]) -> None:
    _, run = story
    flat = run.flat
    billing, technical = SUPPORT_REQUESTS
    assert (
        f"Intake Initech customer {billing} "
        'Billing Support Triage the triage script routed it here ({route: "billing"}) '
        "Billing Billing Support [offline model] I see two payments for invoice INV-2291." in flat
    )
    assert (
        f"Intake Initech customer {technical} "
        'Technical Support Triage the triage script routed it here ({route: "technical"}) '
        "Technical Technical Support [offline model] A 401 means your API key expired" in flat
    )


def privacy_rows(out: str) -> dict[str, list[str]]:
    """The privacy table's rows: label → [Acme's view, Globex's view]."""
    table = out[out.index("What each org can see") : out.index("Routine runs")]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in re.split(r" {2,}", line.strip())]
        if len(cells) == 3:
            rows[cells[0]] = cells[1:]
    return rows


def test_the_privacy_table(story: tuple[Path, Run]) -> None:
    _, run = story
    rows = privacy_rows(run.out)
    acme_teams, globex_teams = rows["teams"]
    assert acme_teams.startswith("3:") and globex_teams == "2: Globex Delivery, acme-rollout"
    assert rows["threads"] == ["6", "3"]
    assert rows["the other org's private threads (read by id)"] == [
        "0 of 2 (not_found)",
        "0 of 5 (not_found)",
    ]
    assert rows["members of acme-rollout"] == ["4", "4"]
    assert rows["messages in rollout-status"] == ["4", "4"]
    assert rows["knowledge documents"] == ["4, all Acme's", "3, all Globex's"]
    acme_hits, globex_hits = rows['knowledge search "webhook validation"']
    assert acme_hits.endswith(", 0 from Globex") and globex_hits.endswith(", 0 from Acme")
    assert rows["the other org's private texts in its agent's model input"] == [
        "0 of 5 (Customer Ops Agent)",
        "0 of 8 (Delivery Agent)",
    ]


def test_routine_runs_and_the_audit_chain(story: tuple[Path, Run]) -> None:
    _, run = story
    flat = run.flat
    assert "Routine runs" in flat and "duration_ms" in flat
    assert flat.count("succeeded") == 6 and "failed" not in flat
    assert "participate" in flat and "script" in flat
    assert "audit chain verified" in flat
    assert "7 refusals" in flat  # the privacy probes, refused and audited


def test_the_shared_thread_replays(story: tuple[Path, Run]) -> None:
    data, run = story
    replay = accord("replay", run.shared_thread, "--data", data)
    assert replay.code == 0, replay.err
    for _, text in ROLLOUT:
        assert text in replay.flat


def test_audit_verify_accepts_a_store_with_routine_runs(story: tuple[Path, Run]) -> None:
    data, _ = story
    assert accord("audit", "verify", "--data", data).code == 0


def test_a_second_run_on_the_same_dir_starts_over(tmp_path: Path) -> None:
    data = tmp_path / "twice"
    first = accord("demo", "--data", data)
    assert first.code == 0, first.out + first.err
    second = accord("demo", "--data", data)
    assert second.code == 0, second.out + second.err
    for _, text in ROLLOUT:
        assert text in second.flat
    assert "audit chain verified" in second.flat
    assert first.shared_thread != second.shared_thread
    assert accord("replay", first.shared_thread, "--data", data).code == 1  # gone with the old store
    con = sqlite3.connect(data / "accord.db")
    try:
        rows = con.execute("SELECT data FROM log WHERE stream = 'registry'").fetchall()
    finally:
        con.close()
    orgs = [json.loads(r[0])["event_data"]["name"] for r in rows if b"org.created" in r[0]]
    assert sorted(orgs) == ["Acme", "Globex"]


def test_a_store_the_demo_did_not_make_is_left_alone(tmp_path: Path) -> None:
    data = tmp_path / "server"
    made = accord("orgs", "create", "Initrode", "--data", data)
    assert made.code == 0, made.err
    run = accord("demo", "--data", data)
    assert run.code == 1 and "did not make" in " ".join(run.err.split()) and "--fresh" in run.err
    assert "Initrode" in accord("orgs", "list", "--data", data).out  # untouched
    forced = accord("demo", "--data", data, "--fresh")
    assert forced.code == 0, forced.out + forced.err
    assert "Initrode" not in accord("orgs", "list", "--data", data).out


def test_a_store_from_an_older_demo_is_reset(tmp_path: Path) -> None:
    data = tmp_path / "old"
    data.mkdir()
    asyncio.run(run_demo(data, Console(file=io.StringIO())))  # the five shapes, without the marker file
    run = accord("demo", "--data", data)
    assert run.code == 0, run.out + run.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "gpt-4"), "a model is 'offline'"),
        (("--model", "openai:gpt-4o-mini"), "no API key"),
        (("--shapes", "--model", "openai:gpt-4o-mini"), "--shapes uses scripted models"),
    ],
    ids=["bad-spec", "no-key", "shapes"],
)
def test_model_errors_are_clear_and_touch_nothing(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    data = tmp_path / "d"
    run = accord("demo", "--data", data, *args)
    assert run.code == 2, run.out + run.err
    assert message in " ".join(run.err.split()) and "Traceback" not in run.err
    assert not data.exists()


async def test_the_story_runs_on_any_model(tmp_path: Path) -> None:
    """``--model`` swaps the model the routine worker uses; here a scripted one, in-process."""
    model = TestConfig(
        "ops: webhook validation is open", "delivery: retries first", "refunded", "rotate"
    ).create()
    out = io.StringIO()
    result = await run_story(tmp_path, Console(file=out, width=200), model, "test")
    assert result.ok, out.getvalue()
    said = [text for who, _org, kind, text in result.transcript if kind == "agent"]
    assert said == ["ops: webhook validation is open", "delivery: retries first"]
    assert [c.routed_to for c in result.support] == ["Billing", "Technical"]
    assert [c.answer for c in result.support] == ["refunded", "rotate"]
    assert {r["model"] for r in result.runs} == {"test", "script"}
    assert "[offline model]" not in out.getvalue()
