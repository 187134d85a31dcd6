"""The sweeper: once a minute (an EventBridge schedule invoking the DeliveryFunction with
``{"herald": "sweep"}``), it queues the scheduled work falling due in the next minute, each message with
the ``DelaySeconds`` left until it is due, and deletes it from the schedule.

A sweep reads from its cursor (until when everything due was queued) to a minute ahead, so a retry is
queued at most a minute early and SQS delays it to the second. A sweep that dies midway leaves the cursor
where it was: the next one reads the same window again and queues what is still there (the items it had
queued were deleted after each batch; a batch queued but not deleted is queued twice, which the delivery's
lease makes harmless). Two overlapping sweeps do the same at worst. A sweep that runs short of time stops
and leaves the rest to the next one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from herald.queue import BATCH_SIZE, MAX_DELAY_SECONDS

if TYPE_CHECKING:
    from herald.storage.schedule import Scheduled
    from herald.worker.runtime import Worker

logger = Logger(service="herald", child=True)

#: How far ahead a sweep queues scheduled work (SQS delays each message the rest of the way). At least the
#: sweep interval, so nothing is queued late; less than 15 minutes, SQS's longest delay.
LOOKAHEAD_SECONDS = 60
#: Where the first sweep of a deployment starts reading, back from now.
FIRST_LOOKBACK_SECONDS = 3600
#: A sweep stops when its invocation has less time left than this.
MIN_SECONDS_LEFT = 10.0


@dataclass(frozen=True)
class SweepResult:
    queued: int
    complete: bool


def sweep(worker: Worker, *, deadline: float | None = None) -> SweepResult:
    """Queue the scheduled work due before a minute from now (``deadline``: stop by then, in monotonic time)."""
    schedule = worker.store.schedule
    now = worker.clock()
    previous = schedule.cursor()
    since = previous if previous is not None else now - FIRST_LOOKBACK_SECONDS
    until = max(since, now + LOOKAHEAD_SECONDS)
    page: list[Scheduled] = []
    queued = 0
    for item in schedule.falling_due(since, until):
        page.append(item)
        if len(page) == BATCH_SIZE:
            queued += _queue(worker, page, now)
            page = []
            if deadline is not None and deadline - time.monotonic() < MIN_SECONDS_LEFT:
                logger.warning("sweep stopped short of time; the next one carries on", extra={"queued": queued})
                return SweepResult(queued, complete=False)
    queued += _queue(worker, page, now)
    if not schedule.advance(previous, until):
        logger.info("another sweep moved the cursor meanwhile", extra={"queued": queued})
    if queued:
        logger.info("scheduled work queued", extra={"queued": queued})
    return SweepResult(queued, complete=True)


def _queue(worker: Worker, page: list[Scheduled], now: float) -> int:
    if not page:
        return 0
    entries = [(item.body, min(MAX_DELAY_SECONDS, max(0, math.ceil(item.due - now)))) for item in page]
    worker.queue.send_bodies(entries)
    worker.store.schedule.remove(page)
    return len(page)
