"""Deliveries (one per event and subscription) and their attempt log.

A delivery is stored under its subscription: the partition ``DELIVERIES#<sub>``, its id as the sort key. The
id starts with its event's creation time (``ids.delivery_id``), so the partition lists the subscription's
deliveries in that order and no index entry is written for it: a delivery settled at its first attempt is one
write of one item. While pending or failed, an index entry lists it under its subscription and status
(gsi2). A delivery of an event stored before deliveries were kept this way (its id the pair's digest, with
no time in it) stays where it was written: in a partition of its own, listed by gsi1; every read and write
here finds either kind (``delivery_key``), and the listings read the older ones after the newer, until they
expire.

A delivery carries, beside its record, what only the worker needs: its lease (``lease_token``,
``lease_until``: one worker makes an attempt at a time) and ``scheduled_attempts``, its place in the
retry schedule (manual attempts do not move it). Attempts are items of their own under the delivery's id,
one per attempt number, but for the common case: a first attempt that
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
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from botocore.exceptions import ClientError

from herald import ids
from herald.errors import InvalidCursorError, ServiceUnavailableError
from herald.records import Attempt, Delivery, DeliveryStatus, ErrorKind
from herald.storage import keys
from herald.storage.jobs import lock_check, use_ticket
from herald.storage.table import (
    NOT_EXPIRED,
    PageResult,
    cancellation_codes,
    cursor_fields,
    decode_cursor,
    encode_cursor,
    from_item,
    record,
    strip,
    to_item,
    values,
    within_bytes,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from herald.storage.table import Table


logger = logging.getLogger(__name__)

#: The attribute of a delivery item that holds its first attempt, when that attempt settled a new delivery.
FIRST_ATTEMPT = "first_attempt"
#: When the delivery's first attempt started (epoch seconds), kept on the item of one that failed it, while it is
#: retried: the retry schedule's span is measured from it (``herald.worker.schedule.next_step``).
FIRST_ATTEMPT_AT = "first_attempt_at"
#: When the delivery's attempts kept as items of their own expire (epoch seconds), on the item of one that has any:
#: they and the delivery expire together, however late its last attempt (``DeliveryRepository.keep_attempts``).
LOG_EXPIRES_AT = "log_expires_at"
#: The attribute that marks a new delivery whose first attempt the stats count from the table's stream.
STATS_FROM_STREAM = "stats_from_stream"
#: When a worker last gave the delivery back without an attempt, a copy of its message held back to carry it on.
HELD_AT = "held_at"
#: When that copy comes back, as the hold named it (epoch seconds, rounded up): a copy forwarded at once names the
#: moment it was held, and one held for later its end (a rate limit's slot, an open breaker's end, a put-off).
HELD_UNTIL = "held_until"
#: An attempt's fields that its delivery holds already: left out of an attempt kept inside the delivery.
_OF_THE_DELIVERY = ("delivery_id", "event_id", "subscription_id", "tenant_id")


@dataclass(frozen=True)
class DeliveryState:
    """A delivery as the worker sees it: the record, how many of its attempts were scheduled ones (the
    position in the retry schedule; manual attempts do not move it), until when a worker holds its lease
    (epoch seconds, 0 when free), and what each rewrite of its item must carry over (``carried``: the first
    attempt kept inside it; when the first attempt started, while the delivery is retried)."""

    delivery: Delivery
    scheduled_attempts: int
    lease_until: float
    carried: dict[str, Any] = field(default_factory=dict)
    #: When a worker last held the delivery back without an attempt, a copy of its message carrying it on (epoch
    #: seconds, 0 if not since the item's last write): ``release``, ``list_new``, a hand-over to the slow lane.
    held_at: float = 0.0
    #: When that copy comes back (``HELD_UNTIL``; 0 if the hold did not say, as an item written before did not).
    held_until: float = 0.0
    #: When the item expires, as read (epoch seconds; 0 if it does not say).
    expires_at: int = 0


class Hold(NamedTuple):
    """A delivery held back without an attempt, a copy of its message carrying it on (epoch seconds): when, and
    when the copy comes back (now, for a copy forwarded at once)."""

    at: float
    until: float

    def attributes(self) -> dict[str, int]:
        """What the delivery's item says of it: ``held_at``, and ``held_until`` rounded up, as ``schedule.hold``
        rounds the copy's wait."""
        return {HELD_AT: int(self.at), HELD_UNTIL: max(int(self.at), math.ceil(self.until))}


def kept_until(now: datetime, attempt_ttl_days: float, event_expires_at: int | None) -> int:
    """When a delivery's item and its attempts written at ``now`` expire (epoch seconds): after the attempt log's
    retention (``attempt_ttl_days``), and never before its event (``HERALD_ATTEMPT_TTL_DAYS`` may be shorter than
    the event is kept): while the event is there, its delivery is found, so a redelivery or a late copy of a message
    never makes it anew."""
    return max(int((now + timedelta(days=attempt_ttl_days)).timestamp()), event_expires_at or 0)


def state_of(item: dict[str, Any]) -> DeliveryState:
    """A delivery item, as read, with its place in the retry schedule and its lease."""
    delivery = Delivery.model_validate(strip(dict(item)))
    return DeliveryState(
        delivery,
        scheduled_attempts=int(item.get("scheduled_attempts", delivery.attempts)),
        lease_until=float(item.get("lease_until", 0)),
        carried={name: item[name] for name in (FIRST_ATTEMPT, FIRST_ATTEMPT_AT, LOG_EXPIRES_AT) if name in item},
        held_at=float(item.get(HELD_AT, 0)),
        held_until=float(item.get(HELD_UNTIL, 0)),
        expires_at=int(item.get("expires_at", 0)),
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


def attempt_items(carried: dict[str, Any], up_to: int) -> range:
    """The numbers of a delivery's attempts, up to ``up_to``, kept as items of their own: all but the first, when
    it is kept inside the delivery's item (``carried`` holds it: ``FIRST_ATTEMPT``)."""
    return range(2 if FIRST_ATTEMPT in carried else 1, up_to + 1)


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


def delivery_key(sub_id: str, delivery_id: str, event_id: str) -> keys.Key:
    """The key of a delivery item: under its subscription, or, for a delivery of the older kind (its id is
    the pair's digest), in a partition of its own."""
    if ids.is_digest_delivery_id(delivery_id, event_id, sub_id):
        return keys.digest_delivery(delivery_id)
    return keys.delivery(sub_id, delivery_id)


def _key(delivery: Delivery) -> keys.Key:
    return delivery_key(delivery.subscription_id, delivery.id, delivery.event_id)


def _index(delivery: Delivery) -> dict[str, str]:
    """The delivery's index entries. The status index (gsi2) lists what needs attention (pending and
    failed deliveries): a delivery that succeeded leaves it, so the common case, a first attempt that
    succeeds, writes no index entry (a delivery of the older kind: one, its gsi1 listing)."""
    status = None if delivery.status is DeliveryStatus.SUCCEEDED else delivery.status.value
    listed = _key(delivery)["sk"] == keys.DELIVERY_SORT
    created = delivery.created_at.isoformat()
    return keys.delivery_index(delivery.subscription_id, created, delivery.id, status, listed=listed)


def _item(delivery: Delivery, *, scheduled_attempts: int, expires_at: int, listed: bool = True) -> dict[str, Any]:
    return {
        **_key(delivery),
        **(_index(delivery) if listed else {}),
        **record(delivery),
        "scheduled_attempts": scheduled_attempts,
        "expires_at": expires_at,
    }


def _window(since: datetime | None, until: datetime | None) -> tuple[str, str] | None:
    """The index sort keys ("<created_at ISO 8601 in UTC>#<delivery id>") of deliveries created in
    [``since``, ``until``]: "~" sorts after every such suffix."""
    if since is None and until is None:
        return None
    low = since.astimezone(UTC).isoformat() if since is not None else "0"
    high = until.astimezone(UTC).isoformat() + "~" if until is not None else "9"
    return low, high


def _id_window(since: datetime | None, until: datetime | None) -> tuple[str, str] | None:
    """The delivery ids of deliveries created in [``since``, ``until``]: their ids start with their events'
    creation time, which is to the millisecond (a ``since`` within a millisecond starts at the next one)."""
    if since is None and until is None:
        return None
    low, high = ids.DELIVERY, ids.DELIVERY + "~"  # below and above every id of the kind
    if since is not None:
        # No id holds a time before 1970: a window starting earlier starts there.
        low = ids.id_bounds(ids.DELIVERY, max(0, ids.epoch_ms(since) + (since.microsecond % 1000 > 0)))[0]
    if until is not None:
        last_ms = ids.epoch_ms(until)
        high = ids.id_bounds(ids.DELIVERY, last_ms)[1] if last_ms >= 0 else ids.DELIVERY  # before 1970: none
    return low, high


def _is_digest_listing_cursor(cursor: str | None) -> bool:
    """Whether a listing's ``iterator`` is one of its second part: the deliveries of the older kind (gsi1)."""
    if not cursor:
        return False
    try:
        raw = cursor_fields(cursor)
    except InvalidCursorError:
        return False  # Table.query refuses it as not one of this listing's
    return isinstance(raw, dict) and "gsi1pk" in raw


def _unchanged_and_unleased(read: Delivery, now: float) -> dict[str, Any]:
    """The condition of a write over the delivery item as ``read``: the same number of attempts and status (no
    attempt, settlement or cancellation since), and no worker holds a lease on it at ``now`` (epoch seconds)."""
    return {
        "ConditionExpression": "attempts = :attempts AND #status = :status"
        " AND (attribute_not_exists(lease_until) OR lease_until < :now)",
        "ExpressionAttributeNames": {"#status": "status"},
        "ExpressionAttributeValues": values(attempts=read.attempts, status=read.status.value, now=now),
    }


#: The most a page of attempts may take once shown (``_shown_attempt_bytes``): an answer of the API, or a portal page
#: (which shows an event's payload too), must stay well under Lambda's 6 MB response limit, and each attempt keeps up
#: to ``sender.RESPONSE_MAX_BYTES`` of its answer's body.
ATTEMPTS_PAGE_BYTES = 2_000_000


def _shown_attempt_bytes(attempt: Attempt) -> int:
    """The most an attempt takes once shown: seven bytes for each UTF-16 code unit of its answer's body, its error and
    its URL (a control character is JSON's ``\\u0001``, its backslash escaped again in Lambda's response; a character
    beyond the BMP, an emoji, is two units, ``\\ud83d\\ude00``; HTML's ``&amp;`` is five), and 1 KB for its other
    fields."""
    text = (attempt.response_body or "") + (attempt.error_message or "") + attempt.url
    return 7 * (len(text.encode("utf-16-le", "surrogatepass")) // 2) + 1_000


class DeliveryRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def _read(self, sub_id: str, delivery_id: str, event_id: str | None) -> dict[str, Any] | None:
        """The delivery's item. Without its ``event_id`` (which says the kind), it is looked for under the
        subscription, then as a delivery of the older kind (that of another subscription is none)."""
        if event_id is not None:
            return self._table.read(delivery_key(sub_id, delivery_id, event_id))
        item = self._table.read(keys.delivery(sub_id, delivery_id))
        if item is None:
            item = self._table.read(keys.digest_delivery(delivery_id))
            if item is not None and item.get("subscription_id") != sub_id:
                return None
        return item

    def stored_keys(self, sub_id: str, delivery_ids: Sequence[str]) -> dict[str, keys.Key]:
        """The key of each of these deliveries' items as stored (under the subscription, or of the older kind), read
        as ``_stored`` reads them; a delivery that is gone is not in the answer."""
        return {
            delivery_id: {"pk": str(item["pk"]), "sk": str(item["sk"])}
            for delivery_id, item in self._stored(sub_id, delivery_ids).items()
        }

    def get(self, sub_id: str, delivery_id: str, *, event_id: str | None = None) -> Delivery | None:
        item = self._read(sub_id, delivery_id, event_id)
        return Delivery.model_validate(strip(item)) if item else None

    def statuses(self, sub_id: str, delivery_ids: Sequence[str]) -> dict[str, str]:
        """The status of each of these deliveries of the subscription that exists (as stored, read as ``_stored``
        reads them). A delivery that is gone is not in the answer."""
        stored = self._stored(sub_id, delivery_ids)
        return {delivery_id: str(item.get("status")) for delivery_id, item in stored.items()}

    def _stored(self, sub_id: str, delivery_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The item of each of these deliveries of the subscription that exists, read strongly in BatchGetItem calls
        of 100 keys made side by side: each looked for under the subscription and as a delivery of the older kind
        (that of another subscription is none), the first found where both are, as ``_read`` finds it."""
        wanted = set(delivery_ids)
        item_keys = [keys.delivery(sub_id, delivery_id) for delivery_id in wanted]
        item_keys += [keys.digest_delivery(delivery_id) for delivery_id in wanted]
        under_subscription = keys.deliveries_partition(sub_id)
        found: dict[str, dict[str, Any]] = {}
        for item in self._table.batch_get(item_keys):
            delivery_id = str(item.get("id"))
            ours = delivery_id in wanted and item.get("subscription_id") == sub_id
            if ours and (delivery_id not in found or item["pk"] == under_subscription):
                found[delivery_id] = item
        return found

    def get_state(self, sub_id: str, delivery_id: str, event_id: str) -> DeliveryState | None:
        """The delivery with what only the worker needs: its place in the retry schedule and its lease."""
        item = self._read(sub_id, delivery_id, event_id)
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
        delivery settled at its first attempt writes each index once instead of twice (put at the claim,
        then moved to its new status at the record). Until then the status listings do not show it: while
        its first attempt is in flight, or, should the worker die during it, until its message comes back
        and the delivery is carried on."""
        item = {
            **_item(
                delivery, scheduled_attempts=scheduled_attempts, expires_at=expires_at, listed=previous is not None
            ),
            "lease_token": token,
            "lease_until": until,
            **(carried or {}),
        }
        # The status too: a duplicate message that read the delivery before it was settled or cancelled (which
        # leaves ``attempts`` as it was) must not reopen it.
        condition = (
            {"ConditionExpression": "attribute_not_exists(pk)"}
            if previous is None
            else _unchanged_and_unleased(previous, now)
        )
        if job_id is None:
            # Another worker's lease, or this claim's own (its token is this claim's alone: the item says which).
            return self._table.put_if(item, **condition)
        try:
            put = {"Item": to_item(item), **condition}
            self._table.transact([{"Put": put}, lock_check(delivery.id, job_id, now=self._table.now())])
        except ClientError:
            return False
        return True

    def fail_unsendable(
        self,
        tenant_id: str,
        sub_id: str,
        delivery_id: str,
        event_id: str,
        *,
        now: datetime,
        kind: ErrorKind = ErrorKind.EVENT_EXPIRED,
        as_read: DeliveryState | None = None,
        also: Sequence[dict[str, Any]] = (),
    ) -> Delivery | None:
        """Fail a pending delivery without an attempt, its next attempt never to come: its event expired before it
        (nothing is left to send), or, ``kind`` ``discarded``, the message that carried it was discarded from the
        dead-letter queue. ``as_read``: only if no attempt was made since the caller read it, nor a hold
        (``held_at``, ``held_until``); a claim whose lease was given back without a hold is not seen. ``also``:
        transaction actions made with the write, or not at all (the event's count). The delivery is returned as
        failed; None if there is no such delivery of the tenant's, it is not pending, a worker holds its lease (it
        moved on, or is moving on), or it was attempted or held back since ``as_read``."""
        item = self._read(sub_id, delivery_id, event_id)
        if item is None:
            return None
        state = state_of(item)
        if state.delivery.tenant_id != tenant_id:
            return None
        if state.delivery.status is not DeliveryStatus.PENDING or state.lease_until >= now.timestamp():
            return None
        if as_read is not None and state.delivery.attempts != as_read.delivery.attempts:
            return None  # attempted since the caller read it: the write's condition holds the rest
        failed = state.delivery.model_copy(
            update={
                "status": DeliveryStatus.FAILED,
                "last_error_kind": kind,
                "next_attempt_at": None,
                "updated_at": now,
            }
        )
        kept = {
            key: value for key, value in item.items() if key not in {"lease_token", "lease_until", HELD_AT, HELD_UNTIL}
        }
        written = {**kept, **_index(failed), **record(failed)}
        # Refused if settled, attempted or leased meanwhile (or, with ``as_read``, held back).
        condition = _unchanged_and_unleased(state.delivery, now.timestamp())
        if as_read is not None:
            for name, held in ((HELD_AT, as_read.held_at), (HELD_UNTIL, as_read.held_until)):
                condition["ConditionExpression"] += f" AND (attribute_not_exists({name}) OR {name} = :{name})"
                condition["ExpressionAttributeValues"] |= values(**{name: held})
        if not also:
            return failed if self._table.put_if(written, **condition) else None
        return failed if self._written_with(written, condition, also) else None

    def _written_with(self, item: dict[str, Any], condition: dict[str, Any], also: Sequence[dict[str, Any]]) -> bool:
        """``item`` put on ``condition``, in one transaction with ``also``: False if a condition refused it (which
        is logged: ``also``'s refusal leaves the delivery as it was too). A transaction cancelled for a concurrent
        one on the same items is made again, twice at most."""
        try:
            self._table.transact([{"Put": {"Item": to_item(item), **condition}}, *also], conflict_attempts=3)
        except ClientError as exc:
            # The delivery's condition (another write came first) or the others' (an event's counts expired).
            reasons = cancellation_codes(exc)
            where = {"delivery_id": item.get("id"), "subscription_id": item.get("subscription_id")}
            logger.info("delivery not written: refused by a condition", extra={**where, "reasons": reasons})
            return False
        return True

    def release(self, delivery: Delivery, token: str, *, held: Hold | None = None) -> None:
        """Give a lease back without an attempt (``delivery`` as claimed); ``held``: the delivery is held back, a copy
        of its message carrying it on, and the item says when and until when. The delivery gets its index entries if
        its claim left them out: it waits, listed as what it is, for its next look."""
        entries = {**_index(delivery), **(held.attributes() if held is not None else {})}
        listed = f"SET {', '.join(f'{key} = :{key}' for key in entries)} " if entries else ""
        with contextlib.suppress(ClientError):  # not ours any more: nothing to give back
            self._table.call(
                "update_item",
                Key=to_item(_key(delivery)),
                UpdateExpression=f"{listed}REMOVE lease_token, lease_until",
                ConditionExpression="lease_token = :token",
                ExpressionAttributeValues=values(token=token, **entries),
            )

    def list_new(
        self,
        delivery: Delivery,
        *,
        scheduled_attempts: int,
        expires_at: int,
        held: Hold | None = None,
        also: Sequence[dict[str, Any]] = (),
    ) -> bool:
        """Store a new delivery without an attempt, listed under its status, unless it exists already (False): one
        that waits (its first receive made none: the slow lane, an open breaker or a rate limit holds it back, and a
        copy of its message carries it on: ``held``, now if not said), or one failed before any
        (its message discarded from the dead-letter queue: ``also`` as ``fail_unsendable`` takes it)."""
        item = _item(delivery, scheduled_attempts=scheduled_attempts, expires_at=expires_at)
        if delivery.status is DeliveryStatus.PENDING:
            now = self._table.now()
            item |= (held or Hold(now, now)).attributes()
        if also:
            return self._written_with(item, {"ConditionExpression": "attribute_not_exists(pk)"}, also)
        try:
            self._table.call(
                "put_item",
                Item=to_item(item),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError:  # written meanwhile by another copy of its message: that one counts
            return False
        return True

    def record_over_waiting(
        self,
        delivery: Delivery,
        attempt: Attempt | None,
        *,
        scheduled_attempts: int,
        expires_at: int,
        carried: dict[str, Any] | None = None,
    ) -> bool:
        """A first receive's record whose delivery item was refused (``new_items``), written over that item if it
        is the delivery waiting without an attempt (``list_new``): another copy of its message was held back (a
        rate limit, the slow lane, an open breaker) while this one sent, and a later claim would make the attempt
        again. False if anything else is there (another copy's record, a claim's lease). Written without
        ``STATS_FROM_STREAM``: the stream counts new items only, so the worker counts this attempt itself."""
        *_, item = self.new_items(
            delivery, attempt, scheduled_attempts=scheduled_attempts, expires_at=expires_at, carried=carried
        )
        item.pop(STATS_FROM_STREAM, None)
        return self._table.put_if(
            item,
            ConditionExpression="attempts = :none AND #status = :pending AND attribute_not_exists(lease_token)",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values(none=0, pending=DeliveryStatus.PENDING.value),
        )

    def new_items(
        self,
        delivery: Delivery,
        attempt: Attempt | None,
        *,
        scheduled_attempts: int,
        expires_at: int,
        carried: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """What ``record`` writes for a first receive (no lease was written: SQS's visibility was the lease), in
        the order written, each only if nothing is there yet (``insert``): the attempt under its number, unless
        it settled the delivery (it is then kept inside it), then the delivery."""
        item = {**_item(delivery, scheduled_attempts=scheduled_attempts, expires_at=expires_at), **(carried or {})}
        if attempt is not None and kept_inside(delivery, attempt, token=None, job_id=None):
            # A new delivery settled by its first attempt: one write, the attempt inside the delivery.
            item[FIRST_ATTEMPT] = _kept_attempt(attempt)
            if attempt.succeeded:
                item[STATS_FROM_STREAM] = True
            return [item]
        if attempt is None:
            return [item]
        return [
            {**keys.attempt(delivery.id, attempt.attempt_number), **record(attempt), "expires_at": expires_at},
            item,
        ]

    def keep_attempts(self, delivery_id: str, numbers: Iterable[int], until: int) -> None:
        """Keep the delivery's attempts ``numbers``, items of their own, until ``until`` (epoch seconds): its next
        write keeps it that long (``LOG_EXPIRES_AT``), and its log must not expire before it. One UpdateItem an
        attempt, each only if the item is there and expires sooner (an attempt kept inside the delivery has none)."""
        for number in numbers:
            with contextlib.suppress(ClientError):
                self._table.call(
                    "update_item",
                    Key=to_item(keys.attempt(delivery_id, number)),
                    UpdateExpression="SET expires_at = :until",
                    ConditionExpression="attribute_exists(pk) AND expires_at < :until",
                    ExpressionAttributeValues=values(until=until),
                )

    def insert(self, items: list[dict[str, Any]]) -> list[bool | ServiceUnavailableError]:
        """Write new items (``new_items``, of any number of deliveries), each only if its key is free: one call per
        ``MAX_BATCH_STATEMENTS``. One answer per item: written, taken (False), or the error that kept it out."""
        return self._table.insert_all(items)

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
        releasing the lease. False if the lease was lost meanwhile (not if this very write was made already and
        its answer lost: the item holds it). Without a ``token`` (a first receive,
        leased by SQS's visibility: nothing was written before the attempt) both writes are made only if
        nothing is there yet (``new_items``, the worker writes those of a batch together); False if another copy
        of the message wrote them first.

        Two plain writes, not a transaction (which bills every item twice): the attempt first, under its
        number, then the delivery on the condition that the lease is still this one. If the second write
        does not happen (a crash, a lost lease), the delivery still shows the attempt as not made, so the
        next claim makes attempt ``n`` again and its record replaces this one: the log keeps one record per
        number, and a delivery never counts an attempt that has no record. With ``job_id`` both go in
        one transaction with the job's ticket for the delivery (its one extra attempt, used up exactly
        once) and the release of the delivery's recovery lock.

        The event's counters are not touched here: the worker adds up a batch's changes per event and
        writes them once (``EventRepository.count``) when the batch is done."""
        if token is None and job_id is None:
            for item in self.new_items(
                delivery, attempt, scheduled_attempts=scheduled_attempts, expires_at=expires_at, carried=carried
            ):
                (written,) = self.insert([item])
                if isinstance(written, ServiceUnavailableError):
                    raise written
                if not written:
                    return False
            return True
        item = {**_item(delivery, scheduled_attempts=scheduled_attempts, expires_at=expires_at), **(carried or {})}
        fresh = {"ConditionExpression": "attribute_not_exists(pk)"}
        condition: dict[str, Any] = (
            fresh
            if token is None
            else {"ConditionExpression": "lease_token = :token", "ExpressionAttributeValues": values(token=token)}
        )
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
                # Refused if the lease is gone (another worker's); found if this write was made and its answer lost.
                return self._table.put_if(item, **condition)
            actions: list[dict[str, Any]] = [{"Put": {"Item": to_item(item), **condition}}]
            if attempt_put is not None:
                actions.append({"Put": attempt_put})
            succeeded = attempt is not None and attempt.succeeded
            actions += use_ticket(delivery.id, job_id, "sent" if succeeded else "failed")
            # The attempt is made: a transaction DynamoDB cancels for another on the lock or the ticket (another job's
            # take of the delivery) is made again, or the ticket would stay open and the job send the delivery again.
            self._table.transact(actions, conflict_attempts=3)
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
        created in [``since``, ``until``]: both listings sort by creation time, so the window is a key condition).

        Pending and failed ones are read from the status index (gsi2). All of them, or the succeeded ones
        (which have no status-index entry), are read from the subscription's partition, then, while any is
        left, from gsi1, which lists those of the older kind (made before the update that moved deliveries
        under their subscription, but for a redelivery of an event stored before it): a page that empties the
        partition goes on there, and the ``iterator`` says which of the two it stopped in. A window whose
        ``since`` is after its ``until`` holds nothing."""
        where: dict[str, str] = {"event_type": event_type} if event_type is not None else {}
        if status is DeliveryStatus.SUCCEEDED:
            where["status"] = status.value
        elif status is not None:
            partition = keys.delivery_status_partition(sub_id, status.value)
            window = _window(since, until)
            return self._page({"gsi2pk": partition}, "gsi2", limit=limit, cursor=cursor, where=where, window=window)
        listing = keys.digest_deliveries_listing(sub_id)
        page = PageResult[Delivery]([], None)
        older_start = encode_cursor(to_item({"gsi1pk": listing}))
        if not _is_digest_listing_cursor(cursor):
            partition = keys.deliveries_partition(sub_id)
            window = _id_window(since, until)
            page = self._page({"pk": partition}, None, limit=limit, cursor=cursor, where=where, window=window)
            if page.cursor is not None:
                return page
            cursor = None
        elif cursor == older_start:
            cursor = None
        older_window = _window(since, until)
        if len(page.items) >= limit:
            # The partition is read to its end on a full page: the next one starts on the older kind, if any. (Only
            # moto answers so: DynamoDB hands on a LastEvaluatedKey whenever a Query fills its Limit, and the page
            # returned above.) A filtered peek may stop on its reads before it finds one (MAX_QUERY_CALLS): read on.
            peek = self._page({"gsi1pk": listing}, "gsi1", limit=1, cursor=None, where=where, window=older_window)
            return PageResult(page.items, older_start if peek.items or peek.cursor else None)
        older = self._page(
            {"gsi1pk": listing},
            "gsi1",
            limit=limit - len(page.items),
            cursor=cursor,
            where=where,
            window=older_window,
        )
        return PageResult(page.items + older.items, older.cursor)

    def _page(
        self,
        key: dict[str, str],
        index: str | None,
        *,
        limit: int,
        cursor: str | None,
        where: dict[str, str],
        window: tuple[str, str] | None,
    ) -> PageResult[Delivery]:
        if window is not None and window[0] > window[1]:
            return PageResult([], None)  # an empty window (DynamoDB refuses BETWEEN with its ends inverted)
        items, next_cursor = self._table.query(
            key=key, index=index, limit=limit, cursor=cursor, newest_first=True, where=where or None, between=window
        )
        return PageResult([Delivery.model_validate(strip(item)) for item in items], next_cursor)

    def list_attempts(
        self, sub_id: str, delivery_id: str, *, limit: int, cursor: str | None, event_id: str | None = None
    ) -> PageResult[Attempt]:
        """A delivery's attempts, oldest first: the first one from inside the delivery's item when it is kept
        there, then the attempt items."""
        kept: list[Attempt] = []
        if not cursor:  # the first page ("" too, as every listing reads it)
            item = self._read(sub_id, delivery_id, event_id)
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
        page = kept + [a for a in later if a.attempt_number not in numbers]
        shown = within_bytes(page, ATTEMPTS_PAGE_BYTES, _shown_attempt_bytes)
        if len(shown) < len(page):  # the rest on the next page, from after the last shown
            return PageResult(shown, encode_cursor(to_item(keys.attempt(delivery_id, shown[-1].attempt_number))))
        return PageResult(page, next_cursor)

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
        window = (since.isoformat(), until.isoformat())
        kwargs: dict[str, Any] = {
            "IndexName": "gsi2",
            "KeyConditionExpression": "gsi2pk = :p AND gsi2sk BETWEEN :low AND :high",
            "FilterExpression": NOT_EXPIRED,
            "ExpressionAttributeValues": values(p=partition, low=window[0], high=window[1], now=self._table.now()),
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = decode_cursor(cursor, "gsi2pk", partition, "gsi2sk", None, window)
        response = self._table.call("query", **kwargs)
        items = [from_item(item) for item in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return PageResult([Delivery.model_validate(strip(item)) for item in items], encode_cursor(last))
