"""The batch's new items, written together: one DynamoDB call for up to 25 first attempts.

A first receive of a new delivery writes nothing before its attempt (SQS's visibility is its lease) and then
its record: the delivery with its attempt inside it, each only if no other copy of the message wrote it first
(``DeliveryRepository.new_items``). Those writes of a batch's deliveries are gathered (``herald.worker.gathering``:
as soon as 25 wait, when every record still at work waits for a gathered call, or ``WINDOW_SECONDS`` after the
first came) and made as PartiQL INSERTs, ``MAX_BATCH_STATEMENTS`` to a call (``Table.insert_all``): an INSERT is
refused when its key is taken, the condition a plain PutItem would carry and BatchWriteItem cannot. The record's
own task awaits its answer, so a message is deleted only once its delivery is written. Each key goes once to a call
(DynamoDB refuses a batch naming an item twice): a second item of the same key, which only two copies of one message
in one batch could make, goes in a call of its own, and one of the two is refused as a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from herald.storage.table import MAX_BATCH_STATEMENTS
from herald.worker.gathering import WINDOW_SECONDS, Activity, Gatherer

if TYPE_CHECKING:
    from herald.records import Attempt, Delivery
    from herald.worker.runtime import Worker


class Inserts(Gatherer[dict[str, Any], bool]):
    """The items waiting to be written, and the calls writing them. Used on the worker's event loop only."""

    def __init__(self, worker: Worker, *, window: float = WINDOW_SECONDS, activity: Activity | None = None) -> None:
        super().__init__(
            worker,
            self._write,
            limit=MAX_BATCH_STATEMENTS,
            what="insert",
            window=window,
            activity=activity,
            key=lambda item: (item["pk"], item["sk"]),
        )

    def _write(self, items: list[dict[str, Any]]) -> Sequence[bool | BaseException]:
        return self.worker.store.deliveries.insert(items)

    async def insert(self, item: dict[str, Any]) -> bool:
        """Write ``item`` if its key is free: True if written, False if taken; raises ``ServiceUnavailableError``
        if DynamoDB kept it out."""
        return await self.add(item)


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
