"""One delivery over real HTTP: what is sent, and how each kind of answer (or silence) is taken.

Every receiver is a real server on 127.0.0.1; deliveries are verified with ``standardwebhooks`` and
``svix``. The worker runs on the real clock here; retry timing is in test_delivery_retries.py.
"""

# Over 400 lines on purpose: one module per area of behaviour, whose tests share its fixtures and helpers and read
# in order as that area's specification.

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest

from benchmarks.cost import item_size
from herald import __version__, faults
from herald.sender import RESPONSE_MAX_BYTES, SUCCESS_RESPONSE_MAX_BYTES
from tests.delivery_support import (
    ConcurrencyProbe,
    Harness,
    RawServer,
    attempts,
    bulk_subscriptions,
    closed_port_url,
    deliveries,
    delivery_id_of,
    event_counts,
    only_delivery,
    publish,
    subscribe,
    verify,
    when,
)
from tests.support import ADMIN, INVOICE, Receiver, TenantInfo

pytestmark = pytest.mark.e2e


@pytest.fixture
def clock() -> Callable[[], float]:
    """The worker runs on the real clock here (the shared ``harness`` takes it)."""
    return time.time


@pytest.fixture
def raw_servers() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def make(mode: str, answer: bytes = b"") -> RawServer:
        servers.append(RawServer(mode, answer))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def _one_failed_attempt(client: Any, tenant: TenantInfo, sub_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    delivery = only_delivery(client, tenant, sub_id)
    (attempt,) = attempts(client, tenant, sub_id, delivery["id"])
    assert attempt["succeeded"] is False
    return delivery, attempt


# --- the happy path --------------------------------------------------------------------------------------------


def test_every_matching_subscriber_gets_exactly_one_verified_delivery(
    client, tenant, make_tenant, harness: Harness, make_receiver
) -> None:
    # GIVEN three subscribers to invoice.paid, one to everything, one to another type, one disabled,
    # and a subscriber of another tenant
    receivers = [make_receiver() for _ in range(7)]
    subs = [subscribe(client, tenant, r.url) for r in receivers[:3]]
    wildcard = subscribe(client, tenant, receivers[3].url, ["*"])
    subscribe(client, tenant, receivers[4].url, ["order.shipped"])
    disabled = subscribe(client, tenant, receivers[5].url)
    assert client.patch(f"/v1/subscriptions/{disabled.id}", json={"enabled": False}, headers=tenant.headers).is_success
    other = make_tenant("Other")
    subscribe(client, other, receivers[6].url)

    # WHEN an invoice.paid event is published to the tenant and the worker drains the queue
    event_id = publish(client, tenant.id)
    harness.drain()

    # THEN each matching subscriber received it exactly once, verified by both libraries, and the others nothing
    stored = harness.services.store.events.get(event_id)
    assert stored is not None
    for receiver, sub in zip(receivers[:4], [*subs, wildcard], strict=True):
        assert len(receiver.received) == 1, receiver.received
        got = receiver.received[0]
        payload = verify(sub.secret, got)
        assert payload == {"type": "invoice.paid", "timestamp": payload["timestamp"], "data": payload["data"]}
        assert payload["data"]["invoice_id"] == INVOICE["invoice_id"]
        assert got.body == stored.event.payload.encode()  # the exact bytes that were signed
        assert got.headers["webhook-id"] == event_id
        assert got.headers["content-type"] == "application/json"
        assert got.headers["user-agent"] == f"Herald/{__version__}"
        assert abs(int(got.headers["webhook-timestamp"]) - datetime.now(UTC).timestamp()) < 60
        assert got.headers["webhook-signature"].startswith("v1,")
        assert len(got.headers["webhook-signature"].split(" ")) == 1
    assert [len(r.received) for r in receivers[4:]] == [0, 0, 0]
    # AND the delivery log and the event's counts agree
    for sub in [*subs, wildcard]:
        delivery = only_delivery(client, tenant, sub.id)
        assert delivery["id"] == delivery_id_of(harness.services.store, event_id, sub.id)
        assert delivery["status"] == "succeeded"
        assert delivery["attempts"] == 1
        (attempt,) = attempts(client, tenant, sub.id, delivery["id"])
        assert attempt["attempt_number"] == 1
        assert attempt["trigger"] == "scheduled"
        assert attempt["status_code"] == 200
        assert attempt["response_body"] == "ok"
        assert attempt["next_attempt_at"] is None
    assert deliveries(client, tenant, disabled.id) == []
    assert event_counts(client, event_id) == {
        "matched": 4,
        "pending": 0,
        "succeeded": 4,
        "failed": 0,
        "filtered": 0,
        "fanout_complete": True,
    }
    # AND nothing is left on the queues
    assert harness.counts() == (0, 0)
    assert harness.counts(harness.services.settings.dead_letter_queue_url) == (0, 0)


def test_a_whole_batch_is_sent_concurrently(client, tenant, harness: Harness) -> None:
    # GIVEN six subscribers behind a server that answers only once all six requests are in flight together
    probe = ConcurrencyProbe(expected=6)
    try:
        subs = [subscribe(client, tenant, probe.url(f"s{index}")) for index in range(6)]
        event_id = publish(client, tenant.id)
        # WHEN its six deliveries (queued by publishing itself: six routes, in one message) arrive in one batch
        harness.drain()
        # THEN all six were in flight at the same time and all succeeded
        assert probe.most_in_flight == 6
        assert sorted(probe.paths) == [f"/s{index}" for index in range(6)]
        assert [r.deleted for r in harness.results] == [1]
        for sub in subs:
            assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"
        assert event_counts(client, event_id)["succeeded"] == 6
    finally:
        probe.close()


def test_an_answer_slower_than_usual_but_within_the_timeout_succeeds(client, tenant, harness, receiver) -> None:
    # GIVEN a receiver that takes 1.5 s to answer (the timeout is 5 s)
    receiver.default = (204, {}, b"", 1.5)
    sub = subscribe(client, tenant, receiver.url)
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN it succeeded, and the attempt's duration shows the wait
    delivery = only_delivery(client, tenant, sub.id)
    assert delivery["status"] == "succeeded"
    assert delivery["last_status_code"] == 204
    (attempt,) = attempts(client, tenant, sub.id, delivery["id"])
    assert attempt["duration_ms"] >= 1400
    assert attempt["response_body"] == ""


def test_a_cookie_an_endpoint_sets_is_never_sent_with_a_later_delivery(client, make_tenant, harness, receiver) -> None:
    # GIVEN two tenants' subscriptions on one host (a shared webhook gateway), the first answering with a cookie
    first, second = make_tenant("Acme"), make_tenant("Globex")
    subscribe(client, first, f"{receiver.url}?tenant=acme")
    subscribe(client, second, f"{receiver.url}?tenant=globex")
    receiver.default = (200, {"set-cookie": "session=acme-secret; Path=/"}, b"ok", 0.0)
    # WHEN the first tenant's event is delivered, then the second's, then the first's again, by the same worker
    for tenant in (first, second, first):
        publish(client, tenant.id)
        harness.drain()
    # THEN each was delivered, and none carried the cookie back: to its own endpoint or to another tenant's
    assert [got.path for got in receiver.received] == [
        "/webhook?tenant=acme",
        "/webhook?tenant=globex",
        "/webhook?tenant=acme",
    ]
    assert [got.headers.get("cookie") for got in receiver.received] == [None, None, None]


# --- failures ----------------------------------------------------------------------------------------------------


def test_a_500_is_a_failed_attempt_retried_after_the_second_step(client, tenant, harness, receiver) -> None:
    # GIVEN a receiver that answers 500 with a body
    receiver.default = (500, {}, b"database down", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN one attempt was made and recorded as an HTTP failure with the response body
    delivery, attempt = _one_failed_attempt(client, tenant, sub.id)
    assert len(receiver.received) == 1
    assert attempt["status_code"] == 500
    assert attempt["error_kind"] == "http_status"
    assert attempt["response_body"] == "database down"
    # AND the delivery stays pending, due 5 s +/- 20 % later, and its message is hidden until then
    assert delivery["status"] == "pending"
    assert delivery["attempts"] == 1
    delay = when(delivery["next_attempt_at"]) - when(attempt["finished_at"])
    assert 4.0 <= delay <= 6.0
    assert attempt["next_attempt_at"] == delivery["next_attempt_at"]
    (hold,) = harness.holds
    assert abs(hold - delay) <= 1
    assert harness.counts() == (0, 1)


# No jitter: the 60 s floor exactly (jittered, it is 60 to 72 s: tests/test_delivery_policy.py)
@pytest.mark.parametrize("settings_overrides", [{"delivery_timeout_seconds": 1.0, "retry_jitter": 0.0}])
def test_a_receiver_that_never_answers_times_out(client, tenant, harness, raw_servers) -> None:
    # GIVEN a server that accepts the connection and never answers (the timeout is 1 s: see the parametrize)
    server = raw_servers("silent")
    sub = subscribe(client, tenant, server.url)
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN the attempt timed out, and the next one waits at least 60 s (instead of the 5 s step)
    delivery, attempt = _one_failed_attempt(client, tenant, sub.id)
    assert server.accepted == 1
    assert attempt["error_kind"] == "timeout"
    assert attempt["status_code"] is None
    assert 900 <= attempt["duration_ms"] < 5000
    assert when(delivery["next_attempt_at"]) - when(attempt["finished_at"]) == pytest.approx(60, abs=0.01)
    assert harness.holds == [pytest.approx(60, abs=1)]


@pytest.mark.parametrize("settings_overrides", [{"delivery_timeout_seconds": 1.0}])
def test_an_answer_slower_than_the_timeout_is_a_timeout(client, tenant, harness, receiver) -> None:
    # GIVEN a receiver that answers after 3 s, with a 1 s timeout
    receiver.default = (200, {}, b"late", 3.0)
    sub = subscribe(client, tenant, receiver.url)
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN the request arrived but the attempt is a timeout: a late 200 is not a success
    delivery, attempt = _one_failed_attempt(client, tenant, sub.id)
    assert len(receiver.received) == 1
    assert attempt["error_kind"] == "timeout"
    assert delivery["status"] == "pending"


def test_a_refused_connection_is_a_connection_error(client, tenant, harness) -> None:
    # GIVEN a subscription to a port nobody listens on
    sub = subscribe(client, tenant, closed_port_url())
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN the attempt failed with a connection error and no status, and a retry is scheduled
    delivery, attempt = _one_failed_attempt(client, tenant, sub.id)
    assert attempt["error_kind"] == "connection"
    assert attempt["status_code"] is None
    assert attempt["error_message"]
    assert delivery["status"] == "pending"
    assert delivery["next_attempt_at"] is not None


def test_a_connection_closed_without_an_answer_is_a_connection_error(client, tenant, harness, raw_servers) -> None:
    # GIVEN a server that closes every connection as soon as it accepts it
    server = raw_servers("close")
    sub = subscribe(client, tenant, server.url)
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN the attempt failed with a connection error
    _, attempt = _one_failed_attempt(client, tenant, sub.id)
    assert server.accepted >= 1
    assert attempt["error_kind"] == "connection"
    assert attempt["status_code"] is None


@pytest.mark.parametrize("settings_overrides", [{"delivery_timeout_seconds": 1.0}])
@pytest.mark.parametrize("mode", ["silent", "close"], ids=["body-stalls-past-the-timeout", "body-cut-short"])
def test_a_2xx_whose_head_came_in_time_is_a_success_however_its_body_ends(
    client, tenant, harness, raw_servers, mode: str
) -> None:
    # GIVEN a server that answers 200 at once, with 2 of the 5,000 bytes its head announces, then holds the
    # connection past the 1 s timeout (or closes it)
    server = raw_servers(mode, b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\nok")
    sub = subscribe(client, tenant, server.url)
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN the subscriber took it: the attempt succeeded with its status and what came of its body, and nothing is
    # sent again
    delivery = only_delivery(client, tenant, sub.id)
    (attempt,) = attempts(client, tenant, sub.id, delivery["id"])
    assert (delivery["status"], delivery["next_attempt_at"]) == ("succeeded", None)
    assert (attempt["succeeded"], attempt["status_code"], attempt["error_kind"]) == (True, 200, None)
    assert attempt["response_body"] == "ok"
    assert server.accepted == 1
    assert harness.counts() == (0, 0)


@pytest.mark.parametrize("settings_overrides", [{"delivery_timeout_seconds": 1.0}])
def test_a_500_whose_body_stalls_is_the_500_it_answered(client, tenant, harness, raw_servers) -> None:
    # GIVEN a server that answers 500 at once, then holds the rest of its body past the timeout
    server = raw_servers("silent", b"HTTP/1.1 500 Oops\r\nContent-Length: 5000\r\n\r\ndown")
    sub = subscribe(client, tenant, server.url)
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN the attempt failed with its status, the body as far as it came, and the message says the rest did not
    _, attempt = _one_failed_attempt(client, tenant, sub.id)
    assert (attempt["status_code"], attempt["error_kind"], attempt["response_body"]) == (500, "http_status", "down")
    assert attempt["error_message"].startswith("the endpoint answered 500; its body did not arrive whole")


def test_https_to_a_server_that_speaks_plain_http_is_a_tls_error(client, tenant, harness, receiver) -> None:
    # GIVEN a subscription with an https URL to a server that only speaks plain HTTP
    sub = subscribe(client, tenant, receiver.url.replace("http://", "https://"))
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN the TLS handshake failed: a tls error, no status, and nothing was received as a request
    delivery, attempt = _one_failed_attempt(client, tenant, sub.id)
    assert attempt["error_kind"] == "tls"
    assert attempt["status_code"] is None
    assert receiver.received == []
    assert delivery["status"] == "pending"


def test_a_redirect_is_a_failure_and_never_followed(client, tenant, harness, make_receiver) -> None:
    # GIVEN a receiver that redirects to another one
    redirecting, target = make_receiver(), make_receiver()
    redirecting.default = (302, {"location": target.url}, b"", 0.0)
    sub = subscribe(client, tenant, redirecting.url)
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN the 302 is a failed attempt, and the redirect target never received anything
    delivery, attempt = _one_failed_attempt(client, tenant, sub.id)
    assert attempt["status_code"] == 302
    assert attempt["error_kind"] == "http_status"
    assert "redirect" in attempt["error_message"]
    assert delivery["status"] == "pending"
    assert len(redirecting.received) == 1
    assert target.received == []


def _disabled_by_its_410(
    client: Any, tenant: TenantInfo, harness: Harness, receiver: Receiver, sub_id: str, *, received: int
) -> None:
    """The subscription is disabled for a 410, and an event published now is not sent to it: the receiver still has
    the ``received`` requests it had."""
    body = client.get(f"/v1/subscriptions/{sub_id}", headers=tenant.headers).json()
    assert body["enabled"] is False
    assert "410" in body["disabled_reason"]
    publish(client, tenant.id)
    harness.drain()
    assert len(receiver.received) == received


def test_a_410_disables_the_subscription_and_stops_its_retries(client, tenant, harness, receiver) -> None:
    # GIVEN a receiver that answers 410 Gone
    receiver.default = (410, {}, b"gone", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    # WHEN an event is delivered
    event_id = publish(client, tenant.id)
    harness.drain()
    # THEN the delivery failed at once, with no next attempt and no message left to retry it
    delivery, attempt = _one_failed_attempt(client, tenant, sub.id)
    assert delivery["status"] == "failed"
    assert delivery["next_attempt_at"] is None
    assert attempt["status_code"] == 410
    assert attempt["next_attempt_at"] is None
    assert harness.counts() == (0, 0)
    assert harness.holds == []
    assert event_counts(client, event_id) == {
        "matched": 1,
        "pending": 0,
        "succeeded": 0,
        "failed": 1,
        "filtered": 0,
        "fanout_complete": True,
    }
    # AND the subscription is disabled with the reason recorded, and later events no longer go to it
    _disabled_by_its_410(client, tenant, harness, receiver, sub.id, received=1)


def test_a_410_whose_disabling_write_failed_disables_at_the_next_410(client, tenant, harness, receiver) -> None:
    # GIVEN a receiver that answers 410 Gone, and DynamoDB refusing the write that disables its subscription (after
    # botocore's retries)
    receiver.default = (410, {}, b"gone", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    injector = faults.install(harness.services.store.table.client, "dynamodb.TransactWriteItems:throttle@call=calls:1")
    assert injector is not None
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN its delivery failed, and the subscription is still enabled (the batch logged the write it could not make)
    assert injector.count() == 1
    delivery, _ = _one_failed_attempt(client, tenant, sub.id)
    assert delivery["status"] == "failed"
    assert client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()["enabled"] is True
    # WHEN the next event gets a 410 too
    publish(client, tenant.id)
    harness.drain()
    # THEN that one disables it, and later events no longer go to it
    _disabled_by_its_410(client, tenant, harness, receiver, sub.id, received=2)


def test_a_410_with_a_retry_after_date_no_calendar_holds_still_disables(client, tenant, harness, receiver) -> None:
    # GIVEN an endpoint that answers 410 with a Retry-After date in a year past what a datetime holds
    receiver.default = (410, {"retry-after": "Mon, 1 Jan 99999999999 00:00:00 GMT"}, b"gone", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN the 410 is what the attempt recorded (the header is ignored), and it disabled the subscription
    _, attempt = _one_failed_attempt(client, tenant, sub.id)
    assert (attempt["status_code"], attempt["error_kind"]) == (410, "http_status")
    assert client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()["enabled"] is False


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        ("100", 100.0),  # within [1x, 2x] of the 60 s floor: honoured
        ("1000", 120.0),  # clamped to 2x
        ("3", 60.0),  # clamped to 1x
        ("http-date+100", 100.0),  # an HTTP date 100 s ahead
        ("soon", 60.0),  # unreadable: ignored
    ],
)
@pytest.mark.parametrize("settings_overrides", [{"retry_jitter": 0.0}])  # the 60 s floor exactly
def test_a_429_waits_at_least_60s_and_honours_retry_after_within_bounds(
    client, tenant, harness, receiver, retry_after: str, expected: float
) -> None:
    # GIVEN a receiver that answers 429 with a Retry-After header
    date: float | None = None
    if retry_after.startswith("http-date"):
        # An absolute date (whole seconds, as HTTP dates are) about 100 s ahead
        date = math.ceil(time.time()) + 100
        retry_after = format_datetime(datetime.fromtimestamp(date, UTC), usegmt=True)
    receiver.default = (429, {"retry-after": retry_after}, b"slow down", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN the next attempt is scheduled at the Retry-After, clamped to [60 s, 120 s]
    delivery, attempt = _one_failed_attempt(client, tenant, sub.id)
    assert attempt["status_code"] == 429
    delay = when(delivery["next_attempt_at"]) - when(attempt["finished_at"])
    if date is None:
        assert delay == pytest.approx(expected, abs=1.5)
    else:
        # ... at the date itself, whatever time the delivery took to get there (well within the bounds)
        assert 60 <= delay <= 120
        assert when(delivery["next_attempt_at"]) == pytest.approx(date, abs=1.0)
    (hold,) = harness.holds
    assert hold == pytest.approx(delay, abs=2)


@pytest.mark.parametrize("status", [502, 504])
def test_a_502_or_504_slows_down_as_a_429_does(client, tenant, harness, receiver, status: int) -> None:
    # GIVEN a receiver behind a gateway that answers 502 or 504 (Standard Webhooks: a server under load)
    receiver.default = (status, {}, b"upstream busy", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN the retry waits the throttle floor (60 s, +0 to 20 %), not the schedule's 5 s
    delivery, attempt = _one_failed_attempt(client, tenant, sub.id)
    assert (attempt["status_code"], attempt["error_kind"]) == (status, "http_status")
    delay = when(delivery["next_attempt_at"]) - when(attempt["finished_at"])
    assert 59.5 <= delay <= 72.5


def test_the_response_body_is_kept_up_to_20000_bytes(client, tenant, harness, receiver) -> None:
    # GIVEN a receiver that answers 500 with 60,000 bytes of two-byte characters
    receiver.default = (500, {"content-type": "text/plain; charset=utf-8"}, "é".encode() * 30_000, 0.0)
    sub = subscribe(client, tenant, receiver.url)
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN the attempt log keeps the first 20,000 bytes, whole characters only
    _, attempt = _one_failed_attempt(client, tenant, sub.id)
    kept = attempt["response_body"].encode()
    assert len(kept) == RESPONSE_MAX_BYTES
    assert set(attempt["response_body"]) == {"é"}


def test_a_successful_answer_is_kept_up_to_128_bytes_and_its_delivery_in_one_write_unit(
    client, tenant, harness, receiver
) -> None:
    # GIVEN a receiver that answers 200 with a 5,000-byte page
    receiver.default = (200, {"content-type": "text/html; charset=utf-8"}, b"<p>" + b"x" * 4_993 + b"</p>", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN the successful attempt keeps the first 128 bytes of the answer
    delivery = only_delivery(client, tenant, sub.id)
    (attempt,) = attempts(client, tenant, sub.id, delivery["id"])
    assert attempt["succeeded"] is True
    assert attempt["response_body"] == "<p>" + "x" * (SUCCESS_RESPONSE_MAX_BYTES - 3)
    # AND the delivery, written once with its attempt inside, stays within one write unit (1 KB, by DynamoDB's
    # item size rules), and nothing else is written for it: no index entry (it is listed by its own key)
    (written,) = [item for item in harness.table_calls.items_written() if item["sk"]["S"] == delivery["id"]]
    assert item_size(written) <= 1024
    assert not {"gsi1pk", "gsi2pk"} & written.keys()


@pytest.mark.parametrize("settings_overrides", [{"allowed_target_networks": "none"}])
def test_a_url_the_policy_refuses_is_never_called(client, tenant, harness, receiver) -> None:
    # GIVEN a deployment that refuses private addresses, and a loopback subscription written around the API
    (sub,) = bulk_subscriptions(harness.services.store, tenant.id, receiver.url, 1)
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN the attempt is refused by policy and the receiver got nothing
    delivery, attempt = _one_failed_attempt(client, tenant, sub.id)
    assert attempt["error_kind"] == "refused_by_policy"
    assert attempt["status_code"] is None
    assert "127.0.0.1 is a loopback address" in attempt["error_message"]
    assert receiver.received == []
    # AND the delivery failed for good: knocking on the same door again would be refused again
    assert delivery["status"] == "failed"
    assert delivery["next_attempt_at"] is None


# --- rotation and the test endpoint -----------------------------------------------------------------------------


def test_after_a_rotation_both_secrets_verify_a_delivery(client, tenant, harness, receiver) -> None:
    # GIVEN a subscription whose secret was rotated (the old one keeps signing for the grace period)
    sub = subscribe(client, tenant, receiver.url)
    rotated = client.post(f"/v1/subscriptions/{sub.id}/secret/rotate", headers=tenant.headers)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != sub.secret
    assert rotated.json()["previous_valid_until"] is not None
    # WHEN an event is delivered
    publish(client, tenant.id)
    harness.drain()
    # THEN the signature header carries two v1 signatures, and each secret alone verifies the delivery
    (got,) = receiver.received
    signatures = got.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    assert verify(new_secret, got) == verify(sub.secret, got)


def test_the_test_endpoint_sends_the_ping_through_the_real_path(client, tenant, harness, receiver) -> None:
    # GIVEN a subscription
    sub = subscribe(client, tenant, receiver.url)
    # WHEN the tenant asks for a test delivery
    response = client.post(f"/v1/subscriptions/{sub.id}/test", headers=tenant.headers)
    assert response.status_code == 202, response.text
    sent = response.json()
    harness.drain()
    # THEN the receiver got a signed herald.ping, logged as a "test" attempt of the named delivery
    (got,) = receiver.received
    payload = verify(sub.secret, got)
    assert payload["type"] == "herald.ping"
    assert payload["data"]["subscription_id"] == sub.id
    assert got.headers["webhook-id"] == sent["event_id"]
    delivery = only_delivery(client, tenant, sub.id)
    assert delivery["id"] == sent["delivery_id"]
    assert delivery["status"] == "succeeded"
    (attempt,) = attempts(client, tenant, sub.id, delivery["id"])
    assert attempt["trigger"] == "test"
    counts = event_counts(client, sent["event_id"])
    assert (counts["matched"], counts["pending"], counts["succeeded"]) == (1, 0, 1)


def test_a_test_event_is_not_redelivered_to_other_subscriptions(client, tenant, harness, make_receiver) -> None:
    # GIVEN a subscription's test event, delivered, and another subscription of the tenant to every event type
    own, other = make_receiver(), make_receiver()
    sub = subscribe(client, tenant, own.url)
    subscribe(client, tenant, other.url, ["*"])
    sent = client.post(f"/v1/subscriptions/{sub.id}/test", headers=tenant.headers).json()
    harness.drain()
    assert (len(own.received), len(other.received)) == (1, 0)
    # WHEN the operator asks for the test event to be redelivered
    response = client.post(f"/v1/events/{sent['event_id']}/redeliver", headers=ADMIN)
    # THEN it is a 409 saying to send a new test: nothing more goes anywhere
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "conflict"
    assert "/test" in response.json()["error"]["message"]
    harness.drain()
    assert (len(own.received), len(other.received)) == (1, 0)


def test_a_deleted_tenants_event_is_not_redelivered(client, tenant, harness, receiver) -> None:
    # GIVEN a tenant's event, delivered, and the tenant deleted (its purge not run yet: its subscription is there)
    subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    assert client.delete(f"/v1/tenants/{tenant.id}", headers=ADMIN).status_code == 204
    # WHEN the operator asks for the event to be redelivered
    response = client.post(f"/v1/events/{event_id}/redeliver", headers=ADMIN)
    # THEN it is not found, and nothing more goes to the deleted tenant's endpoint
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"
    harness.drain()
    assert len(receiver.received) == 1


def test_a_test_event_reports_its_fanout_complete(client, tenant, harness, receiver) -> None:
    # GIVEN a test delivery sent and delivered
    sub = subscribe(client, tenant, receiver.url)
    sent = client.post(f"/v1/subscriptions/{sub.id}/test", headers=tenant.headers).json()
    harness.drain()
    # THEN its event says the fan-out is complete (there is none: it goes to one subscription)
    assert event_counts(client, sent["event_id"])["fanout_complete"] is True


def test_a_delivery_body_is_the_events_stored_envelope(client, tenant, harness, receiver) -> None:
    # GIVEN a subscription to order.shipped
    sub = subscribe(client, tenant, receiver.url, ["order.shipped"])
    # WHEN an order.shipped event is published
    event_id = publish(client, tenant.id, "order.shipped")
    harness.drain()
    # THEN the body is {"type", "timestamp", "data"} with the event's data and creation time
    (got,) = receiver.received
    verify(sub.secret, got)
    body = json.loads(got.body)
    assert list(body) == ["type", "timestamp", "data"]
    assert body["type"] == "order.shipped"
    assert body["data"]["order_id"] == "ord_7"
    event = client.get(f"/v1/events/{event_id}", headers=ADMIN).json()
    assert when(body["timestamp"].replace("Z", "+00:00")) == pytest.approx(when(event["timestamp"]), abs=0.001)


def test_deliveries_list_filters_by_status_and_pages(client, tenant, harness, receiver: Receiver) -> None:
    # GIVEN three events to one subscription, the second of which fails
    receiver.responses = [(200, {}, b"", 0.0), (500, {}, b"", 0.0), (200, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    for _ in range(3):
        publish(client, tenant.id)
        harness.drain()
    # WHEN the tenant lists the subscription's deliveries, by status and two at a time
    pending = deliveries(client, tenant, sub.id, status="pending")
    succeeded = deliveries(client, tenant, sub.id, status="succeeded")
    first = client.get(f"/v1/subscriptions/{sub.id}/deliveries", params={"limit": 2}, headers=tenant.headers).json()
    second = client.get(
        f"/v1/subscriptions/{sub.id}/deliveries",
        params={"limit": 2, "iterator": first["iterator"]},
        headers=tenant.headers,
    ).json()
    # THEN the filter and the cursor give each delivery once
    assert len(pending) == 1
    assert len(succeeded) == 2
    assert first["done"] is False
    assert second["done"] is True
    listed = [d["id"] for d in first["data"] + second["data"]]
    assert sorted(listed) == sorted(d["id"] for d in pending + succeeded)
