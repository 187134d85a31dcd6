"""The batch's new items, written together: one DynamoDB call for up to 25 first attempts.

A first receive of a new delivery writes nothing before its attempt (SQS's visibility is its lease) and then
its record: the delivery with its attempt inside it, each only if no other copy of the message wrote it first
(``DeliveryRepository.new_items``). Those writes of a batch's deliveries are gathered here and made as PartiQL
INSERTs, ``MAX_BATCH_STATEMENTS`` to a call (``Table.insert_all``): an INSERT is refused when its key is
taken, the condition a plain PutItem would carry and BatchWriteItem cannot.

Gathering waits for what is worth waiting for: a call is made as soon as 25 items wait, or every record of the
batch still at work is waiting here for a write (nothing else can come), or ``WINDOW_SECONDS`` after the first
item came (records still sending must not hold the others back for long). The record's own task awaits its answer, so a
message is deleted only once its delivery is written, as before. Each key goes once to a call (DynamoDB refuses a
batch naming an item twice): a second item of the same key, which only two copies of one message in one batch
could make, goes in a call of its own, and one of the two is refused as a duplicate.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from herald.errors import ServiceUnavailableError
from herald.storage.table import MAX_BATCH_STATEMENTS

if TYPE_CHECKING:
    from herald.records import Attempt, Delivery
    from herald.worker.runtime import Worker

#: How long the first item waiting is held for others to join it (seconds).
WINDOW_SECONDS = 0.02


@dataclass
class _Waiting:
    item: dict[str, Any]
    answer: asyncio.Future[bool]


@dataclass
class Inserts:
    """The items waiting to be written, and the calls writing them. Used on the worker's event loop only."""

    worker: Worker
    window: float = WINDOW_SECONDS
    waiting: list[_Waiting] = field(default_factory=list)
    #: Records of the batch being worked on (``Worker.process``), and how many items wait for a write here
    #: (``waiting``, or in a call) unanswered, one a record at most: when all the records wait, write now.
    active: int = 0
    blocked: int = 0
    _timer: asyncio.TimerHandle | None = None
    _writing: set[asyncio.Task[None]] = field(default_factory=set)

    def started(self) -> None:
        """A record of the batch is being worked on."""
        self.active += 1

    def finished(self) -> None:
        """A record is done with: if every one left waits here, nothing else can come."""
        self.active -= 1
        self._flush_if_all_blocked()

    def _flush_if_all_blocked(self) -> None:
        if self.waiting and self.blocked >= self.active:
            self.flush()

    async def insert(self, item: dict[str, Any]) -> bool:
        """Write ``item`` if its key is free: True if written, False if taken; raises ``ServiceUnavailableError``
        if DynamoDB kept it out."""
        answer: asyncio.Future[bool] = self.worker.loop.create_future()
        self.waiting.append(_Waiting(item, answer))
        self.blocked += 1
        if len(self.waiting) >= MAX_BATCH_STATEMENTS:
            self.flush()
        else:
            self._flush_if_all_blocked()
        if self.waiting and self._timer is None:
            self._timer = self.worker.loop.call_later(self.window, self.flush)
        return await answer

    def flush(self) -> None:
        """Start writing what waits (in calls of at most ``MAX_BATCH_STATEMENTS``, one item per key each)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.waiting:
            call: list[_Waiting] = []
            keys: set[tuple[str, str]] = set()
            later: list[_Waiting] = []
            for waiting in self.waiting:
                key = (waiting.item["pk"], waiting.item["sk"])
                if len(call) < MAX_BATCH_STATEMENTS and key not in keys:
                    call.append(waiting)
                    keys.add(key)
                else:
                    later.append(waiting)
            self.waiting = later
            task = self.worker.loop.create_task(self._write(call))
            self._writing.add(task)  # held until done: the loop keeps only a weak reference
            task.add_done_callback(self._writing.discard)

    async def _write(self, call: list[_Waiting]) -> None:
        try:
            answers = await self.worker.io(self.worker.store.deliveries.insert, [waiting.item for waiting in call])
        except Exception as exc:  # whatever failed, each record fails with an error of its own
            answers = [ServiceUnavailableError(f"the batch's insert failed: {exc!r}") for _ in call]
        self.blocked -= len(call)  # answered: their records carry on
        for waiting, answer in zip(call, answers, strict=True):
            if waiting.answer.done():
                continue
            if isinstance(answer, BaseException):
                waiting.answer.set_exception(answer)
            else:
                waiting.answer.set_result(answer)


async def record_new(
    worker: Worker,
    delivery: Delivery,
    attempt: Attempt | None,
    *,
    scheduled_attempts: int,
    expires_at: int,
    carried: dict[str, Any] | None,
) -> bool:
    """``DeliveryRepository.record`` of a first receive, its writes made with the batch's others: the attempt's
    (when kept apart from its delivery) before the delivery's. False if another copy of the message wrote
    first; raises ``ServiceUnavailableError`` if a write failed."""
    items = worker.store.deliveries.new_items(
        delivery, attempt, scheduled_attempts=scheduled_attempts, expires_at=expires_at, carried=carried
    )
    for item in items:
        if not await worker.inserts.insert(item):
            return False
    return True
