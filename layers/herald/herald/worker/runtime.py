"""The delivery worker: the SQS consumer behind the DeliveryFunction, and what its stages share.

Each work message is one of: a fan-out page (``fanout``), a delivery (``dispatch``) or several first
deliveries (each worked as its own delivery message would be), a recovery or redelivery job (``jobs``), or a
tenant purge. Once a minute the same function is invoked to sweep the
scheduled work falling due onto the queue (``sweeper``), and the table's stream hands it the first attempts
that succeeded, for their subscriptions' stats (``streamed``). The stages are plain functions of a ``Worker``, which
holds what they share: the services, the clock and random source, the event loop and the thread pool
for blocking AWS calls, the event cache (``events``), what the batch read before it began (``reads``), the
rate-limit pacer (``pacing``), the batch's bookkeeping (``bookkeeping``) and its metrics. Retries wait on
the queue, never in the worker (``schedule``).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response

from herald import sender
from herald.messages import (
    DeliveriesMessage,
    DeliveryMessage,
    FanoutMessage,
    NoticeMessage,
    PoisonMessageError,
    PurgeTenantMessage,
    RecoverMessage,
    RedeliverMessage,
    RevokeKeysMessage,
    WorkMessage,
)
from herald.metrics import DeliveryMetrics, Metric
from herald.sender import close_http_client
from herald.worker import dispatch, fanout, jobs, lanes, streamed, sweeper
from herald.worker.bookkeeping import Bookkeeping, publish_notice
from herald.worker.events import EventCache
from herald.worker.gathering import Activity
from herald.worker.inserts import Inserts
from herald.worker.pacing import Pacer, latest_start
from herald.worker.reads import BatchReads, read_batch
from herald.worker.schedule import HeldCopies, receive_count, redrives_of

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from herald.services import Services

IO_THREADS = 32
#: The most characters of an exception's text a log line of the worker carries.
ERROR_TEXT_MAX = 500

logger = Logger(service="herald", child=True)


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
        settings = self.settings
        self.metrics = DeliveryMetrics(
            settings.metrics_namespace, detailed=settings.detailed_metrics, service=settings.metrics_service
        )
        self.events = EventCache(self)
        self.pacer = Pacer(self)
        self.books = Bookkeeping(self)
        self.reads = BatchReads()
        #: When the current invocation ends, on the worker's clock (``_started``).
        self.deadline = math.inf
        #: The batch's records at work, for the calls gathered across them: the first attempts' writes, the copies of
        #: held messages.
        self.activity = Activity()
        self.inserts = Inserts(self, activity=self.activity)
        self.held_copies = HeldCopies(self, activity=self.activity)
        #: Until when the scheduled work has been queued, as this worker's last sweep read or moved the cursor
        #: (``sweeper.measure_lag``); None before its first sweep.
        self.sweep_cursor: float | None = None
        #: One for each of the HTTP client's connections (``sender.MAX_CONNECTIONS``, read as the client is): an
        #: attempt holds one while it is made (``take_connection``), so no attempt waits for a connection inside its
        #: timeout, however many deliveries a batch carries.
        self.connections = asyncio.Semaphore(sender.MAX_CONNECTIONS)

    async def take_connection(self, deadline: float) -> bool:
        """Wait for one of ``connections`` for as long as an attempt started then still has its whole timeout and
        the margin to record it before ``deadline``: True once one is held (the caller gives it back), False if
        none came in time (none is held)."""
        latest = latest_start(self, deadline)
        try:
            async with asyncio.timeout(max(0.0, latest - self.clock())):
                await self.connections.acquire()
        except TimeoutError:
            return False
        if self.clock() > latest:  # taken at once with no time left, or the clock moved meanwhile
            self.connections.release()
            return False
        return True

    def _started(self, context: LambdaContext | None) -> float:
        """Note when this invocation ends, on the worker's clock (``deadline``: what may wait, a report's retry,
        waits only within it), and return it."""
        remaining_ms = context.get_remaining_time_in_millis() if context is not None else 60_000
        self.deadline = self.clock() + remaining_ms / 1000
        return self.deadline

    def invoke(self, event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
        """One invocation of the DeliveryFunction: the schedule's sweep (``{"herald": "sweep"}``, once a
        minute), a batch of the table's stream (``streamed``), or a batch of a work queue."""
        self._started(context)
        if event.get("herald") == "sweep":
            return self.sweep(context)
        if streamed.is_stream_event(event):
            return self.loop.run_until_complete(streamed.count(self, event["Records"]))
        return self.handle(event, context)

    def handle(self, event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
        """The Lambda handler body: returns ``{"batchItemFailures": [...]}``."""
        deadline = self._started(context)

        async def record_handler(record: SQSRecord) -> None:
            await self.process(record, deadline)

        processor = _Processor(self.loop)
        try:
            bodies = [str(record.get("body", "")) for record in event.get("Records", [])]
            self.reads = self.loop.run_until_complete(read_batch(self, bodies))
            return dict(async_process_partial_response(event, record_handler, processor, context))
        finally:
            # Before returning, so before SQS deletes the batch's messages.
            self.loop.run_until_complete(self.books.finish())
            self.reads = BatchReads()
            self.events.trim()
            lanes.forget(self)
            self.metrics.flush()  # one EMF document per invocation

    async def process(self, record: SQSRecord, deadline: float) -> None:
        """Process one record; raising puts it back on the queue (a batch item failure)."""
        try:
            message = self.reads.message(record.body)
        except PoisonMessageError as exc:
            # Never loop on a message that cannot be read: park it in the DLQ with the reason (and the redrives it
            # had, so that a redrive's limit holds for a message this code cannot read and other code can).
            await self.io(self.queue.dead_letter, record.body, str(exc), redrives=redrives_of(record))
            return
        if isinstance(message, DeliveriesMessage):
            await self._deliver_each(message, record, deadline)
            return
        self.activity.started()
        try:
            await self._process(message, record, deadline)
        finally:
            self.activity.finished()

    async def _process(self, message: WorkMessage, record: SQSRecord, deadline: float) -> None:
        if isinstance(message, DeliveryMessage):
            await self._deliver_one(message, record, deadline)
        elif isinstance(message, FanoutMessage):
            await fanout.fanout(self, message, record, deadline)
        elif isinstance(message, RecoverMessage):
            await jobs.run_recovery(self, message, record, deadline, redriven=redrives_of(record) > 0)
        elif isinstance(message, RedeliverMessage):
            rerun = receive_count(record) > 1 or redrives_of(record) > 0
            await jobs.run_redelivery(self, message, deadline, rerun=rerun)
        elif isinstance(message, RevokeKeysMessage):
            await fanout.revoke_keys(self, message)
        elif isinstance(message, NoticeMessage):
            await publish_notice(self, message, record.body, redrives_of(record))
        else:
            assert isinstance(message, PurgeTenantMessage)
            await fanout.purge(self, message)

    async def _deliver_one(self, message: DeliveryMessage, record: SQSRecord, deadline: float) -> None:
        sent_ms = record.attributes.sent_timestamp
        if receive_count(record) == 1 and sent_ms and not message.resumed:
            self.metrics.add(Metric.QUEUE_AGE, max(0.0, self.clock() - int(sent_ms) / 1000))
        if message.job_id is not None:
            await jobs.deliver(self, message, record, deadline)  # checks the job's ticket first
        else:
            await dispatch.deliver(self, message, record, deadline)

    async def _deliver_each(self, message: DeliveriesMessage, record: SQSRecord, deadline: float) -> None:
        """The first deliveries a message carries, side by side, each as its own delivery message would be. If
        any raised, the message comes back whole once all are done: those settled find their delivery settled and
        are done at once; those carried on by copies (held by a rate limit or a breaker, handed to the slow lane) are
        worked again as any copy would be, the lease and the pacing keeping each to one attempt at a time, and a
        second copy follows each until a long wait merges the two (``herald.worker.schedule``); the message's
        receive count still leads it to the dead-letter queue if it keeps failing."""
        each = message.each()
        for _ in each:
            self.activity.started()  # all at once: none may think itself the batch's last while others start

        async def one(delivery: DeliveryMessage) -> None:
            try:
                await self._deliver_one(delivery, record, deadline)
            finally:
                self.activity.finished()

        outcomes = await asyncio.gather(*(one(delivery) for delivery in each), return_exceptions=True)
        failed = [(d, outcome) for d, outcome in zip(each, outcomes, strict=True) if isinstance(outcome, BaseException)]
        if failed:
            logger.warning(
                "deliveries of a message failed; the message comes back",
                extra={
                    "tenant_id": message.tenant_id,
                    "failed": [
                        {"delivery_id": d.delivery_id, "event_id": d.event_id, "error": _described(outcome)}
                        for d, outcome in failed
                    ],
                    "deliveries": len(each),
                },
            )
            raise failed[0][1]

    def sweep(self, context: LambdaContext | None = None) -> dict[str, Any]:
        """The scheduled invocation: queue the scheduled work falling due (``sweeper``)."""
        remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else 60.0
        result = sweeper.sweep(self, deadline=time.monotonic() + remaining)
        sweeper.measure_lag(self)
        self.metrics.flush()
        return {"queued": result.queued, "complete": result.complete}

    async def deliver(self, message: DeliveryMessage, record: SQSRecord, deadline: float) -> None:
        """One delivery message (``dispatch.deliver``)."""
        await dispatch.deliver(self, message, record, deadline)

    async def io[T](self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking AWS call on the thread pool, off the event loop."""
        return await self.loop.run_in_executor(self.executor, lambda: function(*args, **kwargs))

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)


def _described(error: BaseException) -> str:
    """An exception as an operator reads it in a log line (a ``ClientError``'s text names AWS's error code), cut
    to ``ERROR_TEXT_MAX`` characters."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text if len(text) <= ERROR_TEXT_MAX else text[: ERROR_TEXT_MAX - 1] + "…"


_WORKER: Worker | None = None


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The DeliveryFunction's handler (re-exported by ``functions/delivery``)."""
    global _WORKER  # noqa: PLW0603 - one worker per Lambda container, built on the first invocation
    if _WORKER is None:
        from herald.services import Services

        _WORKER = Worker(Services.create())
    return _WORKER.invoke(event, context)


def settle_all(workers: Iterable[Worker]) -> None:
    """Close the workers' loops and thread pools (tests and the local stack)."""
    for worker in workers:
        worker.executor.shutdown(wait=False)
        worker.loop.run_until_complete(close_http_client(worker.loop))
        worker.loop.close()
