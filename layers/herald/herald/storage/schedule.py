"""Work scheduled for later than SQS can delay a message (15 minutes): the retries and postponements that
must not wait in the work queue's in-flight set.

A scheduled message is an item under the hour it is due in and one of ``SHARDS`` shards (by its name), sorted
by its due time, so scheduling spreads over partitions and the sweeper (``herald.worker.sweeper``) reads what
falls due with one Query per shard and hour, however long it was since its last run, taking from the shards in turn
so that its deletes spread over them too. Items carry the message
body; the sweeper sends each one to the queue shortly before it is due (SQS delays it the rest of the way)
and deletes it. The sweeper's cursor says until when everything due has been sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from herald.storage import keys
from herald.storage.table import from_item, refused_item, to_item, values

if TYPE_CHECKING:
    from collections.abc import Iterator

    from herald.storage.table import Table

#: Partitions per hour of scheduled work: spreads a burst of retries (a subscriber down for many
#: deliveries schedules them all within moments) over several partitions.
SHARDS = 8
#: Scheduled items outlive their due time by this much, should the sweeper be stopped (they are deleted once sent):
#: as long as an event can be kept (``HERALD_EVENT_TTL_DAYS`` is at most 365) and a day. A schedule stopped for weeks
#: then still sends what fell due meanwhile, or fails it as ``event_expired``; an item gone before its event would
#: leave its delivery pending for good.
KEEP_SECONDS = 366 * 86_400


@dataclass(frozen=True)
class Scheduled:
    """A scheduled work message: its body, when it is due (epoch seconds) and its item's key."""

    body: str
    due: float
    key: dict[str, str]
    #: How often the work was redriven from the dead-letter queue (its message's ``herald_redrives``).
    redrives: int = 0


def scheduled_name(event_id: str, subscription_id: str, job_id: str | None) -> str:
    """The name a delivery's work is scheduled under (``ScheduleRepository.put``): one item per work and moment."""
    return f"{event_id}|{subscription_id}|{job_id or ''}"


def _shard(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:2], "big") % SHARDS


class ScheduleRepository:
    def __init__(self, table: Table) -> None:
        self._table = table
        self._cursor_started = False

    def put(self, body: str, *, name: str, due: float, now: float, redrives: int = 0) -> None:
        """Schedule ``body`` to be queued at ``due``, with the count of redrives of its work (``herald.dlq``), if any.
        ``name`` identifies the work (a delivery id): the same work scheduled twice for the same moment is one item,
        which keeps the larger count of its copies (a copy that was not redriven does not lower it, so the dead-letter
        queue's limit on redrives holds). This repository's first put starts the sweeps' cursor if there is none yet
        (``start_cursor``)."""
        if not self._cursor_started:
            self.start_cursor(now)
        due_ms = int(due * 1000)
        key = keys.due(due_ms // 3_600_000, _shard(name), due_ms, name)
        item = {**key, "body": body, "due": due, "scheduled_at": now, "expires_at": int(due) + KEEP_SECONDS}
        if redrives > 0:
            item["redrives"] = redrives
        # Refused only where the item holds more redrives (this write's own item, sent again by botocore, passes).
        with contextlib.suppress(ClientError):  # the condition (other failures: ServiceUnavailableError)
            self._table.call(
                "put_item",
                Item=to_item(item),
                ConditionExpression="attribute_not_exists(redrives) OR redrives <= :redrives",
                ExpressionAttributeValues=values(redrives=redrives),
            )

    def holds(self, name: str, due: float) -> bool:
        """Whether the work ``name`` is scheduled for ``due`` (as ``put`` keyed it), not yet swept onto the queue."""
        due_ms = int(due * 1000)
        return self._table.read(keys.due(due_ms // 3_600_000, _shard(name), due_ms, name)) is not None

    def falling_due(self, since: float, until: float) -> Iterator[Scheduled]:
        """Every scheduled message due in [since, until), hour by hour and shard by shard."""
        for partition in self.falling_due_by_partition(since, until):
            yield from partition

    def falling_due_by_partition(self, since: float, until: float) -> list[Iterator[Scheduled]]:
        """What falls due in [since, until), one iterator for each partition it is read from (each hour's shards, in
        order). Each makes its Queries only as it is read, so a reader can take from several partitions in turn and
        read no further than it goes: the sweeper, whose deletes at once must fall on different partitions (each takes
        at most 1,000 writes a second)."""
        low, high = int(since * 1000), int(until * 1000)
        if high <= low:
            return []  # an empty window (DynamoDB refuses a BETWEEN whose ends are reversed)
        return [
            self._page_all(keys.due_partition(hour, shard), low, high)
            for hour in range(low // 3_600_000, (high - 1) // 3_600_000 + 1)
            for shard in range(SHARDS)
        ]

    def _page_all(self, partition: str, low: int, high: int) -> Iterator[Scheduled]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :p AND sk BETWEEN :low AND :high",
            "ExpressionAttributeValues": values(p=partition, low=f"{low:013d}", high=f"{high - 1:013d}~"),
        }
        while True:
            response = self._table.call("query", **kwargs)
            for raw in response.get("Items", []):
                item = from_item(raw)
                key = {"pk": item["pk"], "sk": item["sk"]}
                yield Scheduled(str(item["body"]), float(item["due"]), key, int(item.get("redrives", 0)))
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    def remove(self, sent: list[Scheduled]) -> None:
        """Delete scheduled items once their messages are on the queue."""
        self._table.batch_write([{"DeleteRequest": {"Key": to_item(item.key)}} for item in sent])

    def cursor(self) -> float | None:
        """Until when (epoch seconds) the scheduled work has been queued; None before the first sweep."""
        item = self._table.read(keys.sweep_cursor())
        return float(item["until"]) if item else None

    def start_cursor(self, at: float) -> None:
        """Set the cursor at ``at`` if there is none (no sweep has succeeded yet, or it was lost with the table):
        work scheduled from then on is read from where it was scheduled, however long the sweeps keep failing,
        instead of from an hour before the first sweep that succeeds, which would leave earlier work behind until it
        expires. ``at`` is before anything scheduled after it falls due (scheduled work waits over 15 minutes). One
        conditional write per repository (a container's), then never again."""
        with contextlib.suppress(ClientError):  # a cursor exists (other failures: ServiceUnavailableError)
            self._table.call(
                "put_item",
                Item=to_item({**keys.sweep_cursor(), "until": at}),
                ConditionExpression="attribute_not_exists(pk)",
            )
        self._cursor_started = True

    def advance(self, previous: float | None, until: float) -> bool:
        """Move the cursor from ``previous`` to ``until``; False if another sweep moved it meanwhile. The move
        leaves a token of its own (``moved_by``): a move refused by it is this one, sent again by botocore after
        its answer was lost (another sweep's move to the same place is another's: two overlapping sweeps must
        not both carry on through the same hours)."""
        token = uuid.uuid4().hex[:12]
        condition = "attribute_not_exists(pk)" if previous is None else "#until = :previous"
        placeholders = values(until=until, token=token) | ({} if previous is None else values(previous=previous))
        try:
            self._table.call(
                "update_item",
                Key=to_item(keys.sweep_cursor()),
                UpdateExpression="SET #until = :until, moved_by = :token",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#until": "until"},
                ExpressionAttributeValues=placeholders,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            return bool(refused_item(exc).get("moved_by") == token)
        return True
