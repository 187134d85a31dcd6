"""The event catalog's declarations: what a model must be to be registered (its delivered body the documented one,
its times with their offset, its name within the API's limit), integers written as integral floats, event type names
echoed in errors, and the webhooks' documentation of what a subscription receives."""

from __future__ import annotations

import json
import re
from datetime import datetime, time
from typing import Annotated, Any, TypedDict

import pytest
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    computed_field,
    field_serializer,
    with_config,
)

from herald.catalog import MAX_EVENT_TYPE_LENGTH, EventCatalog, EventData, catalog, operational_catalog
from herald.domain.publishing import validate_data
from herald.errors import UnknownEventTypeError
from herald.settings import MAX_REQUEST_BYTES
from tests.api_support import assert_error
from tests.support import ADMIN, INVOICE, drain

# --- the delivered body is the documented one ------------------------------------------------------------------


class _Hidden(EventData):
    order_id: str
    internal_note: str = Field("", exclude=True)


class _Computed(EventData):
    net_cents: int
    tax_cents: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_cents(self) -> int:
        return self.net_cents + self.tax_cents


class _AsText(EventData):
    amount_cents: int

    @field_serializer("amount_cents")
    def _as_text(self, value: int) -> str:
        return str(value)


class _Line(EventData):
    quantity: int

    @field_serializer("quantity")
    def _as_text(self, value: int) -> str:
        return str(value)


class _Lines(EventData):
    lines: list[_Line]


class _Untyped(EventData):
    amount_cents: int

    @field_serializer("amount_cents")
    def _as_text(self, value):  # no return type: its documented schema is the field's own
        return str(value)


class _Rounded(EventData):
    """A serializer that keeps the field's type delivers what is documented."""

    ratio: float

    @field_serializer("ratio")
    def _rounded(self, value: float) -> float:
        return round(value, 2)


@pytest.mark.parametrize(
    ("model", "example", "refusal"),
    [
        (_Computed, {"net_cents": 1, "tax_cents": 2}, "_Computed.total_cents"),
        (_AsText, {"amount_cents": 1}, "_AsText.amount_cents"),
        (_Lines, {"lines": [{"quantity": 1}]}, "quantity"),
        (_Untyped, {"amount_cents": 1}, "_Untyped.amount_cents"),
    ],
    ids=["computed", "serialized as another type", "nested", "serializer of no return type"],
)
def test_a_model_whose_example_is_delivered_unlike_its_documented_schema_is_refused_naming_the_field(
    model: type[EventData], example: dict[str, Any], refusal: str
) -> None:
    # GIVEN a model whose serialization (what is delivered) differs from its validation schema (what /docs, the
    # event-types listing and filter checks show), as its example shows: a field added, one delivered as another type
    declared = EventCatalog()
    # WHEN it is declared, THEN it is refused at its import, naming the model and the field
    with pytest.raises(ValueError, match=re.escape(refusal)) as refused:
        declared.event("test.delivered", example=example)(model)
    assert "delivered" in str(refused.value)
    assert "test.delivered" not in declared


def test_a_model_that_delivers_less_than_it_documents_is_found_by_the_tests_check() -> None:
    # GIVEN a model with a field excluded from serialization: documented, never delivered (its example cannot show it)
    declared = EventCatalog()
    declared.event("test.delivered", example={"order_id": "o1"})(_Hidden)
    # WHEN the check the tests run on every catalog compares its two schemas THEN it names the model and the field
    (found,) = declared.undelivered_as_documented()
    assert "_Hidden.internal_note is documented but never delivered" in found


def test_every_event_type_is_delivered_as_documented() -> None:
    # GIVEN the tenants' and the operational catalogs WHEN each type's documented schema is compared with its
    # delivered one THEN none differs
    assert catalog.undelivered_as_documented() == []
    assert operational_catalog.undelivered_as_documented() == []


def test_a_serializer_that_keeps_the_fields_type_is_declared() -> None:
    declared = EventCatalog()
    declared.event("test.rounded", example={"ratio": 0.125})(_Rounded)
    assert declared.get("test.rounded").validate_json('{"ratio": 0.3333}') == {"ratio": 0.33}  # type: ignore[union-attr]


def test_every_built_in_event_type_registers_in_a_fresh_catalog() -> None:
    # GIVEN the tenants' and the operational catalogs' types, WHEN each is declared again in a catalog of its own
    for entry in [*catalog, *operational_catalog]:
        fresh = EventCatalog()
        fresh.event(entry.name, example=entry.example)(entry.model)
        # THEN it is, documented as it is delivered
        assert fresh.get(entry.name) is not None


# --- date-times and times carry their offset ------------------------------------------------------------------


class _Stamped(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: datetime


@with_config(ConfigDict(extra="forbid"))
class _StampedDict(TypedDict):
    at: Annotated[datetime, Field(description="When.")]


class _Naive(EventData):
    at: datetime


class _NaiveOptional(EventData):
    at: datetime | None = None


class _NaiveList(EventData):
    times: list[datetime]


class _NaiveMapping(EventData):
    times: dict[str, list[datetime | None]]


class _NaiveNested(EventData):
    stamp: _Stamped


class _NaiveTypedDict(EventData):
    stamp: _StampedDict


class _NaiveTime(EventData):
    opens: time


class _Aware(EventData):
    at: AwareDatetime
    maybe: AwareDatetime | None = None
    times: list[AwareDatetime] = []
    moments: dict[str, Annotated[AwareDatetime, Field(description="A moment.")]] = {}


@pytest.mark.parametrize(
    ("model", "where", "kind"),
    [
        (_Naive, "_Naive.at", "date-time"),
        (_NaiveOptional, "_NaiveOptional.at", "date-time"),
        (_NaiveList, "_NaiveList.times", "date-time"),
        (_NaiveMapping, "_NaiveMapping.times", "date-time"),
        (_NaiveNested, "_Stamped.at", "date-time"),
        (_NaiveTypedDict, "_StampedDict.at", "date-time"),
        (_NaiveTime, "_NaiveTime.opens", "time of day"),
    ],
    ids=["datetime", "optional", "list", "mapping", "nested model", "typed dict", "time"],
)
def test_a_date_time_or_time_taken_without_its_offset_is_refused_at_its_declaration(
    model: type[EventData], where: str, kind: str
) -> None:
    # GIVEN a model with a plain datetime (or time), however held: it takes "2026-01-31T09:30:00" and delivers it
    # so, against its documented `format: date-time` (RFC 3339, offset included)
    declared = EventCatalog()
    # WHEN it is declared, THEN it is refused, naming the field and pointing to AwareDatetime
    with pytest.raises(ValueError, match=re.escape(f"{where} takes a {kind} without its UTC offset")) as refused:
        declared.event("test.stamped", example={})(model)
    assert "AwareDatetime" in str(refused.value)
    assert "test.stamped" not in declared


def test_aware_date_times_however_held_are_declared() -> None:
    declared = EventCatalog()
    declared.event("test.aware", example={"at": "2026-01-31T09:30:00Z"})(_Aware)
    entry = declared.get("test.aware")
    assert entry is not None
    with pytest.raises(ValueError, match="timezone_aware"):
        entry.validate_json('{"at": "2026-01-31T09:30:00Z", "moments": {"a": "2026-01-31T09:30:00"}}')


def test_an_event_type_name_longer_than_a_publisher_may_send_is_refused() -> None:
    # GIVEN a name of lower-case dotted words just past the limit POST /v1/events takes
    name = "test." + "x" * (MAX_EVENT_TYPE_LENGTH - 4)
    # WHEN it is declared, THEN it is refused (no event of it could be published); one at the limit is declared
    with pytest.raises(ValueError, match=f"the limit is {MAX_EVENT_TYPE_LENGTH}"):
        EventCatalog().event(name, example={})(_Empty)
    EventCatalog().event(name[:-1], example={})(_Empty)


class _Empty(EventData):
    pass


# --- integers written as integral floats -----------------------------------------------------------------------


def publish(client, **body):
    return client.post("/v1/events", json=body, headers=ADMIN)


def test_an_integer_written_with_a_zero_fraction_is_published_and_delivered_as_the_integer(
    client, tenant, poller, receiver
) -> None:
    # GIVEN a subscription to invoice.paid
    subscribed = client.post(
        "/v1/subscriptions", json={"url": receiver.url, "event_types": ["invoice.paid"]}, headers=tenant.headers
    )
    assert subscribed.status_code == 201, subscribed.text
    # WHEN an invoice is published with its integer amount written as 4900.0 (as Python's json, Jackson or Go write
    # a float holding an integer; JSON Schema counts it an integer)
    response = publish(client, type="invoice.paid", data={**INVOICE, "amount_cents": 4900.0}, tenant_id=tenant.id)
    # THEN it is accepted, stored and delivered as the integer 4900
    assert response.status_code == 202, response.text
    assert '"amount_cents":4900,' in response.text.replace(" ", "")
    drain(poller)
    assert json.loads(receiver.received[0].body)["data"]["amount_cents"] == 4900
    assert b'"amount_cents":4900,' in receiver.received[0].body


@pytest.mark.parametrize(
    ("number", "integer"), [(b"1e2", 100), (b"2.0", 2), (b"2E0", 2), (b"9007199254740991.0", 9007199254740991)]
)
def test_integral_floats_are_integers_however_written(client, tenant, number: bytes, integer: int) -> None:
    # WHEN a shipment's quantity is written as a float holding an integer, up to the last integer a float holds exactly
    body = (
        b'{"type": "order.shipped", "tenant_id": "%s", "data": {"order_id": "o", "carrier": "c", '
        b'"tracking_number": "t", "items": [{"sku": "s", "quantity": 1}, {"sku": "t", "quantity": %s}]}}'
        % (tenant.id.encode(), number)
    )
    response = client.post("/v1/events", content=body, headers={**ADMIN, "content-type": "application/json"})
    # THEN it is published as that integer
    assert response.status_code == 202, response.text
    quantity = response.json()["data"]["items"][1]["quantity"]
    assert (type(quantity), quantity) == (int, integer)


@pytest.mark.parametrize("number", [b"9007199254740993.0", b"9007199254740992.0", b"1e300"])
def test_a_float_past_the_largest_safe_integer_is_no_integer(client, tenant, number: bytes) -> None:
    # WHEN a shipment's quantity is written as a float past 2^53 - 1, where a float no longer tells which integer was
    # written (9007199254740993.0 reads as 2^53)
    body = (
        b'{"type": "order.shipped", "tenant_id": "%s", "data": {"order_id": "o", "carrier": "c", '
        b'"tracking_number": "t", "items": [{"sku": "s", "quantity": %s}]}}' % (tenant.id.encode(), number)
    )
    response = client.post("/v1/events", content=body, headers={**ADMIN, "content-type": "application/json"})
    # THEN it is a 422 on that field, never an integer other than the one written
    error = assert_error(response, 422, "invalid_input")
    assert [d["loc"][-1] for d in error["details"]] == ["quantity"], error


@pytest.mark.parametrize(
    ("amount", "error_type"),
    [(4900.5, "int_type"), (1e300, "int_type"), ("4900", "int_type"), (True, "int_type"), ("4900.0", "int_type")],
)
def test_a_number_with_a_fraction_or_another_json_type_is_still_no_integer(
    client, tenant, amount: Any, error_type: str
) -> None:
    # WHEN an integer field gets a number with a fraction, a float past exact integers, a string or a boolean
    response = publish(client, type="invoice.paid", data={**INVOICE, "amount_cents": amount}, tenant_id=tenant.id)
    # THEN it is a 422 on that field, never converted
    error = assert_error(response, 422, "invalid_input")
    assert [(d["loc"], d["type"]) for d in error["details"]] == [(["body", "data", "amount_cents"], error_type)]


class _Tallies(EventData):
    counts: dict[str, list[int]]
    either: int | str
    maybe: int | None = None
    ratio: float = 0.5


def test_integral_floats_are_integers_wherever_an_integer_is_held(client, tenant, monkeypatch) -> None:
    # GIVEN an event type with integers in a mapping of lists, in a union and an optional, beside a float
    declared = EventCatalog()
    declared.event("test.tallies", example={"counts": {"a": [1]}, "either": 1})(_Tallies)
    monkeypatch.setitem(catalog._types, "test.tallies", declared.get("test.tallies"))
    # WHEN each is written as an integral float
    data = {"counts": {"a": [1.0, 2], "int": [3.0]}, "either": 4.0, "maybe": 5.0, "ratio": 6.0}
    response = publish(client, type="test.tallies", data=data, tenant_id=tenant.id)
    # THEN each integer is the integer, and the float stays a float
    assert response.status_code == 202, response.text
    assert response.json()["data"] == {"counts": {"a": [1, 2], "int": [3]}, "either": 4, "maybe": 5, "ratio": 6.0}
    kept = response.json()["data"]
    assert [type(value) for value in (*kept["counts"]["a"], kept["either"], kept["maybe"])] == [int, int, int, int]
    # AND a batch's events are read the same way
    batch = client.post(
        "/v1/events/batch",
        json={"events": [{"type": "test.tallies", "tenant_id": tenant.id, "data": data}]},
        headers=ADMIN,
    )
    assert batch.status_code == 200, batch.text
    assert batch.json()["data"][0]["event"]["data"] == kept


# --- an event type name is echoed cut ----------------------------------------------------------------------------


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """The largest request body a deployment may take (1 MiB): a type name of a megabyte fits it."""
    return {"max_request_bytes": MAX_REQUEST_BYTES}


def test_an_event_type_name_past_the_limit_is_refused_without_echoing_it(client, tenant) -> None:
    # GIVEN a type name of a megabyte (a request limit raised past it)
    name = "invoice." + "x" * 1_000_000
    # WHEN it is published, alone or in a batch
    alone = publish(client, type=name, data=INVOICE, tenant_id=tenant.id)
    batch = client.post(
        "/v1/events/batch", json={"events": [{"type": name, "data": INVOICE, "tenant_id": tenant.id}]}, headers=ADMIN
    )
    # THEN it is refused at its `type`, in an answer of a few kilobytes (Lambda's answers stop at 6 MB)
    error = assert_error(alone, 422)
    assert [detail["loc"] for detail in error["details"]] == [["body", "type"]]
    assert len(alone.content) < 5_000
    assert batch.status_code == 200
    assert batch.json()["data"][0]["status"] == 422
    assert len(batch.content) < 5_000
    # AND a name at the limit is read (an unknown type, a 422 naming it whole)
    known = publish(client, type="invoice." + "x" * (MAX_EVENT_TYPE_LENGTH - 8), data=INVOICE, tenant_id=tenant.id)
    assert "x" * (MAX_EVENT_TYPE_LENGTH - 8) in assert_error(known, 422, "unknown_event_type")["message"]


def test_an_unknown_event_type_is_echoed_cut_in_messages(client, tenant) -> None:
    name = "invoice." + "x" * 1_000_000
    # WHEN data is validated for a type of a megabyte, THEN the error names its start and its length
    with pytest.raises(UnknownEventTypeError) as refused:
        validate_data(name, INVOICE, max_bytes=256 * 1024)
    assert len(refused.value.message) < 2_000
    assert "1,000,008 characters" in refused.value.message
    # AND a subscription to it is refused the same way
    response = client.post(
        "/v1/subscriptions", json={"url": "https://example.com/h", "event_types": [name]}, headers=tenant.headers
    )
    error = assert_error(response, 422, "unknown_event_type")
    assert len(response.content) < 5_000
    assert "1,000,008 characters" in error["message"]


# --- the documentation -------------------------------------------------------------------------------------------


def test_the_webhooks_documentation_says_a_transform_changes_the_body_and_exhausts_a_delivery(client) -> None:
    # WHEN the OpenAPI document is read
    spec = client.get("/openapi.json").json()
    # THEN each tenant's webhook says a subscription with a transform receives what it makes of the body shown
    for event_type in catalog:
        assert "`transform`" in spec["webhooks"][event_type.name]["post"]["description"], event_type.name
    assert "`transform`" in spec["info"]["description"]
    # AND delivery.exhausted names a failed transform among its causes
    assert "transform failed" in spec["webhooks"]["delivery.exhausted"]["post"]["description"]


def test_operational_webhooks_are_documented_for_the_operators_endpoints(client) -> None:
    # WHEN the OpenAPI document is read
    webhooks = client.get("/openapi.json").json()["webhooks"]
    for event_type in operational_catalog:
        operation = webhooks[event_type.name]["post"]
        description = operation["description"]
        # THEN each operational webhook says it goes to the operator's endpoints, verified with the operator
        # endpoint's secret, and arrives as shown: an operator endpoint has no transform
        assert "operator's endpoints (`/v1/operator/webhooks`)" in description, event_type.name
        assert "the operator endpoint's `whsec_` secret" in description, event_type.name
        assert "an operator endpoint has no transform" in description, event_type.name
        # AND none says what a tenant's subscription has (its secret, its transform)
        assert "subscription's `whsec_` secret" not in description, event_type.name
        assert "unless it has a `transform`" not in description, event_type.name
        # AND a 410 disables the operator's endpoint, not a tenant's subscription
        assert "operator endpoint" in operation["responses"]["410"]["description"], event_type.name
    # AND a tenant's webhook keeps the subscription's wording
    tenants = webhooks["invoice.paid"]["post"]
    assert "subscription's `whsec_` secret" in tenants["description"]
    assert "disables the subscription" in tenants["responses"]["410"]["description"]
    # AND every webhook says how Herald takes a receiver's requests to slow down: a 429's floor, Retry-After
    for name, webhook in webhooks.items():
        answers = webhook["post"]["responses"]
        assert "no sooner than a minute" in answers["429"]["description"], name
        assert "`Retry-After` header on an answer that is retried can put" in answers["default"]["description"], name


def test_delivery_failing_says_it_counts_the_steps_of_the_retry_schedule_and_always_has_a_next_attempt(
    client,
) -> None:
    # WHEN the OpenAPI document is read
    spec = client.get("/openapi.json").json()
    operation = spec["webhooks"]["delivery.failing"]["post"]
    description = " ".join(operation["description"].split())
    # THEN delivery.failing is the 4th attempt of the retry schedule, not the 4th made: a hand-over to the slow lane
    # or an attempt asked for is no step of it, so `attempts` may be more
    assert operation["summary"] == "A delivery failed the 4th attempt of its retry schedule."
    assert "failed its 4th attempt" not in description
    assert "an attempt handed over to the slow lane" in description
    assert "nor is an attempt asked for" in description
    assert "`attempts` may be more than 4" in description
    # AND its next attempt is always there: required, never null
    data = spec["components"]["schemas"]["DeliveryFailing"]
    assert "next_attempt_at" in data["required"]
    assert data["properties"]["next_attempt_at"]["type"] == "string"
    assert "anyOf" not in data["properties"]["next_attempt_at"]
    entry = operational_catalog.get("delivery.failing")
    assert entry is not None
    with pytest.raises(ValidationError, match="next_attempt_at"):
        entry.validate({**entry.example, "next_attempt_at": None})
