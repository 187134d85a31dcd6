"""Deliveries (one per event and subscription) and their attempt log.

A delivery carries, beside its record, what only the worker needs: its lease (``lease_token``,
``lease_until``: one worker makes an attempt at a time) and ``scheduled_attempts``, its place in the
retry schedule (manual attempts do not move it). Its index entries list it under its subscription
(gsi1) and, while pending or failed, under its subscription and status (gsi2). Attempts are items of
their own under the delivery, one per attempt number, but for the common case: a first attempt that
settles a new delivery (it succeeded, or failed for good) is kept inside the delivery's item
(``first_attempt``), so that such a delivery is one write. Every later write of the delivery carries it
over, and the attempt log reads it first.

When that first attempt succeeded, the item says so to the table's stream too (``stats_from_stream``): the
subscription's stats count it from there (``herald.worker.streamed``, a window of them at a time), not
with a write of the worker's. It is the one write that puts a delivery item both new and marked, which is
what the stream's filter in template.yaml selects.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from herald.records import Attempt, Delivery, DeliveryStatus
from herald.storage import keys
from herald.storage.jobs import lock_check, use_ticket
from herald.storage.table import (
    NOT_EXPIRED,
    PageResult,
    decode_cursor,
    encode_cursor,
    from_item,
    record,
    strip,
    to_item,
    values,
)

if TYPE_CHECKING:
    from herald.storage.table import Table


#: The attribute of a delivery item that holds its first attempt, when that attempt settled a new delivery.
FIRST_ATTEMPT = "first_attempt"
#: The attribute that marks a new delivery whose first attempt the stats count from the table's stream.
STATS_FROM_STREAM = "stats_from_stream"
#: An attempt's fields that its delivery holds already: left out of an attempt kept inside the delivery.
_OF_THE_DELIVERY = ("delivery_id", "event_id", "subscription_id", "tenant_id")


@dataclass(frozen=True)
class DeliveryState:
    """A delivery as the worker sees it: the record, how many of its attempts were scheduled ones (the
    position in the retry schedule; manual attempts do not move it), until when a worker holds its lease
    (epoch seconds, 0 when free), and what each rewrite of its item must carry over (``carried``: the first
    attempt kept inside it)."""

    delivery: Delivery
    scheduled_attempts: int
    lease_until: float
    carried: dict[str, Any] = field(default_factory=dict)


def state_of(item: dict[str, Any]) -> DeliveryState:
    """A delivery item, as read, with its place in the retry schedule and its lease."""
    delivery = Delivery.model_validate(strip(dict(item)))
    return DeliveryState(
        delivery,
        scheduled_attempts=int(item.get("scheduled_attempts", delivery.attempts)),
        lease_until=float(item.get("lease_until", 0)),
        carried={FIRST_ATTEMPT: item[FIRST_ATTEMPT]} if FIRST_ATTEMPT in item else {},
    )


def _kept_attempt(attempt: Attempt) -> dict[str, Any]:
    """The attempt as kept inside its delivery's item: without the fields the delivery holds, nor empty ones
    (every byte of the item is written twice: the item and its listing index entry)."""
    fields = record(attempt)
    return {key: value for key, value in fields.items() if key not in _OF_THE_DELIVERY and value is not None}


def kept_inside(delivery: Delivery, attempt: Attempt | None, *, token: str | None, job_id: str | None) -> bool:
    """Whether ``record`` keeps ``attempt`` inside its delivery's item, the delivery written once: a first receive
    (no lease ``token`` written) whose first attempt settled a new delivery (it succeeded, or failed for good)."""
    return (
        token is None
        and job_id is None
        and attempt is not None
        and attempt.attempt_number == 1
        and delivery.status is not DeliveryStatus.PENDING
    )


def stats_from_stream(delivery: Delivery, attempt: Attempt | None, *, token: str | None, job_id: str | None) -> bool:
    """Whether the subscription's stats count ``attempt`` from the table's stream rather than from the worker:
    a first attempt that succeeded, kept inside its new delivery (``record`` marks the item)."""
    return kept_inside(delivery, attempt, token=token, job_id=job_id) and attempt is not None and attempt.succeeded


def _first_attempt_of(item: dict[str, Any]) -> Attempt | None:
    kept = item.get(FIRST_ATTEMPT)
    if not kept:
        return None
    return Attempt.model_validate(
        {
            **kept,
            "delivery_id": item["id"],
            "event_id": item["event_id"],
            "subscription_id": item["subscription_id"],
            "tenant_id": item["tenant_id"],
        }
    )


def _index(delivery: Delivery) -> dict[str, str]:
    """The delivery's index entries. The status index (gsi2) lists what needs attention (pending and
    failed deliveries): a delivery that succeeded leaves it, so the common case, a first attempt that
    succeeds, writes one index entry, not two; succeeded deliveries are listed from gsi1."""
    status = None if delivery.status is DeliveryStatus.SUCCEEDED else delivery.status.value
    return keys.delivery_index(delivery.subscription_id, delivery.created_at.isoformat(), delivery.id, status)


def _item(delivery: Delivery, *, scheduled_attempts: int, expires_at: int, listed: bool = True) -> dict[str, Any]:
    return {
        **keys.delivery(delivery.id),
        **(_index(delivery) if listed else {}),
        **record(delivery),
        "scheduled_attempts": scheduled_attempts,
        "expires_at": expires_at,
    }


class DeliveryRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def get(self, delivery_id: str) -> Delivery | None:
        item = self._table.read(keys.delivery(delivery_id))
        return Delivery.model_validate(strip(item)) if item else None

    def get_state(self, delivery_id: str) -> DeliveryState | None:
        """The delivery with what only the worker needs: its place in the retry schedule and its lease."""
        item = self._table.read(keys.delivery(delivery_id))
        return None if item is None else state_of(item)

    def claim(
        self,
        delivery: Delivery,
        *,
        previous: Delivery | None,
        scheduled_attempts: int,
        token: str,
        until: float,
        now: float,
        expires_at: int,
        job_id: str | None = None,
        carried: dict[str, Any] | None = None,
    ) -> bool:
        """Take the lease on ``delivery`` for one attempt, until ``until`` (epoch seconds; ``now`` is the
        worker's clock). False if another worker holds it, or the delivery moved on since ``previous``
        was read (a duplicate message), or, with ``job_id``, that recovery job no longer holds the
        delivery's recovery lock (its one extra attempt was made already).

        A new delivery is stored without its index entries: ``record`` (or ``release``) adds them, so a
        delivery settled at its first attempt writes each index once instead of three times (put at the
        claim, rewritten and moved to its new status at the record). Until then it is found by its id, not
        yet in the subscription's listings: while its first attempt is in flight, or, should the worker
        die during it, until its message comes back and the delivery is carried on."""
        item = {
            **_item(
                delivery, scheduled_attempts=scheduled_attempts, expires_at=expires_at, listed=previous is not None
            ),
            "lease_token": token,
            "lease_until": until,
            **(carried or {}),
        }
        put: dict[str, Any] = {"Item": to_item(item)}
        if previous is None:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            # The status too: a duplicate message that read the delivery before it was settled or cancelled
            # (which leaves ``attempts`` as it was) must not reopen it.
            put["ConditionExpression"] = (
                "attempts = :attempts AND #status = :status"
                " AND (attribute_not_exists(lease_until) OR lease_until < :now)"
            )
            put["ExpressionAttributeValues"] = values(attempts=previous.attempts, status=previous.status.value, now=now)
            put["ExpressionAttributeNames"] = {"#status": "status"}
        try:
            if job_id is None:
                self._table.call("put_item", **put)
            else:
                self._table.transact([{"Put": put}, lock_check(delivery.id, job_id, now=self._table.now())])
        except ClientError:
            return False
        return True

    def release(self, delivery: Delivery, token: str) -> None:
        """Give a lease back without an attempt (``delivery`` as claimed). The delivery gets its index
        entries if its claim left them out: it waits, listed as what it is, for its next look."""
        entries = _index(delivery)
        listed = ", ".join(f"{key} = :{key}" for key in entries)
        with contextlib.suppress(ClientError):  # not ours any more: nothing to give back
            self._table.call(
                "update_item",
                Key=to_item(keys.delivery(delivery.id)),
                UpdateExpression=f"SET {listed} REMOVE lease_token, lease_until",
                ConditionExpression="lease_token = :token",
                ExpressionAttributeValues=values(token=token, **entries),
            )

    def list_new(self, delivery: Delivery, *, scheduled_attempts: int, expires_at: int) -> None:
        """Store a new delivery that waits without an attempt (its first receive made none: the slow lane, an
        open breaker or a rate limit holds it back), listed as pending, unless it exists already."""
        with contextlib.suppress(ClientError):  # written meanwhile by another copy of its message: that one counts
            self._table.call(
                "put_item",
                Item=to_item(_item(delivery, scheduled_attempts=scheduled_attempts, expires_at=expires_at)),
                ConditionExpression="attribute_not_exists(pk)",
            )

    def record(
        self,
        delivery: Delivery,
        attempt: Attempt | None,
        *,
        token: str | None,
        scheduled_attempts: int,
        expires_at: int,
        job_id: str | None = None,
        carried: dict[str, Any] | None = None,
    ) -> bool:
        """Store an attempt (if one was made), then the delivery's new state with its index entries,
        releasing the lease. False if the lease was lost meanwhile. Without a ``token`` (a first receive,
        leased by SQS's visibility: nothing was written before the attempt) both writes are made only if
        nothing is there yet; False if another copy of the message wrote them first.

        Two plain writes, not a transaction (which bills every item twice): the attempt first, under its
        number, then the delivery on the condition that the lease is still this one. If the second write
        does not happen (a crash, a lost lease), the delivery still shows the attempt as not made, so the
        next claim makes attempt ``n`` again and its record replaces this one: the log keeps one record per
        number, and a delivery never counts an attempt that has no record. With ``job_id`` both go in
        one transaction with the job's ticket for the delivery (its one extra attempt, used up exactly
        once) and the release of the delivery's recovery lock.

        The event's counters are not touched here: the worker adds up a batch's changes per event and
        writes them once (``EventRepository.count``) when the batch is done."""
        item = {**_item(delivery, scheduled_attempts=scheduled_attempts, expires_at=expires_at), **(carried or {})}
        if attempt is not None and kept_inside(delivery, attempt, token=token, job_id=job_id):
            # A new delivery settled by its first attempt: one write, the attempt inside the delivery.
            item[FIRST_ATTEMPT] = _kept_attempt(attempt)
            if attempt.succeeded:
                item[STATS_FROM_STREAM] = True
            attempt = None
        delivery_put: dict[str, Any] = {"Item": to_item(item)}
        fresh = {"ConditionExpression": "attribute_not_exists(pk)"}
        if token is None:
            delivery_put |= fresh
        else:
            delivery_put |= {
                "ConditionExpression": "lease_token = :token",
                "ExpressionAttributeValues": values(token=token),
            }
        attempt_put: dict[str, Any] | None = None
        if attempt is not None:
            attempt_item = {**keys.attempt(delivery.id, attempt.attempt_number), **record(attempt)}
            attempt_put = {"Item": to_item({**attempt_item, "expires_at": expires_at})} | (
                fresh if token is None else {}
            )
        try:
            if job_id is None:
                if attempt_put is not None:
                    self._table.call("put_item", **attempt_put)
                self._table.call("put_item", **delivery_put)
                return True
            actions: list[dict[str, Any]] = [{"Put": delivery_put}]
            if attempt_put is not None:
                actions.append({"Put": attempt_put})
            succeeded = attempt is not None and attempt.succeeded
            actions += use_ticket(delivery.id, job_id, "sent" if succeeded else "failed")
            self._table.transact(actions)
        except ClientError:
            return False
        return True

    def list(
        self,
        sub_id: str,
        *,
        status: DeliveryStatus | None,
        limit: int,
        cursor: str | None,
        event_type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> PageResult[Delivery]:
        """A subscription's deliveries, newest first, all or those in ``status`` (and of ``event_type``, and
        created in [``since``, ``until``]: the index sorts by creation time, so the window is a key condition)."""
        where: dict[str, str] | None = None
        if status is None:
            key, index = {"gsi1pk": keys.deliveries_partition(sub_id)}, "gsi1"
        elif status is DeliveryStatus.SUCCEEDED:
            # Succeeded deliveries have no status-index entry (see ``_index``): read the subscription's
            # deliveries and keep those. Pages stay full (``Table.query`` reads on).
            key, index, where = {"gsi1pk": keys.deliveries_partition(sub_id)}, "gsi1", {"status": status.value}
        else:
            key, index = {"gsi2pk": keys.delivery_status_partition(sub_id, status.value)}, "gsi2"
        if event_type is not None:
            where = {**(where or {}), "event_type": event_type}
        window = None
        if since is not None or until is not None:
            # Sort keys are "<created_at ISO 8601 in UTC>#<delivery id>": "~" sorts after every such suffix.
            low = since.astimezone(UTC).isoformat() if since is not None else "0"
            high = until.astimezone(UTC).isoformat() + "~" if until is not None else "9"
            window = (low, high)
        items, next_cursor = self._table.query(
            key=key, index=index, limit=limit, cursor=cursor, newest_first=True, where=where, between=window
        )
        return PageResult([Delivery.model_validate(strip(item)) for item in items], next_cursor)

    def list_attempts(self, delivery_id: str, *, limit: int, cursor: str | None) -> PageResult[Attempt]:
        """A delivery's attempts, oldest first: the first one from inside the delivery's item when it is kept
        there, then the attempt items."""
        kept: list[Attempt] = []
        if cursor is None:
            item = self._table.read(keys.delivery(delivery_id))
            first = _first_attempt_of(item) if item is not None else None
            kept = [first] if first is not None else []
            if kept and limit == 1:
                return PageResult(kept, encode_cursor(to_item(keys.attempt(delivery_id, 1))))
        items, next_cursor = self._table.query(
            key={"pk": keys.delivery_partition(delivery_id)},
            prefix=keys.ATTEMPT_PREFIX,
            limit=limit - len(kept),
            cursor=cursor,
        )
        numbers = {attempt.attempt_number for attempt in kept}
        later = [Attempt.model_validate(strip(item)) for item in items]
        return PageResult(kept + [a for a in later if a.attempt_number not in numbers], next_cursor)

    def between(
        self,
        sub_id: str,
        status: DeliveryStatus,
        *,
        since: datetime,
        until: datetime,
        limit: int,
        cursor: str | None,
    ) -> PageResult[Delivery]:
        """One page of a subscription's deliveries in ``status`` created in [since, until) (UTC times),
        oldest first. The index's sort key starts with the creation time in ISO 8601, so the window is a
        key condition; a page may hold fewer than ``limit`` (expired items are filtered out)."""
        partition = keys.delivery_status_partition(sub_id, status.value)
        kwargs: dict[str, Any] = {
            "IndexName": "gsi2",
            "KeyConditionExpression": "gsi2pk = :p AND gsi2sk BETWEEN :low AND :high",
            "FilterExpression": NOT_EXPIRED,
            "ExpressionAttributeValues": values(
                p=partition, low=since.isoformat(), high=until.isoformat(), now=self._table.now()
            ),
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = decode_cursor(cursor, "gsi2pk", partition, "gsi2sk", None)
        response = self._table.call("query", **kwargs)
        items = [from_item(item) for item in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return PageResult([Delivery.model_validate(strip(item)) for item in items], encode_cursor(last))
