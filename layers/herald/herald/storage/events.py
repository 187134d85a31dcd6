"""Events: stored once (by id and idempotency key), read by the worker and the API with their counters.

An event's counters (``matched``, ``succeeded``, ``failed``, ``fanout_open``) are the event item's
starting values plus what its counts item adds, read together by one Query. The counts item is a small
item of its own because a write costs by the size of the whole item and the event's carries the payload;
it is written per fan-out page and, for deliveries, once per event per worker batch, so an invocation that
dies midway can leave the counters short (never a delivery).

An event with few subscribers (at most ``COUNTED_FROM_DELIVERIES_MAX``, its deliveries queued by publishing
itself) names them in its item (``delivered_to``): its deliveries to them are not counted as they settle, but
read when the event is (``get_with_counts``, one BatchGetItem). At one event to one subscriber that takes a
write off every webhook (the counts update was as many writes as the delivery itself), for a read of a few
items when an operator looks at the event.

Such an event is also counted when it is stored (``COUNTED_WHEN_STORED``): its item starts with the direct
fan-out's counts, and it is never marked queued (the mark was one more write per event). Whether its deliveries
were queued is then read from them (``unwritten_deliveries``) when the publish is repeated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from itertools import pairwise
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from botocore.exceptions import ClientError

from herald import ids
from herald.aws import surely_refused
from herald.errors import (
    ConflictError,
    HeraldError,
    IdempotencyConflictError,
    OutcomeUnknownError,
    ServiceUnavailableError,
)
from herald.records import DeliveryStatus, Event
from herald.storage import keys
from herald.storage.deliveries import delivery_key
from herald.storage.table import (
    cancellation_codes,
    conditional_failure,
    from_item,
    record,
    strip,
    to_item,
    values,
    write_conflicted,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from herald.storage.table import Table

logger = logging.getLogger(__name__)

#: Tries of a counts update that DynamoDB refuses for a transaction under way on the item (``write_conflicted``).
COUNT_CONFLICT_TRIES = 4
#: An event's delivery counters: the event item holds their starting values, its counts item the rest.
#: ``filtered`` counts the subscriptions whose payload filter skipped the event at fan-out.
EVENT_COUNTERS = ("matched", "succeeded", "failed", "fanout_open", "filtered")
#: The counts item's attributes holding the tokens of the last updates made to it, newest first
#: (``_update_counts``): each update shifts them one place and puts its own first.
RECENT_WRITES = ("last_write", *(f"w{n}" for n in range(1, 8)))
LAST_WRITE = RECENT_WRITES[0]
#: Marks an event whose deliveries have time-ordered ids and are stored under their subscription
#: (``storage.deliveries``): every event stored since; one stored before has digest ids, and keeps them.
DELIVERIES_BY_SUBSCRIPTION = "deliveries_by_subscription"
#: The subscriptions an event's item names, whose deliveries its ``succeeded`` and ``failed`` are read from
#: instead of counted (the module's docstring).
DELIVERED_TO = "delivered_to"
#: The most subscriptions an event names in ``delivered_to``: their ids keep its item's growth under 400 bytes,
#: and reading the event reads at most this many deliveries. The default ``direct_fanout_max``.
COUNTED_FROM_DELIVERIES_MAX = 10
#: Marks an event whose item holds its direct fan-out's counts from the start and which is never marked queued
#: (the module's docstring): a repeat of its publish queues again those of its deliveries not written yet.
COUNTED_WHEN_STORED = "counted_when_stored"
#: The subscriptions a direct fan-out of more than ``COUNTED_FROM_DELIVERIES_MAX`` counted, on its counts item (set
#: by ``count_direct_fanout``): 4 bytes of each one's digest (``direct_digest``), at most 400 bytes for 100, so the
#: counts item stays under a write unit. A redelivery counts in ``matched`` only subscriptions not counted yet.
DIRECT_SUBS = "direct_subs"
_DIRECT_DIGEST_BYTES = 4
#: Set on an event's counts item as the fan-out message of a repeat of its publish (one that found it not marked
#: queued) starts (``take_repeat_fanout``): the earlier try's direct count, should it come after, is refused
#: (``count_direct_fanout``, ``mark_new``), so the event is counted once, by the fan-out's pages.
REPEAT_FANOUT = "repeat_fanout"
#: The states a delivery item can hold (one without a known state is read as pending, and logged).
_STATUSES = frozenset(status.value for status in DeliveryStatus)


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored: the record, when it expires, and (when read with them) its counters and whether
    its fan-out was queued."""

    event: Event
    expires_at: int
    fingerprint: str
    enqueued: bool = False
    matched: int = 0
    succeeded: int = 0
    failed: int = 0
    fanout_open: int = 1
    filtered: int = 0
    deliveries_by_subscription: bool = False
    #: The subscriptions whose deliveries' states make this event's ``succeeded`` and ``failed`` (``DELIVERED_TO``),
    #: none when its counters count every delivery. A delivery to one of them is never counted as it settles.
    delivered_to: frozenset[str] = frozenset()
    #: Its item holds its direct fan-out's counts, and it is never marked queued (``COUNTED_WHEN_STORED``).
    counted_when_stored: bool = False
    #: The digests of the subscriptions its direct fan-out counted on its counts item (``DIRECT_SUBS``), when read
    #: with its counts; empty otherwise.
    direct_subs: frozenset[bytes] = frozenset()

    def counted_directly(self, subscription_id: str) -> bool:
        """Whether this event's direct fan-out counted ``subscription_id`` in ``matched`` (its counts item names
        it: ``DIRECT_SUBS``; read with its counts), or, counted when stored, its item names it."""
        if self.counted_when_stored and subscription_id in self.delivered_to:
            return True
        return direct_digest(subscription_id) in self.direct_subs

    def counted_from_delivery(self, subscription_id: str) -> bool:
        """Whether this event's delivery to ``subscription_id`` is read, not counted, for its counters."""
        return subscription_id in self.delivered_to

    def delivery_id(self, subscription_id: str) -> str:
        """The id of this event's delivery to ``subscription_id`` (time-ordered unless the event predates it)."""
        event_ms = ids.epoch_ms(self.event.created_at) if self.deliveries_by_subscription else None
        return ids.delivery_id(self.event.id, subscription_id, event_ms)

    @property
    def event_ms(self) -> int:
        """The event's creation time, in epoch milliseconds (what its fan-out and redelivery messages carry)."""
        return ids.epoch_ms(self.event.created_at)

    def named_by(self, tenant_id: str | None, event_ms: int | None) -> bool:
        """Whether a fan-out or redelivery message for ``tenant_id`` (None: a broadcast's page of tenants) of the
        event created at ``event_ms`` is about this event. An id published again once its event expired names a
        new event, perhaps another tenant's: a message of the old one (redriven from the dead-letter queue) must
        neither count on it nor send it. A message without ``event_ms`` (queued before messages carried it) is
        checked on its tenant alone."""
        if event_ms is not None and event_ms != self.event_ms:
            return False
        if tenant_id is None or self.event.broadcast:
            return self.event.broadcast
        return self.event.tenant_id == tenant_id

    def has_delivery(self, subscription_id: str, delivery_id: str) -> bool:
        """Whether ``delivery_id`` is this event's delivery to ``subscription_id``. An id published again once its
        event expired names a new event, whose deliveries have ids of their own (its creation time is in them):
        a delivery of the expired one must never carry the new one's data."""
        return self.delivery_id(subscription_id) == delivery_id

    @classmethod
    def of(cls, item: Mapping[str, Any], event: Event | None = None) -> StoredEvent:
        """The event an item holds: read back from the table (its record decoded, its payload checked), or just
        written, with ``event``, the record it was written from (already valid: nothing to decode again)."""
        if event is None:
            event = Event.model_validate(strip(dict(item)))
            _check_envelope(event.payload)
        return cls(
            event=event,
            expires_at=int(item["expires_at"]),
            fingerprint=str(item.get("fingerprint", "")),
            enqueued=bool(item.get("enqueued")),
            deliveries_by_subscription=bool(item.get(DELIVERIES_BY_SUBSCRIPTION)),
            delivered_to=frozenset(item.get(DELIVERED_TO) or ()),
            counted_when_stored=bool(item.get(COUNTED_WHEN_STORED)),
            matched=int(item.get("matched", 0)),
            succeeded=int(item.get("succeeded", 0)),
            failed=int(item.get("failed", 0)),
            fanout_open=int(item.get("fanout_open", 0)),
            filtered=int(item.get("filtered", 0)),
        )


def _check_envelope(payload: str) -> None:
    """Raise unless a stored payload is the envelope publishing writes: a JSON object holding a ``data``
    object. One that is not (an item written by hand, a bug) must never be sent; its read fails instead, and its
    delivery's message ends in the dead-letter queue. The parse is let go at once: a delivery sends the payload as
    it is, and the event parses its data again only if asked for (``Event.data``)."""
    envelope = json.loads(payload)
    if not isinstance(envelope, dict) or not isinstance(envelope.get("data"), dict):
        raise TypeError("the event's payload is not a JSON object holding its data")


class NewEvent(NamedTuple):
    """An event to store (``EventRepository.create_many``): the record, its request's fingerprint, when it
    expires, the subscriptions whose deliveries are read for its counters (``DELIVERED_TO``), and its starting
    counters and flags (``EventRepository.create``'s ``counters``)."""

    event: Event
    fingerprint: str
    expires_at: int
    delivered_to: Sequence[str] = ()
    counters: Mapping[str, Any] = MappingProxyType({})


class EventExistsError(ConflictError):
    """An event with this id or idempotency key was stored before, for the same request: ``stored`` is it."""

    def __init__(self, stored: StoredEvent) -> None:
        super().__init__(f"event {stored.event.id} exists")
        self.stored = stored


#: A put's condition: no item at its key, or only one whose retention is over (TTL removes it within days).
_ABSENT_OR_EXPIRED = "attribute_not_exists(pk) OR expires_at <= :now"


def _idempotency_item(idempotency_key: str, event_id: str, *, fingerprint: str, expires_at: int) -> dict[str, Any]:
    """The record that an idempotency key names an event (for the request ``fingerprint``), kept as long as it."""
    return {
        **keys.idempotency(idempotency_key),
        "event_id": event_id,
        "fingerprint": fingerprint,
        "expires_at": expires_at,
    }


def _new_item(
    event: Event, *, fingerprint: str, expires_at: int, delivered_to: Sequence[str] = (), **counters: Any
) -> dict[str, Any]:
    """A new event's item (plain values): the record, its expiry and fingerprint, its starting counters, and the
    subscriptions whose deliveries are read for its counters (``DELIVERED_TO``), if any."""
    assert len(delivered_to) <= COUNTED_FROM_DELIVERIES_MAX, "more deliveries than an event's read takes"
    named = {DELIVERED_TO: list(dict.fromkeys(delivered_to))} if delivered_to else {}
    return {
        **keys.event(event.id),
        "expires_at": expires_at,
        "fingerprint": fingerprint,
        "enqueued": False,
        DELIVERIES_BY_SUBSCRIPTION: True,
        **dict.fromkeys(EVENT_COUNTERS, 0),
        "fanout_open": 1,
        **record(event),
        **named,
        **counters,
    }


@dataclass(frozen=True)
class FanoutClaim:
    """A message's claim of a place in an event's fan-out (``EventRepository.claim_fanout``)."""

    #: A message worked the fan-out from this place before: this is its second run (the same message received again,
    #: or a redrive taking over), whose pages may have been counted already.
    again: bool


class EventRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def create(
        self, event: Event, *, fingerprint: str, expires_at: int, delivered_to: Sequence[str] = (), **counters: Any
    ) -> StoredEvent:
        """Store a new event and return it as stored. If its id or idempotency key was used before: for the
        same request (``fingerprint``) EventExistsError carrying the earlier event with its counters, for
        another IdempotencyConflictError. ``counters`` are the event's starting counters and flags (a test
        event is matched and enqueued from the start); ``delivered_to``, the subscriptions whose deliveries are
        read for its counters (``DELIVERED_TO``)."""
        item = _new_item(event, fingerprint=fingerprint, expires_at=expires_at, delivered_to=delivered_to, **counters)
        fresh = {"ConditionExpression": _ABSENT_OR_EXPIRED, "ExpressionAttributeValues": values(now=self._table.now())}
        put: dict[str, Any] = {"Item": to_item(item), **fresh}
        try:
            if not event.idempotency_key:
                try:
                    self._table.call("put_item", **put)  # a transaction of one write would bill it twice
                except ServiceUnavailableError as failure:
                    self._written_after_all(item, failure)
                except ClientError:
                    # This put's own item, written once already (botocore sends a call again when its answer was
                    # lost): a new event, not a replay. Its creation time (to the millisecond) tells it from a repeat
                    # of the request, but for one within the same millisecond: that one is answered as new too, and
                    # queued again under the same delivery ids (counted once; sent once unless both copies are
                    # worked at the same moment, the README's Duplicates row).
                    (ours,) = self._table.holds([item])
                    if not ours:
                        raise
            else:
                idem = _idempotency_item(
                    event.idempotency_key, event.id, fingerprint=fingerprint, expires_at=expires_at
                )
                # Requests with one key at once: DynamoDB cancels all but one (a conflict); tried again, they find the
                # key's record, and answer its event.
                self._table.transact([{"Put": put}, {"Put": {"Item": to_item(idem), **fresh}}], conflict_attempts=4)
            return StoredEvent.of(item, event)
        except ClientError:
            pass
        raise EventExistsError(self._existing(event, fingerprint))

    def _written_after_all(self, item: dict[str, Any], failure: ServiceUnavailableError) -> None:
        """After ``put_item`` of a new event's ``item`` failed: the failure itself if DynamoDB refused the call at its
        first try (nothing was written: ``surely_refused``); else, without an answer to go by (a timeout, an answer
        lost, an outage), return if the item is there, written by that put all the same, or raise
        ``OutcomeUnknownError``: the write may still be made (a request timed out may yet arrive), and only the event's
        id makes a retry safe."""
        if surely_refused(failure):
            raise failure
        try:
            (ours,) = self._table.holds([item])
        except ServiceUnavailableError:
            ours = False
        if not ours:
            raise OutcomeUnknownError(f"{failure.message}: the event may have been stored") from failure

    def create_many(self, events: Sequence[NewEvent]) -> list[StoredEvent | HeraldError]:
        """``create`` for events without idempotency keys: one answer each, in order, the event as stored or the
        error ``create`` would raise. New ids are written 25 to a call (``Table.insert_all``); an id whose item
        exists (a replay, an expired event's id used again) goes through ``create``, which tells them apart. A
        later copy of an id in the same batch is answered from the first: a replay of it (or an idempotency
        conflict, with another body)."""
        items: dict[str, dict[str, Any]] = {}
        for new in events:
            assert not new.event.idempotency_key, "events with idempotency keys are created one by one"
            items.setdefault(
                new.event.id,
                _new_item(
                    new.event,
                    fingerprint=new.fingerprint,
                    expires_at=new.expires_at,
                    delivered_to=new.delivered_to,
                    **new.counters,
                ),
            )
        inserted = dict(zip(items, self._table.insert_all(list(items.values())), strict=True))
        first: dict[str, StoredEvent | HeraldError] = {}
        answers: list[StoredEvent | HeraldError] = []
        for new in events:
            earlier = first.get(new.event.id)
            if earlier is not None:
                answers.append(self._repeated(earlier, new))
                continue
            written = inserted[new.event.id]
            answer: StoredEvent | HeraldError
            if written is True:
                answer = StoredEvent.of(items[new.event.id], new.event)
            elif isinstance(written, HeraldError):
                answer = written
            else:
                answer = self._create_one(new)
            first[new.event.id] = answer
            answers.append(answer)
        return answers

    def _create_one(self, new: NewEvent) -> StoredEvent | HeraldError:
        try:
            return self.create(
                new.event,
                fingerprint=new.fingerprint,
                expires_at=new.expires_at,
                delivered_to=new.delivered_to,
                **new.counters,
            )
        except HeraldError as error:
            return error

    def _repeated(self, earlier: StoredEvent | HeraldError, new: NewEvent) -> StoredEvent | HeraldError:
        """The answer to an id given again in one batch, after its first copy's answer ``earlier``. Not ``create``:
        the two copies' items are alike to the millisecond, and ``create`` would take the first's for its own."""
        stored = earlier.stored if isinstance(earlier, EventExistsError) else earlier
        if isinstance(stored, StoredEvent):
            return EventExistsError(stored) if stored.fingerprint == new.fingerprint else _mismatch(new.event.id)
        return self._create_one(new)  # the first copy failed: this one is tried on its own

    def _existing(self, event: Event, fingerprint: str) -> StoredEvent:
        """The event a refused ``create`` repeats: the one its idempotency key names, else the one of its id. An id
        published before without this key binds the key to it (``_bind_key``)."""
        existing_id = event.id
        idem_item = None
        if event.idempotency_key:
            idem_item = self._table.read(keys.idempotency(event.idempotency_key))
            if idem_item is not None:
                existing_id = idem_item["event_id"]
                if idem_item["fingerprint"] != fingerprint:
                    raise _mismatch(existing_id)
        existing = self.get_with_counts(existing_id)
        if existing is None:
            raise ConflictError("a concurrent request is publishing this event; retry")
        if existing.fingerprint != fingerprint:
            raise _mismatch(existing_id)
        if event.idempotency_key and idem_item is None and not self._bind_key(event.idempotency_key, existing):
            return self._existing(event, fingerprint)  # another request took the key meanwhile: it names its event
        return existing

    def _bind_key(self, idempotency_key: str, existing: StoredEvent) -> bool:
        """Record that ``idempotency_key`` names ``existing``, an event whose id was published before without it
        (the key's own write was refused with the event's): a later request with the key and no id is then a
        replay of it, not a new event. For as long as the event lives. False if the key was taken meanwhile."""
        idem = _idempotency_item(
            idempotency_key, existing.event.id, fingerprint=existing.fingerprint, expires_at=existing.expires_at
        )
        try:
            self._table.call(
                "put_item",
                Item=to_item(idem),
                ConditionExpression=f"{_ABSENT_OR_EXPIRED} OR event_id = :event",
                ExpressionAttributeValues=values(now=self._table.now(), event=existing.event.id),
            )
        except ClientError as exc:
            if not conditional_failure(exc):
                raise
            return False
        return True

    def withdraw(self, event_id: str) -> None:
        """Delete the item of an event never queued (a test event whose message could not be sent), so that it does
        not show a delivery pending for good; one that is not there is left so."""
        self._table.call("delete_item", Key=to_item(keys.event(event_id)))

    def get(self, event_id: str) -> StoredEvent | None:
        """The event item alone, as published (it never changes): what delivering it needs. Its counters are
        their starting values."""
        item = self._table.read(keys.event(event_id))
        return StoredEvent.of(item) if item else None

    def get_with_counts(self, event_id: str, *, live: bool = True) -> StoredEvent | None:
        """The event with its current counters and ``enqueued`` flag: the starting values it was stored with
        plus what its counts item has added since. One strongly consistent Query reads both (they are the
        partition's only sort keys starting with ``#``). An event that names its subscriptions
        (``DELIVERED_TO``) adds its deliveries to them, as they are now: one BatchGetItem more (not with ``live``
        False: the counters as stored, which those deliveries are never added to)."""
        response = self._table.call(
            "query",
            KeyConditionExpression="pk = :p AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=values(p=keys.event_partition(event_id), prefix=keys.EVENT_ITEMS_PREFIX),
            ConsistentRead=True,
        )
        now = self._table.clock()
        found = {
            item["sk"]: item
            for item in map(from_item, response.get("Items", []))
            if item.get("expires_at") is None or item["expires_at"] > now
        }
        item = found.get(keys.event(event_id)["sk"])
        if item is None:
            return None
        counts = found.get(keys.event_counts(event_id)["sk"], {})
        for counter in EVENT_COUNTERS:
            item[counter] = int(item.get(counter, 0)) + int(counts.get(counter, 0))
        item["enqueued"] = bool(item.get("enqueued")) or bool(counts.get("enqueued"))
        stored = StoredEvent.of(item)
        if DIRECT_SUBS in counts:
            noted = bytes(getattr(counts[DIRECT_SUBS], "value", counts[DIRECT_SUBS]))  # boto3's Binary
            step = _DIRECT_DIGEST_BYTES
            stored = replace(stored, direct_subs=frozenset(noted[at : at + step] for at in range(0, len(noted), step)))
        if not stored.delivered_to or not live:
            return stored
        settled = self._settled_deliveries(stored)
        return replace(
            stored,
            succeeded=stored.succeeded + settled[DeliveryStatus.SUCCEEDED],
            failed=stored.failed + settled[DeliveryStatus.FAILED],
        )

    def _settled_deliveries(self, stored: StoredEvent) -> Counter[DeliveryStatus]:
        """How many of the event's deliveries to the subscriptions it names (``DELIVERED_TO``) are in each state,
        read strongly: one BatchGetItem. A delivery not written yet is pending (its first attempt is to come)."""
        event_id = stored.event.id
        found = list(self._named_deliveries([stored])[event_id].values())
        unknown = [item["sk"] for item in found if item.get("status") not in _STATUSES]
        if unknown:
            logger.warning(
                "deliveries of an unknown status read as pending", extra={"event_id": event_id, "sk": unknown}
            )
        return Counter(DeliveryStatus(item["status"]) for item in found if item.get("status") in _STATUSES)

    def unwritten_deliveries(self, events: Sequence[StoredEvent]) -> dict[str, list[str]]:
        """For each event, by id, the subscriptions it names (``DELIVERED_TO``) whose delivery of it is not
        written yet: not worked yet, or never queued. Read strongly, 100 keys a BatchGetItem."""
        found = self._named_deliveries(events)
        return {stored.event.id: sorted(set(stored.delivered_to) - set(found[stored.event.id])) for stored in events}

    def _named_deliveries(self, events: Sequence[StoredEvent]) -> dict[str, dict[str, dict[str, Any]]]:
        """Each event's deliveries to the subscriptions it names, by event id and subscription id, as written
        (unexpired, and of that very event), read strongly: one BatchGetItem of up to 100 keys a call."""
        wanted = {
            (stored.event.id, sub_id): delivery_key(sub_id, stored.delivery_id(sub_id), stored.event.id)
            for stored in events
            for sub_id in sorted(stored.delivered_to)
        }
        by_key = {(key["pk"], key["sk"]): named for named, key in wanted.items()}
        found: dict[str, dict[str, dict[str, Any]]] = {stored.event.id: {} for stored in events}
        for item in self._table.batch_get(list(wanted.values())):
            named = by_key.get((item["pk"], item["sk"]))
            if named is not None and item.get("event_id") == named[0]:
                found[named[0]][named[1]] = item
        return found

    def mark_enqueued(self, event_id: str, *, expires_at: int) -> None:
        """Note that the event's fan-out is queued (a retried publish then queues nothing more)."""
        self._update_counts(event_id, expires_at=expires_at, deltas={}, flags={"enqueued": True})

    def count(self, event_id: str, *, expires_at: int, **deltas: int) -> None:
        """Add to an event's counters (``matched``, ``succeeded``, ``failed``, ``fanout_open``: the fan-out
        messages still at work, ``filtered``: subscriptions whose filter skipped it). ``expires_at`` is the
        event's: the counts item expires with it."""
        deltas = {key: value for key, value in deltas.items() if value}
        if deltas:
            self._update_counts(event_id, expires_at=expires_at, deltas=deltas)

    def count_action(self, event_id: str, *, expires_at: int, deltas: Mapping[str, int]) -> dict[str, Any]:
        """``count`` as an action of a transaction (``Table.transact``), made with another write or not at all.
        It leaves the tokens of the counts item's last writes (``_update_counts``) as they are: a transaction
        sent again after its answer was lost is told apart by its own token (``ClientRequestToken``)."""
        names = {"#exp": "expires_at"} | {f"#{key}": key for key in deltas}
        return {
            "Update": {
                "TableName": self._table.name,
                "Key": to_item(keys.event_counts(event_id)),
                "UpdateExpression": "SET #exp = :exp ADD " + ", ".join(f"#{key} :{key}" for key in deltas),
                "ConditionExpression": "attribute_not_exists(#exp) OR #exp > :now",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values(exp=expires_at, now=self._table.now(), **deltas),
            }
        }

    def mark_new(self, marks: Sequence[tuple[str, int, Mapping[str, int], Sequence[str]]]) -> list[bool]:
        """Mark events queued, each with its counts (a direct fan-out's, or none) and the subscriptions they count
        (``DIRECT_SUBS``), given as (event id, expires_at, counts, subscription ids), by creating their counts items
        25 to a call: a batch publish's usual case, as no delivery of its events has settled yet. One answer each:
        True if marked; False if its counts item exists (an earlier try marked it, a delivery settled first, an
        expired event of the same id left it), the event is gone, or a failed call kept it out.
        ``count_direct_fanout`` or ``mark_enqueued`` then decides it alone."""
        now = self._table.now()
        items = {
            event_id: {
                **keys.event_counts(event_id),
                "expires_at": expires_at,
                "enqueued": True,
                **{name: value for name, value in counts.items() if value},
                **({DIRECT_SUBS: direct_digests(sub_ids)} if sub_ids else {}),
            }
            for event_id, expires_at, counts, sub_ids in marks
            if expires_at > now
        }
        written = dict(zip(items, self._table.insert_all(list(items.values())), strict=True))
        return [written.get(mark[0]) is True for mark in marks]

    def count_direct_fanout(
        self, event_id: str, *, expires_at: int, sub_ids: Sequence[str] = (), **deltas: int
    ) -> bool:
        """Publishing's direct fan-out: add its counts and mark the event queued, in one conditional write of
        the counts item, once. True if counted now; False if an earlier try of the same publish counted it (and
        marked it in the same write), the event is gone, or DynamoDB refused the write twice (logged). Its one
        page needs no marker item: the ``enqueued`` flag, set by the same write, is the mark (an event whose
        direct page an earlier version counted with a marker carries it too). The subscriptions it counted
        (``sub_ids``) are noted by their digests (``DIRECT_SUBS``)."""
        changes = {key: value for key, value in deltas.items() if value}
        flags: dict[str, Any] = {"enqueued": True}
        if sub_ids:
            flags[DIRECT_SUBS] = direct_digests(sub_ids)
        return self._update_counts(
            event_id, expires_at=expires_at, deltas=changes, flags=flags, unless=("enqueued", REPEAT_FANOUT)
        )

    def take_repeat_fanout(self, event_id: str, *, expires_at: int) -> bool:
        """As a repeat's fan-out message starts (``FanoutMessage.repeat``: a repeat of a publish found its event
        stored and not marked queued, ``publishing._Routed.again``), note it on the counts item (``REPEAT_FANOUT``),
        unless the earlier try's direct fan-out counted the event (``DIRECT_SUBS``). True if noted: its pages count
        the event, and that direct count, should it come after, is refused (``count_direct_fanout``); False if the
        direct count came first (the message is done: its deliveries went with the earlier try), or the event is
        gone. A write DynamoDB refuses raises: the message comes back."""
        noted = {REPEAT_FANOUT: True}
        if self._update_counts(event_id, expires_at=expires_at, deltas={}, flags=noted, unless=(DIRECT_SUBS,)):
            return True
        current = self._table.read(keys.event_counts(event_id))
        if current is None or DIRECT_SUBS in current or expires_at <= self._table.now():
            return False
        raise ServiceUnavailableError(f"the repeat fan-out of event {event_id} was not noted")

    def _update_through_conflicts(self, **request: Any) -> None:
        """One UpdateItem of a counts item, made again while DynamoDB refuses it for a transaction under way on the
        item (``write_conflicted``: a dead-letter discard counting a delivery it failed), ``COUNT_CONFLICT_TRIES``
        tries in all, a growing and spread wait between them. A refused write changed nothing."""
        for attempt in range(COUNT_CONFLICT_TRIES):
            try:
                self._table.call("update_item", **request)
                return
            except ServiceUnavailableError as exc:
                if attempt == COUNT_CONFLICT_TRIES - 1 or not write_conflicted(exc):
                    raise
                time.sleep(0.05 * 2**attempt * random.uniform(1.0, 1.5))  # noqa: S311 - a spread, not cryptography

    def _update_counts(
        self,
        event_id: str,
        *,
        expires_at: int,
        deltas: Mapping[str, int],
        flags: Mapping[str, Any] | None = None,
        unless: Sequence[str] = (),
        token: str | None = None,
    ) -> bool:
        """One UpdateItem of the event's counts item: a small item beside the event, so that what changes
        as deliveries settle never rewrites the payload (a write costs by the size of the whole item).
        Created by its first update; one left over from an expired event of the same id is replaced. With
        ``unless``, written only if the item has none of those attributes (``enqueued``: the event is marked queued).
        True if written.

        Each update leaves its ``token`` on the item (a new one unless given), among the tokens of the last
        eight (``RECENT_WRITES``), and is made only if the item does not hold it already: ``ADD`` is not
        idempotent, and botocore sends a call again when its answer was lost. The call sent again is then
        refused, and the token tells it was its own write, even when other updates came between the two sends
        (the worker batches of a fan-out count one event at once). Should eight come between them, the token is
        gone and the second send adds again: the counts are then over by one batch's worth (``herald.repair``
        recounts them)."""
        now = self._table.now()
        if expires_at <= now:
            return False  # the event is gone: nothing left to count
        flags = dict(flags or {})
        token = token or uuid.uuid4().hex[:12]  # 48 random bits: the item keeps eight
        # The tokens shift one place (operands are read from the item before the update), this one's first.
        shifted = [f"#{newer} = if_not_exists(#{older}, :none)" for older, newer in pairwise(RECENT_WRITES)]
        sets = ", ".join(["#exp = :exp", *shifted, f"#{LAST_WRITE} = :wrote", *(f"#{key} = :{key}" for key in flags)])
        expression = f"SET {sets}" + (" ADD " + ", ".join(f"#{key} :{key}" for key in deltas) if deltas else "")
        not_written = " OR ".join(f"#{name} = :wrote" for name in RECENT_WRITES)
        condition = f"(attribute_not_exists(#exp) OR #exp > :now) AND NOT ({not_written})"
        names = (
            {"#exp": "expires_at"}
            | {f"#{name}": name for name in RECENT_WRITES}
            | {f"#{name}": name for name in [*flags, *deltas]}
        )
        for number, name in enumerate(unless):
            condition += f" AND attribute_not_exists(#unless{number})"
            names[f"#unless{number}"] = name
        key = to_item(keys.event_counts(event_id))
        for attempt in range(2):
            try:
                self._update_through_conflicts(
                    Key=key,
                    UpdateExpression=expression,
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values(exp=expires_at, now=now, wrote=token, none="-", **flags, **deltas),
                )
                return True
            except ClientError:
                current = self._table.read(keys.event_counts(event_id))  # None when absent or expired
                if current is not None and _wrote(current, token):
                    return True  # this update's own, made by a first send whose answer was lost
                # Marked queued already (counted by the write that marked it), or a repeat's fan-out counts it, ...
                if current is not None and any(name in current for name in unless):
                    return False
                if attempt:
                    logger.warning("event counters not updated", extra={"event_id": event_id, **deltas, **flags})
                    return False
            self._drop_expired_counts(event_id, now)
        return False

    def _drop_expired_counts(self, event_id: str, now: int) -> None:
        """Delete the counts item of an earlier, expired event with this id, not yet removed by TTL (a write refused
        for it then starts afresh); one that is not expired stays."""
        with contextlib.suppress(ClientError):
            self._table.call(
                "delete_item",
                Key=to_item(keys.event_counts(event_id)),
                ConditionExpression="#exp <= :now",
                ExpressionAttributeNames={"#exp": "expires_at"},
                ExpressionAttributeValues=values(now=now),
            )

    def count_fanout_page(
        self, event_id: str, marker: str, *, expires_at: int, plan: Mapping[str, Any] | None = None, **deltas: int
    ) -> bool:
        """Add to an event's counters for one page of a fan-out message, once: ``marker`` names the page, and
        a page already counted (its message ran again after a crash, or SQS delivered it twice) is not counted
        again. True if counted now; False if it was before, or the event is gone. ``plan`` (plain values) is kept
        with the marker: what the page counted is what it queues, however often it runs (``fanout_page_plan``).

        Each page leaves a small marker item beside the event (``FANOUT#<digest>``, expiring with it), so a fan-out of
        any size never grows an item that is written often. The marker and the page's counts are one transaction: a
        marker there means the page is counted, whatever failed or crashed around it (botocore's resend of a
        transaction whose answer was lost is the same transaction, by its token)."""
        now = self._table.now()
        if expires_at <= now:
            return False  # the event is gone: nothing left to count
        item = {**keys.fanout_page(event_id, marker), "expires_at": expires_at}
        if plan is not None:
            item["plan"] = dict(plan)
        # A marker left by an expired event of the same id (not yet removed by TTL) is not this page's.
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "Item": to_item(item),
                    "ConditionExpression": _ABSENT_OR_EXPIRED,
                    "ExpressionAttributeValues": values(now=now),
                }
            }
        ]
        changes = {key: value for key, value in deltas.items() if value}
        if changes:
            actions.append(self.count_action(event_id, expires_at=expires_at, deltas=changes))
        for _ in range(2):
            try:
                self._table.transact(actions, conflict_attempts=COUNT_CONFLICT_TRIES)
                return True
            except ClientError as exc:
                if cancellation_codes(exc)[:1] == ["ConditionalCheckFailed"]:
                    return False  # counted before
            self._drop_expired_counts(event_id, now)  # the counts' condition refused it: start afresh
        return False

    def claim_fanout(
        self, event_id: str, position: str, message_id: str, *, now: int, idle_before: int, expires_at: int
    ) -> FanoutClaim | None:
        """Let one message work an event's fan-out from ``position`` (where its message starts). A claim for the
        first message to ask, for that same message received again (a crash, a visibility timeout), and for any other
        once the claim was last taken before ``idle_before`` (its holder gone: dead-lettered, and this is its
        redrive); None for another message at that position meanwhile: a second copy of the holder, which SQS took
        when the answer of its send was lost and botocore sent it again. Its chain would queue the rest of the fan-out
        a second time. The claim is a small item beside the event, expiring with it; ``FanoutClaim.again`` says
        whether a message had worked from the position before (its old item, returned by the same PutItem)."""
        item = {**keys.fanout_claim(event_id, position), "holder": message_id, "claimed_at": now}
        try:
            answer = self._table.call(
                "put_item",
                Item=to_item({**item, "expires_at": expires_at}),
                ConditionExpression="attribute_not_exists(pk) OR holder = :me OR claimed_at < :idle "
                "OR expires_at <= :now",
                ExpressionAttributeValues=values(me=message_id, idle=idle_before, now=now),
                ReturnValues="ALL_OLD",
            )
        except ClientError:
            return None
        old = from_item(answer.get("Attributes") or {})
        return FanoutClaim(again=bool(old) and int(old.get("expires_at", 0)) > now)

    def counted_subscriptions(self, event_id: str) -> frozenset[str]:
        """The subscriptions an event's ``matched`` counts as its fan-out's and redeliveries' pages counted them (each
        page's ``plan``: its ``subs``), read strongly, a Query page of up to 1 MB at a time. A page counted before
        plans were kept names none; an event counted when stored names its own (``delivered_to``). A redelivery page
        that counts its first deliveries each apart (``COUNTED_APART``) names them before they are counted, which
        their own markers' plans name once they are: it is left out."""
        counted: set[str] = set()
        cursor: str | None = None
        while True:
            items, cursor = self._table.query(
                key={"pk": keys.event_partition(event_id)},
                prefix=keys.FANOUT_PAGE_PREFIX,
                limit=1000,
                cursor=cursor,
                consistent=True,
            )
            for item in items:
                plan = item.get("plan")
                subs = plan.get("subs") if isinstance(plan, dict) and plan.get(COUNTED_APART) is not True else None
                if isinstance(subs, list):
                    counted.update(str(sub) for sub in subs)
            if cursor is None:
                return frozenset(counted)

    def fanout_page_plan(self, event_id: str, marker: str) -> dict[str, Any] | None:
        """The ``plan`` a fan-out page was counted with (read strongly), None if it has none (counted before plans
        were kept) or is not counted."""
        found = self._table.read(keys.fanout_page(event_id, marker))
        plan = found.get("plan") if found is not None else None
        return dict(plan) if isinstance(plan, dict) else None


#: A redelivery page's ``plan`` with this set to true counted its first deliveries each apart, each with a marker of
#: its own (``first|<subscription>``) whose plan names it once it is counted.
COUNTED_APART = "counted_apart"


def direct_digests(sub_ids: Sequence[str]) -> bytes:
    """What a direct fan-out notes of the subscriptions it counted (``DIRECT_SUBS``): their digests, end to end."""
    return b"".join(direct_digest(sub_id) for sub_id in sub_ids)


def direct_digest(subscription_id: str) -> bytes:
    """The 4 bytes a direct fan-out notes of a subscription it counted (``DIRECT_SUBS``): a subscription it did not
    count shares one of 100 such digests about once in 40 million, and a redelivery then takes it for counted."""
    return hashlib.blake2b(subscription_id.encode(), digest_size=_DIRECT_DIGEST_BYTES).digest()


def _wrote(counts: Mapping[str, Any], token: str) -> bool:
    """Whether an event's counts item holds ``token`` among the last updates made to it."""
    return any(counts.get(name) == token for name in RECENT_WRITES)


def _mismatch(event_id: str) -> IdempotencyConflictError:
    return IdempotencyConflictError(
        f"event {event_id} was already published with a different body under this id or idempotency key"
    )
