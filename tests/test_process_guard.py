"""tests/process_guard.py: a session that leaves a process running fails, and the process is killed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LEAKY = """
import subprocess
from pathlib import Path

def test_leaves_a_grandchild(tmp_path):
    # a shell that starts a long sleep in the background and exits: the sleep is orphaned
    subprocess.run(["bash", "-c", "sleep 300 & echo $! > {pid_file}"], check=True)
"""

CLEAN = """
import sys

def test_stops_its_process(processes):
    child = processes.start([sys.executable, "-c", "import time; time.sleep(300)"])
    assert child.poll() is None
"""


def run_session(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    test_file = tmp_path / "test_session.py"
    test_file.write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.process_guard", "-p", "no:cacheprovider", "-q", str(test_file)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_process_left_running_fails_the_session_and_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "sleep.pid"
    # WHEN a session's test leaves an orphaned grandchild running
    result = run_session(tmp_path, LEAKY.replace("{pid_file}", str(pid_file)))
    # THEN the session fails though its test passed, names the process, and killed it
    assert "1 passed" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 1, result.stdout
    assert "still running after the session" in result.stdout
    assert "sleep 300" in result.stdout
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"


def test_processes_started_through_the_fixture_are_stopped(tmp_path: Path) -> None:
    result = run_session(tmp_path, CLEAN)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "still running" not in result.stdout
