"""The event catalog: every event type Herald can send, declared once as a pydantic model.

This is the module an operator edits. Each event type is one model whose docstring documents it,
registered with ``@catalog.event("dotted.name", example={...})``. That single declaration drives:

- validation of published payloads (``POST /v1/events``),
- the catalog listing (``GET /v1/event-types``),
- the OpenAPI 3.1 ``webhooks`` section shown in ``/docs`` and ``/redoc``, with the full delivered
  body (the Standard Webhooks envelope ``type``, ``timestamp``, ``data``) and the signature headers.

Adding an event type is adding one model below. (The module is a little over 400 lines on purpose: the catalog's
machinery and the catalog an operator edits stay together, so adding an event type touches one file.)

Operational events (``operational_catalog``) are a second, fixed catalog: Herald itself sends them to
the operator's endpoints (``/v1/operator/webhooks``) when a subscription is disabled or recovers and
when a delivery is failing or exhausted. They are documented in the same ``webhooks`` section, but
tenants can neither publish nor subscribe to them: they are not in ``catalog``.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, is_dataclass
from datetime import date, datetime
from functools import cached_property
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Literal,
    NotRequired,
    Required,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel, create_model
from pydantic.fields import FieldInfo

from herald.errors import UnknownEventTypeError
from herald.records import WILDCARD

if TYPE_CHECKING:
    # FastAPI is imported only where the docs are built: the delivery function validates and sends
    # events from this catalog but never serves HTTP, and must not pay for importing FastAPI.
    from fastapi import APIRouter

#: Event type names: lower-case dotted words, e.g. ``invoice.paid``.
EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")

#: The built-in test event, sent by ``POST /v1/subscriptions/{id}/test``.
PING_EVENT_TYPE = "herald.ping"

_SIGNATURE_DOC = (
    "Every delivery is signed following [Standard Webhooks](https://www.standardwebhooks.com/): "
    "verify `webhook-signature` against `{webhook-id}.{webhook-timestamp}.{raw body}` with your "
    "subscription's `whsec_` secret (HMAC-SHA256), reject timestamps older than 5 minutes, and use "
    "`webhook-id` to drop duplicates."
)

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Any 2xx answer within the timeout acknowledges the delivery."},
    410: {"description": "Gone: Herald disables the subscription and stops retrying."},
    "default": {
        "description": "Anything else (3xx included: redirects are never followed) is retried on the "
        "schedule, for more than a day."
    },
}


class EventData(BaseModel):
    """Base of every event payload: unknown fields are refused, so typos never reach subscribers, and a number
    field takes finite numbers only (pydantic would read the strings ``"Infinity"``, ``"NaN"`` or ``"1e999"`` as
    floats JSON cannot carry)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _models_within(
    annotation: Any, seen: set[tuple[type, bool]] | None = None, *, holder_forbids: bool = True
) -> Iterator[tuple[type, bool]]:
    """Every pydantic model, dataclass and ``TypedDict`` a field's type holds, itself included, however nested
    (lists, unions, dicts, ``Annotated``, a ``RootModel``'s root, a generic one's parameters and fields), each once
    for each rule of what holds it (whether that refuses unknown fields: a plain dataclass or a ``TypedDict``
    follows it)."""
    seen = set() if seen is None else seen
    origin = get_origin(annotation)
    cls = annotation if isinstance(annotation, type) else origin if isinstance(origin, type) else None
    fields = _fields(cls) if cls is not None else None
    rule = holder_forbids
    if cls is not None and fields is not None:
        rule = _forbids(cls, holder_forbids)  # a generic's parameters are held by it, as its fields are
        if (cls, holder_forbids) not in seen:
            seen.add((cls, holder_forbids))
            yield cls, holder_forbids
            for field in fields.values():
                yield from _models_within(field.annotation, seen, holder_forbids=rule)
    for argument in get_args(annotation):  # each use's own (Box[int], then Box[Item]), however often cls is seen
        yield from _models_within(argument, seen, holder_forbids=rule)


def _fields(cls: type) -> dict[str, FieldInfo] | None:
    """The fields of a pydantic model, or of a dataclass or ``TypedDict`` pydantic validates; None for any other
    type."""
    if issubclass(cls, BaseModel):
        return cls.model_fields
    if not is_dataclass(cls) and not is_typeddict(cls):
        return None
    found: dict[str, FieldInfo] | None = getattr(cls, "__pydantic_fields__", None)
    if found is not None:
        return found
    try:
        hints = get_type_hints(cls, include_extras=True)
    except Exception:  # an annotation that does not resolve: nothing to look into
        hints = {}
    return {name: FieldInfo.from_annotation(_required_or_not(hint)) for name, hint in hints.items()}


def _required_or_not(hint: Any) -> Any:
    """A ``TypedDict`` key's type without its ``Required`` or ``NotRequired``."""
    return get_args(hint)[0] if get_origin(hint) in (Required, NotRequired) else hint


def _forbids(cls: type, holder_forbids: bool) -> bool:
    """Whether validating ``cls`` refuses unknown fields: a model's or pydantic dataclass's own configuration says; a
    ``RootModel`` holds no fields and leaves what it holds to pydantic's default (dropped); a plain dataclass or a
    ``TypedDict`` follows what holds it, unless its own configuration (``pydantic.with_config``) says."""
    if issubclass(cls, RootModel):
        return False
    config = cls.model_config if issubclass(cls, BaseModel) else getattr(cls, "__pydantic_config__", None)
    return holder_forbids if config is None else config.get("extra") == "forbid"


def _unfit(cls: type, holder_forbids: bool) -> str | None:
    """Why an event's data may not hold ``cls`` (a model, dataclass or ``TypedDict`` within it, held by something
    refusing unknown fields or not), or None: each object must refuse unknown fields (pydantic's default drops them:
    a publisher's typo would vanish), and each field must be published under the name it is delivered and
    documented under."""
    if not issubclass(cls, RootModel) and not _forbids(cls, holder_forbids):
        fix = (
            "derive it from EventData, or give it model_config = ConfigDict(extra='forbid')"
            if issubclass(cls, BaseModel)
            else "decorate it with @pydantic.with_config(ConfigDict(extra='forbid'))"
        )
        return f"{cls.__name__} must refuse unknown fields: {fix}"
    for name, field in (_fields(cls) or {}).items():
        published = field.validation_alias if field.validation_alias is not None else field.alias or name
        delivered = field.serialization_alias or field.alias or name
        if published != delivered:
            return (
                f"{cls.__name__}.{name} is published as {published!r} and delivered as {delivered!r}: give it one "
                "name (alias=...)"
            )
    return None


@dataclass(frozen=True)
class EventType:
    """One entry of the catalog."""

    name: str
    model: type[EventData]
    example: dict[str, Any]

    @property
    def description(self) -> str:
        return inspect.cleandoc(self.model.__doc__ or "")

    @property
    def summary(self) -> str:
        return self.description.split("\n", 1)[0].strip() or self.name

    @property
    def envelope_name(self) -> str:
        """The delivered body's schema name in the OpenAPI document."""
        return "".join(part.capitalize() for part in re.split(r"[._]", self.name)) + "Webhook"

    @cached_property
    def envelope(self) -> type[BaseModel]:
        """The delivered body, ``{"type", "timestamp", "data"}``, as a model: for the documentation only, so
        built when the documentation is (not on a delivery function's cold start)."""
        return _envelope(self.name, self.envelope_name, self.model, self.example)

    @cached_property
    def schema(self) -> dict[str, Any]:
        """The payload's JSON Schema (built once: models do not change at run time)."""
        return self.model.model_json_schema()

    def json_schema(self) -> dict[str, Any]:
        return copy.deepcopy(self.schema)

    def validate(self, data: Any) -> dict[str, Any]:
        """The payload as it will be delivered, each field under its name in the documented schema (its alias, if
        it has one); raises ``pydantic.ValidationError`` if it does not fit. For data Herald builds itself (a test
        event, an operational event), Python values in."""
        return self.model.model_validate(data).model_dump(mode="json", by_alias=True)

    def validate_json(self, text: str) -> dict[str, Any]:
        """A publisher's data, as JSON: each value must be of its field's JSON type, as the type's JSON Schema (the
        documented ``webhooks``) says: no string for a number, no number for a date, no ``true`` for 1, which
        pydantic's lax mode would turn into what the schema allows and deliver. Dates and date-times are strings
        in JSON, and stay accepted as such. Delivered as ``validate`` gives it. Raises ``pydantic.ValidationError``."""
        return self.model.model_validate_json(text, strict=True).model_dump(mode="json", by_alias=True)

    @property
    def operation_id(self) -> str:
        """The webhook's operation in the OpenAPI document."""
        return f"webhook_{self.name.replace('.', '_')}"


class EventCatalog:
    """The registry of event types; see the module docstring."""

    def __init__(self, *, tag: str | None = None) -> None:
        self._types: dict[str, EventType] = {}
        #: The documentation tag of all its webhooks (default: each type's first word).
        self.tag = tag

    def event[M: EventData](self, name: str, *, example: dict[str, Any]) -> Callable[[type[M]], type[M]]:
        """Register the decorated model as event type ``name``, with an example payload."""
        if not EVENT_TYPE_PATTERN.fullmatch(name):
            raise ValueError(f"event type {name!r} must be lower-case dotted words, e.g. 'invoice.paid'")

        def register(model: type[M]) -> type[M]:
            if name in self._types:
                raise ValueError(f"event type {name!r} is declared twice")
            declared = EventType(name, model, example)
            documented_as = {declared.operation_id, declared.envelope_name}  # the webhook, and its body's schema
            for other in self._types.values():
                if same := documented_as & {other.operation_id, other.envelope_name}:
                    raise ValueError(
                        f"event types {other.name!r} and {name!r} would both be documented as {min(same)}: rename one"
                    )
            for nested, holder_forbids in _models_within(model):
                if (unfit := _unfit(nested, holder_forbids)) is not None:
                    raise ValueError(f"event type {name!r}: {unfit}")
            # A wrong example is a bug in the catalog: fail at import. Checked as a publisher's data is (strict JSON
            # types): the example is documented in `webhooks` and is what a publisher copies.
            declared.validate_json(json.dumps(example))
            self._types[name] = declared
            return model

        return register

    def get(self, name: str) -> EventType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def __iter__(self) -> Iterator[EventType]:
        return iter(self._types[name] for name in self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def check_subscribed(self, event_types: list[str], *, refused: str, absent: str, known_also: str = "") -> list[str]:
        """``event_types`` as kept (``*`` alone if it is one of them: every type) if each is ``*`` or a type of this
        catalog, else ``UnknownEventTypeError`` naming the others, ``*`` beside them or not: "``refused``: a, b;
        known: ...``known_also``", and per name "'a' ``absent``"."""
        unknown = [name for name in event_types if name != WILDCARD and name not in self]
        if unknown:
            raise UnknownEventTypeError(
                f"{refused}: {', '.join(unknown)}; known: {', '.join(self.names())}{known_also}",
                details=[
                    {"loc": ["body", "event_types"], "msg": f"{name!r} {absent}", "type": "unknown_event_type"}
                    for name in unknown
                ],
            )
        return [WILDCARD] if WILDCARD in event_types else event_types

    def webhook_types(self, *, include: Sequence[EventCatalog] = ()) -> list[tuple[EventCatalog, EventType]]:
        """Every event type of this catalog and of the ``include``d ones, with its catalog; ``ValueError`` if a name
        is declared in two of them."""
        entries = [(self, event_type) for event_type in self]
        entries += [(other, event_type) for other in include for event_type in other]
        names = [event_type.name for _, event_type in entries]
        if twice := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(
                f"event types declared in two catalogs: {', '.join(twice)} (the operational events' names, "
                f"{', '.join(sorted(event_type.name for other in include for event_type in other))}, are taken)"
            )
        envelopes = [event_type.envelope_name for _, event_type in entries]
        if clash := sorted({envelope for envelope in envelopes if envelopes.count(envelope) > 1}):
            raise ValueError(f"event types of two catalogs documented as the same webhook body: {', '.join(clash)}")
        return entries

    def webhooks_router(self, *, include: Sequence[EventCatalog] = ()) -> APIRouter:
        """An ``APIRouter`` for ``FastAPI(webhooks=...)``: one documented webhook per event type, of this
        catalog and of the ``include``d ones (event type names must not repeat across them)."""
        from fastapi import APIRouter

        router = APIRouter()
        for owner, event_type in self.webhook_types(include=include):
            router.add_api_route(
                event_type.name,
                _webhook_endpoint(event_type),
                methods=["POST"],
                summary=event_type.summary,
                description=f"{event_type.description}\n\n{_SIGNATURE_DOC}",
                operation_id=event_type.operation_id,
                responses=_RESPONSES,
                response_description=str(_RESPONSES[200]["description"]),
                tags=[owner.tag or event_type.name.split(".", 1)[0]],
            )
        return router


def _envelope(name: str, title: str, model: type[EventData], example: dict[str, Any]) -> type[BaseModel]:
    """The delivered body of one event type: ``{"type", "timestamp", "data"}``."""
    return create_model(
        title,
        __config__=ConfigDict(
            json_schema_extra={"examples": [{"type": name, "timestamp": "2026-01-01T12:00:00Z", "data": example}]}
        ),
        __doc__=f"The body delivered for `{name}` events.",
        type=(Literal[name], Field(description="The event type.")),
        timestamp=(
            datetime,
            Field(description="When the event happened (ISO 8601, UTC)."),
        ),
        data=(
            model,
            Field(description=model.__doc__ and inspect.cleandoc(model.__doc__).split("\n")[0]),
        ),
    )


def _webhook_endpoint(event_type: EventType) -> Callable[..., None]:
    """A documentation-only endpoint whose signature is the webhook's body and headers."""
    from fastapi import Header

    def endpoint(
        **_: Any,
    ) -> None:  # pragma: no cover - webhooks are documented, never served
        return None

    headers = {
        "webhook_id": "Unique id of the message; the same on every retry. Use it to drop duplicates.",
        "webhook_timestamp": "Unix time (seconds) of this attempt. Reject if too far from your clock.",
        "webhook_signature": "Space-separated `v1,<base64 HMAC-SHA256>` signatures, one per valid secret.",
    }
    parameters = [
        inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=event_type.envelope),
        *(
            inspect.Parameter(
                header,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[str, Header(description=description)],
            )
            for header, description in headers.items()
        ),
    ]
    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    endpoint.__name__ = f"webhook_{event_type.name.replace('.', '_')}"
    return endpoint


catalog = EventCatalog()
operational_catalog = EventCatalog(tag="operational")


# --- Operational events: Herald's own, to the operator. ----------------------------------------------

OPERATIONAL_EXAMPLE_IDS = {
    "tenant_id": "tnt_01jb0000000000000000000000",
    "subscription_id": "sub_01jb0000000000000000000000",
    "url": "https://example.com/webhooks",
}


class _SubscriptionRef(EventData):
    tenant_id: str = Field(description="The tenant the subscription belongs to.")
    subscription_id: str
    url: str = Field(description="The subscription's URL.")


class _DeliveryRef(_SubscriptionRef):
    event_id: str
    event_type: str
    delivery_id: str
    attempts: int = Field(description="Attempts made so far.")
    last_status_code: int | None = Field(None, description="HTTP status of the latest attempt, if it got one.")
    last_error_kind: str | None = Field(None, description="Why the latest attempt failed, e.g. `timeout`.")


@operational_catalog.event(
    "subscription.disabled",
    example={
        **OPERATIONAL_EXAMPLE_IDS,
        "reason": "the endpoint answered 410 Gone",
        "disabled_at": "2026-01-06T12:00:00Z",
        "failing_since": None,
        "last_status_code": 410,
    },
)
class SubscriptionDisabled(_SubscriptionRef):
    """Herald disabled a tenant's subscription.

    Sent when an endpoint answered 410 Gone, or kept failing for the whole failing window (5 days by
    default). It receives nothing more until the tenant re-enables it (`PATCH` with `enabled: true`).
    """

    reason: str
    disabled_at: datetime
    failing_since: datetime | None = Field(None, description="Since when it had been failing continuously.")
    last_status_code: int | None = None


@operational_catalog.event(
    "delivery.failing",
    example={
        **OPERATIONAL_EXAMPLE_IDS,
        "event_id": "evt_01jb0000000000000000000000",
        "event_type": "invoice.paid",
        "delivery_id": "dlv_01jb0000000000000000000000",
        "attempts": 4,
        "last_status_code": 503,
        "last_error_kind": "http_status",
        "next_attempt_at": "2026-01-01T14:35:05Z",
    },
)
class DeliveryFailing(_DeliveryRef):
    """A delivery failed its 4th attempt.

    Sent once per delivery; it is still being retried on the schedule.
    """

    next_attempt_at: datetime | None = Field(None, description="When the next attempt is due.")


@operational_catalog.event(
    "delivery.exhausted",
    example={
        **OPERATIONAL_EXAMPLE_IDS,
        "event_id": "evt_01jb0000000000000000000000",
        "event_type": "invoice.paid",
        "delivery_id": "dlv_01jb0000000000000000000000",
        "attempts": 8,
        "last_status_code": 500,
        "last_error_kind": "http_status",
        "reason": "every scheduled attempt failed",
    },
)
class DeliveryExhausted(_DeliveryRef):
    """A delivery failed for good.

    Sent when no further attempt is scheduled: every attempt of the schedule failed, the endpoint
    answered 410 Gone, or the URL is one Herald refuses to call. A manual retry can still send it.
    """

    reason: str


@operational_catalog.event(
    "subscription.recovered",
    example={
        **OPERATIONAL_EXAMPLE_IDS,
        "failing_since": "2026-01-01T12:00:00Z",
        "recovered_at": "2026-01-02T08:00:00Z",
    },
)
class SubscriptionRecovered(_SubscriptionRef):
    """A failing subscription delivered successfully again.

    Sent on the first successful attempt after a subscription counted as failing (several attempts in
    a row failed).
    """

    failing_since: datetime = Field(description="Since when it had been failing.")
    recovered_at: datetime


# --- The example catalog: edit below. One model per event type. ----------------------------------


@catalog.event(
    "subscription.created",
    example={
        "username": "ada",
        "monthly_fee": 9.99,
        "start_date": "2026-01-01T00:00:00Z",
    },
)
class SubscriptionCreated(EventData):
    """A user subscribed to a paid plan.

    Sent when a new user subscribes to your service: the username, the monthly fee they will be
    billed and when the subscription starts (the example from FastAPI's webhook documentation).
    """

    username: str = Field(min_length=1, max_length=200)
    monthly_fee: float = Field(ge=0, description="Monthly fee in the account's currency.")
    start_date: AwareDatetime = Field(description="With its offset (RFC 3339), e.g. 2026-01-01T00:00:00Z.")


@catalog.event(
    "invoice.paid",
    example={
        "invoice_id": "in_1001",
        "customer_id": "cus_42",
        "amount_cents": 4900,
        "currency": "EUR",
        "paid_at": "2026-01-31T09:30:00Z",
    },
)
class InvoicePaid(EventData):
    """An invoice was paid in full.

    The amount is in the smallest unit of the currency (cents for EUR and USD).
    """

    invoice_id: str = Field(min_length=1, max_length=100)
    customer_id: str = Field(min_length=1, max_length=100)
    amount_cents: int = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR.")
    paid_at: AwareDatetime = Field(description="With its offset (RFC 3339), e.g. 2026-01-31T09:30:00Z.")


class ShippedItem(BaseModel):
    """One line of a shipment."""

    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=100)
    quantity: int = Field(ge=1)


@catalog.event(
    "order.shipped",
    example={
        "order_id": "ord_7",
        "carrier": "DHL",
        "tracking_number": "JD014600003828",
        "items": [{"sku": "mug-blue", "quantity": 2}],
        "estimated_delivery": "2026-02-03",
    },
)
class OrderShipped(EventData):
    """An order left the warehouse.

    Carries the carrier and tracking number, the shipped items and the estimated delivery date.
    """

    order_id: str = Field(min_length=1, max_length=100)
    carrier: str = Field(min_length=1, max_length=100)
    tracking_number: str = Field(min_length=1, max_length=100)
    items: list[ShippedItem] = Field(min_length=1, max_length=500)
    estimated_delivery: date | None = None


@catalog.event(
    PING_EVENT_TYPE,
    example={
        "message": "Hello from Herald: this is a test delivery.",
        "subscription_id": "sub_01jb0000000000000000000000",
    },
)
class Ping(EventData):
    """A test event.

    Sent on demand by `POST /v1/subscriptions/{id}/test` to check that an endpoint receives and
    verifies deliveries. It needs no handling beyond a 2xx answer.
    """

    message: str = Field(max_length=1000)
    subscription_id: str | None = None
