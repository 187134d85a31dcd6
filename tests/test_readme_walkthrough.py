"""The README's walk-through, run as written: `make run`, the curl steps, `make receiver`, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from herald.local.stack import free_port
from tests.local_stack_support import announced
from tests.process_guard import Processes, logged, run_group, stop_group

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
#: How long each terminal gets to stop after Ctrl-C.
STOP_SECONDS = 30


def walkthrough_blocks() -> dict[str, list[str]]:
    """The README's bash blocks of the walk-through section, by terminal ("terminal 1", ...)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Walk-through (local)", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, list[str]] = {}
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL):
        terminal = block.splitlines()[0].lstrip("# ").strip()
        blocks.setdefault(terminal, []).append(block)
    return blocks


def start(processes: Processes, command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A terminal's command, in its own process group (stopped at teardown whatever happens)."""
    return processes.start(["bash", "-c", command], cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def test_readme_walkthrough_works_as_written(tmp_path: Path, processes: Processes) -> None:
    # Long on purpose: one GIVEN / WHEN / THEN story, read from start to end.
    blocks = walkthrough_blocks()
    assert set(blocks) == {"terminal 1", "terminal 2", "terminal 3"}, blocks.keys()
    # The stack takes a port of its own choosing (0) and names it in its banner. The receiver's is picked here:
    # its URL is subscribed before it starts, since it needs the subscription's secret.
    receiver_port = free_port("127.0.0.1")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HERALD_", "AWS_"))} | {
        "HERALD_LOCAL_PORT": "0",
        "PORT": str(receiver_port),
    }

    # GIVEN the stack started as the README says (terminal 1)
    stack = start(processes, blocks["terminal 1"][0], env, tmp_path / "stack.log")
    receiver = None
    try:
        api_url, _ = announced(stack, tmp_path / "stack.log")
        assert httpx.get(f"{api_url}/openapi.json", timeout=30).status_code == 200

        def localize(text: str) -> str:
            return text.replace("127.0.0.1:8000", api_url.removeprefix("http://")).replace(
                "127.0.0.1:9000", f"127.0.0.1:{receiver_port}"
            )

        # WHEN terminal 2 creates a tenant and a subscription
        state = tmp_path / "state.sh"
        first = localize(blocks["terminal 2"][0]) + (
            f"\ndeclare -p HERALD ADMIN_KEY TENANT_ID TENANT_KEY SUB_ID > {state}\ndeclare -f json >> {state}\n"
        )
        out = run_group(
            ["bash", "-euo", "pipefail", "-c", first],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        secret = out.stdout.strip().splitlines()[-1]
        assert secret.startswith("whsec_")

        # ... terminal 3 starts the sample receiver with the secret
        receiver_command = blocks["terminal 3"][0].replace("SECRET=whsec_...", f"SECRET='{secret}'")
        receiver = start(processes, receiver_command, env, tmp_path / "receiver.log")
        logged(receiver, tmp_path / "receiver.log", "listening", seconds=60)

        # ... and terminal 2 publishes and reads the results
        second = f"source {state}\n" + localize(blocks["terminal 2"][1])
        out = run_group(
            ["bash", "-euo", "pipefail", "-c", second],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr

        # THEN the receiver refused the first attempt and verified the retry, with the same webhook-id
        received = (tmp_path / "receiver.log").read_text()
        refused = re.findall(r"verified (evt_\w+), answering 503", received)
        verified = re.findall(r"VERIFIED (evt_\w+)", received)
        assert len(refused) == 1, received
        assert verified == refused, received
        assert '"username": "ada"' in received
        # ... the operator sees one succeeded delivery, the tenant two attempts
        lines = out.stdout.strip().splitlines()
        assert (
            "'matched': 1, 'pending': 0, 'succeeded': 1, 'failed': 0, 'filtered': 0, 'fanout_complete': True"
            in lines[0]
        )
        attempts = eval(lines[1])
        assert [a["attempt_number"] for a in attempts] == [1, 2]
        assert [a["status_code"] for a in attempts] == [503, 200]
    finally:
        # AND Ctrl-C (SIGINT to each terminal's process group) stops the receiver, then the stack; a group
        # that does not stop is killed and fails the test (the fixture stops whatever is left in any case)
        try:
            if receiver is not None:
                stop_group(receiver, signal.SIGINT, grace=STOP_SECONDS)
        finally:
            code = stop_group(stack, signal.SIGINT, grace=STOP_SECONDS)
    log = (tmp_path / "stack.log").read_text()
    # make exits through SIGINT like any program stopped with Ctrl-C; the stack itself must stop cleanly
    assert code in (0, 130, -signal.SIGINT), log
    assert "stopping the delivery workers" in log
    assert "Traceback" not in log, log
