"""The event catalog: every event type Herald can send, declared once as a pydantic model.

This is the module an operator edits. Each event type is one model whose docstring documents it,
registered with ``@catalog.event("dotted.name", example={...})``. That single declaration drives:

- validation of published payloads (``POST /v1/events``),
- the catalog listing (``GET /v1/event-types``),
- the OpenAPI 3.1 ``webhooks`` section shown in ``/docs`` and ``/redoc``, with the full delivered
  body (the Standard Webhooks envelope ``type``, ``timestamp``, ``data``) and the signature headers.

Adding an event type is adding one model below. (The catalog's machinery and the catalog an operator edits stay
together on purpose, so adding an event type touches one file.)

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

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel, ValidationError, create_model
from pydantic.fields import FieldInfo

from herald.errors import UnknownEventTypeError
from herald.records import WILDCARD

if TYPE_CHECKING:
    # FastAPI is imported only where the docs are built: the delivery function validates and sends
    # events from this catalog but never serves HTTP, and must not pay for importing FastAPI.
    from fastapi import APIRouter
    from pydantic_core import ErrorDetails

#: Event type names: lower-case dotted words, e.g. ``invoice.paid``.
EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")

#: The longest event type name, as ``POST /v1/events`` and a listing's ``?event_type=`` take one.
MAX_EVENT_TYPE_LENGTH = 200

#: How much of a name too long to be an event type an error message echoes.
_ECHOED_CHARS = 60

#: Past the largest safe integer (JavaScript's ``Number.MAX_SAFE_INTEGER``, 2^53 - 1), a float no longer tells the
#: integer a publisher wrote: ``9007199254740993.0`` reads as 2^53.
_EXACT_INTEGERS = 2**53 - 1

#: The built-in test event, sent by ``POST /v1/subscriptions/{id}/test``.
PING_EVENT_TYPE = "herald.ping"
#: The ``timestamp`` of the delivered bodies the documentation shows.
EXAMPLE_TIMESTAMP = "2026-01-01T12:00:00Z"

_SIGNATURE_DOC = (
    "Every delivery is signed following [Standard Webhooks](https://www.standardwebhooks.com/): "
    "verify `webhook-signature` against `{webhook-id}.{webhook-timestamp}.{raw body}` with your "
    "subscription's `whsec_` secret (HMAC-SHA256), reject timestamps more than 5 minutes from your clock (either "
    "way), and use `webhook-id` to drop duplicates.\n\n"
    "The body shown is what a subscription receives unless it has a `transform`: then it receives the object or "
    "array its transform makes of this body."
)

#: The same for the operational events, which go to the operator's endpoints: those are signed with their own
#: secrets (``/v1/operator/webhooks``), and take no transform, so they always receive the body shown.
_OPERATIONAL_SIGNATURE_DOC = (
    "Sent to the operator's endpoints (`/v1/operator/webhooks`), never to a tenant's subscriptions. Every delivery "
    "is signed following [Standard Webhooks](https://www.standardwebhooks.com/): verify `webhook-signature` against "
    "`{webhook-id}.{webhook-timestamp}.{raw body}` with the operator endpoint's `whsec_` secret (shown when it was "
    "registered, or by its latest rotation; HMAC-SHA256), reject timestamps more than 5 minutes from your clock "
    "(either way), and use `webhook-id` to drop duplicates.\n\n"
    "The body shown is the one the endpoint receives: an operator endpoint has no transform."
)

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Any 2xx answer within the timeout acknowledges the delivery."},
    410: {"description": "Gone: Herald disables the subscription and stops retrying."},
    429: {
        "description": "Too many requests: retried, as after a timeout, a 502 or a 504, no sooner than a minute "
        "later (the deployment's `HERALD_THROTTLE_MIN_DELAY_SECONDS`, 60 by default)."
    },
    "default": {
        "description": "Anything else (3xx included: redirects are never followed) is retried on the "
        "schedule, for more than a day. A `Retry-After` header on an answer that is retried can put the next attempt "
        "off, to at most twice the wait it would have had; never sooner."
    },
}

#: The same for the operational events: a 410 disables the operator's endpoint, not a tenant's subscription.
_OPERATIONAL_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_RESPONSES,
    410: {
        "description": "Gone: Herald disables this operator endpoint and stops retrying (`PATCH "
        "/v1/operator/webhooks/{id}` with `enabled: true` re-enables it)."
    },
}


def echoed(name: str) -> str:
    """An event type name as an error message echoes it: whole up to the longest name an event type may have, else
    its start and its length. A name is the caller's input, which a raised request limit lets run to megabytes: echoed
    whole (in the message, which is not cut as ``details`` are), one answer could pass Lambda's 6 MB."""
    if len(name) <= MAX_EVENT_TYPE_LENGTH:
        return name
    return f"{name[:_ECHOED_CHARS]}… ({len(name):,} characters)"


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


def _naive_time(schema: Any, owner: str, field: str | None = None) -> str | None:
    """Why an event's data may not hold what ``schema`` (a model's core schema, or a part of it within ``owner``'s
    ``field``) validates, or None: a date-time or a time of day taken without its UTC offset, which the documented
    ``format`` (``date-time``, ``time``: RFC 3339's, offset included) does not allow, and which a receiver could not
    place in time. Looked for in what is validated, however nested (lists, unions, nested models, ``Annotated``)."""
    if isinstance(schema, list):
        return next((found for part in schema if (found := _naive_time(part, owner, field)) is not None), None)
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    at = f"{owner}.{field}" if field else owner
    if kind == "datetime" and not _aware(schema):
        return f"{at} takes a date-time without its UTC offset: declare it AwareDatetime (pydantic)"
    if kind == "time" and not _aware(schema):
        return f"{at} takes a time of day without its UTC offset: declare an AwareDatetime, or a str with a pattern"
    if kind in ("model", "dataclass", "typed-dict") and isinstance(schema.get("cls"), type):
        owner, field = schema["cls"].__name__, None
    if kind == "dataclass-field":
        field = schema.get("name")
    for key, value in schema.items():
        if key in ("metadata", "serialization"):
            continue
        if key == "fields" and isinstance(value, dict):  # a model's or a TypedDict's, by name
            found = next(
                (found for name, part in value.items() if (found := _naive_time(part, owner, name)) is not None),
                None,
            )
        else:
            found = _naive_time(value, owner, field)
        if found is not None:
            return found
    return None


def _aware(schema: dict[str, Any]) -> bool:
    """Whether a date-time's or time's core schema requires an offset (``AwareDatetime``), or a given one."""
    constraint = schema.get("tz_constraint")
    return constraint == "aware" or (isinstance(constraint, int) and not isinstance(constraint, bool))


#: JSON Schema keywords that change no value a schema takes or describes: a computed field is ``readOnly``, a
#: ``SecretStr`` ``writeOnly``, in one mode and not the other.
_COSMETIC_KEYWORDS = frozenset({"readOnly", "writeOnly"})
#: Keywords whose value maps names to schemas (a property named ``readOnly`` is a property).
_NAMING_KEYWORDS = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})
#: Keywords whose value is data, not a schema.
_DATA_KEYWORDS = frozenset({"default", "examples", "const", "enum"})


def _substance(schema: Any, *, names: bool = False) -> Any:
    """A JSON Schema without its cosmetic keywords (``_COSMETIC_KEYWORDS``); ``names``: ``schema`` maps names to
    schemas."""
    if isinstance(schema, list):
        return [_substance(part) for part in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: value
        if not names and key in _DATA_KEYWORDS
        else _substance(value, names=not names and key in _NAMING_KEYWORDS)
        for key, value in schema.items()
        if names or key not in _COSMETIC_KEYWORDS
    }


def _delivered_unlike_documented(model: type[BaseModel]) -> str | None:
    """Why ``model``'s data would be delivered unlike its documentation, or None. The documented schema (``/docs``,
    ``GET /v1/event-types``, what filters are checked against) is the one publishers' data is validated against; the
    delivered body is the data serialized: a field excluded from serialization is documented and never delivered, a
    computed field delivered and never documented, a serializer's value delivered as another type than documented."""
    documented = _substance(model.model_json_schema(mode="validation"))
    delivered = _substance(model.model_json_schema(mode="serialization"))
    return _first_difference(documented, delivered, model.__name__)


def _first_difference(documented: Any, delivered: Any, owner: str, field: str | None = None) -> str | None:
    """Where ``documented`` and ``delivered`` (JSON Schemas, the second of a serialization) first differ, as a
    sentence naming the model (``owner``, a ``$defs`` entry's name within) and its field; None if they do not."""
    if documented == delivered:
        return None
    at = f"{owner}.{field}" if field else owner
    if isinstance(documented, dict) and isinstance(delivered, dict):
        documented_fields, delivered_fields = documented.get("properties", {}), delivered.get("properties", {})
        for name in [*documented_fields, *(name for name in delivered_fields if name not in documented_fields)]:
            if name not in delivered_fields:
                return (
                    f"{owner}.{name} is documented but never delivered (a field excluded from serialization, or a "
                    "serializer that leaves it out)"
                )
            if name not in documented_fields:
                return (
                    f"{owner}.{name} is delivered but not documented (a computed field, or a serializer that adds "
                    "it: a publisher could not send it)"
                )
            if (found := _first_difference(documented_fields[name], delivered_fields[name], owner, name)) is not None:
                return found
        documented_models, delivered_models = documented.get("$defs", {}), delivered.get("$defs", {})
        for name in sorted(documented_models.keys() | delivered_models.keys()):
            if (found := _first_difference(documented_models.get(name), delivered_models.get(name), name)) is not None:
                return found
    return (
        f"{at} is documented as {_cut_json(documented)} but delivered as {_cut_json(delivered)} (a serializer changes "
        "it)"
    )


def _cut_json(schema: Any) -> str:
    text = json.dumps(schema, sort_keys=True)
    return text if len(text) <= 200 else text[:199] + "…"


def _integral_floats_as_integers(text: str, errors: list[ErrorDetails]) -> str | None:
    """``text`` (JSON) with each integral float that ``errors`` (its strict validation's) say is no integer written as
    the integer, where a float holds it exactly (``_EXACT_INTEGERS``): ``4900.0`` and ``49e2`` are integers to JSON
    Schema, and Python's json, Jackson and Go write such numbers. The number is read as a float reads it (as a JSON
    parser in JavaScript does): a fraction too small for its float (``4503599627370496.5``) is lost before this.
    None if there is none."""
    refused = [
        (error["loc"], error["input"])
        for error in errors
        if error["type"] == "int_type"
        and type(error.get("input")) is float
        and error["input"].is_integer()
        and abs(error["input"]) <= _EXACT_INTEGERS  # past it, the float may not be the integer written
    ]
    if not refused:
        return None
    data = json.loads(text)
    made = False
    for loc, value in refused:
        node: Any = data
        holder: Any = None
        key: Any = None
        for part in loc:
            # A part that names no place in the data is passed over: a union's member (``int``), a dict's ``[key]``.
            if (isinstance(node, dict) and isinstance(part, str) and part in node) or (
                isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
            ):
                holder, key = node, part
                node = holder[key]
        if holder is not None and type(node) is float and node == value:
            holder[key] = int(value)
            made = True
    return json.dumps(data) if made else None


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
        built when the documentation is (not on a delivery function's cold start). Its example is the delivered one
        (``delivered_example``): the webhook documents what a subscriber receives."""
        return _envelope(self.name, self.envelope_name, self.model, self.delivered_body)

    @property
    def delivered_body(self) -> dict[str, Any]:
        """A whole delivered body of this type, ``{"type", "timestamp", "data"}``, its data the example's."""
        return {"type": self.name, "timestamp": EXAMPLE_TIMESTAMP, "data": self.delivered_example}

    @cached_property
    def delivered_example(self) -> dict[str, Any]:
        """The example as a subscriber receives it: published as a publisher's data is (``validate_json``), so with
        each optional field it leaves out (null, or its default), date-times as they are delivered (``+00:00`` as
        ``Z``) and integral floats as integers. A transform is checked and dry-run on this, not on ``example``: one
        that works on the example as written could fail every real delivery (``join`` over a field left out, which
        is delivered as null). Computed when the type is registered, which checks the example with it."""
        return self.validate_json(json.dumps(self.example))

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
        in JSON, and stay accepted as such. An integer may be written with a zero fraction (``4900.0``), as JSON
        Schema's ``integer`` allows, and is delivered as the integer (``_integral_floats_as_integers``). Delivered
        as ``validate`` gives it. Raises ``pydantic.ValidationError``."""
        try:
            validated = self.model.model_validate_json(text, strict=True)
        except ValidationError as exc:
            # Pydantic's strict mode refuses an integral float for an integer, and its lax mode would take a string
            # or a boolean too: the floats it refused are made integers where they are ones, and checked again.
            if (integers := _integral_floats_as_integers(text, exc.errors(include_url=False))) is None:
                raise
            validated = self.model.model_validate_json(integers, strict=True)
        return validated.model_dump(mode="json", by_alias=True)

    @property
    def operation_id(self) -> str:
        """The webhook's operation in the OpenAPI document."""
        return f"webhook_{self.name.replace('.', '_')}"


class EventCatalog:
    """The registry of event types; see the module docstring."""

    def __init__(
        self,
        *,
        tag: str | None = None,
        receiving: str = _SIGNATURE_DOC,
        responses: dict[int | str, dict[str, Any]] | None = None,
    ) -> None:
        self._types: dict[str, EventType] = {}
        #: The documentation tag of all its webhooks (default: each type's first word).
        self.tag = tag
        #: What each of its webhooks says after the type's own description: who receives it, how to verify it, what
        #: body arrives. The operational catalog's receivers are not the tenants' subscriptions, so it has its own.
        self.receiving = receiving
        #: Its webhooks' documented answers (what the receiver's answer makes Herald do).
        self.responses = _RESPONSES if responses is None else responses

    def event[M: EventData](self, name: str, *, example: dict[str, Any]) -> Callable[[type[M]], type[M]]:
        """Register the decorated model as event type ``name``, with an example payload.

        The model is refused (``ValueError``, naming the model and field) where its data would not be what its
        documented schema says: a nested object that drops unknown fields, a field published under another name than
        it is delivered under, a date-time or time taken without its UTC offset (declare ``AwareDatetime``), or a
        serializer of no declared return type whose value the example shows is not the field's. A delivered body
        unlike the documented one otherwise (``Field(exclude=True)``, a ``@computed_field``, a serializer that changes
        a field's type) is found by ``undelivered_as_documented``, which the tests run.

        A ``pattern`` is checked by Python's ``re``, whose ``\\d`` and ``\\w`` take any Unicode digit or letter
        (``"٣"``), while the JSON Schema documented to subscribers is read by ECMA-262 regexes, ASCII only: write
        ``[0-9]`` and ``[A-Za-z0-9_]``, which both read alike.
        """
        if not EVENT_TYPE_PATTERN.fullmatch(name):
            raise ValueError(f"event type {echoed(name)!r} must be lower-case dotted words, e.g. 'invoice.paid'")
        if len(name) > MAX_EVENT_TYPE_LENGTH:
            raise ValueError(
                f"event type {echoed(name)!r} is {len(name)} characters: the limit is {MAX_EVENT_TYPE_LENGTH} (what "
                "POST /v1/events takes)"
            )

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
            if (naive := _naive_time(model.__pydantic_core_schema__, model.__name__)) is not None:
                raise ValueError(
                    f"event type {name!r}: {naive}; the documented format (RFC 3339) has the offset, and a receiver "
                    "could not tell which moment a time without it means"
                )
            # A wrong example is a bug in the catalog: fail at import. Checked as a publisher's data is (strict JSON
            # types): the example is what a publisher copies (`GET /v1/event-types`), and `webhooks` documents it as
            # it is then delivered.
            delivered = declared.delivered_example
            # What a serializer of no declared return type makes is documented as the field's type: the example, as
            # it is delivered, shows whether it is.
            try:
                declared.validate_json(json.dumps(delivered))
            except ValidationError as exc:
                error = exc.errors(include_url=False)[0]
                at = ".".join([model.__name__, *map(str, error["loc"])])
                raise ValueError(
                    f"event type {name!r}: {at} is delivered in its example as data its documented schema refuses "
                    f"({error['msg']}): a serializer changes it; declare the field as it is delivered"
                ) from None
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

    def undelivered_as_documented(self) -> list[str]:
        """The types whose delivered body is not their documented one, each as a sentence naming its model and field:
        a field excluded from serialization, a computed field, a serializer that changes a field's type. Comparing the
        two JSON Schemas of every model costs milliseconds the API's cold start would pay at each import, so it is
        not made at registration: ``tests/test_catalog_registration.py`` checks both catalogs with it."""
        return [
            f"event type {name!r}: {unlike}; the body delivered must be the one documented: declare each field as it "
            "is delivered"
            for name, entry in self._types.items()
            if (unlike := _delivered_unlike_documented(entry.model)) is not None
        ]

    def check_subscribed(self, event_types: list[str], *, refused: str, absent: str, known_also: str = "") -> list[str]:
        """``event_types`` as kept (``*`` alone if it is one of them: every type) if each is ``*`` or a type of this
        catalog, else ``UnknownEventTypeError`` naming the others, ``*`` beside them or not: "``refused``: a, b;
        known: ...``known_also``", and per name "'a' ``absent``" (each name ``echoed``)."""
        unknown = [echoed(name) for name in event_types if name != WILDCARD and name not in self]
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
                description=f"{event_type.description}\n\n{owner.receiving}",
                operation_id=event_type.operation_id,
                responses=owner.responses,
                response_description=str(owner.responses[200]["description"]),
                tags=[owner.tag or event_type.name.split(".", 1)[0]],
            )
        return router


def _envelope(name: str, title: str, model: type[EventData], example: dict[str, Any]) -> type[BaseModel]:
    """The delivered body of one event type: ``{"type", "timestamp", "data"}``, with ``example`` (a whole body)."""
    return create_model(
        title,
        __config__=ConfigDict(json_schema_extra={"examples": [example]}),
        __doc__=f"The body delivered for `{name}` events.",
        type=(Literal[name], Field(description="The event type.")),
        timestamp=(
            datetime,
            Field(
                description="When Herald accepted the event (ISO 8601, UTC), the same on every attempt: the "
                "`webhook-timestamp` header is the attempt's."
            ),
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
operational_catalog = EventCatalog(
    tag="operational", receiving=_OPERATIONAL_SIGNATURE_DOC, responses=_OPERATIONAL_RESPONSES
)


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
    disabled_at: AwareDatetime
    failing_since: AwareDatetime | None = Field(None, description="Since when it had been failing continuously.")
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
    """A delivery failed the 4th attempt of its retry schedule.

    Sent once per delivery, while it is still being retried on the schedule (its next attempt is due at
    `next_attempt_at`). The 4th step of the schedule is not always the 4th attempt made: an attempt handed
    over to the slow lane (cut short because the endpoint was slow to answer, and made again there) is no
    step of it, nor is an attempt asked for (a retry, a recovery), so `attempts` may be more than 4.
    """

    next_attempt_at: AwareDatetime = Field(description="When the next attempt of the schedule is due.")


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
    answered 410 Gone, the URL is one Herald refuses to call, or the subscription's transform failed
    on the event (no request is made, and it is not retried). A manual retry can still send it.
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
    a row failed), when it had been failing for 5 minutes or more (the deployment's
    `HERALD_RECOVERED_NOTICE_AFTER_SECONDS`): an endpoint that fails a few attempts in a row now and then
    brings no notice each time.
    """

    failing_since: AwareDatetime = Field(description="Since when it had been failing.")
    recovered_at: AwareDatetime


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
    verifies deliveries (as the portal's Send test event does), and only so: `POST /v1/events` refuses it. It
    needs no handling beyond a 2xx answer.
    """

    message: str = Field(max_length=1000)
    subscription_id: str | None = None
