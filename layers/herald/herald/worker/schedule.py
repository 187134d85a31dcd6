"""When a delivery is tried next, and how its message waits for it without occupying the work queue.

A waiting message is never held in the queue's in-flight set (SQS caps a standard queue at about 120,000
messages in flight, and past it every consumer stalls). Instead the message is let go and a copy of it is
scheduled: with ``DelaySeconds`` for a wait up to SQS's 15 minutes (a delayed message is not in flight),
and in DynamoDB (``storage.schedule``) for a longer one, which the sweeper (``herald.worker.sweeper``)
queues shortly before it is due. The copy is marked ``resumed``: its delivery is read before it is claimed
(a first receive held without an attempt has no delivery written yet, and is claimed as new). If the
invocation dies after scheduling the copy and before SQS deletes the original, both come back; the
delivery's lease and attempt count keep the second from sending, and a copy that finds the delivery waiting
again is held for the same moment as the first, where a long wait merges the two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from herald.errors import ServiceUnavailableError
from herald.messages import dump_message
from herald.queue import BATCH_SIZE, MAX_DELAY_SECONDS, MAX_MESSAGE_BYTES, REDRIVES_ATTRIBUTE, redrive_count
from herald.records import Delivery, DeliveryStatus, ErrorKind
from herald.storage.schedule import scheduled_name
from herald.worker.gathering import Activity, Gatherer

if TYPE_CHECKING:
    import random

    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from herald.messages import DeliveryMessage
    from herald.retry import RetryPolicy
    from herald.sender import Outcome
    from herald.worker.runtime import Worker

#: When an attempt cannot start now (no time left, lease busy), the message comes back after this.
SHORT_RETRY_SECONDS = 10


@dataclass(frozen=True)
class _Copy:
    """A held message's copy, to be sent delayed by ``delay`` seconds (up to SQS's 15 minutes)."""

    message: DeliveryMessage
    delay: int
    redrives: int


class HeldCopies(Gatherer[_Copy, None]):
    """The batch's copies of held messages delayed by SQS, sent together: ``SendMessageBatch`` of up to 10
    (``herald.worker.gathering``), each record's copy answered on its own, so that a record whose copy SQS did not
    take (or may not have) fails and its message comes back, as when each copy was a ``SendMessage`` of its own."""

    def __init__(self, worker: Worker, *, activity: Activity | None = None) -> None:
        super().__init__(worker, self._send, limit=BATCH_SIZE, what="send of held copies", activity=activity)

    def _send(self, copies: list[_Copy]) -> Sequence[BaseException | None]:
        sent = self.worker.queue.send_each(
            [(copy.message, copy.delay) for copy in copies], redrives=[copy.redrives for copy in copies]
        )
        return [
            None if went else ServiceUnavailableError("the held message's copy was not sent, or may not have been")
            for went in sent
        ]


def receive_count(record: SQSRecord) -> int:
    return int(record.attributes.approximate_receive_count or 1)


def redrives_of(record: SQSRecord) -> int:
    """How often the record's message was redriven from the dead-letter queue (its ``herald_redrives``)."""
    attribute = record.message_attributes[REDRIVES_ATTRIBUTE]  # None if absent (Powertools' mapping)
    return redrive_count(attribute.string_value if attribute is not None else None)


def next_step(
    outcome: Outcome,
    scheduled: int,
    previous: Delivery | None,
    single_shot: bool,
    *,
    policy: RetryPolicy,
    rng: random.Random,
    first_attempt_at: datetime | None = None,
) -> tuple[datetime | None, DeliveryStatus]:
    """The delivery's next attempt and status after ``outcome``. ``scheduled`` counts the scheduled attempts
    made so far, this one included: the position in the retry schedule. ``first_attempt_at``: when the delivery's
    first attempt started (None: this one is it), whence the schedule's span is measured."""
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
    since_first = (outcome.finished - (first_attempt_at or outcome.started)).total_seconds()
    delay = policy.delay_after(
        scheduled, throttled=outcome.throttled, retry_after=outcome.retry_after, since_first=since_first, rng=rng
    )
    if delay is None:
        return None, DeliveryStatus.FAILED  # exhausted: recorded, never silently dropped
    return outcome.finished + timedelta(seconds=delay), DeliveryStatus.PENDING


async def hold_shortly(worker: Worker, message: DeliveryMessage, record: SQSRecord) -> None:
    """Bring this message's work back in ``SHORT_RETRY_SECONDS``: its attempt cannot start now, and nothing says when
    it can (``hold``)."""
    await hold(worker, message, record, worker.clock() + SHORT_RETRY_SECONDS)


async def hold(worker: Worker, message: DeliveryMessage, record: SQSRecord, until: float) -> None:
    """Bring this message's work back at ``until`` (epoch seconds; never before it, rounded up to the second),
    out of the queue's in-flight set: a copy delayed by SQS for up to 15 minutes, scheduled in DynamoDB beyond.
    This message is then done (SQS deletes it); callers return right after. ``record`` is the message as
    received (its receive count and age are in the logs of the caller).

    The time is absolute so that copies of one message agree on it: two copies held for the same moment (the
    delivery's next attempt, its lease's end) are one scheduled item (``ScheduleRepository.put`` keys the item
    on its work and due time), not two that would each follow the delivery to its end.

    The copy's receive count and retention start afresh; its redrive count (``herald_redrives``) is the record's,
    so that the dead-letter queue's limit on redrives holds for work carried on by copies (forwarded to the slow
    lane, held by a breaker or a rate limit, waiting for a retry) as for a message that stays itself."""
    now = worker.clock()
    wait = max(0, math.ceil(until - now))
    copy = message.model_copy(update={"resumed": True})
    redrives = redrives_of(record)
    if wait <= MAX_DELAY_SECONDS:
        await worker.held_copies.add(_Copy(copy, wait, redrives))
        return
    body = dump_message(copy)
    if len(body.encode()) > MAX_MESSAGE_BYTES:
        # A copy SQS cannot take (fields of another version carried along) is not scheduled, where the sweep could
        # never queue it: sent now, it is refused, and this record fails as a short wait's does (its message comes
        # back, then goes to the dead-letter queue).
        await worker.held_copies.add(_Copy(copy, MAX_DELAY_SECONDS, redrives))
        return
    name = scheduled_name(message.event_id, message.subscription_id, message.job_id)
    await worker.io(worker.store.schedule.put, body, name=name, due=until, now=now, redrives=redrives)
