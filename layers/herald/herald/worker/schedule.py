"""When a delivery is tried next, and how its message waits for it on the work queue.

A delivery message stays on the queue until its delivery is settled: after a failed attempt the worker
hides it for the retry delay (``ChangeMessageVisibility``, in hops of less than 12 h) and reports it as a
batch item failure, so SQS brings it back when the next attempt is due. No sleeping in Lambda.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from herald.queue import MAX_VISIBILITY_SECONDS, QueueVisibilityLimitError
from herald.records import Delivery, DeliveryStatus, ErrorKind

if TYPE_CHECKING:
    import random

    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from herald.messages import DeliveryMessage
    from herald.retry import RetryPolicy
    from herald.sender import Outcome
    from herald.worker.runtime import Worker

#: When an attempt cannot start now (no time left, lease busy), the message comes back after this.
SHORT_RETRY_SECONDS = 10
#: Refresh a long-lived delivery message (new copy, this one deleted) before SQS's 14-day retention
#: or the queue's maxReceiveCount could end it.
MESSAGE_MAX_AGE_SECONDS = 12 * 24 * 3600
#: The longest one hop of a hold. SQS keeps a message hidden at most 12 h after it was *received*, and
#: the record was received before the invocation started (batching window, earlier records), so a hop
#: stays well below the cap; a longer wait is made of several hops.
MAX_HOLD_SECONDS = MAX_VISIBILITY_SECONDS - 15 * 60


class RetryLaterError(Exception):
    """The record is put back on the queue on purpose (a retry is scheduled, or it cannot run now)."""


def receive_count(record: SQSRecord) -> int:
    return int(record.attributes.approximate_receive_count or 1)


def next_step(
    outcome: Outcome,
    scheduled: int,
    previous: Delivery | None,
    single_shot: bool,
    *,
    policy: RetryPolicy,
    rng: random.Random,
) -> tuple[datetime | None, DeliveryStatus]:
    """The delivery's next attempt and status after ``outcome``. ``scheduled`` counts the scheduled attempts
    made so far, this one included: the position in the retry schedule."""
    if outcome.succeeded:
        return None, DeliveryStatus.SUCCEEDED
    if single_shot and previous is not None:
        # A manual attempt does not change the schedule: a pending delivery keeps its next attempt.
        return previous.next_attempt_at, previous.status
    if outcome.status_code == 410:
        return None, DeliveryStatus.FAILED
    if outcome.error_kind in (ErrorKind.REFUSED_BY_POLICY, ErrorKind.TRANSFORM):
        # The URL (or what its name resolves to) is one Herald must not call, or the subscription's transform
        # fails on this event: retrying would only knock on the same door. A manual retry tries again once the
        # subscriber has fixed it.
        return None, DeliveryStatus.FAILED
    delay = policy.delay_after(scheduled, throttled=outcome.throttled, retry_after=outcome.retry_after, rng=rng)
    if delay is None:
        return None, DeliveryStatus.FAILED  # exhausted: recorded, never silently dropped
    return outcome.finished + timedelta(seconds=delay), DeliveryStatus.PENDING


async def hold(worker: Worker, message: DeliveryMessage, record: SQSRecord, seconds: float) -> None:
    """Bring this message back in ``seconds``: hide it and raise ``RetryLaterError``, so the record is
    reported as a batch item failure and SQS shows it again when the time comes. A wait longer than
    ``MAX_HOLD_SECONDS`` is one hop of it: the message comes back early, finds its attempt not yet
    due and is held again.

    A message that has lived long or been received often is replaced by a fresh copy instead (and
    this returns, so the old one is deleted): neither the 14-day retention nor maxReceiveCount
    ends a healthy retry sequence. So is one that SQS refuses to hide any longer. The copy is
    visible at once: its first receive hides it for the time left (one extra receive, and no
    15-minute ``DelaySeconds`` step in the middle of a long wait). Callers return right after.
    """
    seconds = max(0.0, seconds)
    sent_ms = int(record.attributes.sent_timestamp or 0)
    age = worker.clock() - sent_ms / 1000 if sent_ms else 0
    if receive_count(record) >= worker.settings.max_receive_count - 2 or age > MESSAGE_MAX_AGE_SECONDS:
        await worker.io(worker.queue.send, message)
        return  # the copy carries on; this message is deleted
    try:
        await worker.io(worker.queue.change_visibility, record.receipt_handle, min(seconds, MAX_HOLD_SECONDS))
    except QueueVisibilityLimitError:
        await worker.io(worker.queue.send, message)
        return
    raise RetryLaterError(f"next look in {seconds:.0f} s")
