"""Per-subscription rate limits, as one worker paces the deliveries of a batch.

A subscription's rate limit is taken right before each attempt (``HealthRepository.take_rate_slot``,
shared by every invocation). A delivery over the rate reserves a slot ahead and waits for it in the worker if it
opens within a few seconds, the deliveries of one subscription in a batch in line behind one another (one
DynamoDB call per slot, not per waiting delivery, whatever the number of workers); past that it is postponed
through the queue: its lease is given back and its message held until about its slot. Neither counts as an
attempt nor moves the retry schedule, and a message postponed many times is refreshed by ``schedule.hold`` like
any long wait, never dead-lettered.

The head of a line takes the connection its attempt goes out on (``Worker.take_connection``) before it asks for
its slot, so the attempt starts at its slot, never bunched up with others behind a wait for a connection. Those
behind it wait without one: a rate-limited subscription holds at most one of the worker's connections idle,
however many of its deliveries a batch carries.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from herald.storage.health import RateSlot
    from herald.worker.runtime import Worker

#: An attempt is only started if the invocation has this much time left beyond the HTTP timeout.
START_MARGIN_SECONDS = 5.0
#: Random spread added to a rate-limit postponement (seconds), so postponed messages do not all return at once.
POSTPONE_JITTER_SECONDS = 1.0
#: How many subscriptions' taken slots a worker notes before it drops those whose time is over.
_TAKEN_NOTES = 1024


def local_wait(worker: Worker, *, slow_lane: bool) -> float:
    """How long a delivery over its rate may wait in the worker for its slot (``Pacer.slot``): up to
    ``rate_limit_local_wait_seconds`` on the slow lane, whose invocations are there to wait; on the work queue no
    longer than a hanging endpoint holds one of its invocations (``slow_lane_after_seconds``), since a wait holds its
    invocation to the end, every other delivery of the batch sent, and holds it from every tenant's next batch."""
    settings = worker.settings
    if slow_lane or not settings.slow_queue_url:
        return settings.rate_limit_local_wait_seconds
    return min(settings.rate_limit_local_wait_seconds, settings.slow_lane_after_seconds)


def latest_start(worker: Worker, deadline: float) -> float:
    """The latest an attempt may start in an invocation that ends at ``deadline``: its whole timeout and the margin
    to record it still ahead."""
    return deadline - worker.settings.delivery_timeout_seconds - START_MARGIN_SECONDS


class Skip(Enum):
    """Why ``Pacer.slot`` gives an attempt neither a slot nor a postponement."""

    #: No connection came while the invocation had time for the attempt: it is put off.
    NO_CONNECTION = "no connection"
    #: Its subscription went on the slow lane meanwhile: the delivery was forwarded there.
    FORWARDED = "forwarded"
    #: What it would send could not be made (``prepare`` said so: its transform failed on the event); no slot taken.
    NO_BODY = "no body"


@dataclass
class _Line:
    """This worker's line of deliveries waiting for one subscription's rate-limit slots."""

    lock: asyncio.Lock
    users: int = 0
    #: Deliveries postponed through the queue are spread from here on, one slot apart (epoch seconds).
    backlog_until: float = 0.0
    #: Seconds the line's heads have waited for a connection so far: not counted in anyone's local wait.
    connection_waits: float = 0.0
    #: When the head now waiting for a connection began to (monotonic), or None.
    waiting_since: float | None = None

    def connection_waited(self, now: float) -> float:
        """The line's waits for connections until ``now``, the head's under way included."""
        return self.connection_waits + (now - self.waiting_since if self.waiting_since is not None else 0.0)


class Pacer:
    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._lines: dict[str, _Line] = {}
        #: Until when each subscription's slots were taken, as this worker's last take of them found (epoch
        #: seconds): while they are, the next take reserves one ahead first (``HealthRepository.take_rate_slot``'s
        #: ``busy``). Kept across lines and batches, so that a worker with one delivery at a time still pays one
        #: write a slot; entries whose time is over are dropped as new ones come.
        self._taken_until: dict[str, float] = {}

    def _take_slot(
        self, sub_id: str, interval: float, within: Callable[[float], float], busy_until: float
    ) -> tuple[float, RateSlot]:
        """(when, the take) of the subscription's next slot, or of one up to ``within(now)`` seconds ahead, made now,
        in the calling thread (``HealthRepository.take_rate_slot``; ``busy`` while ``now`` is before
        ``busy_until``)."""
        now = self._worker.clock()
        return now, self._worker.store.health.take_rate_slot(
            sub_id, interval=interval, now=now, within=within(now), busy=now < busy_until
        )

    def _note_taken(self, sub_id: str, now: float, until: float) -> None:
        """Note that the subscription's slots are taken until ``until`` (``_taken_until``)."""
        taken = self._taken_until
        if sub_id not in taken and len(taken) >= _TAKEN_NOTES:
            for other in [other for other, other_until in taken.items() if other_until <= now]:
                del taken[other]
        taken[sub_id] = until

    async def _connect(self, line: _Line, deadline: float) -> bool:
        """The line's head waits for a connection (``Worker.take_connection``), the wait counted on the line."""
        line.waiting_since = time.monotonic()
        try:
            return await self._worker.take_connection(deadline)
        finally:
            line.connection_waits = line.connection_waited(time.monotonic())
            line.waiting_since = None

    async def _at_slot(self, at: float, forwarded: Callable[[], Awaitable[bool]]) -> float | Skip:
        """Wait for a slot taken, which opens at ``at``: 0.0 then, or ``Skip.FORWARDED`` if the subscription went on
        the slow lane during the wait (the slot is left unused)."""
        worker = self._worker
        if at > worker.clock():
            await asyncio.sleep(at - worker.clock())
            if await forwarded():
                return Skip.FORWARDED
        return 0.0

    async def slot(
        self,
        sub_id: str,
        rate: int,
        *,
        deadline: float,
        forwarded: Callable[[], Awaitable[bool]],
        local_wait: float | None = None,
        prepare: Callable[[], Awaitable[bool]] | None = None,
    ) -> float | Skip:
        """Take a slot of the subscription's rate for one attempt, and a connection for it: 0 when it may start
        now (the caller then holds one of the worker's connections, and gives it back), or the seconds to postpone
        it by, or why it is skipped (neither holds a connection): no connection came while the invocation had
        time for the attempt, or ``forwarded``, awaited once the connection is held and before each take of a
        slot (the subscription may have gone on the slow lane during a wait), forwarded the delivery, or
        ``prepare``, awaited once when the connection is first held (the attempt's body is made then: no work is
        left between the slot and the request, and bodies are made no faster than connections free up), said no.

        The deliveries of one subscription in this worker take slots one at a time (a line behind an asyncio
        lock), the head waiting here while its slot is near, up to ``local_wait`` seconds
        (``rate_limit_local_wait_seconds`` if None; the line's waits for connections not counted); once one has
        to be postponed, those behind it are spread over the following slots without asking DynamoDB, or for a
        connection."""
        worker = self._worker
        interval = 1.0 / rate
        line = self._lines.get(sub_id)
        if line is None:
            line = self._lines[sub_id] = _Line(asyncio.Lock())
        line.users += 1
        # The local wait is real time, whatever clock the worker runs on; the line's waits for connections (its
        # heads', this delivery's own) since it joined do not count.
        joined = time.monotonic()
        connection_waits = line.connection_waited(joined)
        latest = latest_start(worker, deadline)
        most = worker.settings.rate_limit_local_wait_seconds if local_wait is None else local_wait

        def within(now: float) -> float:
            """How far ahead of ``now`` a slot is within reach: the local wait left, and in time for the attempt."""
            waited = time.monotonic() - joined - (line.connection_waits - connection_waits)
            return min(most - waited, latest - now)

        connected = False
        try:
            async with line.lock:
                while True:
                    now = worker.clock()
                    wait = 0.0
                    if line.backlog_until <= now:
                        if not connected:
                            if not await self._connect(line, deadline):
                                return Skip.NO_CONNECTION
                            connected = True
                            if prepare is not None and not await prepare():
                                return Skip.NO_BODY
                            prepare = None  # once
                            continue  # time went by: the slot is asked for at the clock's time
                        # Right before each take: the subscription may have gone on the slow lane during a wait.
                        if await forwarded():
                            return Skip.FORWARDED
                        # The slot is asked for at the clock's time as the call is made (it may wait for one of the
                        # worker's threads): asked at an earlier moment, it would be dated back, and the next one
                        # would open less than an interval after this attempt starts. A slot ahead is reserved if
                        # it opens within reach.
                        busy_until = self._taken_until.get(sub_id, 0.0)
                        now, taken = await worker.io(self._take_slot, sub_id, interval, within, busy_until)
                        wait = taken.wait
                        self._note_taken(sub_id, now, now + wait + (interval if taken.taken else 0.0))
                        if taken.taken:
                            turn = await self._at_slot(now + wait, forwarded)
                            connected = turn != 0.0  # the caller's if it may start
                            return turn
                    # Postpone: behind the slot DynamoDB named and behind the deliveries postponed before.
                    slot = max(line.backlog_until, now + wait)
                    line.backlog_until = slot + interval
                    return slot - now + worker.rng.uniform(0, POSTPONE_JITTER_SECONDS)
        finally:
            if connected:
                worker.connections.release()
            line.users -= 1
            if line.users == 0:
                self._lines.pop(sub_id, None)
