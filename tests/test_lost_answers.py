"""Answers lost on the way back from AWS: botocore sends the call again (``lost@send`` in herald.faults, the
request carried out each time). What counts (a subscription's stats and failure streak, its timeouts and
breaker, an event's counters) counts each attempt once, no webhook is sent twice, and a conditional write
refused by its own first send answers as that send did."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient

from herald.errors import ServiceUnavailableError
from herald.faults import FaultInjector, install
from herald.messages import DeliveryMessage, dump_message
from herald.services import Services
from herald.storage.health import AttemptTally, RateSlot
from herald.storage.table import Table
from tests.api_support import queue_messages
from tests.delivery_support import (
    Harness,
    deliveries,
    delivery_id_of,
    event_counts,
    fanned_out_counts,
    publish,
    stats,
    step,
    subscribe,
)
from tests.portal_support import Browser, follow, mint
from tests.support import ADMIN, Clock, Receiver, TenantInfo


def _losing(services: Services, spec: str) -> tuple[str, FaultInjector]:
    """Install ``spec`` (one service's lost answers) on that service's client of ``services``: (service, injector)."""
    service = spec.partition(":")[0]
    injector = install(services.store.client if service == "dynamodb" else services.queue.client, spec)
    assert injector is not None
    return service, injector


@pytest.mark.parametrize("spec", ["dynamodb:lost@send=1", "sqs:lost@send=1"])
@pytest.mark.parametrize(
    "settings_overrides",
    [
        # publishing queues the deliveries, and each event, naming its two subscriptions, is counted from them
        pytest.param({"failing_after_failures": 5}, id="direct"),
        # a fan-out message queues them, and the worker counts each event as they settle (its counts write)
        pytest.param({"failing_after_failures": 5, "direct_fanout_max": 0}, id="fanout_message"),
    ],
)
def test_with_every_answer_lost_once_each_attempt_is_counted_and_sent_once(
    client: TestClient,
    tenant: TenantInfo,
    services: Services,
    harness: Harness,
    clock: Clock,
    receiver: Receiver,
    make_receiver: Callable[[], Receiver],
    spec: str,
) -> None:
    # GIVEN a healthy subscription and a failing one, three events for both, and every answer of one AWS
    # service to the worker lost once (each call carried out twice)
    failing = make_receiver()
    failing.default = (500, {}, b"down", 0.0)
    healthy = subscribe(client, tenant, receiver.url)
    down = subscribe(client, tenant, failing.url)
    events = [publish(client, tenant.id) for _ in range(3)]
    service, injector = _losing(services, spec)
    # WHEN the worker delivers them, and retries the failing one's for four hours
    harness.drain()
    for _ in range(4):
        step(harness, clock, 3600)
    # (the worker's writes among them: its counts and records, or its messages)
    writes = {"dynamodb": {"UpdateItem", "BatchExecuteStatement"}, "sqs": {"SendMessageBatch"}}[service]
    assert writes <= {hit.operation for hit in injector.injected}
    # THEN the healthy subscription got each event once, and its stats count three attempts
    assert sorted(got.headers["webhook-id"] for got in receiver.received) == sorted(events)
    ok = client.get(f"/v1/subscriptions/{healthy.id}/stats", headers=tenant.headers).json()
    assert (ok["attempts"], ok["succeeded"], ok["failed"]) == (3, 3, 0)
    # AND the failing one's stats count each request its endpoint received once, as its streak does, which
    # counts as failing from the fifth
    made = len(failing.received)
    assert made == 12  # three events, four attempts each
    bad = client.get(f"/v1/subscriptions/{down.id}/stats", headers=tenant.headers).json()
    assert (bad["attempts"], bad["succeeded"], bad["failed"], bad["consecutive_failures"]) == (made, 0, made, made)
    assert bad["failing_since"] is not None
    assert bad["failing_since"] > ok["last_success_at"]
    # AND each event's counters hold one success and one delivery waiting for its retry
    for event_id in events:
        counts = event_counts(client, event_id)
        assert (counts["matched"], counts["succeeded"], counts["pending"], counts["failed"]) == (2, 1, 1, 0)


def test_a_resent_count_of_attempts_is_made_once_and_still_sees_the_streak_it_ended(services: Services) -> None:
    health = services.store.health
    at = datetime.now(UTC).replace(microsecond=0)
    expires = int(at.timestamp()) + 3600
    # GIVEN a subscription failing: three failures in a row, failing from the third
    failures = [AttemptTally(False, 500, at + timedelta(seconds=n)) for n in range(3)]
    assert (
        health.count_attempts("sub_l", failures, failing_after=3, expires_at=expires).failing_since == failures[-1].at
    )
    # WHEN the answers of DynamoDB's updates are lost once each (botocore sends each again), while a batch with a
    # success is counted
    injector = install(services.store.client, "dynamodb.UpdateItem:lost@send=1")
    assert injector is not None
    success = AttemptTally(True, 200, at + timedelta(seconds=5), latency_ms=40)
    ended = health.count_attempts("sub_l", [success], failing_after=3, expires_at=expires)
    # THEN the resend was refused as the write it repeats: one attempt counted, one latency kept...
    assert injector.count("lost", stage="send") >= 1
    stats = health.get_stats("sub_l")
    assert (stats["attempts"], stats["succeeded"], stats["failed"], stats["consecutive_failures"]) == (4, 1, 3, 0)
    assert stats["recent_latency_ms"] == [40]
    assert "failing_since" not in stats
    # ... and the streak it ended is reported, though the item the resend found had it ended already
    assert ended.recoveries == ((failures[-1].at, success.at),)
    # AND a batch of failures after it is counted once too, and reaches the failing clock at its third
    more = [AttemptTally(False, 503, at + timedelta(seconds=10 + n)) for n in range(3)]
    assert health.count_attempts("sub_l", more, failing_after=3, expires_at=expires).failing_since == more[-1].at
    stats = health.get_stats("sub_l")
    assert (stats["attempts"], stats["failed"], stats["consecutive_failures"]) == (7, 6, 3)
    assert stats["failing_since"] == more[-1].at.isoformat()


def test_the_streams_resent_counts_are_made_once_and_still_report_the_streak_they_ended(services: Services) -> None:
    health = services.store.health
    at = datetime.now(UTC).replace(microsecond=0)
    expires = int(at.timestamp()) + 3600

    def tally(seconds: int, succeeded: bool) -> AttemptTally:
        return AttemptTally(succeeded, 200 if succeeded else 500, at + timedelta(seconds=seconds))

    # GIVEN three subscriptions: one failing (three failures in a row), one with a failure counted after the
    # successes the stream is about to count, one with a success and a failure counted after them
    failures = [tally(n, False) for n in range(3)]
    health.count_attempts("sub_failing", failures, failing_after=3, expires_at=expires)
    health.count_attempts("sub_failed_later", [tally(20, False)], failing_after=3, expires_at=expires)
    health.count_attempts("sub_both_later", [tally(20, True), tally(21, False)], failing_after=3, expires_at=expires)
    # WHEN the answers of DynamoDB's updates are lost once each, while the stream counts a success of each
    injector = install(services.store.client, "dynamodb.UpdateItem:lost@send=1")
    assert injector is not None
    streamed = AttemptTally(True, 200, at + timedelta(seconds=5), latency_ms=30)
    ended = {
        sub_id: health.count_streamed(sub_id, [streamed], expires_at=expires)
        for sub_id in ("sub_failing", "sub_failed_later", "sub_both_later")
    }
    assert injector.count("lost", stage="send") >= 3
    # THEN the failing one's streak is over, and reported, though the write's resend found it over already
    assert ended["sub_failing"] == (failures[-1].at, streamed.at)
    stats = health.get_stats("sub_failing")
    assert (stats["attempts"], stats["succeeded"], stats["consecutive_failures"]) == (4, 1, 0)
    assert "failing_since" not in stats
    # AND each success was counted once, its latency kept once, whichever write counted it
    for sub_id, before in (("sub_failing", 3), ("sub_failed_later", 1), ("sub_both_later", 2)):
        stats = health.get_stats(sub_id)
        assert stats["attempts"] == before + 1, sub_id
        assert stats["recent_latency_ms"] == [30], sub_id
    # AND a later failure stays the latest attempt
    assert health.get_stats("sub_failed_later")["consecutive_failures"] == 1
    assert health.get_stats("sub_both_later")["last_success_at"] == tally(20, True).at.isoformat()


def test_a_resent_timeout_counts_once_and_the_breaker_opens_at_its_threshold_and_says_so(
    client: TestClient, tenant: TenantInfo, services: Services, receiver: Receiver
) -> None:
    # GIVEN a subscription, and every answer of DynamoDB's updates lost once (botocore sends each again)
    sub = subscribe(client, tenant, receiver.url)
    injector = install(services.store.client, "dynamodb.UpdateItem:lost@send=1")
    assert injector is not None
    isolation = services.store.isolation
    now = 1_900_000_000.0

    def timeout(at: float) -> tuple[int, float, int, bool]:
        counted = isolation.count_timeout(
            tenant.id, sub.id, now=at, slow_until=at + 900, threshold=3, open_seconds=60, max_open_seconds=3600
        )
        assert counted is not None
        learned, opened = counted
        return learned.timeouts, learned.breaker_until, learned.breaker_openings, opened

    # WHEN its endpoint times out three times in a row
    # THEN each timeout counts once, and the third opens the breaker for a minute and says it did
    assert [timeout(now + n) for n in range(3)] == [
        (1, 0.0, 0, False),
        (2, 0.0, 0, False),
        (3, now + 2 + 60, 1, True),
    ]
    # AND once the minute is over, the next timeout opens it again, for twice as long
    assert timeout(now + 70) == (4, now + 70 + 120, 2, True)
    assert injector.count("lost", stage="send") == 6  # each count, and each opening


def test_with_every_dynamodb_answer_lost_once_the_operators_writes_answer_as_they_did(
    client: TestClient, browser: Browser, services: Services
) -> None:
    # GIVEN every answer of DynamoDB to the API lost once (each call carried out twice)
    injector = install(services.store.client, "dynamodb:lost@send=1")
    assert injector is not None
    # WHEN the operator creates a tenant and issues it a second key
    created = client.post("/v1/tenants", json={"name": "Acme"}, headers=ADMIN)
    assert created.status_code == 201, created.text
    tenant_id = created.json()["id"]
    issued = client.post(f"/v1/tenants/{tenant_id}/api-keys", json={}, headers=ADMIN)
    # THEN the key is issued (its put was refused by its own first send), and works
    assert issued.status_code == 201, issued.text
    listed = client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {issued.json()['key']}"})
    assert listed.status_code == 200, listed.text
    # AND a portal link is minted, and opens a session (its redemption was marked by its own first send)
    me = browser()
    link = mint(me, tenant_id)
    opened = follow(me, link["path"])
    assert opened.status_code == 200, opened.text
    assert me.get("/portal/endpoints").status_code == 200
    # AND the link stays spent
    assert follow(browser(), link["path"]).status_code != 200
    # AND deleting the tenant answers 204 (its item's delete was made by its first send), and the tenant is gone
    deleted = client.delete(f"/v1/tenants/{tenant_id}", headers=ADMIN)
    assert deleted.status_code == 204, deleted.text
    assert client.get(f"/v1/tenants/{tenant_id}", headers=ADMIN).status_code == 404
    assert {"PutItem", "UpdateItem", "DeleteItem"} <= {hit.operation for hit in injector.injected}


@pytest.mark.parametrize("spec", ["dynamodb:lost@send=1", "sqs:lost@send=1"])
@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0"}])
def test_with_every_answer_lost_once_a_tenants_writes_answer_as_they_do_and_jobs_send_once(
    client: TestClient, tenant: TenantInfo, services: Services, harness: Harness, receiver: Receiver, spec: str
) -> None:
    # GIVEN a subscription whose endpoint failed three events' deliveries (one attempt each: no retries)
    receiver.default = (500, {}, b"down", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    events = [publish(client, tenant.id) for _ in range(3)]
    harness.drain()
    assert len(receiver.received) == 3
    receiver.default = (200, {}, b"ok", 0.0)
    # AND every answer of one AWS service lost once from now on (each call carried out twice)
    service, injector = _losing(services, spec)

    def answered(method: str, path: str, status: int, **body: object) -> dict[str, object]:
        response = client.request(method, path, json=body, headers=tenant.headers)
        assert response.status_code == status, (method, path, response.text)
        return dict(response.json()) if response.content else {}

    # WHEN the tenant creates, changes and tests a subscription, recovers the failed deliveries and deletes one
    other = answered("POST", "/v1/subscriptions", 201, url=receiver.url + "/other", event_types=["invoice.paid"])
    answered("PATCH", f"/v1/subscriptions/{other['id']}", 200, description="billing", enabled=False)
    answered("PATCH", f"/v1/subscriptions/{other['id']}", 200, enabled=True)
    answered("POST", f"/v1/subscriptions/{other['id']}/secret/rotate", 200)
    answered("POST", f"/v1/subscriptions/{other['id']}/test", 202)
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    answered("POST", f"/v1/subscriptions/{sub.id}/recover", 202, since=since)
    harness.drain()
    answered("DELETE", f"/v1/subscriptions/{other['id']}", 204)
    # THEN each answered as it does without the fault, and the recovery sent each failed delivery once more, once
    recovered = [got.headers["webhook-id"] for got in receiver.received[3:] if got.path == "/webhook"]
    assert sorted(recovered) == sorted(events)
    assert [got.path for got in receiver.received[3:]].count("/webhook/other") == 1  # the test event
    statuses = sorted((d["status"], d["attempts"]) for d in deliveries(client, tenant, sub.id))
    assert statuses == [("succeeded", 2)] * 3
    writes = {"dynamodb": {"TransactWriteItems", "UpdateItem"}, "sqs": {"SendMessage"}}[service]
    assert writes <= {hit.operation for hit in injector.injected}


def test_a_sweep_whose_cursor_moves_are_answered_late_carries_on_through_its_window(
    harness: Harness, clock: Clock
) -> None:
    # GIVEN work due in each of the last three hours of the schedule, a sweep cursor from before them, and every
    # answer of DynamoDB's updates lost once (the cursor's moves among them)
    store = harness.services.store
    names = ["dlv_a", "dlv_b", "dlv_c"]
    for hours, name in zip((3, 2, 1), names, strict=True):
        message = DeliveryMessage(event_id="evt_l", tenant_id="tnt_l", subscription_id="sub_l", delivery_id=name)
        store.schedule.put(dump_message(message), name=name, due=clock() - hours * 3600, now=clock())
    previous = store.schedule.cursor()
    assert previous is not None
    assert store.schedule.advance(previous, clock() - 4 * 3600)
    injector = install(store.client, "dynamodb.UpdateItem:lost@send=1")
    assert injector is not None
    # WHEN the sweeper runs
    result = harness.worker.sweep()
    # THEN it took each move refused by its own first send for its own, and read the whole window in one sweep
    assert injector.count("lost", stage="send") >= 4  # an hour of the schedule a move
    assert result["complete"] is True
    assert store.schedule.cursor() == clock() + 120
    harness.reveal()
    queued = queue_messages(harness.sqs, harness.services.settings.queue_url)
    assert sorted(body["delivery_id"] for body in queued) == names
    # AND of two overlapping sweeps moving the cursor from the same place to the same place, only the first
    # carries on (the second is not taken for a resend of its own)
    cursor = store.schedule.cursor()
    assert cursor is not None
    assert store.schedule.advance(cursor, cursor + 3600)
    assert not store.schedule.advance(cursor, cursor + 3600)


def test_the_workers_conditional_takes_refused_by_their_own_first_send_are_theirs(
    client: TestClient, tenant: TenantInfo, harness: Harness, clock: Clock, make_receiver: Callable[[], Receiver]
) -> None:
    # GIVEN a subscription whose breaker is half-open, and one whose event's delivery waits for a retry
    store = harness.services.store
    failing = make_receiver()
    failing.default = (500, {}, b"down", 0.0)
    waiting = subscribe(client, tenant, failing.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    delivery_id = delivery_id_of(store, event_id, waiting.id)
    half_open = subscribe(client, tenant, make_receiver().url)
    opened = store.isolation.count_timeout(
        tenant.id, half_open.id, now=clock() - 120, slow_until=0, threshold=1, open_seconds=60, max_open_seconds=60
    )
    assert opened is not None
    # WHEN every answer of DynamoDB's writes is lost once (botocore sends each again, and its own first send
    # refuses the resend)
    injector = install(store.client, "dynamodb.UpdateItem:lost@send=1, dynamodb.PutItem:lost@send=1")
    assert injector is not None
    now = clock()
    # THEN the probe is taken (not held for a probe nobody sends), the rate slot is taken (not waited for), the
    # slow lane is marked (and counted), and the delivery whose event is gone is failed (not dropped)
    assert store.isolation.take_probe(tenant.id, half_open.id, now=now, until=now + 20) == "taken"
    assert store.health.take_rate_slot(half_open.id, interval=1.0, now=now) == RateSlot(0.0, taken=True)
    assert store.isolation.mark_slow(tenant.id, half_open.id, until=now + 900) is True
    failed = store.deliveries.fail_unsendable(tenant.id, waiting.id, delivery_id, event_id, now=harness.worker.now())
    assert failed is not None
    assert failed.status.value == "failed"
    assert injector.count("lost", stage="send") == 4
    # AND each took what it took once: the next asker is refused
    assert store.isolation.take_probe(tenant.id, half_open.id, now=now, until=now + 20) == "held"
    assert not store.health.take_rate_slot(half_open.id, interval=1.0, now=now).taken
    assert store.isolation.mark_slow(tenant.id, half_open.id, until=now + 900) is True  # (to the same moment)
    assert store.isolation.mark_slow(tenant.id, half_open.id, until=now + 600) is False


@pytest.mark.parametrize(("between", "counted"), [(0, 1), (3, 1), (7, 1), (8, 2)])
def test_a_resent_count_of_an_event_is_made_once_unless_eight_other_batches_counted_it_between(
    services: Services, between: int, counted: int
) -> None:
    from herald.storage import keys

    events = services.store.events
    expires = int(datetime.now(UTC).timestamp()) + 3600

    def send() -> bool:
        """A worker batch's count of an event's deliveries (ten succeeded), with its token."""
        return events._update_counts("evt_resent", expires_at=expires, deltas={"succeeded": 10}, token="0123456789ab")

    # GIVEN the count sent once, its answer lost
    assert send()
    # WHEN other batches of its fan-out count the event (one success each) before botocore sends the call again
    for _ in range(between):
        events.count("evt_resent", expires_at=expires, succeeded=1)
    again = send()
    # THEN the resend finds its own write among the last eight and adds nothing, answering as the first send did;
    # past eight, the token is gone and it adds again (the limit ``herald.repair`` recounts)
    assert again
    counts = services.store.table.read(keys.event_counts("evt_resent"))
    assert counts is not None
    assert counts["succeeded"] == 10 * counted + between


# -------------------------------------------------------------------------- answers lost after botocore's last retry


def _stats_of(client: TestClient, tenant: TenantInfo, sub_id: str) -> tuple[int, int, int]:
    counted = stats(client, tenant, sub_id)
    return counted["attempts"], counted["succeeded"], counted["failed"]


@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": 0}])
def test_first_attempts_whose_insert_was_made_and_its_answer_lost_are_counted_on_their_event(
    client: TestClient, tenant: TenantInfo, services: Services, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN an event fanned out to three subscriptions, and the batch's INSERT of their first attempts carried out
    # with its answer lost after botocore's retries (``lost@call``: the call fails, the write is made)
    subs = [subscribe(client, tenant, f"{receiver.url}?n={n}") for n in range(3)]
    event_id = publish(client, tenant.id)
    install(services.store.client, "dynamodb.BatchExecuteStatement:lost@call=calls:1")
    # WHEN the deliveries are worked
    harness.drain()
    step(harness, clock, 400)
    # THEN each is sent once, and counted once: in its stats (from the stream) and on its event, which the records
    # found written count as they would have counted had the answer come back
    assert len(receiver.received) == 3
    assert [_stats_of(client, tenant, sub.id) for sub in subs] == [(1, 1, 0)] * 3
    assert event_counts(client, event_id) == fanned_out_counts(3, succeeded=3)


@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": 0}])
def test_a_retry_whose_record_was_made_and_its_answer_lost_is_counted_on_its_event_and_in_its_stats(
    client: TestClient, tenant: TenantInfo, services: Services, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a delivery whose first attempt failed, and the PutItem recording its second attempt's success carried
    # out with its answer lost after botocore's retries (the third PutItem: the claim, the attempt, the delivery)
    sub = subscribe(client, tenant, receiver.url)
    receiver.responses = [(500, {}, b"", 0.0)]
    event_id = publish(client, tenant.id)
    harness.drain()
    injector = install(services.store.client, "dynamodb.PutItem:lost@call=calls:3")
    assert injector is not None
    # WHEN the retry is made
    step(harness, clock, 10)
    step(harness, clock, 400)
    # THEN the delivery's own write was the one lost, the retry was sent once, and it is counted once
    assert injector.injected[0].keys[0].startswith("DELIVERIES#")
    assert len(receiver.received) == 2
    assert [d["status"] for d in deliveries(client, tenant, sub.id)] == ["succeeded"]
    assert event_counts(client, event_id) == fanned_out_counts(1, succeeded=1)
    assert _stats_of(client, tenant, sub.id) == (2, 1, 1)


@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": 0}])
def test_a_fanout_page_whose_marker_was_written_and_its_answer_lost_is_counted(
    client: TestClient, tenant: TenantInfo, services: Services, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN an event fanned out to three subscriptions, the page's marker written with its answer lost after
    # botocore's retries (the fan-out message fails and runs again)
    for n in range(3):
        subscribe(client, tenant, f"{receiver.url}?n={n}")
    event_id = publish(client, tenant.id)
    install(services.store.client, "dynamodb.PutItem:lost@call=calls:1")
    # WHEN the fan-out and the deliveries are worked
    harness.drain()
    step(harness, clock, 400)
    # THEN the page is counted once (its marker found as this run wrote it), and each delivery sent once
    assert len(receiver.received) == 3
    assert event_counts(client, event_id) == fanned_out_counts(3, succeeded=3)


class _Refusing:
    """A DynamoDB client whose every call is refused for capacity, after botocore's retries."""

    def put_item(self, **_: object) -> object:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}}, "PutItem")

    def batch_get_item(self, **_: object) -> object:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}}, "BatchGet")


def test_a_conditional_write_that_failed_and_could_not_be_read_back_raises_its_own_failure() -> None:
    # GIVEN a table refusing every call WHEN a conditional write is made
    table = Table("herald-test", client=_Refusing())  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailableError) as raised:
        table.put_if({"pk": "A", "sk": "B"}, ConditionExpression="attribute_not_exists(pk)")
    # THEN the error raised is the write's, with DynamoDB's own refusal as its cause (what the logs show)
    assert str(raised.value) == "DynamoDB put_item failed: ProvisionedThroughputExceededException"
    assert isinstance(raised.value.__cause__, ClientError)
