"""The real ``accord`` console script, run as a subprocess against a temporary data directory.

The demo here is ``accord demo --shapes`` (the five channel shapes); the two-company story that
``accord demo`` tells is tested in ``test_demo_story.py``."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCORD = Path(sys.executable).parent / "accord"
TITLES = ("consulting", "conversation", "discussion", "workflow", "thread")


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def flat(self) -> str:
        """stdout with all whitespace runs (including rich's line wrapping) collapsed to one space."""
        return " ".join(self.out.split())


def accord(*args: str | Path, timeout: float = 60) -> Run:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    proc = subprocess.run(
        [str(ACCORD), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run]:
    """One demo run shared by the read-only tests (replay, audit verify)."""
    data = tmp_path_factory.mktemp("cli") / "data"
    return data, accord("demo", "--shapes", "--data", data)


def channel_ids(run: Run) -> list[str]:
    """The demo's channel ids in transcript order (each appears in its panel title)."""
    seen: list[str] = []
    for cid in re.findall(r"thr_[0-9A-HJKMNP-TV-Z]{26}", run.out):
        if cid not in seen:
            seen.append(cid)
    return seen


def test_console_script_exists() -> None:
    assert ACCORD.exists(), f"no console script at {ACCORD}"


def test_help_lists_the_commands() -> None:
    run = accord("--help")
    assert run.code == 0, run.err
    for command in ("demo", "replay", "audit"):
        assert re.search(rf"\b{command}\b", run.out), f"{command} missing from --help"
    audit = accord("audit", "--help")
    assert audit.code == 0 and "verify" in audit.out


def test_demo_prints_the_five_transcripts_and_a_verified_chain(demo_data: tuple[Path, Run]) -> None:
    data, run = demo_data
    assert run.code == 0, run.out + run.err
    for title in TITLES:
        assert re.search(rf"\b{title}\b", run.out), f"no {title} transcript"
    assert "audit chain: verified" in run.flat
    assert "Traceback" not in run.err
    assert (data / "accord.db").exists()
    assert len(channel_ids(run)) == 5


def test_demo_twice_on_the_same_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "twice"
    first = accord("demo", "--shapes", "--data", data)
    assert first.code == 0, first.out + first.err
    second = accord("demo", "--shapes", "--data", data)
    assert second.code == 0, second.out + second.err
    assert "audit chain: verified" in second.flat
    for title in TITLES:
        assert title in second.out
    # the second run started over: new channels, and the first run's are gone with its store
    assert set(channel_ids(first)).isdisjoint(channel_ids(second))
    gone = accord("replay", channel_ids(first)[0], "--data", data)
    assert gone.code == 1 and "no channel" in gone.err
    # so every participant is registered once
    con = sqlite3.connect(data / "accord.db")
    try:
        rows = con.execute("SELECT data FROM log WHERE stream = 'registry' ORDER BY seq").fetchall()
    finally:
        con.close()
    registered = [
        json.loads(r[0])["event_data"]["passport"]["name"]
        for r in rows
        if json.loads(r[0])["event_type"] == "passport.registered"
    ]
    assert sorted(registered) == sorted(set(registered))
    assert {"triage", "kb", "dana", "sam", "sre", "dev", "scribe", "reviewer"} <= set(registered)
    verify = accord("audit", "verify", "--data", data)
    assert verify.code == 0 and "verified" in verify.flat


def test_replay_shows_the_channel(demo_data: tuple[Path, Run]) -> None:
    data, demo = demo_data
    cid = channel_ids(demo)[0]  # the consulting channel
    run = accord("replay", cid, "--data", data)
    assert run.code == 0, run.err
    assert cid in run.out
    for event in ("channel.opened", "text", "channel.closed"):
        assert event in run.out
    assert "What does the runbook say" in run.flat
    assert "adapter=consulting" in run.out and "status=closed" in run.out


def test_replay_json_is_one_envelope_per_line(demo_data: tuple[Path, Run]) -> None:
    data, demo = demo_data
    ids = channel_ids(demo)
    for cid in (ids[0], ids[-1]):  # a closed consulting channel and the thread that stays open
        run = accord("replay", cid, "--data", data, "--json")
        assert run.code == 0, run.err
        lines = run.out.splitlines()
        envs = [json.loads(line) for line in lines]
        assert all(isinstance(e, dict) for e in envs)
        assert [e["seq"] for e in envs] == list(range(1, len(envs) + 1))
        assert {e["channel_id"] for e in envs} == {cid}
        assert envs[0]["event_type"] == "channel.opened"
        assert len(envs) >= 4


def test_replay_of_an_unknown_channel(demo_data: tuple[Path, Run]) -> None:
    data, _ = demo_data
    run = accord("replay", "thr_unknown", "--data", data)
    assert run.code == 1  # a refusal
    assert run.err == f"error (not_found): no channel thr_unknown in {data}\n"
    assert "Traceback" not in run.err


def test_audit_verify_on_an_intact_store(demo_data: tuple[Path, Run]) -> None:
    data, _ = demo_data
    run = accord("audit", "verify", "--data", data)
    assert run.code == 0, run.out + run.err
    assert "verified" in run.out
    report = accord("audit", "verify", "--data", data, "--json")
    assert report.code == 0
    parsed = json.loads(report.out)
    assert parsed["ok"] is True and parsed["problems"] == []
    assert parsed["records"] > 0 and parsed["envelopes_checked"] > 0


def test_audit_verify_detects_an_edited_envelope(demo_data: tuple[Path, Run], tmp_path: Path) -> None:
    source, demo = demo_data
    assert demo.code == 0, demo.out + demo.err
    data = tmp_path / "tampered"
    shutil.copytree(source, data)  # no process has the store open: a plain copy is consistent
    cid = channel_ids(demo)[1]  # the conversation channel
    db = data / "accord.db"
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT seq, data FROM log WHERE stream = ? ORDER BY seq", (cid,)).fetchall()
        assert rows, f"no envelopes of {cid} in the store"
        seq, env = next((s, json.loads(d)) for s, d in rows if json.loads(d)["event_type"] == "text")
        env["event_data"]["text"] = "Nothing to see here."
        with con:
            con.execute(
                "UPDATE log SET data = ? WHERE stream = ? AND seq = ?",
                (json.dumps(env, separators=(",", ":")).encode(), cid, seq),
            )
    finally:
        con.close()

    run = accord("audit", "verify", "--data", data)
    assert run.code == 1, run.out + run.err
    assert "BROKEN" in run.out
    assert f"{cid}#{seq}" in run.flat
    assert "modified" in run.flat
    assert "Traceback" not in run.err
    report = json.loads(accord("audit", "verify", "--data", data, "--json").out)
    assert report["ok"] is False
    assert len(report["problems"]) == 1 and f"{cid}#{seq}" in report["problems"][0]
    # replay still works and shows the edited text (the log is readable, only the chain is broken)
    replay = accord("replay", cid, "--data", data)
    assert replay.code == 0 and "Nothing to see here." in replay.flat


@pytest.mark.parametrize("command", [("audit", "verify"), ("replay", "thr_x")], ids=["audit", "replay"])
def test_missing_data_dir_is_a_clear_error(tmp_path: Path, command: tuple[str, ...]) -> None:
    missing = tmp_path / "no-such-dir"
    run = accord(*command, "--data", missing)
    assert run.code == 1
    assert run.err.startswith(f"error (no_store): no Accord store in {missing} — create one with ")
    assert "Traceback" not in run.err
    assert not missing.exists()  # read-only commands do not create it


@pytest.mark.parametrize("content", [b"", b"this is not a database"], ids=["empty", "garbage"])
def test_a_file_that_is_not_an_accord_store_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    data = tmp_path / "bad"
    data.mkdir()
    (data / "accord.db").write_bytes(content)
    run = accord("audit", "verify", "--data", data)
    # a store that cannot be read is refused (exit 1) in one line, like a missing one
    assert run.code == 1 and run.out == "" and run.err.count("\n") == 1, run.out + run.err
    assert "Traceback" not in run.err and "Traceback" not in run.out
    assert "accord.db" in run.err


def test_replay_takes_team_slash_thread_as_post_and_tail_do(demo_data: tuple[Path, Run]) -> None:
    data, demo = demo_data
    cid = channel_ids(demo)[-1]
    bare = accord("replay", cid, "--data", data, "--json")
    both = accord("replay", f"team_01JZZZZZZZZZZZZZZZZZZZZZZZ/{cid}", "--data", data, "--json")
    assert bare.code == both.code == 0 and bare.out == both.out != ""
