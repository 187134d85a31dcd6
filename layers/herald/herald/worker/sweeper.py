"""The sweeper: once a minute (an EventBridge schedule invoking the DeliveryFunction with
``{"herald": "sweep"}``), it queues the scheduled work falling due in the next two minutes, each message with
the ``DelaySeconds`` left until it is due, and deletes it from the schedule.

A sweep reads from its cursor (until when everything due was queued) to two minutes ahead, so a retry is
queued at most two minutes early and SQS delays it to the second, even when a sweep starts late. A sweep
that dies midway leaves the cursor at the last hour of the schedule it drained: the next one reads the rest
again and queues what is still there (the items it had queued were deleted after each batch; a batch queued
but not deleted is queued twice, which the delivery's lease makes harmless). Two overlapping sweeps do the
same at worst. A sweep that runs short of time stops and leaves the rest to the next one; it makes no AWS call
that might end past its invocation (``herald.deadline``), so one whose calls hang fails instead of being cut off.
"""

from __future__ import annotations

import math
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from herald.deadline import REQUEST_DEADLINE, attempt_seconds
from herald.errors import ServiceUnavailableError
from herald.messages import described
from herald.metrics import Metric
from herald.queue import BATCH_SIZE, MAX_DELAY_SECONDS, MAX_MESSAGE_BYTES
from herald.storage.schedule import KEEP_SECONDS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from herald.storage.schedule import Scheduled
    from herald.worker.runtime import Worker

logger = Logger(service="herald", child=True)

#: How far ahead a sweep queues scheduled work (SQS delays each message the rest of the way): twice the sweep
#: interval, so a sweep that starts late still queues what falls due before the next one; far less than 15
#: minutes, SQS's longest delay, and than the shortest wait ``hold`` schedules (over 15 minutes ahead).
LOOKAHEAD_SECONDS = 120
#: Where a sweep with no cursor starts reading, back from now. Nothing was scheduled then (the schedule's first
#: put starts the cursor: ``ScheduleRepository.start_cursor``), unless the cursor was lost with the table.
FIRST_LOOKBACK_SECONDS = 3600
#: A sweep starts no page when its invocation has less time left than this on top of ``END_SECONDS`` and one attempt
#: of an AWS call at its longest (``herald.deadline.attempt_seconds``: 3 s to connect and 10 s to answer, 19 s in all
#: by default). Its AWS calls make no attempt that might end past the invocation, less ``END_SECONDS``: a page started
#: then has time for its two calls as AWS answers them, even throttled (botocore's backoff before their second and
#: third attempts is at most 3 s), or for one attempt that hangs to its timeout, after which the page fails. Lambda's
#: timeout would instead cut the sweep off mid-call, an error of the function, with neither its log nor its lag metric.
MIN_SECONDS_LEFT = 5.0
#: Time kept back from the invocation's for its end once the sweep's last AWS call is made (its logs, its metrics).
END_SECONDS = 1.0
#: Pages of scheduled work sent (SendMessageBatch) and deleted (BatchWriteItem) at once.
SWEEP_THREADS = 8
HOUR = 3600


@dataclass(frozen=True)
class SweepResult:
    queued: int
    complete: bool


def sweep(worker: Worker, *, deadline: float | None = None) -> SweepResult:
    """Queue the scheduled work due before ``LOOKAHEAD_SECONDS`` from now (``deadline``: stop by then, in
    monotonic time). The window is read an hour of the schedule at a time, the cursor moved past each hour
    once it is drained: a sweep cut short keeps what it did, and one far behind (the schedule stopped for
    days) catches up over several sweeps instead of reading the same empty hours again each time. Nothing
    older than ``KEEP_SECONDS`` is read: it expired. Pages are sent and deleted ``SWEEP_THREADS`` at a time
    while the next ones are read: a page is two calls, and one after another they would bound the sweep to a
    few hundred items a second. No AWS call of the sweep makes an attempt that might end past ``deadline``, less
    ``END_SECONDS``: it fails instead (``herald.deadline.OutOfTime``, as ``ServiceUnavailableError``).

    A sweep that DynamoDB or SQS cuts short (refusing after botocore's retries, or out of time) is not complete:
    what it queued is out of the schedule, and counted; the rest stays there, and the cursor did not move past it,
    so the next sweep, a minute on, reads the same window again. A fault that lasts shows in the lag
    (``measure_lag``, ScheduleSweepLagAlarm)."""
    if deadline is None:
        return _sweep(worker, None)
    token = REQUEST_DEADLINE.set(deadline - END_SECONDS)
    try:
        return _sweep(worker, deadline - END_SECONDS - attempt_seconds(worker.settings))
    finally:
        REQUEST_DEADLINE.reset(token)


def _sweep(worker: Worker, latest: float | None) -> SweepResult:
    """``sweep``, whose AWS calls may start attempts until ``latest`` (monotonic time; None: no end)."""
    pages: list[Future[int]] = []  # every page sent, to count what the sweep queued however it ends
    try:
        with ThreadPoolExecutor(max_workers=SWEEP_THREADS, thread_name_prefix="herald-sweep") as pool:
            complete = _sweep_window(worker, pool, pages, latest)
    except ServiceUnavailableError:
        # Raised once the pages under way are done (the pool's end waits for them): their count is whole.
        queued = _queued(pages)
        logger.warning(
            "sweep cut short by a storage or queue fault; the next one carries on",
            extra={"queued": queued},
            exc_info=True,
        )
        return SweepResult(queued, complete=False)
    queued = _queued(pages)
    if not complete:
        logger.warning("sweep stopped short of time; the next one carries on", extra={"queued": queued})
    elif queued:
        logger.info("scheduled work queued", extra={"queued": queued})
    return SweepResult(queued, complete=complete)


def _sweep_window(worker: Worker, pool: ThreadPoolExecutor, pages: list[Future[int]], latest: float | None) -> bool:
    """Queue the window's scheduled work an hour at a time (``_sweep_hour``), moving the cursor past each hour
    drained; whether the window was (False: short of time)."""
    schedule = worker.store.schedule
    now = worker.clock()
    cursor = worker.sweep_cursor = schedule.cursor()
    since = max(cursor if cursor is not None else now - FIRST_LOOKBACK_SECONDS, now - KEEP_SECONDS)
    until = max(since, now + LOOKAHEAD_SECONDS)
    start = since
    while True:
        end = min(until, (math.floor(start / HOUR) + 1) * HOUR)
        drained = _sweep_hour(worker, pool, pages, start, end, latest=latest)
        if drained:
            if not schedule.advance(cursor, end):
                logger.info("another sweep moved the cursor meanwhile", extra={"queued": _queued(pages)})
                return True
            worker.sweep_cursor = end
            if end >= until:
                return True
        if not drained or _short_of_time(latest):
            return False
        cursor = start = end


def _queued(pages: list[Future[int]]) -> int:
    """How many items the pages sent so far queued (a page that failed, or never started, queued none)."""
    return sum(page.result() for page in pages if page.done() and not page.cancelled() and page.exception() is None)


def measure_lag(worker: Worker) -> None:
    """How far behind the sweeps are (``Metric.SWEEP_LAG``): the seconds from the cursor (until when the scheduled
    work has been queued, as this worker's sweeps last read or moved it) to now, 0 while the sweeps keep up (the
    cursor runs up to ``LOOKAHEAD_SECONDS`` ahead). A sweep that fails the same way every minute (an SQS send
    refused, a permission taken away) is not an error of the function, which carries on: this is what shows it,
    growing a minute every minute, also when the cursor itself cannot be read any more. Nothing from a worker
    that never read it (a new container whose first sweep was refused at once)."""
    if worker.sweep_cursor is not None:
        worker.metrics.add(Metric.SWEEP_LAG, max(0.0, worker.clock() - worker.sweep_cursor))


def _sweep_hour(
    worker: Worker,
    pool: ThreadPoolExecutor,
    pages: list[Future[int]],
    start: float,
    end: float,
    *,
    latest: float | None,
) -> bool:
    """Queue what falls due in [start, end) (within one hour of the schedule), a page at a time on ``pool`` (each
    added to ``pages``), at most ``2 * SWEEP_THREADS`` pages read ahead of their sends, taken from the hour's shards
    in turn (``_pages``). Whether the window was drained (False: short of time). A failure (a page's, or a read's)
    raises once the pages under way are done, and starts no page more: what those queued left the schedule, the
    rest stays for the next sweep."""
    pending: deque[Future[int]] = deque()
    drained = True
    try:
        for page in _pages(worker.store.schedule.falling_due_by_partition(start, end)):
            if _short_of_time(latest):
                drained = False
                _give_up_unstarted(pending)
                break
            # The page's AWS calls keep the sweep's deadline (``herald.deadline.REQUEST_DEADLINE``).
            future = pool.submit(copy_context().run, _queue, worker, page)
            pages.append(future)
            pending.append(future)
            while len(pending) >= 2 * SWEEP_THREADS:
                pending.popleft().result()
        while pending:
            future = pending.popleft()
            if not future.cancelled():
                future.result()
    except BaseException:
        _give_up_unstarted(pending)
        raise
    return drained


def _pages(partitions: list[Iterator[Scheduled]]) -> Iterator[list[Scheduled]]:
    """The items of ``partitions`` in pages of ``BATCH_SIZE``, a page from each partition in turn (one that runs out
    mid-page, the next fills it), each partition read only as far as its pages go. So the ``SWEEP_THREADS`` pages under
    way at once are from as many partitions, and so are their deletes: read one partition after another, they would
    all fall on one, which takes at most 1,000 writes a second, fewer than a sweep deletes."""
    turns = deque(partitions)
    page: list[Scheduled] = []
    while turns:
        partition = turns.popleft()
        for item in partition:
            page.append(item)
            if len(page) == BATCH_SIZE:
                turns.append(partition)
                yield page
                page = []
                break
    if page:
        yield page


def _give_up_unstarted(pending: deque[Future[int]]) -> None:
    """Short of time, or a page failed: the pages read ahead and not yet started stay in the schedule for the next
    sweep. Only those under way (at most ``SWEEP_THREADS``) are waited for, so a sweep whose AWS calls have slowed down
    (throttled shards) still ends before its invocation's timeout."""
    for future in pending:
        future.cancel()


def _short_of_time(latest: float | None) -> bool:
    """Whether a page started now might not have time for its calls: ``latest`` is when the sweep's last attempt of
    an AWS call may start."""
    return latest is not None and latest - time.monotonic() < MIN_SECONDS_LEFT


def _queue(worker: Worker, page: list[Scheduled]) -> int:
    """Send a page of scheduled work, each message delayed until it is due (from now, as it is sent: a sweep
    may run for most of a minute), then delete it from the schedule."""
    if not page:
        return 0
    now = worker.clock()

    def delay(item: Scheduled) -> int:
        return min(MAX_DELAY_SECONDS, max(0, math.ceil(item.due - now)))

    # An item SQS can never take (over its message size: written by another version, or another writer) would fail
    # its page at every sweep, and hold the cursor, and every later item, for good: it is removed, and said loudly.
    sendable = []
    for item in page:
        size = len(item.body.encode())
        if size > MAX_MESSAGE_BYTES:
            logger.error(
                "scheduled work too large for SQS: removed from the schedule, not queued",
                extra={"key": item.key, "bytes": size, "work_message": described(item.body)},
            )
        else:
            sendable.append(item)
    # Work redriven from the dead-letter queue keeps its count (a message attribute): rare, sent one by one.
    for item in sendable:
        if item.redrives:
            worker.queue.send_body(item.body, delay_seconds=delay(item), redrives=item.redrives)
    worker.queue.send_bodies([(item.body, delay(item)) for item in sendable if not item.redrives])
    worker.store.schedule.remove(page)
    return len(sendable)
