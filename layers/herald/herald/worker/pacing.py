"""Per-subscription rate limits, as one worker paces the deliveries of a batch.

A subscription's rate limit is taken right before each attempt (``HealthRepository.take_rate_slot``,
shared by every invocation). A delivery over the rate reserves a slot ahead and waits for it in the worker if it
opens within a few seconds, the deliveries of one subscription in a batch in line behind one another (one
DynamoDB call per slot, not per waiting delivery, whatever the number of workers); past that it reserves its slot
however far ahead the subscription's backlog puts it (up to ``RESERVE_HORIZON_SECONDS``) and is postponed through
the queue until just before it: its lease is given back, and its message, which names the slot (``rate_slot``),
comes back to wait the last moments for it in the worker and go out at it, taking no slot again. So a backlog of N
deliveries is postponed about N times in all, each delivery once, not once per slot that opens before its turn
(where each postponement only came back behind the next few slots, a backlog went round the queue about N x N / 2
times). A copy back after its slot (a queue running behind) goes out at once: its slot went by unused, and taking
one anew would put it behind the backlog it is part of, again and again while the queue stays behind. With the
queue a steady time behind, the copies go out that much late, at the rate; a queue catching up sends what it held
back closer together. Only the copy ``_postpone`` makes names a slot: every other copy of a message (a retry, a
hand-over, a put-off) takes one anew; and a copy whose subscription's rate changed since takes one anew too
(``dispatch``), the slots then counted afresh (``SubscriptionRepository.replace``).
Neither counts as an attempt nor moves the retry schedule, and a message postponed many times is refreshed by
``schedule.hold`` like any long wait, never dead-lettered.

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
#: Random spread added to a rate-limit postponement without a slot of its own (seconds: a backlog beyond
#: ``RESERVE_HORIZON_SECONDS``), so postponed messages do not all return at once.
POSTPONE_JITTER_SECONDS = 1.0
#: How far ahead a postponed delivery reserves its slot: a backlog longer than a day at the subscription's rate is
#: postponed, without a slot, until about its end.
RESERVE_HORIZON_SECONDS = 86_400.0
#: A postponed delivery's copy comes back this long before the slot it reserved (at most the local wait), to wait
#: the rest in the worker: SQS delays to the whole second, and Lambda's poller takes a moment to hand it over.
RESERVED_EARLY_SECONDS = 2.0

#: How many subscriptions' taken slots a worker notes before it drops those whose time is over.
_TAKEN_NOTES = 1024

#: What ``Pacer.slot`` answers: 0.0 (start now), postponed, or skipped.
type Turn = float | Postponed | Skip


def latest_start(worker: Worker, deadline: float) -> float:
    """The latest an attempt may start in an invocation that ends at ``deadline``: its whole timeout and the margin
    to record it still ahead."""
    return deadline - worker.settings.delivery_timeout_seconds - START_MARGIN_SECONDS


@dataclass(frozen=True)
class Postponed:
    """A delivery over its subscription's rate, to come back at ``until`` (epoch seconds) for ``slot``: the slot it
    reserved, or None (the backlog is beyond ``RESERVE_HORIZON_SECONDS``: it takes one when it comes back)."""

    until: float
    slot: float | None


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
    #: Once one of the line has to be postponed, those behind it reserve their slots ahead at once, without a
    #: connection, unless a slot of theirs turns out to be within reach.
    backlogged: bool = False
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

    def _reserve_ahead(self, sub_id: str, interval: float) -> tuple[float, RateSlot]:
        """(when, the take) of a slot reserved however far ahead, up to ``RESERVE_HORIZON_SECONDS`` (the slot free
        now, if it is), made now in the calling thread."""
        now = self._worker.clock()
        return now, self._worker.store.health.take_rate_slot(
            sub_id, interval=interval, now=now, within=RESERVE_HORIZON_SECONDS, busy=True
        )

    async def _ready(self, line: _Line, deadline: float, prepare: Callable[[], Awaitable[bool]] | None) -> Skip | None:
        """The line's head takes its connection, then its body is made (``prepare``): None when both are done (the
        connection then held), else why not (no connection held)."""
        if not await self._connect(line, deadline):
            return Skip.NO_CONNECTION
        try:
            made = prepare is None or await prepare()
        except BaseException:
            self._worker.connections.release()
            raise
        if not made:
            self._worker.connections.release()
            return Skip.NO_BODY
        return None

    async def _own_turn(
        self,
        line: _Line,
        reserved: float,
        *,
        deadline: float,
        forwarded: Callable[[], Awaitable[bool]],
        prepare: Callable[[], Awaitable[bool]] | None,
        within: Callable[[float], float],
    ) -> Turn:
        """The turn of a delivery back for the slot it reserved when it was postponed: postponed again if it is back
        early (beyond the local wait), else the slot awaited with a connection (the caller's if it may start: 0.0),
        or at once if it is back after it. Outside its subscription's line: a slot of its own is nobody else's to
        wait for."""
        worker = self._worker
        now = worker.clock()
        if reserved - now > max(within(now), 0.0):
            return self._postponed(now, reserved)
        skipped = await self._ready(line, deadline, prepare)
        if skipped is not None:
            return skipped
        turn: Turn = Skip.FORWARDED
        try:
            if not await forwarded():
                turn = await self._at_slot(reserved, forwarded)
        finally:
            if turn != 0.0:
                worker.connections.release()
        return turn

    async def _own_slot(
        self, line: _Line, sub_id: str, interval: float, reserved: float | None, within: Callable[[float], float]
    ) -> float | Postponed | None:
        """The slot the delivery goes out at, when it has one of its own: the one it reserved ahead in this line; else,
        behind a backlog beyond reach (this line's, or the slots this worker last saw taken, which only move on), one
        reserved ahead now, however far (``_ahead``). None: it takes one as it starts (``_take``)."""
        now = self._worker.clock()
        if reserved is not None:
            return reserved
        if line.backlogged or self._taken_until.get(sub_id, 0.0) > now + within(now):
            return await self._ahead(line, sub_id, interval, within)
        return None

    async def _take(self, sub_id: str, interval: float, within: Callable[[float], float]) -> float | None:
        """The slot taken now, or reserved within reach (when it opens, epoch seconds), or None: beyond reach.

        The slot is asked for at the clock's time as the call is made (it may wait for one of the worker's threads):
        asked at an earlier moment, it would be dated back, and the next one would open less than an interval after
        this attempt starts."""
        busy_until = self._taken_until.get(sub_id, 0.0)
        now, taken = await self._worker.io(self._take_slot, sub_id, interval, within, busy_until)
        self._note_taken(sub_id, now, now + taken.wait + (interval if taken.taken else 0.0))
        return now + taken.wait if taken.taken else None

    async def _ahead(
        self, line: _Line, sub_id: str, interval: float, within: Callable[[float], float]
    ) -> float | Postponed:
        """A slot reserved however far ahead: when it opens (epoch seconds) if it is within reach after all, else
        the delivery postponed to come back for it (the line backlogged from then on); or, behind a backlog beyond
        ``RESERVE_HORIZON_SECONDS``, postponed without one until about its end."""
        worker = self._worker
        now, ahead = await worker.io(self._reserve_ahead, sub_id, interval)
        if not ahead.taken:
            return Postponed(now + ahead.wait + worker.rng.uniform(0, POSTPONE_JITTER_SECONDS), None)
        slot = now + ahead.wait
        self._note_taken(sub_id, now, slot + interval)
        if ahead.wait > max(within(now), 0.0):
            line.backlogged = True
            return self._postponed(now, slot)
        return slot

    def _postponed(self, now: float, slot: float) -> Postponed:
        """A delivery postponed for the slot it reserved: back ``RESERVED_EARLY_SECONDS`` before it (at most the
        local wait, which it waits in the worker), never before ``now``."""
        early = min(RESERVED_EARLY_SECONDS, self._worker.settings.rate_limit_local_wait_seconds)
        return Postponed(max(now, slot - early), slot)

    async def slot(
        self,
        sub_id: str,
        rate: int,
        *,
        deadline: float,
        forwarded: Callable[[], Awaitable[bool]],
        prepare: Callable[[], Awaitable[bool]] | None = None,
        reserved: float | None = None,
    ) -> Turn:
        """Take a slot of the subscription's rate for one attempt, and a connection for it: 0 when it may start
        now (the caller then holds one of the worker's connections, and gives it back), or ``Postponed``, or why it
        is skipped (neither holds a connection): no connection came while the invocation had time for the attempt,
        or ``forwarded``, awaited once the connection is held and before each take of a slot (the subscription may
        have gone on the slow lane during a wait), forwarded the delivery, or ``prepare``, awaited once when the
        connection is first held (the attempt's body is made then: no work is left between the slot and the
        request, and bodies are made no faster than connections free up), said no. ``reserved``: the slot the
        delivery reserved when it was postponed (its message's ``rate_slot``), which it takes no other for.

        The deliveries of one subscription in this worker take slots one at a time (a line behind an asyncio
        lock), the head waiting here while its slot is near, up to the local wait (the line's waits for
        connections not counted); once one has to be postponed, those behind it reserve theirs ahead at once,
        without a connection (one DynamoDB write each)."""
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

        def within(now: float) -> float:
            """How far ahead of ``now`` a slot is within reach: the local wait left, and in time for the attempt."""
            waited = time.monotonic() - joined - (line.connection_waits - connection_waits)
            return min(worker.settings.rate_limit_local_wait_seconds - waited, latest - now)

        connected = False
        try:
            if reserved is not None:  # a slot of its own, reserved when it was postponed: no line, no take
                return await self._own_turn(
                    line, reserved, deadline=deadline, forwarded=forwarded, prepare=prepare, within=within
                )
            async with line.lock:
                while True:
                    own = await self._own_slot(line, sub_id, interval, reserved, within)
                    if isinstance(own, Postponed):
                        return own
                    reserved = own
                    if not connected:
                        skipped = await self._ready(line, deadline, prepare)
                        if skipped is not None:
                            return skipped
                        connected, prepare = True, None  # made once
                        continue  # time went by: the slot is asked for at the clock's time
                    # Right before each take: the subscription may have gone on the slow lane during a wait.
                    if await forwarded():
                        return Skip.FORWARDED
                    if reserved is None:
                        reserved = await self._take(sub_id, interval, within)
                        if reserved is None:
                            line.backlogged = True  # beyond reach: it reserves its slot ahead, as those behind it do
                            continue
                    turn = await self._at_slot(reserved, forwarded)
                    connected = turn != 0.0  # the caller's if it may start
                    return turn
        finally:
            if connected:
                worker.connections.release()
            line.users -= 1
            if line.users == 0:
                self._lines.pop(sub_id, None)
