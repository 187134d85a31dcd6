"""One delivery: is an attempt due -> claim the lease -> sign and send -> record -> next step.

The delivery's state lives in DynamoDB. A first receive of a new delivery (what the batch's read found,
``reads``) is leased by SQS's visibility timeout and writes the delivery once, with its attempt, when it is
done. Every other attempt is made under a lease taken with a conditional write, so a duplicated or re-shown
message never sends the same attempt twice while another worker is at it. A message is only let go (deleted)
once its delivery is settled, or when a fresh copy carries it on: a message that finds the lease taken comes
back when the lease ends, since the worker holding it may have died. Every log line of a delivery carries
its event, delivery, subscription and tenant ids (and the attempt number once known); never a secret or a
payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools import Logger

from herald import ids
from herald.delivery_options import (
    CustomHeaders,
    InvalidTransformError,
    TransformError,
    request_headers,
    transform_from_stored,
)
from herald.errors import ServiceUnavailableError
from herald.messages import SINGLE_SHOT_TRIGGERS
from herald.metrics import Metric
from herald.records import Attempt, Delivery, DeliveryStatus, ErrorKind, Event, Subscription, Trigger
from herald.sender import Outcome, Progress, send_attempt
from herald.signing import signature_header
from herald.storage.deliveries import (
    FIRST_ATTEMPT_AT,
    LOG_EXPIRES_AT,
    Hold,
    attempt_items,
    kept_inside,
    kept_until,
    stats_from_stream,
)
from herald.storage.jobs import FAILED, SKIPPED
from herald.urls import resolving_for
from herald.worker import bookkeeping, inserts, lanes
from herald.worker.pacing import Skip, latest_start, local_wait
from herald.worker.schedule import SHORT_RETRY_SECONDS, hold, hold_shortly, next_step, receive_count, redrives_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from herald.messages import DeliveryMessage
    from herald.storage import DeliveryState, StoredEvent
    from herald.worker.runtime import Worker

logger = Logger(service="herald", child=True)


@dataclass
class _Job:
    """One delivery message being worked on, and what it found."""

    message: DeliveryMessage
    record: SQSRecord
    log: dict[str, Any]
    stored: StoredEvent
    state: DeliveryState | None
    single_shot: bool
    now: datetime
    deadline: float = 0.0

    @property
    def event(self) -> Event:
        return self.stored.event

    def expiry(self, worker: Worker) -> int:
        """When the delivery's item written now without an attempt (a claim, a cancellation) expires: a delivery
        listed is listed with its whole attempt log. One with attempts kept as items of their own stays as long as
        it was (and as its log, ``LOG_EXPIRES_AT``): only an attempt recorded moves it on (``_log_expiry``). Any other
        is kept ``kept_until`` from now."""
        log = int(self.carried.get(LOG_EXPIRES_AT, 0))
        if self.state is not None and attempt_items(self.carried, self.state.delivery.attempts):
            return max(log, self.state.expires_at)
        return max(self.kept(worker), log)

    def kept(self, worker: Worker) -> int:
        """When what is written of an attempt made now expires, at the earliest (``kept_until``)."""
        return kept_until(self.now, worker.settings.attempt_ttl_days, self.stored.expires_at)

    @property
    def previous(self) -> Delivery | None:
        return self.state.delivery if self.state is not None else None

    @property
    def carried(self) -> dict[str, Any]:
        """What each rewrite of the delivery's item carries over (its first attempt, kept inside it; when its first
        attempt started, while it is retried)."""
        return self.state.carried if self.state is not None else {}

    @property
    def first_attempt_at(self) -> datetime | None:
        """When the delivery's first attempt started (None: this is it), as its item keeps it; for an item written
        before it kept it, its creation (its event's)."""
        if self.previous is None or self.previous.attempts == 0:
            return None  # none made yet: held back before its first (``list_new``), or new
        started = self.carried.get(FIRST_ATTEMPT_AT)
        return datetime.fromtimestamp(int(started), UTC) if started is not None else self.previous.created_at

    @property
    def scheduled(self) -> int:
        """Scheduled attempts made so far: the position in the retry schedule."""
        return self.state.scheduled_attempts if self.state is not None else 0

    @property
    def delivery(self) -> Delivery:
        """The delivery as claimed. The claim keeps its status: a manual attempt on a settled delivery
        that dies midway leaves it settled, not pending with no message to carry it. A new delivery is created
        when its event was (the time its id starts with), but for one of the older kind (``storage.deliveries``)."""
        created = self.now if not self.stored.deliveries_by_subscription else self.event.created_at
        base = self.previous or Delivery(
            id=self.log["delivery_id"],
            event_id=self.event.id,
            subscription_id=self.message.subscription_id,
            tenant_id=self.message.tenant_id,
            event_type=self.event.type,
            status=DeliveryStatus.PENDING,
            created_at=created,
            updated_at=self.now,
        )
        return base.model_copy(update={"updated_at": self.now})


async def deliver(worker: Worker, message: DeliveryMessage, record: SQSRecord, deadline: float) -> None:
    """One attempt of one delivery, if one is due; then settle the delivery or hold the message until
    the next attempt. A manual message (``single_shot`` on an existing delivery) makes exactly one
    attempt and leaves the schedule, and the message that carries it, alone."""
    log: dict[str, Any] = {
        "delivery_id": message.delivery_id,
        "event_id": message.event_id,
        "subscription_id": message.subscription_id,
        "tenant_id": message.tenant_id,
    }
    stored = await worker.events.get(message.event_id)
    if stored is not None and not stored.event.broadcast and stored.event.tenant_id != message.tenant_id:
        # Event ids are the publisher's to choose and one may be used again once its event expired: a message
        # that outlived its event never carries another tenant's event to this tenant's subscriber. Its own
        # event is gone: its delivery ends as that ends it (``fail_unsendable`` touches only this tenant's).
        logger.warning("delivery of another tenant's event: dropped", extra=log)
        stored = None
    elif stored is not None and not stored.has_delivery(message.subscription_id, message.delivery_id):
        # The tenant published the id again once its event expired: this delivery's event is gone.
        stored = None
    if stored is None:
        await _event_gone(worker, message, log)
        await _close_ticket(worker, message)
        return
    claimed = await _claim(worker, message, record, deadline, stored, log)
    if claimed is None:
        return
    job, token = claimed
    try:
        sub = await _subscription(worker, message)
    except Exception:
        # Nothing was sent: give the lease back, so the message's next receive need not wait it out.
        if token is not None:
            with contextlib.suppress(Exception):
                await worker.io(worker.store.deliveries.release, job.delivery, token)
        raise
    if (sub is None or not sub.enabled) and job.single_shot:
        # Asked for while the subscription was enabled (a retry, a recovery, a redelivery), and deleted or disabled
        # since: a disabled subscription receives nothing until it is enabled.
        if token is not None:
            await worker.io(worker.store.deliveries.release, job.delivery, token)
        await _close_ticket(worker, message, FAILED if sub is None else SKIPPED)
        why = "the subscription was deleted" if sub is None else "the subscription is disabled"
        logger.info(f"manual attempt cancelled: {why}", extra=log)
    elif sub is None or not sub.enabled:
        await _cancel(worker, job, token, "the subscription was deleted" if sub is None else "it is disabled")
    else:
        await _attempt_and_record(worker, job, sub, token)


async def _close_ticket(worker: Worker, message: DeliveryMessage, state: str = FAILED) -> None:
    """A job's message whose attempt will not be made: its ticket is settled failed (or ``state``: skipped, for a
    subscription disabled since), so the job does not read ``running`` until it expires. The job checked the event
    before (``jobs.deliver``), but it can expire, or its id be published again, between that read and this one."""
    if message.job_id is not None:
        await worker.io(worker.store.jobs.close_ticket, message.job_id, message.delivery_id, state)


async def _event_gone(worker: Worker, message: DeliveryMessage, log: dict[str, Any]) -> None:
    """The message's event expired (its retention ended) or never was: nothing can be sent. A delivery waiting
    for its next scheduled attempt fails without one, so it does not stay pending until its item expires; a
    manual or recovery attempt leaves the delivery as it was (its own schedule, if any, ends it the same way)."""
    if message.carries_schedule:
        failed = await worker.io(
            worker.store.deliveries.fail_unsendable,
            message.tenant_id,
            message.subscription_id,
            message.delivery_id,
            message.event_id,
            now=worker.now(),
        )
        if failed is not None:
            logger.info("delivery failed without an attempt: its event expired", extra=log)
            return
    logger.warning("delivery of an event that no longer exists: dropped", extra=log)


async def _subscription(worker: Worker, message: DeliveryMessage) -> Subscription | None:
    """The delivery's subscription: as the batch read it when that shows it enabled, else read now, strongly.
    The batch's read is eventually consistent: a subscription created or enabled a moment ago (publishing's
    direct fan-out queues its delivery at once) may not show in it yet, and its delivery must not be cancelled
    on that read."""
    if worker.reads.knows_subscription(message.tenant_id, message.subscription_id):
        found = worker.reads.subscription(message.tenant_id, message.subscription_id)
        if found is not None and found.enabled:
            return found
    return await worker.io(worker.store.subscriptions.get, message.tenant_id, message.subscription_id)


async def _claim(  # noqa: PLR0917 - the message's context, passed along as the caller has it
    worker: Worker,
    message: DeliveryMessage,
    record: SQSRecord,
    deadline: float,
    stored: StoredEvent,
    log: dict[str, Any],
) -> tuple[_Job, str | None] | None:
    """The lease on the delivery for one attempt (the job and the lease's token: None when SQS's visibility
    is the lease), or None when no attempt is to be made now (the message is then held, or done with).

    A delivery message received for the first time almost always starts a new delivery. When the batch's read
    found no such delivery, and the batch holds this one message of it, no lease is written (see ``reads``).
    Without that read, claim it straight away (the claim only succeeds if the delivery does not exist yet) and
    read its state only if it does exist (a duplicate message, a refreshed copy). Any other message starts from
    the batch's read of its delivery when that shows an attempt due, else from a strong read
    (``_state_sources``): a message redriven from the dead-letter queue too, though its receive count starts again
    at 1, since a redrive may send one back twice (a delete there that failed, a send whose answer was lost), its
    copies then in two invocations at once."""
    optimistic = (
        message.trigger not in SINGLE_SHOT_TRIGGERS
        and not message.resumed
        and receive_count(record) == 1
        and redrives_of(record) == 0
    )
    delivery_id = log["delivery_id"]
    if optimistic and worker.reads.is_new(delivery_id):
        if not await _due(worker, message, record, None, False, deadline):
            return None
        return _Job(message, record, log, stored, None, False, worker.now(), deadline), None
    for source in _state_sources(worker, message, delivery_id, optimistic, deadline):
        state = await _state_from(worker, source, message)
        single_shot = message.trigger in SINGLE_SHOT_TRIGGERS and state is not None
        scheduled = state if state is not None and not single_shot and message.carries_schedule else None
        if not await _due(worker, message, record, state, single_shot, deadline):
            if scheduled is not None:
                await _report_missed(worker, message, stored, scheduled, log)
            return None
        if scheduled is not None and (receive_count(record) > 1 or redrives_of(record) > 0):
            # Back after its invocation died, and its next step due already: that invocation's report first.
            await _report_missed(worker, message, stored, scheduled, log)
        job = _Job(message, record, log, stored, state, single_shot, worker.now(), deadline)
        token = uuid.uuid4().hex
        claimed = await worker.io(
            worker.store.deliveries.claim,
            job.delivery,
            previous=job.previous,
            scheduled_attempts=job.scheduled,
            token=token,
            until=deadline + 5,
            now=worker.clock(),
            expires_at=job.expiry(worker),
            job_id=message.job_id,
            carried=state.carried if state is not None else None,
        )
        if claimed:
            return job, token
    # Another message got there between our read and our claim: look again shortly.
    logger.info("delivery claimed by another message meanwhile", extra=log)
    await hold_shortly(worker, message, record)
    return None


async def _report_missed(
    worker: Worker, message: DeliveryMessage, stored: StoredEvent, state: DeliveryState, log: dict[str, Any]
) -> None:
    """A message of the delivery's schedule that found its attempt made already: what that attempt was to report
    is reported again (``bookkeeping.report_missed``, a notice once per what it reports), should the invocation
    that made it have died before it did. Only a delivery that has such a notice (failed for good, or at the 4th
    step of its schedule) reads its subscription for it; a failure here is logged, the message is done either way."""
    if not bookkeeping.has_notice(state):
        return
    try:
        sub = await _subscription(worker, message)
        if sub is not None:
            await bookkeeping.report_missed(worker, sub, stored.event.type, state, log)
    except Exception:
        logger.exception("a notice the delivery's latest attempt had is not reported again", extra=log)


type _Source = Literal["none", "batch", "read"]
#: A check of ``lanes`` made before an attempt, with the delivery's context: True when it diverted the delivery.
type _LaneCheck = Callable[..., Awaitable[bool]]


def _state_sources(
    worker: Worker, message: DeliveryMessage, delivery_id: str, optimistic: bool, deadline: float
) -> tuple[_Source, ...]:
    """Where the state each claim try starts from comes from, in order: ``none`` (claim it as new: only if
    it does not exist), ``batch`` (the batch's eventually consistent read) or ``read`` (a strong read).

    A first receive the batch's read could not settle (it holds the message twice, or the read failed)
    claims the delivery as new and reads only if it exists. Any other message whose delivery the batch read
    starts from that state when it shows an attempt due now: a stale one (a write of the last second not
    shown yet) fails the claim's conditions, and a strong read decides then. What holds a message (a lease, a
    later attempt, a settled delivery) is only ever decided on a strong read."""
    if optimistic and delivery_id not in worker.reads.read_once:
        return ("none", "read")
    known = worker.reads.states.get(delivery_id)
    single_shot = message.trigger in SINGLE_SHOT_TRIGGERS
    if known is not None and _not_due(worker, message, known, single_shot, deadline) is None:
        return ("batch", "read")
    return ("read",)


async def _state_from(worker: Worker, source: _Source, message: DeliveryMessage) -> DeliveryState | None:
    if source == "none":
        return None
    if source == "batch":
        return worker.reads.states[message.delivery_id]
    read = worker.store.deliveries.get_state
    return await worker.io(read, message.subscription_id, message.delivery_id, message.event_id)


def _not_due(
    worker: Worker, message: DeliveryMessage, state: DeliveryState | None, single_shot: bool, deadline: float
) -> float | None:
    """None if an attempt can be made now; otherwise when to look again (epoch seconds: what the delivery's
    state says, so that copies of its message agree), or 0 when the delivery is settled, or the manual retry's
    attempt was made, and the message's work is done."""
    now = worker.clock()
    if state is not None:
        if not single_shot and state.delivery.status is not DeliveryStatus.PENDING:
            return 0  # settled: this message's work is done
        if _overtaken(message, state):
            return 0
        if state.lease_until > now:
            # A worker is at it, or died at it: look again when its lease is over. Never let go here,
            # as this may be the very message whose worker died.
            return state.lease_until + 1
        due = state.delivery.next_attempt_at.timestamp() if state.delivery.next_attempt_at else 0
        if not single_shot and due > now + 1:
            return due
    if now > latest_start(worker, deadline):
        return now + SHORT_RETRY_SECONDS  # not enough time left to send safely
    return None


def _overtaken(message: DeliveryMessage, state: DeliveryState) -> bool:
    """Whether a message's one extra attempt is no longer to be made: a manual retry whose attempt was made (by
    another copy of its message) or overtaken, or a recovery's whose delivery was delivered since its job read it
    failed (a manual retry just before): a recovery sends what is still failed, never a delivery twice."""
    if message.attempts_seen is not None and state.delivery.attempts > message.attempts_seen:
        return True
    return message.trigger is Trigger.RECOVER and state.delivery.status is not DeliveryStatus.FAILED


async def _due(  # noqa: PLR0917 - the message's context, passed along as the caller has it
    worker: Worker,
    message: DeliveryMessage,
    record: SQSRecord,
    state: DeliveryState | None,
    single_shot: bool,
    deadline: float,
) -> bool:
    """Whether an attempt can be made now. If not, the message is held (``hold`` raises, or hands over
    to a fresh copy) or, for a settled delivery, done; either way this returns False."""
    until = _not_due(worker, message, state, single_shot, deadline)
    if until is None:
        return True
    if until > 0:
        await hold(worker, lanes.for_later_unread(worker, message, until), record, until)
    else:
        await _close_ticket(worker, message, SKIPPED)  # a job's attempt not to be made (settled once only)
    return False


async def _cancel(worker: Worker, job: _Job, token: str | None, reason: str) -> None:
    """The subscription is gone or disabled: the delivery fails without an attempt."""
    settled = job.delivery.model_copy(
        update={
            "status": DeliveryStatus.FAILED,
            "last_error_kind": ErrorKind.SUBSCRIPTION_GONE,
            "next_attempt_at": None,
        }
    )
    recorded = await _record(worker, job, settled, None, token=token, scheduled=job.scheduled)
    if recorded:
        _count_event(worker, job, settled)
    logger.info(f"delivery cancelled: {reason}", extra=job.log)


def _count_event(worker: Worker, job: _Job, settled: Delivery) -> None:
    """Count the settled delivery for its event, unless the event's counters read it (``delivered_to``)."""
    if job.stored.counted_from_delivery(settled.subscription_id):
        return
    # The counters expire with their event (or, where it has no expiry, with the attempt log).
    expires_at = job.stored.expires_at or kept_until(job.now, worker.settings.attempt_ttl_days, None)
    worker.books.settled(job.event.id, expires_at, job.previous, settled)


async def _release(worker: Worker, job: _Job, token: str | None, until: float) -> None:
    """Give the delivery's lease back before it waits without an attempt, a copy of its message carrying it on from
    ``until`` (epoch seconds): the item says so (``Hold``)."""
    if token is not None:
        await worker.io(worker.store.deliveries.release, job.delivery, token, held=Hold(worker.clock(), until))
    else:  # a new delivery, not written yet: it waits listed as pending, as a released one does
        await worker.io(
            worker.store.deliveries.list_new,
            job.delivery,
            scheduled_attempts=job.scheduled,
            expires_at=job.expiry(worker),
            held=Hold(worker.clock(), until),
        )


async def _diverted(
    worker: Worker, job: _Job, sub: Subscription, token: str | None, check: _LaneCheck = lanes.diverted
) -> bool:
    """Whether the delivery goes to the slow lane, or waits for an open breaker (``lanes.diverted``; or, with
    ``check`` ``lanes.probe_taken_elsewhere``, for the probe another delivery holds), its lease given back: neither
    is an attempt nor a step of the schedule."""
    return await check(
        worker,
        job.message,
        job.record,
        sub,
        single_shot=job.single_shot,
        release=lambda until: _release(worker, job, token, until),
        log=job.log,
    )


async def _postpone(worker: Worker, job: _Job, sub: Subscription, token: str | None, postpone: float) -> None:
    """The attempt waits ``postpone`` seconds for the subscription's rate limit, its lease given back: neither an
    attempt nor a step of the schedule; the message comes back for its slot."""
    until = worker.clock() + postpone
    await _release(worker, job, token, until)
    worker.metrics.add(Metric.POSTPONED)
    logger.info("attempt postponed by the rate limit", extra={**job.log, "postponed_seconds": postpone})
    await hold(worker, lanes.for_later(worker, job.message, sub, until), job.record, until)


async def _put_off(
    worker: Worker, job: _Job, token: str | None, why: str = "no connection came while this invocation had time for it"
) -> None:
    """The invocation has no time left for the attempt's whole timeout (no connection came in time, by default): the
    attempt is put off, its lease given back, and its message comes back shortly, as when the claim finds too little
    time (``_not_due``). Not an attempt, nor a step of the schedule."""
    until = worker.clock() + SHORT_RETRY_SECONDS
    await _release(worker, job, token, until)
    logger.info(f"attempt put off: {why}", extra=job.log)
    await hold(worker, job.message, job.record, until)


async def _attempt(worker: Worker, job: _Job, sub: Subscription, token: str | None) -> Outcome | None:
    """The attempt, made once it holds one of the worker's connections (``_connected``): a batch may carry more
    deliveries than the HTTP client has connections, and the attempt's timeout, like the slow lane's watch,
    measures the endpoint alone. None if no attempt was made: no connection came in time, or the invocation's time
    for it ran out after (put off), the rate limit postpones it, the subscription went on the slow lane meanwhile
    (``_forwarded``), another delivery holds its half-open breaker's probe (held), or another copy of its message
    took it while it waited for its rate limit (``_taken_meanwhile``).

    The body (``_body``: the subscription's transform, on the thread pool) is made once the connection is held and
    before a rate limit's slot is taken: between the slot and the request there is no work left but the signature,
    a transform that fails takes no slot, and no more bodies wait in memory than the worker has connections."""
    body: bytes | Outcome | None = None

    async def make_body() -> bool:
        nonlocal body
        body = await _body(worker, sub, job.event.payload)
        return not isinstance(body, Outcome)

    waiting_since = time.monotonic()  # the rate limit's wait is real time, whatever the worker's clock
    if not await _connected(worker, job, sub, token, make_body):
        return body if isinstance(body, Outcome) else None
    assert isinstance(body, bytes)
    try:
        waited = time.monotonic() - waiting_since >= RECHECK_AFTER_WAIT_SECONDS
        if waited and token is None and sub.rate_limit is not None and await _taken_meanwhile(worker, job):
            return None
        if await _forwarded(worker, job, sub, token):
            return None
        if worker.clock() > latest_start(worker, job.deadline):
            # Held up after its connection came (a slow DynamoDB call for its slot): too late to start now.
            await _put_off(worker, job, token, "the invocation's time for it ran out before it could start")
            return None
        if await _diverted(worker, job, sub, token, lanes.probe_taken_elsewhere):
            return None
        progress = Progress()
        sending = sign_and_send(worker, sub, job.event.id, body, progress=progress)
        # An attempt slow to answer puts its subscription on the slow lane at once; a scheduled one from the work
        # queue is then cut short and handed over to the slow lane (``lanes``).
        hand_over = (
            job.message.trigger is Trigger.SCHEDULED
            and not job.single_shot
            and job.message.job_id is None
            and not lanes.on_slow_lane(worker, job.record)
        )
        return await lanes.watch(worker, sub, sending, job.log, hand_over=hand_over, progress=progress)
    finally:
        worker.connections.release()


async def _taken_meanwhile(worker: Worker, job: _Job) -> bool:
    """Whether another copy of the message settled a delivery claimed without a lease (a first receive, leased by
    SQS's visibility alone: ``_claim``) while this one waited before its send, its subscription rate-limited (for
    its slot, or for a connection meanwhile): an attempt recorded, or the delivery cancelled. Sent now, it would be
    sent a second time. A strong read, made only after such a wait; a subscription without a rate limit reads
    nothing after a wait for a connection (in a batch larger than the client's connections, a read for each
    delivery of the later waves, for a duplicate message SQS seldom sends).

    A delivery only listed meanwhile (a copy held back by the rate limit or the breaker writes it as waiting) is
    sent: that copy finds this attempt recorded when it comes back. So is one whose lease another copy holds: that
    copy may be this very message received again, whose worker may die before its record, and only this send then
    makes the attempt (a duplicate if it does not die, which the design allows)."""
    message = job.message
    read = worker.store.deliveries.get_state
    state = await worker.io(read, message.subscription_id, message.delivery_id, message.event_id)
    if state is None or (state.delivery.attempts == 0 and state.delivery.status is DeliveryStatus.PENDING):
        return False
    logger.info("not sent: another copy of the message settled the delivery while this one waited", extra=job.log)
    return True


async def _connected(
    worker: Worker, job: _Job, sub: Subscription, token: str | None, make_body: Callable[[], Awaitable[bool]]
) -> bool:
    """Whether the attempt may start now, holding one of the worker's connections (``Worker.take_connection``) and,
    for a rate-limited subscription, its slot (``Pacer.slot``: the slot is taken with the connection held, so the
    attempt goes out at its slot), its body made by ``make_body`` in between. If not, the delivery is put off,
    postponed or forwarded, or its body could not be made, and no connection is held."""
    turn: float | Skip
    if sub.rate_limit is None:
        turn = 0.0 if await worker.take_connection(job.deadline) else Skip.NO_CONNECTION
        if turn == 0.0 and not await _made(worker, make_body):
            turn = Skip.NO_BODY
    else:
        turn = await worker.pacer.slot(
            sub.id,
            sub.rate_limit,
            deadline=job.deadline,
            local_wait=local_wait(worker, slow_lane=lanes.on_slow_lane(worker, job.record)),
            forwarded=lambda: _forwarded(worker, job, sub, token),
            prepare=make_body,
        )
    if turn is Skip.NO_CONNECTION:
        await _put_off(worker, job, token)
        return False
    if turn is Skip.FORWARDED or turn is Skip.NO_BODY:
        return False
    if turn > 0:
        await _postpone(worker, job, sub, token, turn)
        return False
    return True


async def _made(worker: Worker, make_body: Callable[[], Awaitable[bool]]) -> bool:
    """``make_body()`` with one of the worker's connections held: True if made (the connection still held), False
    if not (the connection given back), whatever it raised."""
    try:
        made = await make_body()
    except BaseException:
        worker.connections.release()
        raise
    if not made:
        worker.connections.release()
    return made


async def _forwarded(worker: Worker, job: _Job, sub: Subscription, token: str | None) -> bool:
    """Whether the delivery was forwarded to the slow lane, its subscription having gone there while the attempt
    waited for a connection or a slot (another of its attempts in this worker was slow to answer), as
    ``_diverted`` would have forwarded it before."""
    return await lanes.forwarded(
        worker, job.message, job.record, sub, release=lambda until: _release(worker, job, token, until), log=job.log
    )


@dataclass(frozen=True)
class _Step:
    """What an attempt leads its delivery to: its new state, the attempt's record, and what the item carries."""

    settled: Delivery
    attempt: Attempt
    #: The retry schedule's steps taken, this attempt's included (a hand-over to the slow lane is no step).
    scheduled: int
    carried: dict[str, Any]


async def _attempt_and_record(worker: Worker, job: _Job, sub: Subscription, token: str | None) -> None:
    """One attempt of a claimed delivery: made, recorded, counted, then its next step (a retry held for later, or a
    hand-over to the slow lane)."""
    attempt_number = job.delivery.attempts + 1
    job.log["attempt"] = attempt_number
    if await _diverted(worker, job, sub, token):
        return
    outcome = await _attempt(worker, job, sub, token)
    if outcome is None:
        return
    step = _step(worker, job, sub, outcome, attempt_number)
    settled = step.settled
    expires_at = await _log_expiry(worker, job, settled, step.attempt, token=token, carried=step.carried)
    streamed = await _record_attempt(worker, job, step, token=token, expires_at=expires_at)
    if streamed is None:
        return
    _count_event(worker, job, settled)
    await lanes.learn(worker, sub, job.message, outcome, job.log)
    # A failed attempt is always logged; one that succeeded at DEBUG if the deployment logs only failures (the
    # delivery's item records every attempt either way).
    log_attempt = logger.info if worker.settings.log_successful_attempts or not outcome.succeeded else logger.debug
    log_attempt(
        "attempt made",
        extra={
            **job.log,
            "status_code": outcome.status_code,
            "error_kind": outcome.error_kind,
            "status": settled.status,
        },
    )
    worker.books.measure(outcome, settled, job.previous)
    await worker.books.attempted(
        job.event,
        sub,
        outcome,
        settled,
        job.previous,
        expires_at=job.kept(worker),
        log=job.log,
        streamed=streamed,
        scheduled=None if job.single_shot else step.scheduled,
    )
    if outcome.handed_over:
        await hold(worker, job.message.model_copy(update={"lane": "slow"}), job.record, worker.clock())
    elif settled.status is DeliveryStatus.PENDING and not job.single_shot and settled.next_attempt_at is not None:
        until = settled.next_attempt_at.timestamp()
        await hold(worker, lanes.for_later(worker, job.message, sub, until), job.record, until)


def _step(worker: Worker, job: _Job, sub: Subscription, outcome: Outcome, attempt_number: int) -> _Step:
    """Where ``outcome`` leaves the delivery: settled, or pending until its next attempt (the retry schedule's next
    step, or at once on the slow lane for a hand-over)."""
    scheduled = job.scheduled if job.single_shot else job.scheduled + 1
    next_at: datetime | None
    if outcome.handed_over:
        # Not a step of the retry schedule: the slow lane tries again at once, with the whole timeout.
        scheduled, next_at, status = job.scheduled, outcome.finished, DeliveryStatus.PENDING
    else:
        next_at, status = next_step(
            outcome,
            scheduled,
            job.previous,
            job.single_shot,
            policy=worker.policy,
            rng=worker.rng,
            first_attempt_at=job.first_attempt_at,
        )
    settled = job.delivery.model_copy(
        update={
            "status": status,
            "attempts": attempt_number,
            "next_attempt_at": next_at,
            "last_attempt_at": outcome.started,
            "last_status_code": outcome.status_code,
            "last_error_kind": outcome.error_kind,
            "updated_at": outcome.finished,
        }
    )
    carried = dict(job.carried)
    if job.delivery.attempts == 0 and status is DeliveryStatus.PENDING:
        # Retried: the schedule's span is measured from this first attempt (``first_attempt_at``).
        carried[FIRST_ATTEMPT_AT] = int(outcome.started.timestamp())
    if outcome.handed_over:
        # A hand-over says when on the item, as a delivery held back does: its copy on the slow lane carries it on.
        now = worker.clock()
        carried |= Hold(now, now).attributes()
    attempt = _attempt_record(job, sub, outcome, attempt_number, next_at)
    return _Step(settled=settled, attempt=attempt, scheduled=scheduled, carried=carried)


async def _record_attempt(worker: Worker, job: _Job, step: _Step, *, token: str | None, expires_at: int) -> bool | None:
    """Record the attempt and the delivery's new state: whether the table's stream counts it in the subscription's
    stats (``stats_from_stream``), or None if it was not recorded (a duplicate send, or a lease lost; said here, and
    nothing more is to be done with it)."""
    settled, attempt, scheduled, carried = step.settled, step.attempt, step.scheduled, step.carried
    recorded = await _record(
        worker, job, settled, attempt, token=token, scheduled=scheduled, carried=carried, expires_at=expires_at
    )
    streamed = stats_from_stream(settled, attempt, token=token, job_id=job.message.job_id)
    if not recorded and token is None and job.message.job_id is None:
        # Another copy of this message, held back while this one sent, may have listed the delivery as waiting.
        recorded = await worker.io(
            worker.store.deliveries.record_over_waiting,
            settled,
            attempt,
            scheduled_attempts=scheduled,
            expires_at=expires_at,
            carried=carried,
        )
        streamed = False
    if not recorded and token is None:
        # Another copy of this message (SQS's at-least-once, or one shown again) made and recorded this first
        # attempt meanwhile, or holds the delivery's lease to make it: this send was a duplicate (receivers drop it
        # by its webhook-id). That copy carries the delivery on; this one is done.
        worker.metrics.add(Metric.DUPLICATE_SENDS)
        logger.warning(
            "duplicate send: another copy of the message recorded this attempt first, or holds its lease",
            extra=job.log,
        )
        return None
    if not recorded:
        # Only if this invocation outlived its own lease (it should not: the lease ends after the
        # deadline). The message comes back and the next claim carries the delivery on, making this
        # attempt again under the same number (its record then replaces this one's).
        logger.warning("lease lost while attempting; the delivery's state is not updated", extra=job.log)
        await hold_shortly(worker, job.message, job.record)
        return None
    return streamed


async def _record(
    worker: Worker,
    job: _Job,
    settled: Delivery,
    attempt: Attempt | None,
    *,
    token: str | None,
    scheduled: int,
    carried: dict[str, Any] | None = None,
    expires_at: int | None = None,
) -> bool:
    """Write the delivery's new state, and its attempt (``DeliveryRepository.record``), with what its item carries
    (``carried``; the job's by default), expiring at ``expires_at`` (``_Job.expiry`` by default). A first receive's
    writes are made with the batch's others (``inserts``)."""
    expires_at = job.expiry(worker) if expires_at is None else expires_at
    carried = job.carried if carried is None else carried
    if token is None and job.message.job_id is None:
        return await inserts.record_new(
            worker, settled, attempt, scheduled_attempts=scheduled, expires_at=expires_at, carried=carried
        )
    return await worker.io(
        worker.store.deliveries.record,
        settled,
        attempt,
        token=token,
        scheduled_attempts=scheduled,
        expires_at=expires_at,
        job_id=job.message.job_id,
        carried=carried,
    )


#: A delivery claimed without a lease, its subscription rate-limited, that waited this long (seconds) before its send
#: is read again first (``_taken_meanwhile``): another copy of its message may have settled it meanwhile.
RECHECK_AFTER_WAIT_SECONDS = 0.5
#: The waits (seconds) before ``keep_attempts`` is asked again, refused (throttled) after botocore's own retries.
KEEP_ATTEMPTS_BACKOFF = (0.2, 1.0)
#: Beyond the retry schedule's latest end, how late its last attempt may come and find its log kept (a backlog, the
#: schedule's sweep a minute late, a rate limit's postponements) without keeping the earlier attempts longer again.
LOG_SLACK_SECONDS = 3600


async def _log_expiry(
    worker: Worker, job: _Job, settled: Delivery, attempt: Attempt, *, token: str | None, carried: dict[str, Any]
) -> int:
    """When the delivery and ``attempt`` expire as they are recorded: its attempt log goes with it. An attempt kept
    inside the delivery goes with it anyway. One kept as an item of its own is kept ``kept_until`` from now, and
    the log with it (``carried`` says until when: ``LOG_EXPIRES_AT``): the first such item, or one made after the
    log's expiry (a manual retry, a recovery), keeps it until the retry schedule's end at the latest
    (``RetryPolicy.span_seconds`` from the first attempt, and ``LOG_SLACK_SECONDS``; a pending delivery already
    past it, for as long as its schedule may take at the longest), its earlier attempts with it
    (``DeliveryRepository.keep_attempts``), so the schedule's next attempts need no more of those writes. Those
    writes are the log's, not the attempt's: refused (throttled) again and again, the attempt is recorded all the same
    and kept, with the delivery, while the earlier attempts may go first, and a next record tries them again."""
    if kept_inside(settled, attempt, token=token, job_id=job.message.job_id):
        return job.expiry(worker)
    needed = job.kept(worker)
    log = int(carried.get(LOG_EXPIRES_AT, 0))
    if needed <= log:
        return max(log, job.expiry(worker))
    policy = worker.policy
    last = (job.first_attempt_at or job.now) + timedelta(seconds=policy.span_seconds + LOG_SLACK_SECONDS)
    if settled.status is DeliveryStatus.PENDING and job.now > last:
        # Later than the schedule's latest end (Retry-After, an open breaker's holds) with attempts still to come:
        # kept as long as they may take at the longest, so each of them does not keep the log again.
        last = job.now + timedelta(seconds=policy.longest_span_seconds)
    until = max(kept_until(last, worker.settings.attempt_ttl_days, job.stored.expires_at), needed)
    earlier = attempt_items(carried, attempt.attempt_number - 1)
    if earlier and not await _attempts_kept(worker, settled.id, earlier, until):
        # This attempt and the delivery are kept all the same (a late retry's record, which no later one may come to
        # carry on); the earlier attempts may go first, and a next record tries again.
        logger.warning("the delivery's earlier attempts could not be kept as long as it", extra=job.log)
        return until
    carried[LOG_EXPIRES_AT] = until
    return until


async def _attempts_kept(worker: Worker, delivery_id: str, numbers: range, until: int) -> bool:
    """``DeliveryRepository.keep_attempts``, asked again after each wait of ``KEEP_ATTEMPTS_BACKOFF`` while DynamoDB
    refuses it (throttled, after botocore's own retries): whether it was made."""
    waits = iter(KEEP_ATTEMPTS_BACKOFF)
    while True:
        try:
            await worker.io(worker.store.deliveries.keep_attempts, delivery_id, numbers, until)
            return True
        except ServiceUnavailableError:
            wait = next(waits, None)
            if wait is None:
                return False
            await asyncio.sleep(wait)


def _attempt_record(
    job: _Job, sub: Subscription, outcome: Outcome, attempt_number: int, next_at: datetime | None
) -> Attempt:
    return Attempt(
        id=ids.new_id(ids.ATTEMPT),
        delivery_id=job.delivery.id,
        event_id=job.event.id,
        subscription_id=sub.id,
        tenant_id=sub.tenant_id,
        attempt_number=attempt_number,
        trigger=job.message.trigger,
        url=sub.url,
        started_at=outcome.started,
        finished_at=outcome.finished,
        duration_ms=outcome.duration_ms,
        succeeded=outcome.succeeded,
        status_code=outcome.status_code,
        error_kind=outcome.error_kind,
        error_message=outcome.error_message and outcome.error_message[:1000],
        response_body=outcome.body,
        next_attempt_at=next_at,
        latency_ms=outcome.latency_ms(job.event.created_at),
    )


async def _body(worker: Worker, sub: Subscription, payload: str) -> bytes | Outcome:
    """What an attempt sends: the event's envelope, or what the subscription's transform makes of it. A transform
    that fails on this event answers the outcome of an attempt that makes no request (``transform``)."""
    if not sub.transform:
        return payload.encode()
    try:
        # Off the event loop: a costly expression (bounded, up to a few hundred ms) must not hold up the batch's
        # other deliveries.
        return await worker.io(lambda: transform_from_stored(sub.transform or "").apply_to_body(payload))
    except (TransformError, InvalidTransformError, ValueError) as exc:
        return _transform_failed(exc, worker.now())


async def sign_and_send(
    worker: Worker, sub: Subscription, msg_id: str, body: bytes, *, progress: Progress | None = None
) -> Outcome:
    """One HTTP attempt: ``body`` (``_body``) signed (Standard Webhooks) with every secret of the subscription that
    signs now (the current one and those in their rotation grace), sent with the subscription's custom headers
    under Herald's own, under the URL policy. ``progress`` is kept up to date as the answer arrives
    (``send_attempt``)."""
    timestamp = int(worker.clock())
    herald_headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(sub.signing_secrets(worker.now()), msg_id, timestamp, body),
    }
    # Its host's lookup, if it needs one, takes the tenant's share of the resolver's threads.
    looking_up_for = resolving_for.set(sub.tenant_id)
    try:
        return await send_attempt(
            sub.url,
            body=body,
            headers=request_headers(CustomHeaders.from_stored(sub.headers), herald_headers),
            timeout_seconds=worker.settings.delivery_timeout_seconds,
            policy=worker.services.url_policy,
            now=worker.now,
            progress=progress,
        )
    finally:
        resolving_for.reset(looking_up_for)


def _transform_failed(exc: Exception, now: datetime) -> Outcome:
    """The outcome of an attempt whose transform failed on its event: no request made, not retried."""
    if isinstance(exc, TransformError):
        message = f"the transform failed on this event ({exc.reason}): {exc.message}"
    else:  # a stored expression that no longer compiles under today's bounds
        message = f"the transform cannot be applied: {exc}"
    return Outcome(
        status_code=None,
        error_kind=ErrorKind.TRANSFORM,
        error_message=message,
        body=None,
        retry_after=None,
        started=now,
        finished=now,
    )
