"""When the worker writes a batch's new items (``herald.worker.inserts``): as soon as 25 wait, when every record
still at work waits for a write, or a window after the first came. The gathering alone, on an event loop, with
the table's call replaced by one that notes what it was given (the calls themselves: test_batched_inserts)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from herald.errors import ServiceUnavailableError
from herald.worker.inserts import Inserts


@dataclass
class _Worker:
    """What ``Inserts`` uses of a worker: its loop, ``io`` and the deliveries' ``insert``."""

    loop: asyncio.AbstractEventLoop
    calls: list[list[str]] = field(default_factory=list)
    answer: Callable[[list[dict[str, Any]]], list[Any]] = lambda items: [True] * len(items)
    store: Any = None

    def __post_init__(self) -> None:
        self.store = SimpleNamespace(deliveries=SimpleNamespace(insert=self._insert))

    def _insert(self, items: list[dict[str, Any]]) -> list[Any]:
        self.calls.append([item["pk"] for item in items])
        return self.answer(items)

    async def io(self, function: Callable[..., Any], *args: Any) -> Any:
        await asyncio.sleep(0)  # a call takes a turn of the loop at least
        return function(*args)


@pytest.fixture
def worker() -> Iterator[_Worker]:
    loop = asyncio.new_event_loop()
    yield _Worker(loop)
    loop.close()


def _item(name: str) -> dict[str, Any]:
    return {"pk": name, "sk": "#"}


def test_items_wait_for_the_records_still_at_work_then_go_in_one_call(worker: _Worker) -> None:
    # GIVEN three records at work, no time window
    inserts = Inserts(worker, window=3600)  # type: ignore[arg-type]
    for _ in range(3):
        inserts.started()

    async def run() -> list[bool]:
        first = asyncio.ensure_future(inserts.insert(_item("a")))
        second = asyncio.ensure_future(inserts.insert(_item("b")))
        await asyncio.sleep(0.01)
        # WHEN two wait and the third record is still at work
        assert worker.calls == []  # THEN nothing is written yet
        # WHEN the third is done without a write (a message held back, a poison one)
        inserts.finished()
        # THEN the two go together
        return list(await asyncio.wait_for(asyncio.gather(first, second), 30))

    assert worker.loop.run_until_complete(run()) == [True, True]
    assert worker.calls == [["a", "b"]]


def test_the_window_writes_what_waits_while_other_records_send(worker: _Worker) -> None:
    # GIVEN two records at work and a short window
    inserts = Inserts(worker, window=0.01)  # type: ignore[arg-type]
    inserts.started()
    inserts.started()

    async def run() -> bool:
        # WHEN one waits for its write while the other is still sending
        return await asyncio.wait_for(inserts.insert(_item("a")), 30)

    # THEN the window writes it
    assert worker.loop.run_until_complete(run()) is True
    assert worker.calls == [["a"]]


def test_25_waiting_go_at_once_and_one_key_goes_once_to_a_call(worker: _Worker) -> None:
    # GIVEN 40 records at work, no window, and among their items two of one key
    inserts = Inserts(worker, window=3600)  # type: ignore[arg-type]
    for _ in range(40):
        inserts.started()
    names = [f"k{n}" for n in range(25)] + ["k0"]

    async def run() -> list[bool]:
        waiting = [asyncio.ensure_future(inserts.insert(_item(name))) for name in names]
        # THEN the 25th started a call, answered; the 26th (the key already in it) waits
        answered = await asyncio.wait_for(asyncio.gather(*waiting[:25]), 30)
        assert worker.calls == [names[:25]]
        assert not waiting[25].done()
        # WHEN the records answered are done, and every other record but the one waiting
        for _ in range(40 - 1):
            inserts.finished()
        return [*answered, await asyncio.wait_for(waiting[25], 30)]

    assert worker.loop.run_until_complete(run()) == [True] * 26
    assert worker.calls == [names[:25], ["k0"]]


def test_a_failed_call_fails_each_record_with_its_own_error(worker: _Worker) -> None:
    # GIVEN the table's call failing, and two records waiting
    def broken(items: list[dict[str, Any]]) -> list[Any]:
        raise RuntimeError("the call broke")

    worker.answer = broken
    inserts = Inserts(worker, window=3600)  # type: ignore[arg-type]
    inserts.started()
    inserts.started()

    async def run() -> list[Any]:
        waiting = [asyncio.ensure_future(inserts.insert(_item(name))) for name in ("a", "b")]
        return list(await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 30))

    # THEN each record gets an error of its own, as a storage fault
    first, second = worker.loop.run_until_complete(run())
    assert isinstance(first, ServiceUnavailableError)
    assert isinstance(second, ServiceUnavailableError)
    assert first is not second
