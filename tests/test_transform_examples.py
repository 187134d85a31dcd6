"""Transforms are checked and dry-run on each type's catalog example as it is delivered, not as it is written: a
real event's data goes through the type's model (an optional field left out is delivered as null or its default, a
date-time's ``+00:00`` as ``Z``, an integral float as an integer), and a transform that works on the example as
written could fail every delivery."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import AwareDatetime

from herald.catalog import EventCatalog, EventData, catalog
from herald.delivery_options.transforms import TransformError, transform_from_stored
from tests.api_support import assert_error
from tests.support import ADMIN

URL = "https://example.com/webhooks"
#: Every value of the data, joined: ``join`` takes strings only, so a null among them fails it.
JOIN_VALUES = "{v: join(',', values(data))}"
READING = {"sensor": "s-1", "taken_at": "2026-01-01T12:00:00+00:00"}
TALLY = {"count": 3.0}


class _Reading(EventData):
    sensor: str
    taken_at: AwareDatetime
    note: str | None = None


class _Tally(EventData):
    count: int
    limit: int = 10


@pytest.fixture
def local_types(monkeypatch: pytest.MonkeyPatch) -> EventCatalog:
    """Two types whose examples are not what is delivered, declared in a catalog of their own and put in the API's:
    ``test.reading`` leaves out its optional ``note`` and writes its date-time with ``+00:00``, ``test.tally`` writes
    its integer as ``3.0`` and leaves out ``limit`` (10 by default)."""
    declared = EventCatalog()
    declared.event("test.reading", example=READING)(_Reading)
    declared.event("test.tally", example=TALLY)(_Tally)
    for entry in declared:
        monkeypatch.setitem(catalog._types, entry.name, entry)
    return declared


def _published(client: Any, tenant: Any, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    body = {"type": event_type, "tenant_id": tenant.id, "data": data}
    response = client.post("/v1/events", json=body, headers=ADMIN)
    assert response.status_code == 202, response.text
    return dict(response.json())


def test_a_transform_failing_on_the_delivered_example_is_refused_when_set(client, tenant, services, local_types):
    # GIVEN a type whose example leaves out an optional field, and a transform joining every value of the data: it
    # works on the example as written (all strings), not on the example as delivered (`note` is null)
    # WHEN a subscription is created with it, or one without a transform is changed to it
    created = client.post(
        "/v1/subscriptions",
        json={"url": URL, "event_types": ["test.reading"], "transform": JOIN_VALUES},
        headers=tenant.headers,
    )
    plain = client.post("/v1/subscriptions", json={"url": URL, "event_types": ["test.reading"]}, headers=tenant.headers)
    assert plain.status_code == 201, plain.text
    changed = client.patch(
        f"/v1/subscriptions/{plain.json()['id']}", json={"transform": JOIN_VALUES}, headers=tenant.headers
    )
    # THEN both are refused, naming the type and the function that failed
    for response in (created, changed):
        error = assert_error(response, 422, "invalid_transform")
        assert "test.reading" in error["message"], error["message"]
        assert "join()" in error["message"], error["message"]
        assert error["details"][0]["type"] == "transform_failed"
    # AND that is what a real delivery of the example would do: the body stored for it fails the transform
    event = _published(client, tenant, "test.reading", READING)
    stored = services.store.events.get(event["id"])
    assert stored is not None
    with pytest.raises(TransformError, match=r"join\(\)"):
        transform_from_stored(JOIN_VALUES).apply_to_body(stored.event.payload)


def test_a_dry_run_shows_each_example_as_a_delivery_carries_it(client, tenant, services, local_types) -> None:
    # GIVEN a subscription to both types, without a transform
    sub = client.post(
        "/v1/subscriptions", json={"url": URL, "event_types": ["test.reading", "test.tally"]}, headers=tenant.headers
    )
    assert sub.status_code == 201, sub.text
    path = f"/v1/subscriptions/{sub.json()['id']}/transform/dry-run"
    # WHEN it is dry-run as it is, and with a transform that gives the data as it finds it
    plain = client.post(path, headers=tenant.headers)
    transformed = client.post(path, json={"transform": "{data: data}"}, headers=tenant.headers)
    assert plain.status_code == transformed.status_code == 200, (plain.text, transformed.text)
    # THEN each example's data is what is delivered: the optional field null or its default, the date-time with Z,
    # the integer an integer
    reading = {"sensor": "s-1", "taken_at": "2026-01-01T12:00:00Z", "note": None}
    tally = {"count": 3, "limit": 10}
    for answer in (plain.json(), transformed.json()):
        assert answer["results"]["test.reading"]["data"] == reading
        assert answer["results"]["test.tally"]["data"] == tally
        assert type(answer["results"]["test.tally"]["data"]["count"]) is int
    # AND it is exactly the data of a real event published with the example, as stored and sent
    for event_type, example in (("test.reading", READING), ("test.tally", TALLY)):
        event = _published(client, tenant, event_type, example)
        stored = services.store.events.get(event["id"])
        assert stored is not None
        delivered = json.loads(stored.event.payload)
        assert delivered["data"] == plain.json()["results"][event_type]["data"]
        assert json.dumps(delivered["data"]) == json.dumps(plain.json()["results"][event_type]["data"])


def test_the_webhook_documentation_shows_the_example_as_delivered(local_types) -> None:
    # GIVEN the two types, whose examples are not written as they are delivered
    for entry in local_types:
        # WHEN their webhook's body is documented
        documented = entry.envelope.model_json_schema()["examples"][0]
        # THEN its example's data is the one delivered for the example published, not the example as written
        delivered = entry.validate_json(json.dumps(entry.example))
        assert documented["data"] == delivered
        assert json.dumps(documented["data"]) != json.dumps(entry.example)
        # AND it is the one transforms are checked and dry-run against
        assert entry.delivered_example == delivered
