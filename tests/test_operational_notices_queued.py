"""Operational events AWS keeps refusing are not lost: the worker leaves them to the work queue (``NoticeMessage``),
and a later batch publishes them, once however many copies there are. Over real HTTP, verified with
``standardwebhooks``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from herald.faults import install
from herald.local.moto_fixes import release_delays
from herald.messages import NoticeMessage, dump_message
from herald.queue import ERROR_ATTRIBUTE
from tests.delivery_support import Harness, publish, subscribe
from tests.support import Receiver, TenantInfo
from tests.test_operational_webhooks import operational, register

pytestmark = pytest.mark.e2e

RECOVERED = {
    "tenant_id": "tnt_01jb0000000000000000000000",
    "subscription_id": "sub_01jb0000000000000000000000",
    "url": "https://example.com/hooks",
    "failing_since": "2026-01-01T10:00:00Z",
    "recovered_at": "2026-01-01T12:00:00Z",
}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Five attempts back to back (no waiting), no jitter: a whole retry sequence runs in one drain.
    return {"retry_schedule": (0, 0, 0, 0, 0), "retry_jitter": 0.0, "failing_after_failures": 3}


@pytest.fixture
def clock() -> Callable[[], float]:
    """The worker runs on the real clock here (the shared ``harness`` takes it)."""
    return time.time


def _release_and_drain(harness: Harness, times: int) -> None:
    """Let the delayed messages out and drain, ``times`` over: a notice waits 30 s on the queue, and the fan-out of
    an event published again (a refused try stored it) is held back a minute."""
    for _ in range(times):
        release_delays(harness.services.settings.queue_url)
        harness.drain()


def test_a_report_aws_keeps_refusing_is_queued_and_published_later_once(
    client: Any,
    tenant: TenantInfo,
    harness: Harness,
    make_receiver: Callable[[], Receiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN an operator endpoint, a tenant endpoint that answers 410 Gone, and an event queued for it
    ops, gone = make_receiver(), make_receiver()
    gone.default = (410, {}, b"gone", 0.0)
    endpoint = register(client, ops.url)
    subscribe(client, tenant, gone.url)
    publish(client, tenant.id)
    # AND SQS refuses the worker's first three sends (after botocore's retries): each try of the first report's
    injector = install(harness.services.queue.client, "sqs.Send*:5xx@call=calls:1-3")
    assert injector is not None
    # WHEN the delivery is made and fails for good, and its subscription is disabled
    with caplog.at_level(logging.WARNING):
        harness.drain()
    # THEN the first report was refused on each of its three tries, and left to the work queue
    assert injector.count("5xx") == 3
    assert "operational event refused; queued to be published later" in caplog.text
    assert [payload["type"] for payload in operational(endpoint["secret"], ops)] == ["subscription.disabled"]
    # WHEN the queue's later batches run
    _release_and_drain(harness, 2)
    # THEN both reports reached the operator, signed, once each
    received = [payload["type"] for payload in operational(endpoint["secret"], ops)]
    assert sorted(received) == ["delivery.exhausted", "subscription.disabled"]


def test_a_queued_notice_refused_again_comes_back_and_its_copies_publish_it_once(
    client: Any, harness: Harness, make_receiver: Callable[[], Receiver]
) -> None:
    # GIVEN an operator endpoint, and a notice queued twice (SQS's at-least-once, or two workers that each queued it)
    ops = make_receiver()
    endpoint = register(client, ops.url)
    body = dump_message(NoticeMessage(event_type="subscription.recovered", data=RECOVERED, key=["sub_1", "t0"]))
    for _ in range(2):
        harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody=body)
    # AND DynamoDB refusing each copy's first read (after botocore's retries)
    injector = install(harness.services.store.client, "dynamodb.Query:5xx@call=calls:1-2")
    assert injector is not None
    # WHEN the worker takes them
    harness.drain()
    # THEN nothing is published, and both copies stay on the queue (taken back, not deleted)
    assert injector.count("5xx") == 2
    assert ops.received == []
    assert harness.reveal() >= 0
    # WHEN they come back, and the fan-outs run
    harness.drain()
    _release_and_drain(harness, 1)
    # THEN the operator got the notice once, signed, as the catalog documents it
    [received] = operational(endpoint["secret"], ops)
    assert (received["type"], received["data"]) == ("subscription.recovered", RECOVERED)
    assert harness.counts() == (0, 0)


@pytest.mark.parametrize(
    ("event_type", "data", "why"),
    [
        ("subscription.exploded", RECOVERED, "is not an operational event type"),
        ("subscription.recovered", {**RECOVERED, "recovered_at": "yesterday"}, "recovered_at"),
    ],
    ids=["type not in the catalog", "data that does not fit"],
)
def test_a_notice_the_catalog_does_not_take_is_parked_in_the_dead_letter_queue(
    client: Any, harness: Harness, make_receiver: Callable[[], Receiver], event_type: str, data: Any, why: str
) -> None:
    # GIVEN an operator endpoint, and a notice no try will publish (another version's)
    ops = make_receiver()
    register(client, ops.url)
    body = dump_message(NoticeMessage(event_type=event_type, data=data, key=["sub_1"]))
    harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody=body)
    # WHEN the worker takes it
    harness.drain()
    # THEN it is in the dead-letter queue with the reason, off the work queue, and nothing was published
    settings = harness.services.settings
    [letter] = harness.sqs.receive_message(QueueUrl=settings.dead_letter_queue_url, MessageAttributeNames=["All"])[
        "Messages"
    ]
    assert json.loads(letter["Body"]) == json.loads(body)
    reason = letter["MessageAttributes"][ERROR_ATTRIBUTE]["StringValue"]
    assert reason.startswith("operational event not publishable")
    assert why in reason
    assert harness.counts() == (0, 0)
    assert ops.received == []
