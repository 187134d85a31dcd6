"""Publishing an event: validate it against the catalog, store it once, hand it to the work queue.

An event with few routes (``direct_fanout_max``) skips the fan-out message: publishing reads its routes (two
small Queries, one page each) before it stores the event, whose item then names its subscriptions (up to
``COUNTED_FROM_DELIVERIES_MAX``: their deliveries are read, not counted, for its counters) and starts with that
one page's counts, and queues its deliveries (up to ten to a message, ``messages.pack``), so the webhook is one
queue hop from its subscribers. Such an event is never marked queued: a repeat of its publish reads which of its
deliveries are written, and queues the others again (``copies_to_requeue``). An event no route takes is stored
queued.
Larger fan-outs, and broadcasts, go through a fan-out message, whose worker reads the routes a page at a time:
publishing's own work stays bounded whatever the subscribers. A batch (``publish_many``) takes the same paths,
its events' messages sent together, each tenant's routes of a type read once for the batch and its deliveries of
several events packed together.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from herald import ids
from herald.catalog import PING_EVENT_TYPE, catalog, echoed
from herald.delivery_options.transforms import InvalidTransformError, dry_run, transform_from_stored
from herald.domain import subscriptions
from herald.errors import (
    HeraldError,
    IdempotencyConflictError,
    InvalidInputError,
    OutcomeUnknownError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    UnknownEventTypeError,
)
from herald.messages import DeliveriesMessage, DeliveryMessage, FanoutMessage, WorkMessage, pack
from herald.records import WILDCARD, Event, Trigger, utcnow
from herald.routing import matching
from herald.storage import EventExistsError
from herald.storage.events import COUNTED_FROM_DELIVERIES_MAX, COUNTED_WHEN_STORED, NewEvent

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from datetime import datetime

    from herald.catalog import EventType
    from herald.records import Subscription
    from herald.schemas import EventIn
    from herald.services import Services
    from herald.storage import Route, StoredEvent


logger = logging.getLogger(__name__)

#: How long after an event's publish a delivery queued again by a repeat of the publish (``copies_to_requeue``) is
#: held on the queue before it can be worked: the first try's copy, if it was queued, has been worked by then and its
#: delivery written (and shown to eventually consistent reads), so the second copy finds it and sends nothing.
#: Only a repeat within this time of the first try waits (the rest of it); the first try's copy is not delayed.
REQUEUE_AFTER_SECONDS = 60


@dataclass(frozen=True)
class Published:
    """What publishing did: the event as stored (the earlier one for a repeat), whether it was a repeat,
    and whether this call queued its fan-out."""

    stored: StoredEvent
    replayed: bool
    queued: bool


def envelope(event_type: str, timestamp: datetime, data: dict[str, Any]) -> str:
    """The exact body that is delivered and signed: ``{"type", "timestamp", "data"}``. Its data must be JSON: a
    catalog model that converts its input (a float field not declared finite, in a nested model of its own) must
    not make of it a number JSON cannot carry (NaN, Infinity), which is refused here, where the body is written."""
    stamp = timestamp.isoformat().replace("+00:00", "Z")
    try:
        return json.dumps(
            {"type": event_type, "timestamp": stamp, "data": data},
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
    except ValueError as exc:
        raise InvalidInputError(
            "data holds a number that is not finite once validated (NaN or Infinity, which JSON cannot carry)",
            details=[{"loc": ["body", "data"], "msg": "not valid JSON numbers", "type": "finite_number"}],
        ) from exc


def _at_item(error: HeraldError, index: int) -> HeraldError:
    """``error`` of one event of a batch, its details located in the batch's body (``body.events.<index>``):
    ``validate_data`` locates them in a single event's body."""
    for detail in error.details or ():
        loc = detail.get("loc")
        if isinstance(loc, list) and loc[:1] == ["body"]:
            detail["loc"] = ["body", "events", index, *loc[1:]]
    return error


def validate_data(event_type: str, data: Any, *, max_bytes: int) -> dict[str, Any]:
    if event_type == PING_EVENT_TYPE:
        # A test event is for one subscription (``send_test``): published, routing would send it to every ``*``
        # subscription, across tenants for a broadcast.
        raise UnknownEventTypeError(
            f"{PING_EVENT_TYPE} is the test event: send one with POST /v1/subscriptions/{{id}}/test",
            details=[{"loc": ["body", "type"], "msg": "the test event is not published", "type": "unknown_event_type"}],
        )
    entry = catalog.get(event_type)
    if entry is None:
        known = ", ".join(name for name in catalog.names() if name != PING_EVENT_TYPE)
        raise UnknownEventTypeError(
            f"unknown event type {echoed(event_type)!r}; known types: {known}",
            details=[
                {
                    "loc": ["body", "type"],
                    "msg": "not in the event catalog",
                    "type": "unknown_event_type",
                }
            ],
        )
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        size = len(text.encode())
    except ValueError as exc:  # NaN and Infinity: Python's JSON parser accepts them, JSON does not
        raise InvalidInputError(
            "data holds NaN or Infinity, which JSON cannot carry",
            details=[{"loc": ["body", "data"], "msg": "not valid JSON numbers", "type": "finite_number"}],
        ) from exc
    except RecursionError as exc:  # parsed a few frames up the stack, nested just short of the parser's limit
        raise InvalidInputError(
            "data is nested too deeply",
            details=[{"loc": ["body", "data"], "msg": "nested too deeply to be written back", "type": "too_deep"}],
        ) from exc
    if size > max_bytes:
        raise PayloadTooLargeError(f"event data is {size} bytes; the limit is {max_bytes}")
    validated = _validated(entry, text)
    # What is stored and delivered is the data as its schema gives it, each field it leaves out written with its
    # default: a list of small objects, each with a few optional fields, can grow many times over, past the
    # limit and past DynamoDB's 400 KB for an item, which would refuse the event on every retry.
    written = len(json.dumps(validated, separators=(",", ":"), ensure_ascii=False).encode())
    if written > max_bytes:
        raise PayloadTooLargeError(
            f"event data is {written} bytes with the defaults of {event_type}'s fields filled in; "
            f"the limit is {max_bytes}"
        )
    return validated


def _validated(entry: EventType, text: str) -> dict[str, Any]:
    """``text`` validated against ``entry``'s schema, as it is stored and delivered; its refusal as a 422."""
    try:
        return entry.validate_json(text)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors(include_url=False)):
            # Read back by pydantic's JSON parser, whose nesting limit (about 200) is below the request parser's.
            raise InvalidInputError(
                "data is nested too deeply",
                details=[{"loc": ["body", "data"], "msg": "nested too deeply to be read back", "type": "too_deep"}],
            ) from exc
        details = [
            {
                "loc": ["body", "data", *error["loc"]],
                "msg": error["msg"],
                "type": error["type"],
            }
            for error in exc.errors(include_url=False)
        ]
        raise InvalidInputError(f"data does not match the schema of {entry.name}", details=details) from exc
    except (ValueError, RecursionError) as exc:
        # A free-form field (``dict[str, Any]``) nested deeper than pydantic writes back ("Circular reference
        # detected (depth exceeded)"), though within the parser's limit.
        raise InvalidInputError(
            "data is nested too deeply",
            details=[{"loc": ["body", "data"], "msg": "nested too deeply to be written back", "type": "too_deep"}],
        ) from exc


def _data_bytes(event: Event) -> int:
    """The bytes of ``event``'s data as written in its payload: the payload less its envelope (``envelope``), which
    is the same around any data."""
    around = len(envelope(event.type, event.timestamp, {}).encode()) - len(b"{}")
    return len(event.payload.encode()) - around


def _fingerprint(body: EventIn) -> str:
    canonical = {
        "type": body.type,
        "data": body.data,
        "tenant_id": body.tenant_id,
        "broadcast": body.broadcast,
    }
    return ids.fingerprint(canonical)


def new_event(
    event_type: str,
    data: dict[str, Any],
    *,
    tenant_id: str | None,
    event_id: str | None = None,
    broadcast: bool = False,
    idempotency_key: str | None = None,
) -> Event:
    """An event record published now, with its exact delivered body (``payload``). Its time is to the
    millisecond: what its deliveries' ids hold (``ids.delivery_id``), so a window of them is exact."""
    now = utcnow()
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    return Event(
        id=event_id or ids.new_id(ids.EVENT),
        type=event_type,
        tenant_id=tenant_id,
        broadcast=broadcast,
        timestamp=now,
        data=data,
        payload=envelope(event_type, now, data),
        idempotency_key=idempotency_key,
        created_at=now,
    )


def publish(services: Services, body: EventIn, *, idempotency_key: str | None) -> Published:
    """Store the event (once per id and idempotency key) and queue its fan-out.

    A retry of the same request returns the original event. If the first request stored the event
    but failed to queue it, the retry queues it: an accepted event is never left undelivered.
    """
    data = validate_data(body.type, body.data, max_bytes=services.settings.max_event_data_bytes)
    event = new_event(
        body.type,
        data,
        tenant_id=body.tenant_id,
        event_id=body.id,
        broadcast=body.broadcast,
        idempotency_key=idempotency_key,
    )
    try:
        published = store_and_queue(services, event, fingerprint=_fingerprint(body))
    except NotQueuedError as unqueued:
        if body.id is not None and unqueued.stored.event.id != body.id:
            raise _key_reused(unqueued.stored, body.id) from None
        raise
    if body.id is not None and published.stored.event.id != body.id:
        # The key was used for another event with the same body: this request's event was not stored (its id
        # would be answered as unknown), so it is a reuse of the key for a different request, not a repeat.
        raise _key_reused(published.stored, body.id)
    return published


def _key_reused(stored: StoredEvent, event_id: str) -> IdempotencyConflictError:
    return IdempotencyConflictError(f"this idempotency key was used for event {stored.event.id}, not {event_id}")


def store_and_queue(services: Services, event: Event, *, fingerprint: str) -> Published:
    """The one way an event enters the system: store it once (by id and idempotency key), then queue
    its fan-out and mark it queued (an event counted when stored needs no mark). A repeat of an event that was
    stored but never marked (the first call failed in between) queues it now: the deliveries not written yet of
    one counted when stored (``copies_to_requeue``), any other through a fan-out message (``_Routed.again``); one
    marked queued is left alone. An event stored and not fully queued is a ``NotQueuedError`` naming it: its publish
    repeated with its id finishes it."""
    expires_at = event_expiry(services, event.created_at)
    routed = _Routed.of(services, event, routes={})
    try:
        stored = services.store.events.create(
            event,
            fingerprint=fingerprint,
            expires_at=expires_at,
            delivered_to=routed.delivered_to,
            **routed.starting_counts,
        )
    except OutcomeUnknownError:
        # Its answer names the id it was given: a repeat with that id publishes it once, where one without would
        # publish a second event and leave this one, should it be stored, never queued.
        raise MaybeStoredError(event.id) from None
    except EventExistsError as exists:
        earlier = exists.stored
        if earlier.enqueued:
            return Published(earlier, replayed=True, queued=False)
        if earlier.counted_when_stored:
            copies = copies_to_requeue(services, [earlier])
            if not all(services.queue.send_each(copies)):
                raise NotQueuedError(earlier) from None
            return Published(earlier, replayed=True, queued=bool(copies))
        with _not_queued(earlier):
            _enqueue(services, earlier, _Routed.again())
        return Published(earlier, replayed=True, queued=True)
    with _not_queued(stored):
        _enqueue(services, stored, routed)
    return Published(stored, replayed=False, queued=True)


@contextmanager
def _not_queued(stored: StoredEvent) -> Iterator[None]:
    """Queueing ``stored``: a failure is a ``NotQueuedError`` naming it (its publish without an id or a key would
    otherwise be answered without the id it was stored with, and published again as a new event)."""
    try:
        yield
    except NotQueuedError:
        raise
    except ServiceUnavailableError as failure:
        raise NotQueuedError(stored) from failure


def publish_many(services: Services, bodies: Sequence[EventIn | HeraldError]) -> list[Published | HeraldError]:
    """Publish a batch of events, each on its own: an item that is an error (it did not parse), or whose data
    does not validate, is answered with its error while the others are published. Each event is stored as
    ``publish`` stores it (once per id; new ids 25 to a call, ``EventRepository.create_many``), and queued as
    ``publish`` queues it: an event with few routes has its delivery messages queued here (the direct fan-out;
    the routes of a tenant and type are read once for the batch), any other its fan-out message. The messages of
    the whole batch (each tenant's deliveries packed up to ten to a message, across events) go ten to a
    SendMessageBatch, then the events not counted when stored are counted and marked queued, 25 to a call
    (one by one where that could not: ``_enqueue_many``). An event stored and not fully queued (a message of its
    SQS did not take, or its mark failed) is answered 503 on its own, as ``publish`` would be, with the event as
    stored (``NotQueuedError``): some of its deliveries may be on their way, and a repeat of it with its id queues
    what was not (of an event counted when stored, its deliveries not written yet), sending nothing twice. A
    delivery
    queued twice has one id: its second copy finds it done, unless both copies are worked at the same moment
    (the README's Duplicates row). An id given twice in one batch is
    queued once, its second copy answered as a replay of the first (or a conflict, with other data)."""
    results: list[Published | HeraldError | None] = []
    new: list[tuple[int, NewEvent, _Routed]] = []  # (position in results, the event to store, where it goes)
    routes: dict[tuple[str, str], list[Route] | None] = {}
    # The events' data as written, which the answer shows (each item's ``data``), within a request's size: data
    # that grows as its schema writes it (defaults filled in) would make an answer past Lambda's 6 MB, refused once
    # every event is published. The events past it are answered 413, before anything is stored. Data as sent that
    # does not grow fits, whatever its envelope (an event's type and time) adds.
    budget = services.settings.max_request_bytes
    for body in bodies:
        if isinstance(body, HeraldError):
            results.append(body)
            continue
        try:
            data = validate_data(body.type, body.data, max_bytes=services.settings.max_event_data_bytes)
            event = new_event(body.type, data, tenant_id=body.tenant_id, event_id=body.id, broadcast=body.broadcast)
            written = _data_bytes(event)
            if written > budget:
                raise PayloadTooLargeError(
                    f"the batch's events come to over {services.settings.max_request_bytes} bytes as their schemas "
                    "write their data (defaults filled in): publish this one in another batch"
                )
            budget -= written
        except HeraldError as error:
            results.append(_at_item(error, len(results)))
            continue
        routed = _Routed.of(services, event, routes)
        expires_at = event_expiry(services, event.created_at)
        stored_as = NewEvent(event, _fingerprint(body), expires_at, routed.delivered_to, routed.starting_counts)
        new.append((len(results), stored_as, routed))
        results.append(None)
    created = services.store.events.create_many([event for _, event, _ in new])
    to_queue: list[tuple[StoredEvent, _Routed]] = []
    to_requeue: dict[str, tuple[int, StoredEvent]] = {}  # by event id: (position in results, the event)
    queued_ids: set[str] = set()
    for (position, stored_as, this_try), outcome in zip(new, created, strict=True):
        if isinstance(outcome, EventExistsError):
            earlier = outcome.stored
            queue = not earlier.enqueued and earlier.event.id not in queued_ids  # not already by this batch
            results[position] = Published(earlier, replayed=True, queued=queue)
            if queue and earlier.counted_when_stored:  # its deliveries not written yet, queued again below
                to_requeue[earlier.event.id] = (position, earlier)
                queued_ids.add(earlier.event.id)
                continue
            routed = _Routed.again()  # stored by an earlier try
        elif isinstance(outcome, HeraldError):
            results[position] = (
                MaybeStoredError(stored_as.event.id) if isinstance(outcome, OutcomeUnknownError) else outcome
            )
            continue
        else:
            earlier, queue = outcome, outcome.event.id not in queued_ids
            results[position] = Published(outcome, replayed=not queue, queued=queue)
            routed = this_try
        if queue:
            to_queue.append((earlier, routed))
            queued_ids.add(earlier.event.id)
    requeue = [stored for _, stored in to_requeue.values()]
    requeued, unqueued = _enqueue_many(services, to_queue, requeue)
    for event_id, (position, stored) in to_requeue.items():
        results[position] = Published(stored, replayed=True, queued=event_id in requeued)
    return [_unless_unqueued(result, unqueued) for result in results if result is not None]


class NotQueuedError(ServiceUnavailableError):
    """An event stored and not fully queued: a message of its deliveries (or its fan-out) SQS did not take, or its
    mark failed after its messages went. Some of its deliveries may be on their way; a repeat of its publish with
    its id queues the rest, and sends nothing twice. Its answer names the event (``event_id``)."""

    def __init__(self, stored: StoredEvent) -> None:
        super().__init__(
            f"event {stored.event.id} is stored, and queueing it did not finish (some of its deliveries may be on "
            "their way): publish it again with this id to finish it; nothing is sent twice"
        )
        self.stored = stored
        self.event_id = stored.event.id


class MaybeStoredError(ServiceUnavailableError):
    """An event whose write went unanswered and could not be read back: it may be stored, and not queued. Its
    answer names the id it was given (``event_id``): a repeat of its publish with that id publishes it once."""

    def __init__(self, event_id: str) -> None:
        super().__init__(
            f"event {event_id} may have been stored (storage did not answer): publish it again with this id; it is "
            "published once (a 409 if the id is another event's)"
        )
        self.event_id = event_id


def _unless_unqueued(result: Published | HeraldError, unqueued: set[str]) -> Published | HeraldError:
    """A batch's answer for one of its events: ``NotQueuedError`` if this batch stored or found it and did not
    queue it fully."""
    if isinstance(result, Published) and result.stored.event.id in unqueued:
        return NotQueuedError(result.stored)
    return result


def _enqueue_many(
    services: Services, to_queue: Sequence[tuple[StoredEvent, _Routed]], requeue: Sequence[StoredEvent]
) -> tuple[set[str], set[str]]:
    """``_enqueue`` for a batch of events, each on its own, with the deliveries not written yet of the repeats in
    ``requeue`` (``copies_to_requeue``): all their messages sent together (``pack``, ``WorkQueue.send_each``: it
    stops at a call that fails, so an outage holds the request through botocore's retries once), then the events
    whose messages all went marked queued together (``EventRepository.mark_new``), one by one where that could
    not (``_Queueing.mark``). Returns the ids of the repeats with deliveries queued again, and those of the events
    not fully queued: a message of theirs SQS did not take (a packed message carries several events'
    deliveries), their mark failed, or, for a repeat, its deliveries could not be read. Each stays stored and
    unmarked, and a repeat of its publish queues what was not, as a single publish's repeat after its 503."""
    plans = [_Queueing.of(stored, routed) for stored, routed in to_queue]
    outgoing: list[tuple[WorkMessage, int]] = [
        (message, 0) for message in pack([m for plan in plans if not plan.delay_seconds for m in plan.messages])
    ]
    outgoing += [(message, plan.delay_seconds) for plan in plans if plan.delay_seconds for message in plan.messages]
    unqueued: set[str] = set()
    copies: list[tuple[DeliveryMessage, int]] = []
    try:
        copies = copies_to_requeue(services, requeue)
    except ServiceUnavailableError:  # their deliveries not read: none of them queued again
        logger.warning("deliveries not written yet not read", extra={"events": len(requeue)}, exc_info=True)
        unqueued |= {stored.event.id for stored in requeue}
    outgoing += copies
    for (message, _), sent in zip(outgoing, services.queue.send_each(outgoing), strict=True):
        if not sent:
            unqueued |= _events_of(message)
    to_mark = [plan for plan in plans if plan.needs_mark and plan.stored.event.id not in unqueued]
    marks = [(plan.stored.event.id, plan.stored.expires_at, plan.counts, plan.counted_subs) for plan in to_mark]
    for plan, marked in zip(to_mark, services.store.events.mark_new(marks), strict=True):
        if not marked:
            try:
                plan.mark(services)
            except ServiceUnavailableError:
                logger.warning("event not marked queued", extra={"event_id": plan.stored.event.id}, exc_info=True)
                unqueued.add(plan.stored.event.id)
    requeued = {message.event_id for message, _ in copies}
    return requeued, unqueued


def _events_of(message: WorkMessage) -> set[str]:
    """The ids of the events whose deliveries (or fan-out) ``message`` carries."""
    if isinstance(message, DeliveriesMessage):
        return {planned.event_id for planned in message.deliveries}
    if isinstance(message, DeliveryMessage | FanoutMessage):
        return {message.event_id}
    return set()


def copies_to_requeue(services: Services, events: Sequence[StoredEvent]) -> list[tuple[DeliveryMessage, int]]:
    """The copies to queue again of the deliveries not written yet of events counted when stored (never marked
    queued), whose publish is repeated, each with its ``DelaySeconds``: the first try may have stored them and never
    queued their deliveries (it failed in between), or queued them and they are not worked yet. Each goes under its
    one id, so a second copy finds its delivery written and sends nothing. Two guards keep two copies from both
    sending:

    - a copy queued again is held on the queue (``DelaySeconds``) until ``REQUEUE_AFTER_SECONDS`` after its
      event's publish, by when the first try's copy, if it was queued, has been worked;
    - it is marked ``resumed`` (one delivery to a message): the worker claims it with a conditional write
      before it sends, as it does a retry, so the copies of two repeats, which come out in the same second,
      never both send."""
    if not events:
        return []
    unwritten = services.store.events.unwritten_deliveries(events)
    copies: list[tuple[DeliveryMessage, int]] = []
    for stored in events:
        if stored.event.tenant_id is None:
            continue
        delay = _held_for(stored)
        for sub_id in unwritten[stored.event.id]:
            copies.append((DeliveryMessage.of(stored, stored.event.tenant_id, sub_id, resumed=True), delay))
    if copies:
        logger.info(
            "deliveries not written yet to be queued again",
            extra={
                "event_ids": sorted({message.event_id for message, _ in copies}),
                "deliveries": len(copies),
                "delay_seconds": max(delay for _, delay in copies),
            },
        )
    return copies


def event_retention(services: Services) -> timedelta:
    """How long an event is kept: the retention period, and never less than the last attempt of a delivery can
    take, plus a day (a delivery whose event is gone could not be sent). A delivery waits at most its retry
    schedule or, held without an attempt by its subscription's open breaker, until the subscription has been
    failing long enough to be disabled."""
    retention = timedelta(days=services.settings.event_ttl_days)
    retries = timedelta(seconds=services.retry_policy.longest_span_seconds)
    held = timedelta(hours=services.settings.disable_after_failing_hours)
    return max(retention, max(retries, held) + timedelta(days=1))


def event_expiry(services: Services, now: datetime) -> int:
    """When an event published ``now`` expires (``event_retention``)."""
    return int((now + event_retention(services)).timestamp())


def _enqueue(services: Services, stored: StoredEvent, routed: _Routed) -> None:
    plan = _Queueing.of(stored, routed)
    if plan.direct:
        services.queue.send_batch(pack(plan.messages))
    else:
        (fanout,) = plan.messages
        services.queue.send(fanout, delay_seconds=plan.delay_seconds)
    plan.mark(services)


def _held_for(stored: StoredEvent) -> int:
    """Seconds until ``REQUEUE_AFTER_SECONDS`` after ``stored``'s publish: how long a repeat's copy is held back."""
    since = (utcnow() - stored.event.created_at).total_seconds()
    return math.ceil(max(0.0, REQUEUE_AFTER_SECONDS - since))


@dataclass(frozen=True)
class _Routed:
    """Where an event goes, read before it is stored: the subscriptions it is delivered to by publishing itself
    (the direct fan-out) and how many routes its filters turned away, or, when its routes do not fit in
    ``direct_fanout_max`` (or it is a broadcast), None: a fan-out message finds them. Read first so that the
    event's item can name its few subscriptions (``delivered_to``), whose deliveries are then read, not
    counted, for its counters (``storage.events``)."""

    sub_ids: list[str] | None
    filtered: int = 0
    #: A repeat of a publish an earlier try stored and did not mark queued (``again``).
    repeat: bool = False

    @classmethod
    def of(cls, services: Services, event: Event, routes: dict[tuple[str, str], list[Route] | None]) -> _Routed:
        """``event``'s routing, its tenant's routes of its type read unless ``routes`` holds them (and kept
        there)."""
        if event.tenant_id is None:
            return cls(None)
        key = (event.tenant_id, event.type)
        if key not in routes:
            try:
                routes[key] = _direct_routes(services, *key)
            except ServiceUnavailableError:
                # DynamoDB refused after botocore's retries: the event takes a fan-out message, whose worker
                # reads the routes when DynamoDB answers again (the publish is not refused for them).
                logger.warning(
                    "routes not read; a fan-out message finds them",
                    extra={"tenant_id": key[0], "event_type": key[1], "event_id": event.id},
                    exc_info=True,
                )
                routes[key] = None
        routed = routes[key]
        if routed is None:
            return cls(None)
        sub_ids, filtered = _matched(event, routed)
        return cls(sub_ids, filtered)

    @classmethod
    def again(cls) -> _Routed:
        """The routing of an event stored by an earlier try and not marked queued: a fan-out message, whatever
        that try chose. Had it counted a fan-out message's pages (its mark failed after), a direct fan-out now
        would count the event's deliveries a second time; its pages, run again, are counted once (their
        markers), and a direct fan-out's count is one write with its mark, so it has not counted yet. It may still
        be under way: the repeat's fan-out message (``repeat``) notes itself on the counts item as it starts
        (``EventRepository.take_repeat_fanout``), which refuses that count should it come after, and does nothing
        if the count came first. The deliveries
        either try queued have the same ids: the second copy of each finds it done, once the first is worked; so
        the repeat's fan-out message is held back as ``copies_to_requeue`` holds a repeat's deliveries
        (``_Queueing.delay_seconds``): the two fan-outs are never worked at once, in parallel invocations, each
        queueing every delivery to be sent at the same moment."""
        return cls(None, repeat=True)

    @property
    def starting_counts(self) -> dict[str, Any]:
        """What the event's item starts with when it names its subscriptions (or has none to go to): its one
        direct page's counts, with no mark to come (``storage.events.COUNTED_WHEN_STORED``); an event that no
        route takes is stored queued. Else nothing: its counts are written as it is queued or fanned out."""
        if self.sub_ids is None or not self._names_them:
            return {}
        return {
            "matched": len(self.sub_ids),
            "filtered": self.filtered,
            "fanout_open": 0,
            COUNTED_WHEN_STORED: True,
            "enqueued": not self.sub_ids,
        }

    @property
    def delivered_to(self) -> list[str]:
        """The subscriptions the event's item names (``storage.events.DELIVERED_TO``): all it goes to, when
        publishing queues them and they are few enough; else none (its counters count its deliveries)."""
        if self.sub_ids is None or not self._names_them:
            return []
        return self.sub_ids

    @property
    def _names_them(self) -> bool:
        """Whether the event's item names the subscriptions publishing queues (at most
        ``COUNTED_FROM_DELIVERIES_MAX``); False when a fan-out message finds them."""
        return self.sub_ids is not None and len(self.sub_ids) <= COUNTED_FROM_DELIVERIES_MAX


@dataclass(frozen=True)
class _Queueing:
    """How an event is queued: the direct fan-out when its routes (its type's and ``*``'s) fit in
    ``direct_fanout_max`` (its delivery messages, then their count, which marks it queued in the same write),
    else one fan-out message (then the mark): more routes, or a broadcast.

    The messages are sent before the event is marked: a crash in between leaves it unmarked, and the
    publisher's retry queues them again (the same delivery ids: nothing is sent twice), counted once. An event
    counted when stored is not marked at all (``needs_mark``)."""

    stored: StoredEvent
    messages: list[DeliveryMessage | FanoutMessage]
    direct: bool
    matched: int = 0
    filtered: int = 0
    #: How long its messages are held on the queue (``DelaySeconds``): a repeat's, until ``REQUEUE_AFTER_SECONDS``
    #: after the event's publish (``_Routed.again``).
    delay_seconds: int = 0

    @classmethod
    def of(cls, stored: StoredEvent, routed: _Routed) -> _Queueing:
        """``stored``'s queueing, where ``routed`` says it goes."""
        event = stored.event
        if event.tenant_id is None or routed.sub_ids is None:
            fanout: list[DeliveryMessage | FanoutMessage] = [
                FanoutMessage(
                    event_id=event.id,
                    tenant_id=event.tenant_id,
                    event_ms=stored.event_ms,
                    repeat=routed.repeat or None,
                )
            ]
            return cls(stored, fanout, direct=False, delay_seconds=_held_for(stored) if routed.repeat else 0)
        messages: list[DeliveryMessage | FanoutMessage] = [
            DeliveryMessage.of(stored, event.tenant_id, sub_id) for sub_id in routed.sub_ids
        ]
        return cls(stored, messages, direct=True, matched=len(routed.sub_ids), filtered=routed.filtered)

    @property
    def needs_mark(self) -> bool:
        """Whether the event is to be marked queued once its messages are sent: not if it was stored counted (or
        stored queued, with nothing to send)."""
        return not (self.stored.counted_when_stored or self.stored.enqueued)

    @property
    def counts(self) -> dict[str, int]:
        """What marking the event queued adds to its counters: the direct fan-out's page (its one page closed)."""
        return {"matched": self.matched, "filtered": self.filtered, "fanout_open": -1} if self.direct else {}

    @property
    def counted_subs(self) -> list[str]:
        """The subscriptions marking the event queued counts in its ``matched`` (the direct fan-out's): noted on its
        counts item with the count, for a redelivery to tell them from those that never had the event."""
        return [message.subscription_id for message in self.messages if isinstance(message, DeliveryMessage)]

    def mark(self, services: Services) -> None:
        """Mark the event queued, once its messages are sent: with the direct fan-out's count, in one write, once
        (a retried publish whose earlier try got this far counts nothing)."""
        if not self.needs_mark:
            return
        event_id, expires_at = self.stored.event.id, self.stored.expires_at
        if self.direct:
            services.store.events.count_direct_fanout(
                event_id, expires_at=expires_at, sub_ids=self.counted_subs, **self.counts
            )
        else:
            services.store.events.mark_enqueued(event_id, expires_at=expires_at)


def _direct_routes(services: Services, tenant_id: str, event_type: str) -> list[Route] | None:
    """The routes of a tenant's events of ``event_type`` (its type's and ``*``'s), when they fit in
    ``direct_fanout_max``; None when there are more (or the direct fan-out is off)."""
    limit = services.settings.direct_fanout_max
    if limit <= 0:
        return None
    routed: list[Route] = []
    for route in dict.fromkeys([event_type, WILDCARD]):
        # One more than the routes left to take: a full page means too many (DynamoDB hands back a cursor
        # whenever a page is full, more items or not).
        budget = limit - len(routed) + 1
        page, cursor = services.store.subscriptions.routed(tenant_id, route, limit=budget, cursor=None)
        routed += page
        if len(page) >= budget or cursor is not None:
            return None
    return routed


def _matched(event: Event, routed: list[Route]) -> tuple[list[str], int]:
    """The subscriptions ``event`` goes to among its routes (each once: one routed under the event's type and
    under ``*`` is sent once), and how many routes its filters turned away."""
    matched, filtered = matching(event, routed)
    return list(dict.fromkeys(matched)), filtered


def _check_transform_on(expression: str, event: Event) -> None:
    """``InvalidTransformError`` (at the subscription's ``transform``) unless the transform gives a body for
    ``event``, as the delivery would apply it."""
    try:
        dry_run(transform_from_stored(expression), {event.type: json.loads(event.payload)}, loc=("transform",))
    except InvalidTransformError as exc:
        raise InvalidTransformError(
            f"the subscription's transform gives no body for the test event, so its delivery would fail without a "
            f"request: {exc.message}. Make it give an object or array for `{event.type}` too, e.g. "
            f"`type == '{event.type}' && @ || (<your expression>)`",
            details=[{**detail, "loc": ["transform"]} for detail in exc.details or ()],
        ) from None


def send_test(services: Services, sub: Subscription) -> tuple[Event, str]:
    """Send the built-in ping event to one subscription, through the real delivery path. It skips the
    fan-out: stored as matched and queued, with its one delivery message queued directly. A transform that
    fails on the ping (it was checked on the subscribed types' examples only) is an ``InvalidTransformError``,
    not a test whose delivery is sure to fail without a request. A disabled subscription receives nothing, a test
    included: a ``ConflictError``, as a retry of its delivery is."""
    subscriptions.require_enabled(sub)
    data = catalog.get(PING_EVENT_TYPE).validate(  # type: ignore[union-attr]
        {"message": "Test delivery from Herald.", "subscription_id": sub.id}
    )
    event = new_event(PING_EVENT_TYPE, data, tenant_id=sub.tenant_id)
    if sub.transform:
        _check_transform_on(sub.transform, event)
    try:
        stored = services.store.events.create(
            event,
            fingerprint=event.id,
            expires_at=event_expiry(services, event.created_at),
            enqueued=True,
            matched=1,
            fanout_open=0,
            delivered_to=[sub.id],
        )
        services.queue.send(DeliveryMessage.of(stored, sub.tenant_id, sub.id, trigger=Trigger.TEST))
    except ServiceUnavailableError:
        # Stored (or perhaps: its write's answer lost) and not queued: the test event is withdrawn, so that no event
        # shows a test delivery pending for good. A message sent all the same (its answer lost) that a worker takes
        # after the withdrawal finds no event and is dropped; one taken before it is sent, its delivery then listed
        # without its event. A write that lands after the withdrawal (a request delayed past botocore's retries)
        # stays, pending. The answer is a 503: the tenant sends another test.
        with suppress(ServiceUnavailableError):
            services.store.events.withdraw(event.id)
        raise
    return event, stored.delivery_id(sub.id)
