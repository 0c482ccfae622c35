"""The README's network walkthrough, exactly as a newcomer pastes it, against a real `accord serve`.

The shell block after ``<!-- walkthrough -->`` under "The network server" runs with bash in a fresh
directory (with ``.venv`` linked to this one), on a free port through ``ACCORD_PORT``, which the
sequence honours. Nothing waits on a clock: the sequence polls ``/healthz`` until the server answers,
and ``accord tail --count 2`` exits once it has printed two messages."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from test_rest import ACCORD, free_port

README = Path(__file__).resolve().parents[2] / "README.md"
MARK = "<!-- walkthrough -->"


def _section() -> str:
    text = README.read_text()
    start = text.index("## The network server\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def walkthrough() -> str:
    """The shell block right after the marker (there is exactly one marker)."""
    section = _section()
    assert section.count(MARK) == 1 and README.read_text().count(MARK) == 1
    match = re.match(r"\s*```sh\n(.*?)\n```\n", section[section.index(MARK) + len(MARK) :], re.S)
    assert match, "the walkthrough marker must be followed by a ```sh block"
    return match.group(1)


def shown_output() -> list[str]:
    """The lines the README says the walkthrough ends with (the plain block after the sh block)."""
    section = _section()
    rest = section[section.index(MARK) :].split("```sh\n", 1)[1].split("\n```\n", 1)[1]
    match = re.search(r"```\n(.*?)\n```", rest, re.S)
    assert match
    return match.group(1).splitlines()


def test_the_walkthrough_has_nothing_to_fill_in() -> None:
    script = walkthrough()
    for placeholder in ("…", "TEAM_ID", "THREAD_ID", "agt_", "usr_", "ak_", "<", "YOUR"):
        assert placeholder not in script, placeholder
    assert "--data net" in script and "kill $SERVER" in script


def test_the_readme_walkthrough_runs_top_to_bottom(tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(ACCORD.parent.parent, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    env.update({"ACCORD_PORT": str(free_port()), "NO_COLOR": "1", "COLUMNS": "200"})
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", walkthrough()],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the background server goes with it below
    )
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # only if something was left running
        except ProcessLookupError:
            pass
        proc.wait()
    log = tmp_path / "net" / "serve.log"
    context = f"stdout:\n{out}\nstderr:\n{err}\nserve.log:\n{log.read_text() if log.exists() else '-'}"
    assert proc.returncode == 0, context
    expected = shown_output()
    assert [line for line in expected if line.startswith("[Acme/")], expected
    assert [line for line in expected if line.startswith("[Globex/")], expected
    assert out.splitlines()[-len(expected) :] == expected, context
    assert "Traceback" not in err, context
    assert '"accord serve stopped"' in log.read_text(), context  # a graceful stop, not a kill
