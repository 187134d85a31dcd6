"""A batch's calls of one kind, gathered: each record's task hands over its item and awaits its own answer, and the
items of several records go out in one call.

Gathering waits for what is worth waiting for: a call is made as soon as a call's worth of items wait, or every
record of the batch still at work is waiting for a gathered call (of any kind: nothing else can come), or a window
after the first item came (records still sending must not hold the others back for long). A record goes on only once
its own item is answered, so that its message is deleted only once the item's call took it, as with a call of its own.

Two kinds are gathered (``Worker``): the first attempts' writes (``herald.worker.inserts``) and the copies of held
messages (``herald.worker.schedule.hold``). They share one ``Activity``: a record waiting on either is waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from herald.errors import ServiceUnavailableError

if TYPE_CHECKING:
    from herald.worker.runtime import Worker

#: How long the first item waiting is held for others to join it (seconds).
WINDOW_SECONDS = 0.02


@dataclass
class Activity:
    """The records of the batch at work (``Worker.process``), and how many of them wait for a gathered call
    unanswered (one item a record at most): when all of them wait, the gatherers call at once."""

    active: int = 0
    blocked: int = 0
    gatherers: list[Gatherer[Any, Any]] = field(default_factory=list)

    def started(self) -> None:
        """A record of the batch is being worked on."""
        self.active += 1

    def finished(self) -> None:
        """A record is done with: if every one left waits, nothing else can come."""
        self.active -= 1
        self.flush_if_all_blocked()

    def flush_if_all_blocked(self) -> None:
        if self.blocked >= self.active:
            for gatherer in self.gatherers:
                if gatherer.waiting:
                    gatherer.flush()


@dataclass
class _Waiting[T, R]:
    item: T
    answer: asyncio.Future[R]


class Gatherer[T, R]:
    """Items waiting for a call, and the calls taking them. Used on the worker's event loop only.

    ``call`` takes up to ``limit`` items (in a worker thread) and answers each, in order: its result, or an exception
    for that item alone; a call that raises fails each of its items with ``ServiceUnavailableError``. With ``key``,
    items of the same key go to different calls (a batch call that refuses naming one thing twice)."""

    def __init__(
        self,
        worker: Worker,
        call: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        limit: int,
        what: str,
        window: float = WINDOW_SECONDS,
        activity: Activity | None = None,
        key: Callable[[T], Hashable] | None = None,
    ) -> None:
        self.worker = worker
        self.call = call
        self.limit = limit
        self.what = what
        self.window = window
        self.activity = activity if activity is not None else Activity()
        self.activity.gatherers.append(self)
        self.key = key
        self.waiting: list[_Waiting[T, R]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._calling: set[asyncio.Task[None]] = set()

    def started(self) -> None:
        self.activity.started()

    def finished(self) -> None:
        self.activity.finished()

    async def add(self, item: T) -> R:
        """``item``'s answer once its call is made; raises what its call raised for it."""
        answer: asyncio.Future[R] = self.worker.loop.create_future()
        self.waiting.append(_Waiting(item, answer))
        self.activity.blocked += 1
        if len(self.waiting) >= self.limit:
            self.flush()
        else:
            self.activity.flush_if_all_blocked()
        if self.waiting and self._timer is None:
            self._timer = self.worker.loop.call_later(self.window, self.flush)
        return await answer

    def flush(self) -> None:
        """Start calling with what waits (calls of at most ``limit`` items, one item per key each)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.waiting:
            batch: list[_Waiting[T, R]] = []
            keys: set[Hashable] = set()
            later: list[_Waiting[T, R]] = []
            for waiting in self.waiting:
                key = self.key(waiting.item) if self.key is not None else None
                if len(batch) < self.limit and (key is None or key not in keys):
                    batch.append(waiting)
                    keys.add(key)
                else:
                    later.append(waiting)
            self.waiting = later
            task = self.worker.loop.create_task(self._call(batch))
            self._calling.add(task)  # held until done: the loop keeps only a weak reference
            task.add_done_callback(self._calling.discard)

    async def _call(self, batch: list[_Waiting[T, R]]) -> None:
        answers: Sequence[R | BaseException]
        try:
            answers = await self.worker.io(self.call, [waiting.item for waiting in batch])
        except Exception as exc:  # whatever failed, each record fails with an error of its own
            answers = [ServiceUnavailableError(f"the batch's {self.what} failed: {exc!r}") for _ in batch]
        self.activity.blocked -= len(batch)  # answered: their records carry on
        for waiting, answer in zip(batch, answers, strict=True):
            if waiting.answer.done():
                continue
            if isinstance(answer, BaseException):
                waiting.answer.set_exception(answer)
            else:
                waiting.answer.set_result(answer)
