"""Processes the tests start: one way to start them, stopped whatever happens, and a check that none outlives
the session (a pytest plugin, registered in conftest.py).

- ``processes`` (fixture): starts commands in their own process group and, at teardown, stops each group
  (SIGINT, then SIGKILL to the whole group), whether the test passed, failed or was interrupted.
- ``logged``: what a started server printed once it is there (the port it bound, when asked for port 0).
- ``run_group``: ``subprocess.run`` for a command that starts children of its own (Chromium): on a timeout
  or an error the whole group is killed, and so is anything of the group still running once it returned.
- Children start with SIGINT and SIGQUIT as a terminal has them, even when the suite itself was started with them
  ignored (a background job of a shell).
- At the end of the session, the run fails if a process started by the suite is still alive. Pytest is made
  the "child subreaper" of its descendants (Linux), so a grandchild whose parent died is still seen here
  instead of being handed to init; leftovers are reported, then killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

#: prctl(2) option that makes orphaned descendants children of the calling process.
PR_SET_CHILD_SUBREAPER = 36
#: How long children get to finish on their own after the session, and a group after SIGINT.
GRACE_SECONDS = 10.0


def _set_subreaper() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def live_descendants(root: int | None = None) -> dict[int, str]:
    """Processes below ``root`` (default: this one) that are running (zombies are dead): pid -> command."""
    root = os.getpid() if root is None else root
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        state, parent_pid = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            parents[int(entry.name)] = int(parent_pid)
            commands[int(entry.name)] = command or stat.split("(", 1)[1].rsplit(")", 1)[0]
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = commands[pid]
                frontier.append(pid)
    return found


def _reap() -> None:
    """Collect exited children nobody waits for (orphans handed to this process as subreaper)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def logged(process: subprocess.Popen[Any], log: Path, pattern: str, *, seconds: float) -> re.Match[str]:
    """The first match of ``pattern`` (``.`` matching newlines too) in ``log``, ``process``'s output, once it is
    there: looked at again every 50 ms; the test fails if the process ends or ``seconds`` pass first."""
    deadline = time.monotonic() + seconds
    while not (found := re.search(pattern, text := log.read_text(errors="replace"), flags=re.DOTALL)):
        assert process.poll() is None, f"{process.args!r} ended: {text[-3000:]}"
        assert time.monotonic() < deadline, f"{process.args!r} did not print {pattern!r} within {seconds} s: {text}"
        time.sleep(0.05)
    return found


def stop_group(process: subprocess.Popen[Any], sig: int = signal.SIGINT, grace: float = GRACE_SECONDS) -> int:
    """Send ``sig`` to the process's group (as Ctrl-C does), wait up to ``grace`` seconds, then SIGKILL the
    group. Anything of the group still running after the leader exited is killed too. Returns the exit code;
    raises TimeoutError (after killing) if the group did not stop on ``sig``."""
    pgid = process.pid
    if process.poll() is None:
        kill_group(pgid, sig)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            kill_group(pgid)
            process.wait()
            raise TimeoutError(f"{process.args!r} did not stop within {grace} s of signal {sig}") from None
    kill_group(pgid)
    return process.returncode


def run_group(args: Sequence[str], *, timeout: float, **options: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run(args, timeout=...)`` in a process group of its own: on a timeout, an error or an
    interrupt the whole group is killed (not only the first process), and so are leftovers of the group."""
    if options.pop("capture_output", False):
        options.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process = subprocess.Popen(args, start_new_session=True, **options)
    try:
        out, err = process.communicate(timeout=timeout)
    except BaseException:
        kill_group(process.pid)
        process.wait()
        raise
    finally:
        kill_group(process.pid)
    return subprocess.CompletedProcess(args, process.returncode, out, err)


class Processes:
    """Commands started in their own process group; ``stop_all`` stops every group still running."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[Any]] = []

    def start(self, args: Sequence[str], **options: Any) -> subprocess.Popen[Any]:
        process = subprocess.Popen(args, start_new_session=True, **options)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            with contextlib.suppress(TimeoutError):
                stop_group(process)


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Start processes with ``processes.start(...)``; each group is stopped at teardown whatever happened."""
    started = Processes()
    try:
        yield started
    finally:
        started.stop_all()


def _interruptible() -> None:
    """Children get Ctrl-C as from a terminal, however the suite was started. A shell starts a background command
    with SIGINT and SIGQUIT ignored, an ignored signal stays ignored across exec, and Python installs no handler
    for a SIGINT ignored at its start: every receiver and stack the tests stop with SIGINT would ignore it. A
    handler (this process's own) is reset by exec, so the children start with the default."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def pytest_sessionstart(session: pytest.Session) -> None:
    _set_subreaper()
    _interruptible()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a process the suite started is still alive (after a grace period to exit)."""
    deadline = time.monotonic() + GRACE_SECONDS
    _reap()
    leftovers = live_descendants()
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.1)  # waiting for processes to finish exiting, checked each time
        _reap()
        leftovers = live_descendants()
    if not leftovers:
        return
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _reap()
    lines = "\n".join(f"  {pid}: {command[:200]}" for pid, command in sorted(leftovers.items()))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"processes started by the tests were still running after the session (now killed):\n{lines}"
    if reporter is not None:
        reporter.write_line(message, red=True)
    else:
        print(message, file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
