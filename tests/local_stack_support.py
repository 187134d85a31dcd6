"""The whole local stack as `make run` starts it (``python -m herald.local``: the API, the workers polling the
queues as the template's event sources describe them, the schedule's sweep, moto), in its own process group,
and what its tests do with it: tenants, subscriptions, the arrivals at real receivers, and conditions waited for
with a ceiling, never a pause."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx

from tests.process_guard import Processes, logged
from tests.support import Receiver

ROOT = Path(__file__).resolve().parents[1]
#: Ceilings for conditions on a busy machine, never pauses.
START_SECONDS = 120
DELIVER_SECONDS = 420


@dataclass
class Stack:
    url: str
    aws: str
    log: Path

    def work_queue_attributes(self) -> dict[str, int]:
        """The work queue's messages in flight (received, not deleted) and delayed, from the embedded AWS."""
        sqs = boto3.client(
            "sqs", endpoint_url=self.aws, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        (url,) = [url for url in sqs.list_queues()["QueueUrls"] if url.endswith("herald-local-WorkQueue")]
        attributes = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]
        )["Attributes"]
        return {
            "in_flight": int(attributes["ApproximateNumberOfMessagesNotVisible"]),
            "delayed": int(attributes["ApproximateNumberOfMessagesDelayed"]),
        }


def stack_environment(admin_key: str, **settings: str) -> dict[str, str]:
    """The environment ``python -m herald.local`` runs with in a test: the test's own ``HERALD_``, ``AWS_`` and
    ``POWERTOOLS_`` variables left out (the stack sets its own, as `make run` does), ``admin_key`` and
    ``settings`` added, its output unbuffered."""
    inherited = ("HERALD_", "AWS_", "POWERTOOLS_")
    return {key: value for key, value in os.environ.items() if not key.startswith(inherited)} | {
        "HERALD_ADMIN_KEY": admin_key,
        "PYTHONUNBUFFERED": "1",
        **settings,
    }


def start_stack(processes: Processes, log: Path, environment: Mapping[str, str]) -> subprocess.Popen[Any]:
    """``python -m herald.local`` (what `make run` runs) started by ``processes``, its output in ``log``."""
    with log.open("wb") as output:
        return processes.start(
            [sys.executable, "-m", "herald.local"], cwd=ROOT, env=environment, stdout=output, stderr=output
        )


def announced(process: subprocess.Popen[Any], log: Path) -> tuple[str, str]:
    """The API's and the embedded AWS's URLs the stack's banner in ``log`` names, once it is there: the ports it
    bound (asked for 0, no port is picked for it that another process could take first)."""
    banner = logged(
        process, log, r"API and docs   (http://\S+)/docs.*Embedded AWS   (http://\S+)   \(moto", seconds=START_SECONDS
    )
    return banner[1], banner[2]


@contextmanager
def running_stack(log: Path, admin_key: str, env: Mapping[str, str] | None = None) -> Iterator[Stack]:
    """``python -m herald.local`` (what `make run` runs) on ports of its own choosing with ``env`` added to a clean
    environment, its output in ``log``; stopped with its process group whatever happens."""
    environment = stack_environment(
        admin_key,
        HERALD_LOCAL_PORT="0",
        HERALD_LOCAL_AWS_PORT="0",
        # The receivers answer at once, but they are threads of the test's process, on a machine the suite may
        # keep busy: one answer later than the slow lane's 2 s would be cut short and sent again from the slow
        # lane (a duplicate the README documents for endpoints that slow). These tests are not of slow endpoints.
        HERALD_SLOW_LANE_AFTER_SECONDS="10",
        **(env or {}),
    )
    processes = Processes()
    try:
        process = start_stack(processes, log, environment)
        url, aws = announced(process, log)
        # The banner is printed once the API serves: it answers at once.
        assert httpx.get(f"{url}/openapi.json", timeout=30).status_code == 200
        yield Stack(url, aws, log)
    finally:
        processes.stop_all()


@contextmanager
def api_of(stack: Stack) -> Iterator[httpx.Client]:
    """The stack's API, waited for as long as a delivery. The stack is one process: while it works through a
    1,000-fan-out (its deliveries, then their records on the table's stream) it answered a batch of 100 events in
    27 to 64 s on an idle 2-core machine (measured), and slower on a busy one."""
    with httpx.Client(base_url=stack.url, timeout=DELIVER_SECONDS) as client:
        yield client


def new_tenant(api: httpx.Client, admin: Mapping[str, str], name: str) -> tuple[str, dict[str, str]]:
    """A tenant's id and the headers of its first API key."""
    created = api.post("/v1/tenants", json={"name": name}, headers=admin)
    assert created.status_code == 201, created.text
    body = created.json()
    return body["id"], {"Authorization": f"Bearer {body['api_key']['key']}"}


def subscribe_all(api: httpx.Client, headers: Mapping[str, str], urls: list[str]) -> dict[str, str]:
    """Subscribe each URL to invoice.paid, eight requests at a time; the signing secret of each URL's path."""

    def one(url: str) -> tuple[str, str]:
        created = api.post("/v1/subscriptions", json={"url": url, "event_types": ["invoice.paid"]}, headers=headers)
        assert created.status_code == 201, created.text
        return httpx.URL(url).path, created.json()["secret"]

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, urls))


def wait_for(condition: Callable[[], bool], what: Callable[[], str], stack: Stack) -> None:
    deadline = time.monotonic() + DELIVER_SECONDS
    while not condition():
        assert time.monotonic() < deadline, (
            f"{what()} after {DELIVER_SECONDS} s; the stack's log ends:\n" + (stack.log.read_text()[-3000:])
        )
        time.sleep(0.2)


def arrivals(receivers: list[Receiver]) -> Counter[tuple[str, str]]:
    """Each (path, webhook-id) the receivers got, with how often."""
    found: Counter[tuple[str, str]] = Counter()
    for receiver in receivers:
        with receiver.lock:
            found.update((got.path, got.headers["webhook-id"]) for got in receiver.received)
    return found


def _settled(counts: Mapping[str, Any]) -> bool:
    return bool(counts["fanout_complete"]) and counts["succeeded"] == counts["matched"] and not counts["pending"]


def wait_until_settled(api: httpx.Client, admin: Mapping[str, str], event_ids: list[str], stack: Stack) -> None:
    """Wait until each event's counts show every matched delivery succeeded and its fan-out complete (each look
    stops at the first event that has not); a failure lists the counts of every event that had not."""

    def counts(event_id: str) -> dict[str, Any]:
        found: dict[str, Any] = api.get(f"/v1/events/{event_id}", headers=admin).json()["deliveries"]
        return found

    def unsettled() -> str:
        return str({event_id: found for event_id in event_ids if not _settled(found := counts(event_id))})

    wait_for(
        lambda: all(_settled(counts(event_id)) for event_id in event_ids),
        lambda: f"the events' counts did not settle: {unsettled()}",
        stack,
    )
