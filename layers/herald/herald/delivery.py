"""The delivery worker: the SQS consumer behind the DeliveryFunction.

Each work message is one of: a fan-out page (find the subscriptions an event goes to, queue one
delivery message for each), a delivery (one event to one subscription), or a tenant purge.

A delivery message stays on the queue until its delivery is settled: after a failed attempt the
worker hides it for the retry delay (``ChangeMessageVisibility``, in hops of less than 12 h) and
reports it as a batch item failure, so SQS brings it back when the next attempt is due. No sleeping
in Lambda. The delivery's state lives in DynamoDB, and each attempt is made under a lease taken with
a conditional write, so a duplicated or re-shown message never sends the same attempt twice while
another worker is at it. A message is only let go (deleted) once its delivery is settled, or when a
fresh copy carries it on: a message that finds the lease taken comes back when the lease ends, since
the worker holding it may have died.

A fan-out page is counted on its event once (``matched``) however often its message runs. The
event's ``succeeded`` / ``failed`` counters are not written per delivery: the worker adds up the
changes of the deliveries a batch settles, per event, and writes each event's sum once when the batch
is done (``Worker.handle``), on a small counts item beside the event (a write costs by the size of the
whole item, and the event item carries the payload). The counters are bookkeeping, not the record: if
an invocation dies after settling deliveries and before its batch is done, the counters miss those
deliveries (their messages come back, find them settled and count nothing), while the deliveries
themselves, which are what is sent and listed, stay exact.

A subscription's rate limit is taken right before each attempt (``Store.take_rate_slot``, shared by
every invocation). A delivery over the rate waits its slot in the worker for a few seconds, the
deliveries of one subscription in a batch in line behind one another (one DynamoDB call per slot, not
per waiting delivery); past that it is postponed through the queue: its lease is given back and its
message held until about its slot. Neither counts as an attempt nor moves the retry schedule, and a
message postponed many times is refreshed by ``_hold`` like any long wait, never dead-lettered.

The attempts a batch makes to a subscription are counted in its stats and failure streak when the
batch is done, in the order they finished, with one write per subscription (``Store.count_subscription
_attempts``): a 410, or a streak failing for the whole window, disables the subscription; operational
events (``herald.domain.operational``) tell the operator (what an attempt did to its delivery right after it,
what the batch did to the subscription at its end). Like the event counters, the stats of a batch
whose invocation dies are lost; the attempts themselves are recorded.

Every log line of a delivery carries its event, delivery, subscription and tenant ids (and the attempt
number once known); never a secret or a payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response

from herald import ids, recovery
from herald.domain import subscriptions
from herald.domain.operational import OPERATOR_TENANT_ID, emit
from herald.messages import (
    DeliveryMessage,
    FanoutMessage,
    PoisonMessageError,
    PurgeTenantMessage,
    RecoverMessage,
    RedeliverMessage,
    parse_message,
)
from herald.metrics import DeliveryMetrics, Metric
from herald.queue import MAX_VISIBILITY_SECONDS, QueueVisibilityLimitError
from herald.records import WILDCARD, Attempt, Delivery, DeliveryStatus, ErrorKind, Event, Subscription, Trigger
from herald.sender import Outcome, close_http_client, send_attempt
from herald.signing import signature_header
from herald.storage import AttemptTally, DeliveryState, StoredEvent, SubscriptionHealth

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from herald.services import Services

logger = Logger(service="herald", child=True)

#: An attempt is only started if the invocation has this much time left beyond the HTTP timeout.
START_MARGIN_SECONDS = 5.0
#: When an attempt cannot start now (no time left, lease busy), the message comes back after this.
SHORT_RETRY_SECONDS = 10
#: Subscriptions handled by one fan-out message before it hands over to a continuation message.
FANOUT_MAX_PER_MESSAGE = 5_000
#: A fan-out message stops reading pages when its invocation has less time left than this.
FANOUT_MIN_SECONDS_LEFT = 15.0
#: Refresh a long-lived delivery message (new copy, this one deleted) before SQS's 14-day retention
#: or the queue's maxReceiveCount could end it.
MESSAGE_MAX_AGE_SECONDS = 12 * 24 * 3600
#: The longest one hop of a hold. SQS keeps a message hidden at most 12 h after it was *received*, and
#: the record was received before the invocation started (batching window, earlier records), so a hop
#: stays well below the cap; a longer wait is made of several hops.
MAX_HOLD_SECONDS = MAX_VISIBILITY_SECONDS - 15 * 60
EVENT_CACHE_SIZE = 512
IO_THREADS = 32
#: Triggers of one extra attempt on an existing delivery, outside its retry schedule.
SINGLE_SHOT_TRIGGERS = frozenset({Trigger.MANUAL, Trigger.RECOVER})
#: The failed attempt after which the operator hears that a delivery is failing (Svix: the 4th).
FAILING_NOTICE_ATTEMPT = 4
#: Random spread added to a rate-limit postponement (seconds), so postponed messages do not all return at once.
POSTPONE_JITTER_SECONDS = 1.0


class RetryLaterError(Exception):
    """The record is put back on the queue on purpose (a retry is scheduled, or it cannot run now)."""


class _Processor(AsyncBatchProcessor):
    """Powertools' async batch processor on a loop that outlives the invocation, so the HTTP client's
    pooled connections stay usable across warm invocations (and in the local emulator)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        self._loop = loop

    def async_process(self) -> list[tuple[Any, ...]]:
        async def process_all() -> list[tuple[Any, ...]]:
            return list(await asyncio.gather(*(self._async_process_record(record) for record in self.records)))

        return self._loop.run_until_complete(process_all())


@dataclass
class _Pace:
    """This worker's line of deliveries waiting for one subscription's rate-limit slots."""

    lock: asyncio.Lock
    users: int = 0
    #: Deliveries postponed through the queue are spread from here on, one slot apart (epoch seconds).
    backlog_until: float = 0.0


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
    def previous(self) -> Delivery | None:
        return self.state.delivery if self.state is not None else None

    @property
    def scheduled(self) -> int:
        """Scheduled attempts made so far: the position in the retry schedule."""
        return self.state.scheduled_attempts if self.state is not None else 0

    @property
    def event(self) -> Event:
        return self.stored.event

    @property
    def event_expires_at(self) -> int:
        return self.stored.expires_at

    @property
    def delivery(self) -> Delivery:
        """The delivery as claimed. The claim keeps its status: a manual attempt on a settled delivery
        that dies midway leaves it settled, not pending with no message to carry it."""
        base = self.previous or Delivery(
            id=self.log["delivery_id"],
            event_id=self.event.id,
            subscription_id=self.message.subscription_id,
            tenant_id=self.message.tenant_id,
            event_type=self.event.type,
            status=DeliveryStatus.PENDING,
            created_at=self.now,
            updated_at=self.now,
        )
        return base.model_copy(update={"updated_at": self.now})


@dataclass
class _Tally:
    """The attempts made to one subscription in this batch."""

    sub: Subscription
    expires_at: int
    log: dict[str, Any]
    outcomes: list[Outcome] = field(default_factory=list)


def _receive_count(record: SQSRecord) -> int:
    return int(record.attributes.approximate_receive_count or 1)


class Worker:
    """Processes SQS batches of work messages; everything it touches is injectable."""

    def __init__(
        self,
        services: Services,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.store = services.store
        self.queue = services.queue
        self.policy = services.retry_policy
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.loop = asyncio.new_event_loop()
        self.executor = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="herald-io")
        self._events: OrderedDict[str, StoredEvent] = OrderedDict()
        self._event_reads: dict[str, asyncio.Future[StoredEvent | None]] = {}
        self._events_lock = threading.Lock()
        self._paces: dict[str, _Pace] = {}
        #: Event counter changes of the deliveries settled in this batch: event id -> (expiry, deltas).
        self._event_counts: dict[str, tuple[int, Counter[str]]] = {}
        #: The attempts made in this batch, per subscription, for its stats and health.
        self._tallies: dict[str, _Tally] = {}
        self.metrics = DeliveryMetrics(self.settings.metrics_namespace)

    # --- entry point ------------------------------------------------------------------------------

    def handle(self, event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
        """The Lambda handler body: returns ``{"batchItemFailures": [...]}``."""
        remaining_ms = context.get_remaining_time_in_millis() if context is not None else 60_000
        deadline = self.clock() + remaining_ms / 1000

        async def record_handler(record: SQSRecord) -> None:
            await self.process(record, deadline)

        processor = _Processor(self.loop)
        try:
            return dict(async_process_partial_response(event, record_handler, processor, context))
        finally:
            # Before returning, so before SQS deletes the batch's messages.
            self.loop.run_until_complete(self._settle_subscriptions())
            self._flush_event_counts()
            self.metrics.flush()  # one EMF document per invocation

    def _flush_event_counts(self) -> None:
        """Write the batch's event counter changes: one UpdateItem per event, all at once."""
        pending, self._event_counts = self._event_counts, {}
        if not pending:
            return

        def write(event_id: str, expires_at: int, deltas: Counter[str]) -> None:
            try:
                self.store.events.count(event_id, expires_at=expires_at, **deltas)
            except Exception:
                logger.warning("event counters not updated", extra={"event_id": event_id, **deltas})

        async def write_all() -> None:
            await asyncio.gather(*(self._io(write, key, *value) for key, value in pending.items()))

        self.loop.run_until_complete(write_all())

    def _count_event(self, job: _Job, settled: Delivery) -> None:
        """Add a settled delivery's change to its event's counters, to be written when the batch is done."""
        deltas = {key: value for key, value in self._count_changes(job.previous, settled).items() if value}
        if not deltas:
            return
        expires_at = job.event_expires_at or self._expires_at(job)
        _, counts = self._event_counts.setdefault(job.event.id, (expires_at, Counter()))
        counts.update(deltas)

    async def process(self, record: SQSRecord, deadline: float) -> None:
        """Process one record; raising puts it back on the queue (a batch item failure)."""
        try:
            message = parse_message(record.body)
        except PoisonMessageError as exc:
            # Never loop on a message that cannot be read: park it in the DLQ with the reason.
            await self._io(self.queue.dead_letter, record.body, str(exc))
            return
        if isinstance(message, DeliveryMessage):
            sent_ms = record.attributes.sent_timestamp
            if _receive_count(record) == 1 and sent_ms:
                self.metrics.add(Metric.QUEUE_AGE, max(0.0, self.clock() - int(sent_ms) / 1000))
            if message.job_id is not None:
                await recovery.deliver(self, message, record, deadline)  # checks the job's ticket first
            else:
                await self.deliver(message, record, deadline)
        elif isinstance(message, FanoutMessage):
            await self.fanout(message, deadline)
        elif isinstance(message, RecoverMessage):
            await recovery.run_recovery(self, message, deadline)
        elif isinstance(message, RedeliverMessage):
            await recovery.run_redelivery(self, message, deadline)
        else:
            await self.purge(message)

    async def _io[T](self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking AWS call off the event loop."""
        return await self.loop.run_in_executor(self.executor, lambda: function(*args, **kwargs))

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # --- fan-out ------------------------------------------------------------------------------------

    async def fanout(self, message: FanoutMessage, deadline: float) -> None:
        stored = await self._io(self.store.events.get, message.event_id)
        if stored is None:
            logger.warning("fan-out of an event that no longer exists", extra={"event_id": message.event_id})
            return
        expires_at = stored.expires_at
        if message.tenant_id is None:
            await self._fanout_tenants(message, expires_at)
            return
        event = stored.event
        routes = [event.type, WILDCARD]
        route = message.route if message.route in routes else routes[0]
        page_token = message.cursor
        handled = 0
        while True:
            marker = f"{message.tenant_id}|{route}|{page_token or ''}"
            sub_ids, next_token = await self._io(
                self.store.subscriptions.routed,
                message.tenant_id,
                route,
                limit=self.settings.fanout_page_size,
                cursor=page_token,
            )
            last = next_token is None and route == routes[-1]
            deliveries = [
                DeliveryMessage(event_id=event.id, tenant_id=message.tenant_id, subscription_id=sub_id)
                for sub_id in sub_ids
            ]
            # Count the page first, once however often this message runs; then queue it. A crash in
            # between runs the page again: its deliveries are queued again (the same delivery ids, so
            # nothing is sent twice) but not counted again.
            if deliveries or last:
                await self._io(
                    self.store.events.count_fanout_page,
                    event.id,
                    marker,
                    expires_at=expires_at,
                    matched=len(deliveries),
                    fanout_open=-1 if last else 0,
                )
            await self._send_concurrently(deliveries)
            handled += len(deliveries)
            if last:
                self.metrics.add(Metric.FANOUT_SIZE, handled)
                logger.info("fan-out finished", extra={"event_id": event.id, "tenant_id": message.tenant_id})
                return
            if next_token is None:
                route, page_token = routes[routes.index(route) + 1], None
            else:
                page_token = next_token
            if handled >= FANOUT_MAX_PER_MESSAGE or deadline - self.clock() < FANOUT_MIN_SECONDS_LEFT:
                # Hand over to a continuation message, well before the invocation's timeout.
                continuation = FanoutMessage(
                    event_id=event.id, tenant_id=message.tenant_id, route=route, cursor=page_token
                )
                await self._io(self.queue.send, continuation)
                self.metrics.add(Metric.FANOUT_SIZE, handled)
                return

    async def _fanout_tenants(self, message: FanoutMessage, expires_at: int) -> None:
        """A broadcast: one fan-out message per tenant, a page of tenants at a time."""
        page = await self._io(self.store.tenants.list, limit=100, cursor=message.cursor)
        per_tenant = [FanoutMessage(event_id=message.event_id, tenant_id=tenant.id) for tenant in page.items]
        last = page.cursor is None
        # Opened before they are queued, so the fan-out never looks complete while tenants remain.
        await self._io(
            self.store.events.count_fanout_page,
            message.event_id,
            f"tenants|{message.cursor or ''}",
            expires_at=expires_at,
            fanout_open=len(per_tenant) - (1 if last else 0),
        )
        await self._send_concurrently(per_tenant)
        if not last:
            await self._io(self.queue.send, message.model_copy(update={"cursor": page.cursor}))

    async def _send_concurrently(self, messages: list[DeliveryMessage] | list[FanoutMessage]) -> None:
        chunks = [messages[start : start + 10] for start in range(0, len(messages), 10)]
        await asyncio.gather(*(self._io(self.queue.send_batch, chunk) for chunk in chunks))

    # --- purge ----------------------------------------------------------------------------------------

    async def purge(self, message: PurgeTenantMessage) -> None:
        done = await self._io(self.store.subscriptions.purge_page, message.tenant_id)
        if not done:
            await self._io(self.queue.send, message)

    # --- one delivery -------------------------------------------------------------------------------

    def _event_item(self, event_id: str) -> StoredEvent | None:
        """Events never change once published: keep the recent ones in memory across a fan-out's deliveries."""
        with self._events_lock:
            item = self._events.get(event_id)
            if item is not None:
                self._events.move_to_end(event_id)
                return item
        item = self.store.events.get(event_id)
        if item is not None:
            with self._events_lock:
                self._events[event_id] = item
                while len(self._events) > EVENT_CACHE_SIZE:
                    self._events.popitem(last=False)
        return item

    async def _event(self, event_id: str) -> StoredEvent | None:
        """The event, read once however many deliveries of a batch ask for it at the same time."""
        read = self._event_reads.get(event_id)
        if read is None:
            read = self._event_reads[event_id] = asyncio.ensure_future(self._io(self._event_item, event_id))
            read.add_done_callback(lambda _: self._event_reads.pop(event_id, None))
        return await asyncio.shield(read)

    async def deliver(self, message: DeliveryMessage, record: SQSRecord, deadline: float) -> None:
        """One attempt of one delivery, if one is due; then settle the delivery or hold the message until
        the next attempt. A manual message (``single_shot`` on an existing delivery) makes exactly one
        attempt and leaves the schedule, and the message that carries it, alone."""
        delivery_id = ids.delivery_id(message.event_id, message.subscription_id)
        log: dict[str, Any] = {
            "delivery_id": delivery_id,
            "event_id": message.event_id,
            "subscription_id": message.subscription_id,
            "tenant_id": message.tenant_id,
        }
        item = await self._event(message.event_id)
        if item is None:
            logger.warning("delivery of an event that no longer exists: dropped", extra=log)
            return
        # A delivery message received for the first time almost always starts a new delivery: claim it
        # straight away (the claim only succeeds if the delivery does not exist yet) and read its state
        # only if it does exist (a duplicate message, a refreshed copy). One AWS call less per delivery.
        optimistic = message.trigger not in SINGLE_SHOT_TRIGGERS and _receive_count(record) == 1
        state: DeliveryState | None = None
        for read_state in (not optimistic, True):
            if read_state:
                state = await self._io(self.store.deliveries.get_state, delivery_id)
            single_shot = message.trigger in SINGLE_SHOT_TRIGGERS and state is not None
            if not await self._due(message, record, state, single_shot, deadline):
                return
            job = _Job(message, record, log, item, state, single_shot, self._now(), deadline)
            token = uuid.uuid4().hex
            claimed = await self._io(
                self.store.deliveries.claim,
                job.delivery,
                previous=job.previous,
                scheduled_attempts=job.scheduled,
                token=token,
                until=deadline + 5,
                now=self.clock(),
                expires_at=self._expires_at(job),
                job_id=message.job_id,
            )
            if claimed or read_state:
                break
        if not claimed:
            # Another message got there between our read and our claim: look again shortly.
            logger.info("delivery claimed by another message meanwhile", extra=log)
            await self._hold(message, record, SHORT_RETRY_SECONDS)
            return
        try:
            sub = await self._io(self.store.subscriptions.get, message.tenant_id, message.subscription_id)
        except Exception:
            # Nothing was sent: give the lease back, so the message's next receive need not wait it out.
            with contextlib.suppress(Exception):
                await self._io(self.store.deliveries.release, job.delivery, token)
            raise
        if sub is None and single_shot:
            await self._io(self.store.deliveries.release, job.delivery, token)
            logger.info("manual attempt cancelled: the subscription was deleted", extra=log)
        elif sub is None or (not sub.enabled and not single_shot):
            await self._cancel(job, token, "the subscription was deleted" if sub is None else "it is disabled")
        else:
            await self._attempt_and_record(job, sub, token)

    async def _due(
        self,
        message: DeliveryMessage,
        record: SQSRecord,
        state: DeliveryState | None,
        single_shot: bool,
        deadline: float,
    ) -> bool:
        """Whether an attempt can be made now. If not, the message is held (``_hold`` raises, or hands
        over to a fresh copy) or, for a settled delivery, done; either way this returns False."""
        now = self.clock()
        if state is not None:
            if not single_shot and state.delivery.status is not DeliveryStatus.PENDING:
                return False  # settled: this message's work is done
            if state.lease_until > now:
                # A worker is at it, or died at it: look again when its lease is over. Never let go here,
                # as this may be the very message whose worker died.
                await self._hold(message, record, state.lease_until - now + 1)
                return False
            due = state.delivery.next_attempt_at.timestamp() if state.delivery.next_attempt_at else 0
            if not single_shot and due > now + 1:
                await self._hold(message, record, due - now)
                return False
        if deadline - now < self.settings.delivery_timeout_seconds + START_MARGIN_SECONDS:
            await self._hold(message, record, SHORT_RETRY_SECONDS)  # not enough time left to send safely
            return False
        return True

    def _expires_at(self, job: _Job) -> int:
        return int((job.now + timedelta(days=self.settings.attempt_ttl_days)).timestamp())

    async def _cancel(self, job: _Job, token: str, reason: str) -> None:
        """The subscription is gone or disabled: the delivery fails without an attempt."""
        settled = job.delivery.model_copy(
            update={
                "status": DeliveryStatus.FAILED,
                "last_error_kind": ErrorKind.SUBSCRIPTION_GONE,
                "next_attempt_at": None,
            }
        )
        recorded = await self._io(
            self.store.deliveries.record,
            settled,
            None,
            token=token,
            scheduled_attempts=job.scheduled,
            expires_at=self._expires_at(job),
        )
        if recorded:
            self._count_event(job, settled)
        logger.info(f"delivery cancelled: {reason}", extra=job.log)

    async def _attempt_and_record(self, job: _Job, sub: Subscription, token: str) -> None:
        attempt_number = job.delivery.attempts + 1
        job.log["attempt"] = attempt_number
        scheduled = job.scheduled if job.single_shot else job.scheduled + 1
        if sub.rate_limit is not None:
            postpone = await self._rate_slot(job, sub.id, sub.rate_limit)
            if postpone > 0:
                # Over the rate: no attempt, no step of the schedule; the message comes back for its slot.
                await self._io(self.store.deliveries.release, job.delivery, token)
                self.metrics.add(Metric.POSTPONED)
                logger.info("attempt postponed by the rate limit", extra={**job.log, "postponed_seconds": postpone})
                await self._hold(job.message, job.record, postpone)
                return
        outcome = await self._attempt(sub, job.event.id, job.event.payload)
        next_at, status = self._next_step(outcome, scheduled, job.previous, job.single_shot)
        attempt = Attempt(
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
        recorded = await self._io(
            self.store.deliveries.record,
            settled,
            attempt,
            token=token,
            scheduled_attempts=scheduled,
            expires_at=self._expires_at(job),
            job_id=job.message.job_id,
        )
        if not recorded:
            # Only if this invocation outlived its own lease (it should not: the lease ends after the
            # deadline). The message comes back and the next claim carries the delivery on, making this
            # attempt again under the same number (its record then replaces this one's).
            logger.warning("lease lost while attempting; the delivery's state is not updated", extra=job.log)
            await self._hold(job.message, job.record, SHORT_RETRY_SECONDS)
            return
        self._count_event(job, settled)
        logger.info(
            "attempt made",
            extra={
                **job.log,
                "attempt": attempt_number,
                "status_code": outcome.status_code,
                "error_kind": outcome.error_kind,
                "status": status,
            },
        )
        self._count(outcome, settled, job.previous)
        await self._after_attempt(job, sub, outcome, settled)
        if status is DeliveryStatus.PENDING and not job.single_shot and next_at is not None:
            await self._hold(job.message, job.record, next_at.timestamp() - self.clock())

    # --- rate limits --------------------------------------------------------------------------------

    async def _rate_slot(self, job: _Job, sub_id: str, rate: int) -> float:
        """Take a slot of the subscription's rate for this attempt: 0 when it may start now, else the
        seconds to postpone it by. The deliveries of one subscription in this worker take slots one at a
        time (a line behind an asyncio lock), each waiting here while its slot is near; once one has to
        be postponed, those behind it are spread over the following slots without asking DynamoDB."""
        interval = 1.0 / rate
        pace = self._paces.get(sub_id)
        if pace is None:
            pace = self._paces[sub_id] = _Pace(asyncio.Lock())
        pace.users += 1
        started = time.monotonic()  # the local wait is real time, whatever clock the worker runs on
        latest_start = job.deadline - self.settings.delivery_timeout_seconds - START_MARGIN_SECONDS
        try:
            async with pace.lock:
                while True:
                    now = self.clock()
                    wait = 0.0
                    if pace.backlog_until <= now:
                        wait = await self._io(self.store.health.take_rate_slot, sub_id, interval=interval, now=now)
                        if wait <= 0:
                            return 0.0
                        waited = time.monotonic() - started
                        if waited + wait <= self.settings.rate_limit_local_wait_seconds and now + wait <= latest_start:
                            await asyncio.sleep(wait)
                            continue
                    # Postpone: behind the slot DynamoDB named and behind the deliveries postponed before.
                    slot = max(pace.backlog_until, now + wait)
                    pace.backlog_until = slot + interval
                    return slot - now + self.rng.uniform(0, POSTPONE_JITTER_SECONDS)
        finally:
            pace.users -= 1
            if pace.users == 0:
                self._paces.pop(sub_id, None)

    # --- after an attempt: metrics, stats, health, operational events --------------------------------

    def _count(self, outcome: Outcome, settled: Delivery, previous: Delivery | None) -> None:
        if outcome.error_kind is ErrorKind.REFUSED_BY_POLICY:
            self.metrics.add(Metric.REFUSED)
        else:
            self.metrics.add(Metric.SUCCEEDED if outcome.succeeded else Metric.FAILED)
            self.metrics.add(Metric.LATENCY, outcome.duration_ms)
        if not outcome.succeeded and settled.status is DeliveryStatus.PENDING and settled.next_attempt_at is not None:
            self.metrics.add(Metric.RETRIED)
        if _exhausted(previous, settled):
            self.metrics.add(Metric.EXHAUSTED)

    async def _after_attempt(self, job: _Job, sub: Subscription, outcome: Outcome, settled: Delivery) -> None:
        """What follows a recorded attempt: the attempt joins the subscription's tally for this batch (its
        stats and health are settled when the batch is done, ``_settle_subscriptions``), and the operator
        hears what this attempt did to its delivery. The attempt is recorded already: a failure here is
        logged, never turned into a repeated attempt."""
        tally = self._tallies.get(sub.id)
        if tally is None:
            log = {"subscription_id": sub.id, "tenant_id": sub.tenant_id}
            tally = self._tallies[sub.id] = _Tally(sub, self._expires_at(job), log)
        tally.outcomes.append(outcome)
        tally.expires_at = max(tally.expires_at, self._expires_at(job))
        if sub.tenant_id == OPERATOR_TENANT_ID:
            return  # the operator's own endpoints: never report on them to themselves (no loops)
        reports: list[tuple[str, dict[str, Any], tuple[str, ...]]] = []
        delivery_ref = {
            "tenant_id": sub.tenant_id,
            "subscription_id": sub.id,
            "url": sub.url,
            "event_id": job.event.id,
            "event_type": job.event.type,
            "delivery_id": settled.id,
            "attempts": settled.attempts,
            "last_status_code": outcome.status_code,
            "last_error_kind": outcome.error_kind and outcome.error_kind.value,
        }
        if not outcome.succeeded and settled.attempts == FAILING_NOTICE_ATTEMPT:
            data = {**delivery_ref, "next_attempt_at": settled.next_attempt_at}
            reports.append(("delivery.failing", data, (settled.id,)))
        if _exhausted(job.previous, settled):
            data = {**delivery_ref, "reason": _exhaustion_reason(outcome)}
            reports.append(("delivery.exhausted", data, (settled.id,)))
        await self._report(reports, job.log)

    async def _report(self, reports: list[tuple[str, dict[str, Any], tuple[str, ...]]], log: dict[str, Any]) -> None:
        for event_type, data, key in reports:
            try:
                await self._io(emit, self.services, event_type, data, key=key)
            except Exception:
                logger.exception("operational event not published", extra={**log, "event_type": event_type})

    async def _settle_subscriptions(self) -> None:
        """The batch is done: count each subscription's attempts in its stats (one write per subscription,
        not per attempt), then disable those that answered 410 or have been failing for the whole window,
        and tell the operator."""
        tallies, self._tallies = self._tallies, {}
        settled = await asyncio.gather(
            *(self._settle_subscription(tally) for tally in tallies.values()), return_exceptions=True
        )
        for tally, result in zip(tallies.values(), settled, strict=True):
            if isinstance(result, BaseException):
                # The attempts are recorded: a failure here is logged, never turned into a repeated attempt.
                logger.error("subscription health not settled", extra=tally.log, exc_info=result)

    async def _settle_subscription(self, tally: _Tally) -> None:
        sub, outcomes = tally.sub, sorted(tally.outcomes, key=lambda outcome: outcome.finished)
        try:
            health = await self._io(
                self.store.health.count_attempts,
                sub.id,
                [AttemptTally(outcome.succeeded, outcome.status_code, outcome.finished) for outcome in outcomes],
                failing_after=self.settings.failing_after_failures,
                expires_at=tally.expires_at,
            )
        except Exception:
            logger.exception("subscription stats not updated", extra=tally.log)
            health = SubscriptionHealth(0, None)
        deciding, reason = self._disable_reason(outcomes, health)
        disabled = await self._io(self._disable, sub, reason) if reason else None
        if sub.tenant_id == OPERATOR_TENANT_ID:
            return  # the operator's own endpoints: never report on them to themselves (no loops)
        reports: list[tuple[str, dict[str, Any], tuple[str, ...]]] = []
        ref = {"tenant_id": sub.tenant_id, "subscription_id": sub.id, "url": sub.url}
        if disabled is not None and disabled.disabled_at is not None:
            data = {
                **ref,
                "reason": disabled.disabled_reason or "",
                "disabled_at": disabled.disabled_at,
                "failing_since": health.failing_since,
                "last_status_code": deciding.status_code,
            }
            reports.append(("subscription.disabled", data, (sub.id, disabled.disabled_at.isoformat())))
        for failing_since, recovered_at in health.recoveries:
            data = {**ref, "failing_since": failing_since, "recovered_at": recovered_at}
            reports.append(("subscription.recovered", data, (sub.id, failing_since.isoformat())))
        await self._report(reports, tally.log)

    def _disable_reason(self, outcomes: list[Outcome], health: SubscriptionHealth) -> tuple[Outcome, str | None]:
        """Why to disable a subscription after these attempts (in the order they finished), and the attempt
        that decided it: a 410 Gone, or a streak still failing at the end that has lasted the whole window."""
        gone = next((outcome for outcome in outcomes if outcome.status_code == 410), None)
        if gone is not None:
            return gone, f"the endpoint answered 410 Gone on {gone.finished.isoformat()}"
        last = outcomes[-1]
        if last.succeeded or health.failing_since is None:
            return last, None
        window = timedelta(hours=self.settings.disable_after_failing_hours)
        if last.finished - health.failing_since < window:
            return last, None
        return last, (
            f"failing continuously since {health.failing_since.isoformat()} "
            f"({health.consecutive_failures} failed attempts in a row)"
        )

    def _next_step(
        self, outcome: Outcome, scheduled: int, previous: Delivery | None, single_shot: bool
    ) -> tuple[datetime | None, DeliveryStatus]:
        """The delivery's next attempt and status. ``scheduled`` counts the scheduled attempts made so
        far, this one included: the position in the retry schedule."""
        if outcome.succeeded:
            return None, DeliveryStatus.SUCCEEDED
        if single_shot and previous is not None:
            # A manual attempt does not change the schedule: a pending delivery keeps its next attempt.
            return previous.next_attempt_at, previous.status
        if outcome.status_code == 410:
            return None, DeliveryStatus.FAILED
        if outcome.error_kind is ErrorKind.REFUSED_BY_POLICY:
            # The URL (or what its name resolves to) is one Herald must not call: retrying would only
            # knock on the same door. A manual retry tries again once the subscriber has fixed it.
            return None, DeliveryStatus.FAILED
        delay = self.policy.delay_after(
            scheduled, throttled=outcome.throttled, retry_after=outcome.retry_after, rng=self.rng
        )
        if delay is None:
            return None, DeliveryStatus.FAILED  # exhausted: recorded, never silently dropped
        return outcome.finished + timedelta(seconds=delay), DeliveryStatus.PENDING

    async def _attempt(self, sub: Subscription, msg_id: str, payload: str) -> Outcome:
        body = payload.encode()
        timestamp = int(self.clock())
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(sub.signing_secrets(self._now()), msg_id, timestamp, body),
        }
        return await send_attempt(
            sub.url,
            body=body,
            headers=headers,
            timeout_seconds=self.settings.delivery_timeout_seconds,
            policy=self.services.url_policy,
            now=self._now,
        )

    @staticmethod
    def _count_changes(previous: Delivery | None, settled: Delivery) -> dict[str, int]:
        """The event counters' deltas when a delivery goes from ``previous`` to ``settled``."""
        before = previous.status if previous is not None else DeliveryStatus.PENDING
        deltas = dict.fromkeys((DeliveryStatus.SUCCEEDED.value, DeliveryStatus.FAILED.value), 0)
        if before is settled.status:
            return deltas
        if before is not DeliveryStatus.PENDING:
            deltas[before.value] -= 1
        if settled.status is not DeliveryStatus.PENDING:
            deltas[settled.status.value] += 1
        return deltas

    def _disable(self, sub: Subscription, reason: str) -> Subscription | None:
        return subscriptions.disable_for_failing(self.store, sub, reason, self._now())

    async def _hold(self, message: DeliveryMessage, record: SQSRecord, seconds: float) -> None:
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
        receives = _receive_count(record)
        sent_ms = int(record.attributes.sent_timestamp or 0)
        age = self.clock() - sent_ms / 1000 if sent_ms else 0
        if receives >= self.settings.max_receive_count - 2 or age > MESSAGE_MAX_AGE_SECONDS:
            await self._io(self.queue.send, message)
            return  # the copy carries on; this message is deleted
        try:
            await self._io(self.queue.change_visibility, record.receipt_handle, min(seconds, MAX_HOLD_SECONDS))
        except QueueVisibilityLimitError:
            await self._io(self.queue.send, message)
            return
        raise RetryLaterError(f"next look in {seconds:.0f} s")


def _exhausted(previous: Delivery | None, settled: Delivery) -> bool:
    """Whether this attempt failed the delivery for good (a manual attempt on a failed one does not)."""
    before = previous.status if previous is not None else DeliveryStatus.PENDING
    return before is DeliveryStatus.PENDING and settled.status is DeliveryStatus.FAILED


def _exhaustion_reason(outcome: Outcome) -> str:
    if outcome.status_code == 410:
        return "the endpoint answered 410 Gone"
    if outcome.error_kind is ErrorKind.REFUSED_BY_POLICY:
        return "the URL policy refused the endpoint's address"
    return "every scheduled attempt failed"


_WORKER: Worker | None = None


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The DeliveryFunction's handler (re-exported by ``functions/delivery``)."""
    global _WORKER  # noqa: PLW0603 - one worker per Lambda container, built on the first invocation
    if _WORKER is None:
        from herald.services import Services

        _WORKER = Worker(Services.create())
    return _WORKER.handle(event, context)


def settle_all(workers: Iterable[Worker]) -> None:
    """Close the workers' loops and thread pools (tests and the local stack)."""
    for worker in workers:
        worker.executor.shutdown(wait=False)
        worker.loop.run_until_complete(close_http_client(worker.loop))
        worker.loop.close()
