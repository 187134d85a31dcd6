"""Messages on the work queue. Each carries ids only (a ``NoticeMessage``, the few fields of what it reports), a
``kind`` and a version ``v``, so the format can evolve while old messages drain.

Fields this code does not know are ignored, and carried along: a newer version adds a field only where older code
may ignore it (it then works the message as before the field existed), so that a worker one version behind, during
a deploy or after a rollback, keeps delivering instead of parking the newer messages in the dead-letter queue, and
a copy it makes (a retry, a postponement, a hand-over) keeps the field for the newer code that meets it next. The
deliveries a ``DeliveriesMessage`` stands for (``each``) keep only what this code knows of them. A change older code
must not ignore comes with a new ``v``, or a new ``kind``, which older code parks (``PoisonMessageError``) for a
redrive once the new code runs (``KINDS`` and ``VERSION`` are what this code reads)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, model_validator

from herald import ids
from herald.records import Trigger

if TYPE_CHECKING:
    from herald.records import Delivery
    from herald.storage import StoredEvent


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, validate_by_name=True, validate_by_alias=True)

    v: Literal[1] = 1


class FanoutMessage(_Message):
    """Find the subscriptions an event goes to, one page at a time, and queue a delivery for each.

    ``tenant_id`` None is a broadcast: the page is over tenants and queues one fan-out per tenant.
    ``route`` is the subscription index being read (the event's type, then ``*``); ``cursor`` is
    where the previous page stopped.
    """

    kind: Literal["fanout"] = "fanout"
    event_id: str
    tenant_id: str | None = None  # a default, not just optional: dump_message leaves None out
    route: str | None = None
    cursor: str | None = Field(None, max_length=4096)
    #: The event's creation time (epoch milliseconds): an id published again once its event expired names a new
    #: event, which a message of the old one (redriven from the dead-letter queue days on) leaves alone. None in a
    #: message queued before messages carried it (then left out of the JSON).
    event_ms: int | None = None
    #: The first message of a repeat's fan-out (``publishing._Routed.again``): it does nothing if the earlier try's
    #: direct fan-out counted the event, and else keeps that count from coming after
    #: (``EventRepository.take_repeat_fanout``). None (left out of the JSON) for any other.
    repeat: bool | None = None


#: Triggers of one extra attempt on an existing delivery, outside its retry schedule.
SINGLE_SHOT_TRIGGERS = frozenset({Trigger.MANUAL, Trigger.RECOVER})


class DeliveryMessage(_Message):
    """Deliver one event to one subscription. Retries reuse the message (its visibility is the backoff)."""

    kind: Literal["delivery"] = "delivery"
    event_id: str
    tenant_id: str
    subscription_id: str
    #: The delivery's id (``StoredEvent.delivery_id``). A message queued before messages named it carries on a
    #: delivery of the older kind, whose id is the pair's digest: that id is filled in when it is read from JSON.
    delivery_id: str
    trigger: Trigger = Trigger.SCHEDULED
    #: The recovery or redelivery job whose ticket this message carries: the one extra attempt it may make
    #: (see herald.worker.jobs). Named ``recovery_id`` on the queue, from when only recoveries had tickets.
    job_id: str | None = Field(None, alias="recovery_id")
    #: A copy that carries a delivery on (a retry, a postponement), one queued again by a repeated publish
    #: (``domain.publishing.copies_to_requeue``), or a redelivery's first delivery (``worker.jobs``): its delivery, if
    #: written, is read strongly before it is claimed with a lease, never sent on a first receive's batch read
    #: alone. Left out of the JSON when false.
    resumed: bool | None = None
    #: ``slow``: the message goes to the slow lane's queue (``herald.worker.lanes``). Left out when none.
    lane: Literal["slow"] | None = None
    #: A manual retry's: the delivery's attempts when it was asked for. A copy of the message that finds more
    #: made (its own attempt, by another copy; or one made since) is done without one. Left out when none.
    attempts_seen: int | None = None

    @classmethod
    def of(
        cls,
        stored: StoredEvent,
        tenant_id: str,
        subscription_id: str,
        *,
        trigger: Trigger = Trigger.SCHEDULED,
        job_id: str | None = None,
        resumed: bool = False,
    ) -> DeliveryMessage:
        """The message of ``stored``'s delivery to a subscription of ``tenant_id``, naming that delivery;
        ``resumed``: claimed with a lease before it is sent (see the field)."""
        return cls(
            event_id=stored.event.id,
            tenant_id=tenant_id,
            subscription_id=subscription_id,
            delivery_id=stored.delivery_id(subscription_id),
            trigger=trigger,
            job_id=job_id,
            resumed=resumed or None,
        )

    @classmethod
    def for_delivery(
        cls, delivery: Delivery, *, trigger: Trigger, job_id: str | None = None, attempts_seen: int | None = None
    ) -> DeliveryMessage:
        """The message of one more attempt of an existing ``delivery`` (a manual retry, a recovery's)."""
        return cls(
            event_id=delivery.event_id,
            tenant_id=delivery.tenant_id,
            subscription_id=delivery.subscription_id,
            delivery_id=delivery.id,
            trigger=trigger,
            job_id=job_id,
            attempts_seen=attempts_seen,
        )

    @property
    def carries_schedule(self) -> bool:
        """Whether this message carries its delivery along the retry schedule (its next attempt), not one extra
        attempt outside it: a manual retry's, a recovery's, or one a job's ticket allows."""
        return self.job_id is None and self.trigger not in SINGLE_SHOT_TRIGGERS

    @model_validator(mode="before")
    @classmethod
    def _digest_id_of_older_messages(cls, data: Any, info: ValidationInfo) -> Any:
        if info.mode != "json" or not isinstance(data, dict):
            return data  # made by this code, which names the delivery
        if "delivery_id" not in data and {"event_id", "subscription_id"} <= data.keys():
            data = {**data, "delivery_id": ids.delivery_id(str(data["event_id"]), str(data["subscription_id"]))}
        return data


class PlannedDelivery(BaseModel):
    """One first delivery a ``DeliveriesMessage`` carries: an event to a subscription, under the delivery's id."""

    model_config = ConfigDict(extra="allow", frozen=True)

    event_id: str
    subscription_id: str
    delivery_id: str


#: First deliveries one message carries at most: with the work queue's batches of 10 messages, an invocation
#: works up to 100 deliveries (the batch the worker is measured at, ``batch_wall_time``).
MAX_DELIVERIES_PER_MESSAGE = 10


class DeliveriesMessage(_Message):
    """First deliveries of one tenant's events, up to ``MAX_DELIVERIES_PER_MESSAGE``: what publishing and the
    fan-out queue, so that SQS's requests and the worker's per-batch reads and writes are paid once for several
    webhooks. The worker works each as the ``DeliveryMessage`` it stands for (``each``); anything that follows a
    first attempt (a retry, a postponement, a hand-over to the slow lane) is a message of its own."""

    kind: Literal["deliveries"] = "deliveries"
    tenant_id: str
    deliveries: list[PlannedDelivery] = Field(min_length=1, max_length=MAX_DELIVERIES_PER_MESSAGE)

    def each(self) -> list[DeliveryMessage]:
        """The delivery messages this one stands for, in its order."""
        return [
            DeliveryMessage(
                event_id=planned.event_id,
                tenant_id=self.tenant_id,
                subscription_id=planned.subscription_id,
                delivery_id=planned.delivery_id,
            )
            for planned in self.deliveries
        ]


class PurgeTenantMessage(_Message):
    """Delete what remains of a deleted tenant (its subscriptions and their routing entries)."""

    kind: Literal["purge_tenant"] = "purge_tenant"
    tenant_id: str


class RevokeKeysMessage(_Message):
    """Revoke a tenant's API keys issued before ``older_than`` (an ``ak_`` id) once more: a rotation's
    (``revoke_existing``) revocation listed them through an index, whose read may miss a key issued a moment
    before."""

    kind: Literal["revoke_keys"] = "revoke_keys"
    tenant_id: str
    older_than: str
    #: The hash of the rotation's new key (a SHA-256 of 256 random bits, which reveals nothing of it): the revocation
    #: is made only while that key is there. A rotation answered 503 deletes its new key, never shown, and this
    #: message, which SQS may have taken though its answer was lost, then revokes nothing.
    new_key_hash: str | None = None


class RecoverMessage(_Message):
    """A recovery job (``rcv_``): re-send a subscription's failed deliveries of a window, a page at a time;
    ``cursor`` is where the previous page stopped."""

    kind: Literal["recover"] = "recover"
    job_id: str
    cursor: str | None = Field(None, max_length=4096)


class RedeliverMessage(_Message):
    """A redelivery job (``rdl_``): one more attempt of an event to each subscription it goes to, a page at
    a time. ``tenant_id`` None is a broadcast's page of tenants; ``route`` and ``cursor`` as for a fan-out."""

    kind: Literal["redeliver"] = "redeliver"
    job_id: str
    event_id: str
    tenant_id: str | None = None
    route: str | None = None
    cursor: str | None = Field(None, max_length=4096)
    #: The event's creation time (epoch milliseconds): an id published again once its event expired names a new
    #: event, which a message of the old one (redriven from the dead-letter queue days on) leaves alone. None in a
    #: message queued before messages carried it (then left out of the JSON).
    event_ms: int | None = None
    #: How often this tenant's page waited for the event's fan-out to finish (``jobs.run_redelivery``); None at first.
    fanout_waits: int | None = None


class NoticeMessage(_Message):
    """Publish an operational event (``herald.domain.operational.emit``) that the worker which saw what it reports
    could not publish: AWS refused it on each try, or the invocation had no time left to try again. The queue keeps
    it until it is published (SQS shows it again while it fails, and the dead-letter queue takes it if it keeps
    failing). It carries the event's data, not ids: what it reports (an attempt's status code, a reason) is stored
    nowhere else. The event's id is made of ``event_type`` and ``key``, so a notice published twice is published
    once."""

    kind: Literal["notice"] = "notice"
    event_type: str = Field(max_length=200)
    data: dict[str, Any]
    key: list[str] = Field(max_length=8)


WorkMessage = (
    FanoutMessage
    | DeliveryMessage
    | DeliveriesMessage
    | PurgeTenantMessage
    | RevokeKeysMessage
    | RecoverMessage
    | RedeliverMessage
    | NoticeMessage
)
QueueMessage = Annotated[WorkMessage, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[WorkMessage] = TypeAdapter(QueueMessage)


#: The kinds of work message this code reads, and the version: a message naming another is of other code.
KINDS = frozenset(str(model.model_fields["kind"].default) for model in WorkMessage.__args__)
VERSION = 1


class PoisonMessageError(Exception):
    """A queue message that can never be processed (not JSON, unknown kind or version, bad fields)."""


def problems(exc: ValidationError) -> list[Any]:
    """What a reason or a log line says of a validation error: its first problems, without the input pydantic quotes
    in its text (a body that is no JSON, up to 256 KiB; a notice's data, a subscriber's URL among it)."""
    return exc.errors(include_url=False, include_input=False)[:3]


def parse_message(body: str) -> WorkMessage:
    try:
        return _ADAPTER.validate_json(body)
    except ValidationError as exc:
        raise PoisonMessageError(f"unreadable work message: {problems(exc)}") from exc


def dump_message(message: WorkMessage) -> str:
    return message.model_dump_json(exclude_none=True, by_alias=True)


def sendable_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, each that UTF-8 cannot carry (a lone surrogate, which a JSON body may
    name as an escape, ``"\\ud800"``) written as its escape: what SQS attributes, logs and JSON answers can hold."""
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


#: The fields of a work message a log line names (``described``): its version, kind, ids, type and route.
_DESCRIBED_FIELDS = (
    "v",
    "kind",
    "tenant_id",
    "event_id",
    "subscription_id",
    "delivery_id",
    "job_id",
    "recovery_id",
    "event_type",
    "route",
    "lane",
)
#: The most characters of one field ``described`` keeps (ids are far shorter; a field of other code may not be).
_DESCRIBED_CHARS = 200


def described(body: str) -> dict[str, Any]:
    """What a log line may say of a work message's body, read or not: its size, and its kind and ids where it has
    them; never its data. A notice carries a subscriber's URL (whose path or query may hold its own secret), and a
    message of other code may carry anything."""
    summary: dict[str, Any] = {"bytes": len(body.encode(errors="replace"))}
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return summary
    if not isinstance(raw, dict):
        return summary
    for name in _DESCRIBED_FIELDS:
        value = raw.get(name)
        if isinstance(value, str):  # a lone surrogate written as its escape: a log line must be encodable
            summary[name] = sendable_text(value, _DESCRIBED_CHARS)
        elif isinstance(value, int) and not isinstance(value, bool):
            summary[name] = value
    if isinstance(raw.get("deliveries"), list):
        summary["deliveries"] = len(raw["deliveries"])
    return summary


def deliveries_of(message: WorkMessage) -> list[DeliveryMessage]:
    """The deliveries a work message stands for: itself, those it carries, or none (not a delivery)."""
    if isinstance(message, DeliveriesMessage):
        return message.each()
    return [message] if isinstance(message, DeliveryMessage) else []


def _packable(message: DeliveryMessage) -> bool:
    """A plain first delivery: scheduled, of no job, not ``resumed`` (a copy carrying a delivery on or queued
    again), for the work queue."""
    return (
        message.trigger is Trigger.SCHEDULED and message.job_id is None and not message.resumed and message.lane is None
    )


def pack(messages: Sequence[WorkMessage]) -> list[WorkMessage]:
    """``messages`` with their plain first deliveries packed, each tenant's in order, up to
    ``MAX_DELIVERIES_PER_MESSAGE`` to a ``DeliveriesMessage`` (a delivery left alone stays as it is); every
    other message as it is, after them."""
    by_tenant: dict[str, list[DeliveryMessage]] = {}
    others: list[WorkMessage] = []
    for message in messages:
        if isinstance(message, DeliveryMessage) and _packable(message):
            by_tenant.setdefault(message.tenant_id, []).append(message)
        else:
            others.append(message)
    packed: list[WorkMessage] = []
    for tenant_id, deliveries in by_tenant.items():
        for start in range(0, len(deliveries), MAX_DELIVERIES_PER_MESSAGE):
            chunk = deliveries[start : start + MAX_DELIVERIES_PER_MESSAGE]
            if len(chunk) == 1:
                packed.append(chunk[0])
                continue
            planned = [
                PlannedDelivery(event_id=m.event_id, subscription_id=m.subscription_id, delivery_id=m.delivery_id)
                for m in chunk
            ]
            packed.append(DeliveriesMessage(tenant_id=tenant_id, deliveries=planned))
    return packed + others
