"""The dead-letter queue through the API: what is in it and why, and a redrive that brings healthy messages
back to work while poison stays parked. Messages travel through moto's SQS (its RedrivePolicy moves a
message after maxReceiveCount receives) and deliveries over real HTTP to 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from standardwebhooks import Webhook

from herald import faults
from herald.messages import DeliveriesMessage, DeliveryMessage, PlannedDelivery, dump_message
from herald.queue import MAX_BATCH_BYTES, MAX_DELAY_SECONDS, REDRIVES_ATTRIBUTE
from herald.records import Trigger
from herald.storage import keys
from herald.storage.deliveries import delivery_key
from herald.storage.table import to_item
from tests.api_support import assert_error
from tests.delivery_support import (
    CallRecorder,
    Harness,
    Sub,
    deliveries,
    delivery_id_of,
    event_counts,
    fanned_out_counts,
    make_harness,
    only_delivery,
    publish,
    put_corrupt_event,
    step,
    subscribe,
    take_the_only_message,
    verify,
    when,
)
from tests.support import ADMIN, INVOICE, Clock, Receiver, TenantInfo

pytestmark = pytest.mark.e2e

DEAD_LETTERS = "/v1/admin/dead-letters"
REDRIVE = "/v1/admin/dead-letters/redrive"


@pytest.fixture
def harness(services: Any, aws: Any) -> Iterator[Harness]:
    made = make_harness(services, aws)
    yield made
    made.close()


def dead_letters(client: Any, **params: Any) -> dict[str, Any]:
    response = client.get(DEAD_LETTERS, params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return dict(response.json())


def redrive(client: Any, **body: Any) -> dict[str, Any]:
    response = client.post(REDRIVE, json=body or None, headers=ADMIN)
    assert response.status_code == 202, response.text
    return dict(response.json())


def retire(harness: Harness) -> dict[str, Any]:
    """A worker that dies on every receive of the one message on the work queue: receive it (never deleting
    it) until SQS's RedrivePolicy moves it to the dead-letter queue. Returns its body."""
    url = harness.services.settings.queue_url
    body: dict[str, Any] | None = None
    for _ in range(harness.services.settings.max_receive_count + 1):
        got = harness.sqs.receive_message(QueueUrl=url, VisibilityTimeout=0).get("Messages", [])
        if got:
            body = json.loads(got[0]["Body"])
    assert body is not None
    assert harness.counts() == (0, 0)
    return body


def test_a_poison_message_is_shown_with_its_reason_and_stays_parked(client, harness: Harness) -> None:
    # GIVEN a message no worker can read, sent to the work queue
    harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody='{"kind": "teleport"}')
    # WHEN the worker meets it
    harness.drain()
    # THEN it is in the dead-letter queue, shown with why, and looking at it does not consume it
    for _ in range(2):
        seen = dead_letters(client)
        assert (seen["count"], seen["in_flight"]) == (1, 0)
        (letter,) = seen["sample"]
        assert letter["poison"] is True
        assert letter["reason"].startswith("poison: unreadable work message")
        assert letter["kind"] == "teleport"
        assert letter["body"] == '{"kind": "teleport"}'
        assert letter["event_id"] is None
        assert seen["oldest_sent_at"] == letter["sent_at"]
        assert seen["oldest_age_seconds"] >= 0
    # WHEN the operator redrives the queue
    moved = redrive(client)
    # THEN the poison stays where it is, and nothing reached the work queue
    assert (moved["moved"], moved["kept"], moved["remaining"]) == (0, 1, 1)
    assert harness.counts() == (0, 0)
    assert dead_letters(client)["count"] == 1


def test_a_retired_message_is_redriven_and_delivered_while_poison_stays(
    client, tenant: TenantInfo, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a delivery message retired to the dead-letter queue by SQS (its worker died on every receive)
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)  # one route: publishing queues the delivery message itself
    body = retire(harness)
    assert body["kind"] == "delivery"
    # AND a poison message beside it
    harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody="not json at all")
    harness.drain()
    assert receiver.received == []
    # WHEN the operator looks
    seen = dead_letters(client)
    # THEN both are there, each with what it is and why
    assert seen["count"] == 2
    by_poison = {letter["poison"]: letter for letter in seen["sample"]}
    retired, poison = by_poison[False], by_poison[True]
    assert retired["kind"] == "delivery"
    assert retired["event_id"] == event_id
    assert retired["subscription_id"] == sub.id
    assert retired["delivery_id"] == delivery_id_of(harness.services.store, event_id, sub.id)
    assert "maxReceiveCount" in retired["reason"]
    assert retired["receive_count"] >= harness.services.settings.max_receive_count
    assert poison["kind"] is None
    assert poison["reason"].startswith("poison: ")
    # WHEN the operator redrives
    moved = redrive(client)
    # THEN the retired message went back and was processed normally: delivered, verifiable, once
    assert (moved["moved"], moved["kept"], moved["remaining"]) == (1, 1, 1)
    harness.drain()
    (got,) = receiver.received
    assert Webhook(sub.secret).verify(got.body, dict(got.headers))["type"] == "invoice.paid"
    assert got.headers["webhook-id"] == event_id
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"
    # AND the poison is still parked, out of the way
    (left,) = dead_letters(client)["sample"]
    assert left["poison"] is True
    assert harness.counts() == (0, 0)


def test_a_message_an_older_worker_parked_as_unreadable_is_redriven_once_this_code_reads_it(
    client, tenant: TenantInfo, harness: Harness, make_receiver
) -> None:
    # GIVEN an event's two deliveries in one message, parked as unreadable as a worker that predates messages of
    # several deliveries parks it (a deploy under way, a rollback), and a message no code reads beside it
    receivers = [make_receiver(), make_receiver()]
    subs = [subscribe(client, tenant, r.url) for r in receivers]
    event_id = publish(client, tenant.id)
    url = harness.services.settings.queue_url
    (message,) = harness.sqs.receive_message(QueueUrl=url)["Messages"]
    harness.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert json.loads(message["Body"])["kind"] == "deliveries"
    unknown = "unreadable work message: [{'type': 'union_tag_invalid', 'loc': (), 'msg': \"'deliveries' unknown\"}]"
    harness.services.queue.dead_letter(message["Body"], unknown)
    harness.services.queue.dead_letter('{"kind": "teleport"}', "unreadable work message: kind teleport")
    # WHEN the operator looks
    seen = dead_letters(client)
    # THEN the message this code reads is no longer poison, and says why it was parked; the other still is
    by_poison = {letter["poison"]: letter for letter in seen["sample"]}
    readable, poison = by_poison[False], by_poison[True]
    assert (readable["kind"], readable["event_id"]) == ("deliveries", event_id)
    assert readable["reason"].startswith("parked as unreadable by a worker running other code, readable now")
    assert poison["kind"] == "teleport"
    # WHEN the operator redrives
    moved = redrive(client)
    # THEN the message went back and each of its deliveries was made once, signed; the poison stays
    assert (moved["moved"], moved["kept"], moved["remaining"]) == (1, 1, 1)
    harness.drain()
    for r, sub in zip(receivers, subs, strict=True):
        (got,) = r.received
        assert Webhook(sub.secret).verify(got.body, dict(got.headers))["type"] == "invoice.paid"
    (left,) = dead_letters(client)["sample"]
    assert left["poison"] is True
    assert harness.counts() == (0, 0)


def test_a_message_parked_again_keeps_its_redrives_and_stays_once_they_are_used_up(
    client, tenant: TenantInfo, harness: Harness
) -> None:
    # GIVEN a message redriven twice already that this worker cannot read, on the work queue
    url = harness.services.settings.queue_url
    attributes = {REDRIVES_ATTRIBUTE: {"DataType": "Number", "StringValue": "2"}}
    harness.sqs.send_message(QueueUrl=url, MessageBody='{"kind": "teleport"}', MessageAttributes=attributes)
    # WHEN the worker parks it
    harness.drain()
    # THEN it is parked with its reason and its two redrives
    dlq = harness.services.settings.dead_letter_queue_url
    (parked,) = harness.sqs.receive_message(QueueUrl=dlq, MessageAttributeNames=["All"])["Messages"]
    harness.sqs.delete_message(QueueUrl=dlq, ReceiptHandle=parked["ReceiptHandle"])
    assert parked["MessageAttributes"][REDRIVES_ATTRIBUTE]["StringValue"] == "2"
    assert "unreadable work message" in parked["MessageAttributes"]["herald_error"]["StringValue"]
    # AND a message this code reads, parked as unreadable by other code after as many redrives as allowed
    limit = harness.services.settings.dead_letter_max_redrives
    sub = subscribe(client, tenant, "https://example.com/webhook")
    event_id = publish(client, tenant.id)
    (message,) = harness.sqs.receive_message(QueueUrl=url)["Messages"]
    harness.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    harness.services.queue.dead_letter(message["Body"], "unreadable work message: other code", redrives=limit)
    # THEN it counts as poison and a redrive leaves it: it cannot go round between the queues for good
    (letter,) = dead_letters(client)["sample"]
    assert (letter["poison"], letter["reason"]) == (True, f"failed again after {limit} redrives")
    assert (letter["event_id"], letter["subscription_id"]) == (event_id, sub.id)
    assert redrive(client)["moved"] == 0
    assert harness.counts() == (0, 0)


def test_a_message_back_after_too_many_redrives_counts_as_poison(client, tenant: TenantInfo, harness: Harness) -> None:
    # GIVEN a readable message that already came back to the dead-letter queue after three redrives
    body = json.dumps({"v": 1, "kind": "fanout", "event_id": "evt_gone"})
    harness.sqs.send_message(
        QueueUrl=harness.services.settings.dead_letter_queue_url,
        MessageBody=body,
        MessageAttributes={REDRIVES_ATTRIBUTE: {"DataType": "Number", "StringValue": "3"}},
    )
    # WHEN the operator looks and redrives
    (letter,) = dead_letters(client)["sample"]
    moved = redrive(client)
    # THEN it is shown as poison, with the reason, and stays
    assert letter["poison"] is True
    assert letter["redrives"] == 3
    assert letter["reason"] == "failed again after 3 redrives"
    assert (moved["moved"], moved["kept"]) == (0, 1)
    assert harness.counts() == (0, 0)


@pytest.mark.parametrize(
    ("data_type", "count"), [("Number", "1.5"), ("Number", "-2"), ("Number", "1e3"), ("String", "9" * 5000)]
)
def test_a_redrive_count_herald_did_not_write_counts_as_none(
    client, harness: Harness, data_type: str, count: str
) -> None:
    # GIVEN a readable message sent to the dead-letter queue by hand, with a count Herald never writes (SQS's
    # Number type accepts the first three; the last is more digits than int() reads)
    harness.sqs.send_message(
        QueueUrl=harness.services.settings.dead_letter_queue_url,
        MessageBody=json.dumps({"v": 1, "kind": "purge_tenant", "tenant_id": "tnt_by_hand"}),
        MessageAttributes={REDRIVES_ATTRIBUTE: {"DataType": data_type, "StringValue": count}},
    )
    # WHEN the operator looks and redrives
    (letter,) = dead_letters(client)["sample"]
    moved = redrive(client)
    # THEN it is listed with no redrives and not as poison, and the redrive moves it with a count of one
    assert (letter["redrives"], letter["poison"]) == (0, False)
    assert (moved["moved"], moved["kept"]) == (1, 0)
    url = harness.services.settings.queue_url
    (back,) = harness.sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"])["Messages"]
    assert back["MessageAttributes"][REDRIVES_ATTRIBUTE]["StringValue"] == "1"


def test_a_body_nested_deeper_than_any_parser_goes_is_shown_as_poison(client, harness: Harness) -> None:
    # GIVEN a message of 100,000 opening brackets in the dead-letter queue
    harness.sqs.send_message(QueueUrl=harness.services.settings.dead_letter_queue_url, MessageBody="[" * 100_000)
    # WHEN the operator looks and redrives
    (letter,) = dead_letters(client)["sample"]
    moved = redrive(client)
    # THEN it is shown as poison, of no kind, and stays
    assert (letter["poison"], letter["kind"]) == (True, None)
    assert (moved["moved"], moved["kept"]) == (0, 1)


def test_a_redrive_stamps_its_count_and_respects_its_limit(client, tenant: TenantInfo, harness: Harness) -> None:
    # GIVEN three readable messages in the dead-letter queue, one redriven before
    dlq = harness.services.settings.dead_letter_queue_url
    for index in range(3):
        attributes = {REDRIVES_ATTRIBUTE: {"DataType": "Number", "StringValue": "1"}} if index == 0 else {}
        harness.sqs.send_message(
            QueueUrl=dlq,
            MessageBody=json.dumps({"v": 1, "kind": "purge_tenant", "tenant_id": f"tnt_{index}"}),
            MessageAttributes=attributes,
        )
    # WHEN the operator redrives two of them
    moved = redrive(client, limit=2)
    # THEN two moved and one remains
    assert (moved["moved"], moved["kept"], moved["remaining"]) == (2, 0, 1)
    # AND the moved ones carry their redrive count onto the work queue
    got = harness.sqs.receive_message(
        QueueUrl=harness.services.settings.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )["Messages"]
    assert len(got) == 2
    counts = sorted(int(m["MessageAttributes"][REDRIVES_ATTRIBUTE]["StringValue"]) for m in got)
    assert counts in ([1, 1], [1, 2])
    # AND a limit out of range is a 422
    assert_error(client.post(REDRIVE, json={"limit": 0}, headers=ADMIN), 422)


def test_the_dead_letter_queue_is_for_the_operator_only(client, tenant: TenantInfo) -> None:
    assert_error(client.get(DEAD_LETTERS, headers=tenant.headers), 403, "forbidden")
    assert_error(client.post(REDRIVE, headers=tenant.headers), 403, "forbidden")
    assert_error(client.get(DEAD_LETTERS), 401)
    empty = dead_letters(client)
    assert (empty["count"], empty["sample"], empty["oldest_sent_at"]) == (0, [], None)


def _readable_letters(harness: Harness, count: int) -> None:
    """``count`` readable messages in the dead-letter queue (purges of made-up tenants)."""
    for index in range(count):
        harness.sqs.send_message(
            QueueUrl=harness.services.settings.dead_letter_queue_url,
            MessageBody=json.dumps({"v": 1, "kind": "purge_tenant", "tenant_id": f"tnt_{index}"}),
        )


def _on_work_queue(harness: Harness) -> int:
    attributes = harness.sqs.get_queue_attributes(
        QueueUrl=harness.services.settings.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


@pytest.mark.faults("sqs.SendMessageBatch:partial=calls:1-1")
def test_messages_sqs_refuses_to_send_back_are_sent_again(client, harness: Harness) -> None:
    # GIVEN three readable messages in the dead-letter queue, and SQS refusing some entries of the first send
    _readable_letters(harness, 3)
    # WHEN the operator redrives
    moved = redrive(client)
    # THEN the refused entries were sent in a second call: all three are on the work queue, none left hidden
    assert faults.injector_of(harness.services.queue.client).count("partial") == 1  # type: ignore[union-attr]
    assert (moved["moved"], moved["kept"], moved["remaining"]) == (3, 0, 0)
    assert _on_work_queue(harness) == 3
    seen = dead_letters(client)
    assert (seen["count"], seen["in_flight"]) == (0, 0)


def test_large_readable_messages_are_sent_back_in_calls_sqs_takes(client, harness: Harness) -> None:
    # GIVEN ten readable messages of about 240 KB each in the dead-letter queue (a newer version's fields carried along:
    # each fits the work queue, ten together are over the 1 MiB a SendMessageBatch call takes)
    for index in range(10):
        body = json.dumps({"v": 1, "kind": "purge_tenant", "tenant_id": f"tnt_{index}", "later": "x" * 240_000})
        harness.sqs.send_message(QueueUrl=harness.services.settings.dead_letter_queue_url, MessageBody=body)
    sends = CallRecorder(harness.services.queue.client, ["SendMessageBatch"])
    # WHEN the operator redrives
    moved = redrive(client)
    # THEN all ten are on the work queue, sent a few to a call, and none is left in the dead-letter queue
    assert (moved["moved"], moved["kept"], moved["uncertain"], moved["remaining"]) == (10, 0, 0, 0)
    assert _on_work_queue(harness) == 10
    assert len(sends.calls) >= 3
    assert all(sum(len(e["MessageBody"]) for e in call.params["Entries"]) <= MAX_BATCH_BYTES for call in sends.calls)
    sends.close()


@pytest.mark.faults("sqs.DeleteMessageBatch:partial=calls:1-1")
def test_messages_sent_back_whose_delete_sqs_refuses_are_deleted_again(client, harness: Harness) -> None:
    # GIVEN three readable messages in the dead-letter queue, and SQS refusing some entries of the first delete
    _readable_letters(harness, 3)
    # WHEN the operator redrives
    moved = redrive(client)
    # THEN the refused deletes were made again: no copy stays behind to be sent back a second time
    assert faults.injector_of(harness.services.queue.client).count("partial") == 1  # type: ignore[union-attr]
    assert (moved["moved"], moved["remaining"]) == (3, 0)
    assert _on_work_queue(harness) == 3
    seen = dead_letters(client)
    assert (seen["count"], seen["in_flight"]) == (0, 0)


class _RefusesOneBody:
    """An SQS client that refuses, in every SendMessageBatch, the entry whose body is ``body`` (as SQS answers an
    entry it keeps refusing, in ``Failed``), and sends the others through the moto queue; it counts the sends."""

    def __init__(self, sqs: Any, body: str) -> None:
        self._sqs = sqs
        self._body = body
        self.sends = 0

    def send_message_batch(self, **request: Any) -> dict[str, Any]:
        self.sends += 1
        kept = [entry for entry in request["Entries"] if entry["MessageBody"] != self._body]
        refused = [entry for entry in request["Entries"] if entry["MessageBody"] == self._body]
        answer = dict(self._sqs.send_message_batch(**{**request, "Entries": kept})) if kept else {"Successful": []}
        answer["Failed"] = [{"Id": e["Id"], "SenderFault": True, "Code": "InvalidParameterValue"} for e in refused]
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


def test_a_message_sqs_keeps_refusing_to_send_back_is_tried_once_a_redrive_and_shown_again(harness: Harness) -> None:
    from herald.dlq import DeadLetterQueue

    # GIVEN three readable messages in the dead-letter queue, one of which SQS refuses to send, every time
    _readable_letters(harness, 3)
    settings = harness.services.settings
    refused_body = json.dumps({"v": 1, "kind": "purge_tenant", "tenant_id": "tnt_1"})
    sqs = _RefusesOneBody(harness.sqs, refused_body)
    dlq = DeadLetterQueue(cast(Any, sqs), settings.dead_letter_queue_url, settings.queue_url)
    # WHEN the operator redrives
    moved = dlq.redrive(100)
    # THEN the other two went back; the refused one was tried in one call and its two retries, not received and sent
    # again until the time budget ran out, and it is visible here again
    assert (moved.moved, moved.kept, moved.remaining) == (2, 0, 1)
    assert sqs.sends == 3
    (left,) = harness.sqs.receive_message(QueueUrl=settings.dead_letter_queue_url)["Messages"]
    assert left["Body"] == refused_body


class _ShortPollsSampleNoServer:
    """An SQS client whose short polls (``WaitTimeSeconds`` 0) answer no message, as SQS's may on a queue holding a
    few: a short poll asks only some of its servers. Long polls ask them all (the moto queue below)."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs

    def receive_message(self, **request: Any) -> dict[str, Any]:
        if not request.get("WaitTimeSeconds"):
            return {}
        return dict(self._sqs.receive_message(**request))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


def test_a_look_at_a_queue_holding_a_few_messages_shows_them(harness: Harness) -> None:
    from herald.dlq import DeadLetterQueue

    # GIVEN two messages in the dead-letter queue, on servers a short poll does not ask
    _readable_letters(harness, 2)
    settings = harness.services.settings
    sqs: Any = _ShortPollsSampleNoServer(harness.sqs)
    dlq = DeadLetterQueue(sqs, settings.dead_letter_queue_url, settings.queue_url)
    # WHEN the operator looks THEN both are in the sample (long polling), and still in the queue
    seen = dlq.peek(10)
    assert (seen.count, len(seen.sample)) == (2, 2)
    assert seen.oldest_sent_at is not None
    assert dlq.peek(10).count == 2


def test_a_redrive_stops_at_a_bound_of_poison_messages_and_shows_them_all_again(
    client, harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from herald import dlq

    # GIVEN a dead-letter queue of poison only, more than a redrive keeps aside (a bound lowered to 10 here)
    monkeypatch.setattr(dlq, "MAX_KEPT", 10)
    for start in range(0, 25, 10):
        harness.sqs.send_message_batch(
            QueueUrl=harness.services.settings.dead_letter_queue_url,
            Entries=[{"Id": str(n), "MessageBody": f"not json {n}"} for n in range(start, min(start + 10, 25))],
        )
    # WHEN the operator redrives
    moved = redrive(client, limit=100)
    # THEN it stopped receiving once it held the bound (each message it holds is made visible again before it
    # answers, within API Gateway's timeout), and all 25 are back in view
    assert (moved["moved"], moved["kept"], moved["remaining"]) == (0, 10, 25)
    seen = dead_letters(client)
    assert (seen["count"], seen["in_flight"]) == (25, 0)


@pytest.mark.parametrize(
    ("settings_overrides", "wait"),
    [({"retry_schedule": "0,60", "retry_jitter": 0.0}, 60), ({"retry_schedule": "0,3600", "retry_jitter": 0.0}, 3600)],
    ids=["delayed-by-sqs", "scheduled-in-dynamodb"],
)
def test_work_carried_on_by_a_copy_keeps_its_redrive_count(
    client, tenant: TenantInfo, services: Any, aws: Any, clock: Clock, receiver: Receiver, wait: int
) -> None:
    # GIVEN a delivery to a subscriber that answers 500, its message in the dead-letter queue after one redrive
    receiver.default = (500, {}, b"down", 0.0)
    subscribe(client, tenant, receiver.url)
    publish(client, tenant.id)
    harness = make_harness(services, aws, clock=clock)
    try:
        url, dlq = services.settings.queue_url, services.settings.dead_letter_queue_url
        (message,) = harness.sqs.receive_message(QueueUrl=url)["Messages"]
        harness.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        once = {REDRIVES_ATTRIBUTE: {"DataType": "Number", "StringValue": "1"}}
        harness.sqs.send_message(QueueUrl=dlq, MessageBody=message["Body"], MessageAttributes=once)
        # WHEN the operator redrives it, and its attempt fails: the retry waits in a copy of the message (delayed by
        # SQS for a short wait, scheduled in DynamoDB for a long one), which comes back when it is due
        assert redrive(client)["moved"] == 1
        harness.drain()
        assert len(receiver.received) == 1
        clock.advance(wait)
        harness.reveal()
        # THEN the copy carries the count the redrive stamped: should its work be dead-lettered again, the limit on
        # redrives holds for it
        (copy,) = harness.sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"])["Messages"]
        assert '"resumed":true' in copy["Body"]
        assert copy["MessageAttributes"][REDRIVES_ATTRIBUTE]["StringValue"] == "2"
    finally:
        harness.close()


# ---------------------------------------------------------------------------------------------- what a look shows


def test_a_poison_message_naming_a_lone_surrogate_kind_is_shown_not_a_500(
    client, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a poison message whose JSON names its kind with an escaped lone surrogate (ASCII, so SQS takes it; valid
    # for Python's json module; refused by the worker's parser): the worker parks it
    harness.sqs.send_message(QueueUrl=harness.services.settings.queue_url, MessageBody='{"kind": "\\ud800"}')
    with caplog.at_level("ERROR", logger="herald.queue"):
        harness.drain()
    # AND says so in a log line Lambda can write (UTF-8 JSON, as Powertools formats it), the surrogate escaped
    (parked,) = [r for r in caplog.records if r.getMessage() == "work message sent to the dead-letter queue"]
    assert parked.work_message["kind"] == "\\ud800"  # type: ignore[attr-defined]
    LambdaPowertoolsFormatter().format(parked).encode("utf-8")
    # WHEN the operator looks THEN it is shown as poison, its kind and reason with the surrogate escaped
    (letter,) = dead_letters(client)["sample"]
    assert letter["poison"] is True
    assert letter["kind"] == "\\ud800"
    assert letter["reason"].startswith("poison: unreadable work message")


def test_a_poison_message_without_a_parked_reason_is_shown_with_a_bounded_reason(client, harness: Harness) -> None:
    # GIVEN a message no code reads, in the dead-letter queue without Herald's reason (SQS moved it after
    # maxReceiveCount), of 200,000 characters
    harness.sqs.send_message(QueueUrl=harness.services.settings.dead_letter_queue_url, MessageBody="x" * 200_000)
    # WHEN the operator looks
    (letter,) = dead_letters(client)["sample"]
    # THEN the body is cut to 1,000 characters, and the reason does not repeat it (the parser's errors without
    # their input)
    assert len(letter["body"]) == 1000
    assert letter["reason"].startswith("poison: unreadable work message: [{'type': 'json_invalid'")
    assert len(letter["reason"]) < 300, letter["reason"]


def test_a_look_at_the_most_large_poison_messages_fits_a_lambda_response(client, harness: Harness) -> None:
    # GIVEN 26 unparked poison messages of 250,000 characters in the dead-letter queue (each fits the work queue)
    for index in range(26):
        body = f"{index:02d}" + "x" * 249_998
        harness.sqs.send_message(QueueUrl=harness.services.settings.dead_letter_queue_url, MessageBody=body)
    # WHEN the operator looks at a sample of 50 (the most allowed)
    response = client.get(DEAD_LETTERS, params={"sample": 50}, headers=ADMIN)
    # THEN the answer fits Lambda's 6 MB response many times over (each body and reason cut)
    assert response.status_code == 200
    assert len(response.content) < 200_000, len(response.content)


def test_the_kind_an_unreadable_body_names_is_shown_bounded(client, harness: Harness) -> None:
    # GIVEN an unreadable message in the dead-letter queue naming a kind of 200,000 characters
    body = '{"kind": "' + "k" * 200_000 + '"}'
    harness.sqs.send_message(QueueUrl=harness.services.settings.dead_letter_queue_url, MessageBody=body)
    # WHEN the operator looks THEN its kind is shown cut to 100 characters
    (letter,) = dead_letters(client)["sample"]
    assert letter["kind"] == "k" * 100


def _publish_as(client: Any, tenant_id: str, event_id: str) -> None:
    body = {"type": "invoice.paid", "data": INVOICE, "tenant_id": tenant_id, "id": event_id}
    response = client.post("/v1/events", json=body, headers=ADMIN)
    assert response.status_code == 202, response.text
    assert "idempotent-replayed" not in response.headers


def _expire(harness: Harness, event_id: str) -> None:
    """What DynamoDB's TTL does once an event's retention ends: every item of its partition goes."""
    table = harness.services.store.table
    items = table.client.query(
        TableName=table.name,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"EVENT#{event_id}"}},
    )["Items"]
    for item in items:
        table.client.delete_item(TableName=table.name, Key={"pk": item["pk"], "sk": item["sk"]})


@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": 0, "event_ttl_days": 1}])
@pytest.mark.parametrize("kind", ["fanout", "redeliver"])
@pytest.mark.parametrize("publisher", ["the same tenant", "another tenant"])
def test_a_message_redriven_after_its_event_expired_leaves_a_new_event_under_its_id_alone(
    client,
    make_tenant,
    services: Any,
    aws: Any,
    clock: Clock,
    make_receiver,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    publisher: str,
) -> None:
    # GIVEN events kept a day, published and worked on one clock
    monkeypatch.setattr("herald.domain.publishing.utcnow", lambda: datetime.fromtimestamp(clock(), UTC))
    harness = make_harness(services, aws, clock=clock)
    try:
        a, b = make_tenant("A"), make_tenant("B")
        receivers = {a.id: make_receiver(), b.id: make_receiver()}
        for tenant in (a, b):
            subscribe(client, tenant, receivers[tenant.id].url)
        # AND tenant A's event "order-1", fanned out by a message (and redelivered by the operator), delivered
        calls = ("SendMessage", "SendMessageBatch")
        sent_before = sum(len(harness.queue_calls.of(call)) for call in calls)
        _publish_as(client, a.id, "order-1")
        if kind == "redeliver":
            harness.drain()
            assert client.post("/v1/events/order-1/redeliver", headers=ADMIN).status_code == 202
        sent = sorted((c for call in calls for c in harness.queue_calls.of(call)), key=lambda c: c.seq)
        bodies = [
            body
            for call in sent[sent_before:]
            for body in [call.params.get("MessageBody"), *(e["MessageBody"] for e in call.params.get("Entries", []))]
            if body is not None and json.loads(body)["kind"] == kind
        ]
        assert len(bodies) == 1, bodies
        harness.drain()
        # AND that message retired to the dead-letter queue (kept there 14 days), while the event expired (after a
        # day, or the span of its retries and a day more: about six days here) and its id was published again, by
        # the same tenant or another, queued directly (its few routes: no page of a fan-out counted), delivered once
        expired = services.store.events.get("order-1")
        assert expired is not None
        clock.advance(expired.expires_at - clock() + 60)
        assert expired.expires_at < clock() < time.time() + 14 * 86_400
        _expire(harness, "order-1")
        monkeypatch.setattr(services, "settings", services.settings.model_copy(update={"direct_fanout_max": 10}))
        _publish_as(client, (a if publisher == "the same tenant" else b).id, "order-1")
        harness.drain()
        counts = client.get("/v1/events/order-1", headers=ADMIN).json()["deliveries"]
        received = {tenant_id: len(receiver.received) for tenant_id, receiver in receivers.items()}
        assert counts["matched"] == counts["succeeded"] == 1, counts
        harness.sqs.send_message(QueueUrl=services.settings.dead_letter_queue_url, MessageBody=bodies[0])
        # WHEN the operator redrives the dead-letter queue and the worker runs the message
        assert redrive(client)["moved"] == 1
        harness.drain()
        # THEN the new event is neither counted again nor sent again: the message was of the expired event
        assert client.get("/v1/events/order-1", headers=ADMIN).json()["deliveries"] == counts
        assert {tenant_id: len(receiver.received) for tenant_id, receiver in receivers.items()} == received
    finally:
        harness.close()


# ---------------------------------------------------------------------------------------------- discarding poison

DISCARD = "/v1/admin/dead-letters/discard"


def discard(client: Any, **body: Any) -> dict[str, Any]:
    response = client.post(DISCARD, json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _poison_letters(harness: Harness, count: int) -> None:
    """``count`` poison messages in the dead-letter queue (bodies no code reads)."""
    for index in range(count):
        harness.sqs.send_message(
            QueueUrl=harness.services.settings.dead_letter_queue_url, MessageBody=f"not json {index}"
        )


def test_poison_named_by_the_operator_is_discarded_and_a_readable_message_named_is_left(
    client, tenant: TenantInfo, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a retired delivery message and two poison messages in the dead-letter queue
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    retire(harness)
    _poison_letters(harness, 2)
    by_poison: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for letter in dead_letters(client)["sample"]:
        by_poison[letter["poison"]].append(letter)
    (retired,), poison = by_poison[False], by_poison[True]
    assert len(poison) == 2
    # WHEN the operator discards one poison message, the retired one and a message that is not there
    unknown = "0b5c2a52-7f3e-4a43-9b2c-1d2e3f4a5b6c"
    answer = discard(client, message_ids=[poison[0]["message_id"], retired["message_id"], unknown])
    # THEN the poison message named is gone for good, shown as it was; the readable one is left and said so; the
    # unknown one is said not found; nothing is left hidden
    assert [letter["message_id"] for letter in answer["discarded"]] == [poison[0]["message_id"]]
    assert answer["discarded"][0]["body"] == poison[0]["body"]
    assert answer["discarded"][0]["poison"] is True
    assert answer["not_discarded"] == [
        {"message_id": retired["message_id"], "reason": "not poison: a redrive sends it back to work"}
    ]
    assert answer["interrupted"] is None
    assert answer["not_found"] == [unknown]
    assert answer["remaining"] == 2
    seen = dead_letters(client)
    assert (seen["count"], seen["in_flight"]) == (2, 0)
    assert {letter["message_id"] for letter in seen["sample"]} == {poison[1]["message_id"], retired["message_id"]}
    # AND the retired message still goes back to work and is delivered
    assert redrive(client)["moved"] == 1
    harness.drain()
    (got,) = receiver.received
    assert Webhook(sub.secret).verify(got.body, dict(got.headers))["type"] == "invoice.paid"
    assert got.headers["webhook-id"] == event_id


def test_all_poison_is_discarded_up_to_the_limit_and_readable_messages_stay(client, harness: Harness) -> None:
    # GIVEN three poison messages and two readable ones in the dead-letter queue
    _poison_letters(harness, 3)
    _readable_letters(harness, 2)
    # WHEN the operator discards poison, at most two
    first = discard(client, all_poison=True, limit=2)
    # THEN two poison messages are gone, and nothing else
    assert len(first["discarded"]) == 2
    assert all(letter["poison"] for letter in first["discarded"])
    assert (first["not_discarded"], first["not_found"], first["remaining"]) == ([], [], 3)
    # WHEN it discards poison again, without a limit
    second = discard(client, all_poison=True)
    # THEN the last poison message is gone; the readable ones stay, visible
    assert [letter["body"] for letter in second["discarded"]] == sorted(
        {"not json 0", "not json 1", "not json 2"} - {letter["body"] for letter in first["discarded"]}
    )
    assert (second["not_discarded"], second["not_found"], second["remaining"]) == ([], [], 2)
    seen = dead_letters(client)
    assert (seen["count"], seen["in_flight"]) == (2, 0)
    assert not any(letter["poison"] for letter in seen["sample"])
    # AND once no poison is left, a discard finds none and changes nothing
    third = discard(client, all_poison=True)
    assert (third["discarded"], third["not_discarded"], third["kept"], third["remaining"]) == ([], [], 2, 2)
    assert dead_letters(client)["in_flight"] == 0


def test_a_message_back_after_its_redrives_is_poison_and_can_be_discarded(client, harness: Harness) -> None:
    # GIVEN a readable message that came back to the dead-letter queue after using up its redrives
    used_up = {REDRIVES_ATTRIBUTE: {"DataType": "Number", "StringValue": "3"}}
    harness.sqs.send_message(
        QueueUrl=harness.services.settings.dead_letter_queue_url,
        MessageBody=json.dumps({"v": 1, "kind": "purge_tenant", "tenant_id": "tnt_1"}),
        MessageAttributes=used_up,
    )
    (letter,) = dead_letters(client)["sample"]
    # WHEN the operator discards it THEN it is gone
    answer = discard(client, message_ids=[letter["message_id"]])
    assert [out["reason"] for out in answer["discarded"]] == ["failed again after 3 redrives"]
    assert answer["remaining"] == 0


@pytest.mark.faults("sqs.DeleteMessageBatch:partial=calls:1-1")
def test_poison_whose_delete_sqs_refuses_is_deleted_again(client, harness: Harness) -> None:
    # GIVEN three poison messages, and SQS refusing some entries of the first delete
    _poison_letters(harness, 3)
    # WHEN the operator discards poison THEN the refused deletes were made again: all three are gone
    answer = discard(client, all_poison=True)
    assert faults.injector_of(harness.services.queue.client).count("partial") == 1  # type: ignore[union-attr]
    assert (len(answer["discarded"]), answer["remaining"]) == (3, 0)
    seen = dead_letters(client)
    assert (seen["count"], seen["in_flight"]) == (0, 0)


class _RefusesDeletes:
    """An SQS client that refuses every entry of every DeleteMessageBatch, as SQS answers entries it keeps refusing;
    it counts the calls."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self.deletes = 0

    def delete_message_batch(self, **request: Any) -> dict[str, Any]:
        self.deletes += 1
        failed = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError"} for e in request["Entries"]]
        return {"Successful": [], "Failed": failed}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


def test_poison_sqs_keeps_refusing_to_delete_is_not_counted_as_discarded_and_shown_again(harness: Harness) -> None:
    from herald.dlq import DeadLetterQueue

    # GIVEN two poison messages, and SQS refusing every delete
    _poison_letters(harness, 2)
    settings = harness.services.settings
    sqs = _RefusesDeletes(harness.sqs)
    dlq = DeadLetterQueue(cast(Any, sqs), settings.dead_letter_queue_url, settings.queue_url)
    # WHEN the operator discards poison
    answer = dlq.discard(limit=100)
    # THEN none is said discarded, and each is said to be still there; the delete was tried in one call and its two
    # retries, and both messages are visible again
    assert (answer.discarded, answer.kept, answer.remaining) == ([], 2, 2)
    assert {item.reason for item in answer.not_discarded} == {"SQS kept refusing to delete it: it is still there"}
    assert len(answer.not_discarded) == 2
    assert sqs.deletes == 3
    seen = dlq.peek(10)
    assert (seen.count, seen.in_flight) == (2, 0)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"all_poison": False},
        {"limit": 5},
        {"message_ids": ["a"], "all_poison": True},
        {"message_ids": ["a"], "all_poison": False},
        {"message_ids": ["a"], "limit": 5},
        {"message_ids": []},
        {"message_ids": [f"m{n}" for n in range(101)]},
        {"message_ids": ["not/an id"]},
        {"message_ids": ["x" * 101]},
        {"message_ids": "a"},
        {"all_poison": "true"},
        {"all_poison": True, "limit": 0},
        {"all_poison": True, "limit": 1001},
        {"all_poison": True, "limit": "5"},
        {"all_poison": True, "sample": 5},
    ],
)
def test_a_discard_that_does_not_say_what_to_discard_is_refused(client, harness: Harness, body: Any) -> None:
    # GIVEN a poison message in the dead-letter queue
    _poison_letters(harness, 1)
    # WHEN the operator asks for a discard that names nothing, names it twice over or names it wrongly
    response = client.post(DISCARD, json=body, headers=ADMIN)
    # THEN it is a validation error, and the message is still there
    assert_error(response, 422, "validation_error")
    assert dead_letters(client)["count"] == 1


def test_discarding_is_for_the_operator_only(client, tenant: TenantInfo, harness: Harness) -> None:
    _poison_letters(harness, 1)
    assert_error(client.post(DISCARD, json={"all_poison": True}, headers=tenant.headers), 403, "forbidden")
    assert_error(client.post(DISCARD, json={"all_poison": True}), 401)
    assert dead_letters(client)["count"] == 1


def test_each_poison_message_discarded_is_logged_without_its_body(
    client, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN two poison messages whose bodies carry a tenant's data
    for index in range(2):
        harness.sqs.send_message(
            QueueUrl=harness.services.settings.dead_letter_queue_url, MessageBody=f"card 4111-{index} not json"
        )
    # WHEN the operator discards poison
    with caplog.at_level("INFO", logger="herald.dlq"):
        answer = discard(client, all_poison=True)
    # THEN each message discarded is logged with its id and reason, and no body is in the log
    logged = [record for record in caplog.records if record.getMessage().startswith("poison message discarded")]
    assert sorted(record.message_id for record in logged) == sorted(  # type: ignore[attr-defined]
        letter["message_id"] for letter in answer["discarded"]
    )
    assert all(record.reason.startswith("poison: ") for record in logged)  # type: ignore[attr-defined]
    assert not any("4111" in str(record.__dict__) for record in caplog.records)


def test_all_poison_discards_only_what_no_code_reads_and_other_codes_messages_go_only_when_named(
    client, harness: Harness
) -> None:
    # GIVEN in the dead-letter queue: a body no code reads and one of a kind this code does not know, both parked by a
    # worker that could not read them; one of a version this code does not know that SQS retired without a reason (a
    # worker read it: a newer one, during a deploy or after a rollback)
    queue = harness.services.queue
    queue.dead_letter("not json", "unreadable work message: json_invalid")
    queue.dead_letter('{"kind": "teleport"}', "unreadable work message: kind teleport")
    newer = json.dumps({"v": 2, "kind": "purge_tenant", "tenant_id": "tnt_1"})
    harness.sqs.send_message(QueueUrl=harness.services.settings.dead_letter_queue_url, MessageBody=newer)
    letters = {letter["body"]: letter for letter in dead_letters(client)["sample"]}
    assert all(letter["poison"] for letter in letters.values())  # as this code sees them
    # WHEN the operator discards all poison
    every = discard(client, all_poison=True)
    # THEN only the body no code reads went: newer code may read the others
    assert [letter["body"] for letter in every["discarded"]] == ["not json"]
    assert (every["not_discarded"], every["kept"], every["remaining"]) == ([], 2, 2)
    # WHEN it names the other two
    named = discard(client, message_ids=[letters['{"kind": "teleport"}']["message_id"], letters[newer]["message_id"]])
    # THEN the unknown kind a worker parked goes (the operator's call); the one a worker read stays, and it says why
    assert [letter["body"] for letter in named["discarded"]] == ['{"kind": "teleport"}']
    ((left),) = named["not_discarded"]
    assert left["message_id"] == letters[newer]["message_id"]
    assert left["reason"].startswith("unreadable to the API's code, yet a worker read it")
    seen = dead_letters(client)
    assert (seen["count"], seen["in_flight"]) == (1, 0)


def test_a_newer_version_a_rolled_back_worker_parked_is_kept_by_all_poison(client, harness: Harness) -> None:
    # GIVEN a message of a version this code does not know, met by a worker running this code (a rollback): parked
    harness.sqs.send_message(
        QueueUrl=harness.services.settings.queue_url,
        MessageBody=json.dumps({"v": 2, "kind": "purge_tenant", "tenant_id": "tnt_1"}),
    )
    harness.drain()
    (parked,) = dead_letters(client)["sample"]
    assert parked["poison"] is True
    # WHEN the operator discards all poison THEN it stays, for a redrive once the newer code runs again
    answer = discard(client, all_poison=True)
    assert (answer["discarded"], answer["kept"], answer["remaining"]) == ([], 1, 1)


def test_named_messages_are_found_beyond_the_first_receive(client, harness: Harness) -> None:
    # GIVEN 25 poison messages, three of them to discard
    _poison_letters(harness, 25)
    sample = dead_letters(client, sample=50)["sample"]
    assert len(sample) == 25
    chosen = [letter["message_id"] for letter in sample[-3:]]
    # WHEN the operator discards those three by id
    answer = discard(client, message_ids=chosen)
    # THEN the three are gone, whichever receive met them, and the others are all visible again
    assert sorted(letter["message_id"] for letter in answer["discarded"]) == sorted(chosen)
    assert (answer["not_discarded"], answer["not_found"], answer["remaining"]) == ([], [], 22)
    seen = dead_letters(client)
    assert (seen["count"], seen["in_flight"]) == (22, 0)


def test_a_discard_stops_at_the_bound_of_messages_it_sets_aside_and_shows_them_all_again(
    client, harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from herald import dlq

    # GIVEN 25 readable messages in the dead-letter queue and a bound of 10 set aside (lowered here)
    monkeypatch.setattr(dlq, "MAX_KEPT", 10)
    _readable_letters(harness, 25)
    # WHEN the operator discards poison, or names a message that is not there
    every = discard(client, all_poison=True)
    named = discard(client, message_ids=["0b5c2a52-7f3e-4a43-9b2c-1d2e3f4a5b6c"])
    # THEN each stopped once it held the bound, discarded nothing, and all 25 are back in view
    for answer in (every, named):
        assert answer["discarded"] == []
        assert 10 <= answer["kept"] < 20
        assert answer["remaining"] == 25
    assert named["not_found"] == ["0b5c2a52-7f3e-4a43-9b2c-1d2e3f4a5b6c"]
    seen = dead_letters(client)
    assert (seen["count"], seen["in_flight"]) == (25, 0)


@pytest.mark.faults("sqs.DeleteMessageBatch:5xx@call=calls:1")
def test_a_discard_whose_delete_fails_shows_the_messages_again_and_answers_503(client, harness: Harness) -> None:
    # GIVEN three poison messages, and SQS failing the delete
    _poison_letters(harness, 3)
    # WHEN the operator discards poison THEN it is a 503, and the three are visible again at once, not in a minute
    assert_error(client.post(DISCARD, json={"all_poison": True}, headers=ADMIN), 503, "service_unavailable")
    seen = dead_letters(client)
    assert (seen["count"], seen["in_flight"]) == (3, 0)


@pytest.mark.faults("sqs.ReceiveMessage:5xx@call=calls:2")
def test_a_discard_cut_short_by_sqs_says_what_it_discarded(client, harness: Harness) -> None:
    # GIVEN 15 poison messages, and SQS failing the discard's second receive
    _poison_letters(harness, 15)
    # WHEN the operator discards poison
    answer = discard(client, all_poison=True)
    # THEN the answer lists the ten it discarded before SQS failed, and says why it stopped
    assert len(answer["discarded"]) == 10
    assert answer["interrupted"] == "SQS receive_message failed on the dead-letter queue"
    assert answer["remaining"] == 5
    seen = dead_letters(client)
    assert (seen["count"], seen["in_flight"]) == (5, 0)


class _HandsOutTwice:
    """An SQS client whose first receive hands out one message, and the next that message once more beside the
    others, as SQS may (at-least-once)."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self.again: list[Any] | None = None

    def receive_message(self, **request: Any) -> dict[str, Any]:
        if self.again is None:
            request = {**request, "MaxNumberOfMessages": 1}  # SQS may hand out fewer messages than asked for
        answer = dict(self._sqs.receive_message(**request))
        messages = list(answer.get("Messages", []))
        if self.again is None and messages:
            self.again = [messages[0]]
        elif self.again:
            messages, self.again = [*self.again, *messages], []
        return {**answer, "Messages": messages}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


@pytest.mark.parametrize("named", [True, False], ids=["named", "all-poison"])
def test_a_message_handed_out_twice_is_discarded_and_listed_once(harness: Harness, named: bool) -> None:
    from herald.dlq import DeadLetterQueue

    # GIVEN two poison messages, the first handed out twice by SQS
    _poison_letters(harness, 2)
    settings = harness.services.settings
    dlq = DeadLetterQueue(cast(Any, _HandsOutTwice(harness.sqs)), settings.dead_letter_queue_url, settings.queue_url)
    ids = [
        letter.message_id for letter in DeadLetterQueue(harness.sqs, settings.dead_letter_queue_url, "").peek(10).sample
    ]
    # WHEN the operator discards them
    answer = dlq.discard(ids) if named else dlq.discard(limit=100)
    # THEN each is listed once, nothing is left aside, and the queue is empty
    assert sorted(letter.message_id for letter in answer.discarded) == sorted(ids)
    assert (answer.kept, answer.not_discarded, answer.not_found, answer.remaining) == (0, [], [], 0)


def test_a_field_of_newer_code_named_like_one_of_another_kind_is_not_shown_as_it(client, harness: Harness) -> None:
    # GIVEN a readable message carrying a field of newer code named like a field of another kind, of another type
    body = json.dumps({"v": 1, "kind": "purge_tenant", "tenant_id": "tnt_1", "event_id": 7})
    harness.sqs.send_message(QueueUrl=harness.services.settings.dead_letter_queue_url, MessageBody=body)
    # WHEN the operator looks THEN it is shown as what it is: a purge, with no event
    (letter,) = dead_letters(client)["sample"]
    assert (letter["kind"], letter["event_id"], letter["poison"]) == ("purge_tenant", None, False)


# ------------------------------------------------------------------ the deliveries a discarded message carried


def _back_after_its_redrives(harness: Harness, body: str) -> None:
    """``body`` in the dead-letter queue, back after as many redrives as allowed: poison that can be discarded."""
    used_up = str(harness.services.settings.dead_letter_max_redrives)
    harness.sqs.send_message(
        QueueUrl=harness.services.settings.dead_letter_queue_url,
        MessageBody=body,
        MessageAttributes={REDRIVES_ATTRIBUTE: {"DataType": "Number", "StringValue": used_up}},
    )


def _retry(client: Any, tenant: TenantInfo, sub_id: str, delivery_id: str) -> None:
    response = client.post(f"/v1/subscriptions/{sub_id}/deliveries/{delivery_id}/retry", headers=tenant.headers)
    assert response.status_code == 202, response.text


@pytest.fixture
def late(services: Any, aws: Any) -> Iterator[tuple[Harness, Clock]]:
    """A worker two hours behind real time (a retry it schedules an hour ahead is due by the API's clock), and its
    clock."""
    clock = Clock(time.time() - 7200)
    made = make_harness(services, aws, clock=clock)
    yield made, clock
    made.close()


def _a_due_retry_back_after_its_redrives(
    client: Any, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver
) -> tuple[Sub, str, dict[str, Any]]:
    """A delivery whose first attempt failed (``receiver`` answers 500 once), made by ``harness``'s worker on
    ``clock`` (behind real time: its retry, an hour later, is due by now), and its retry's message, swept onto
    the work queue when due, then back in the dead-letter queue after its redrives. Its subscription, its event's
    id and the delivery as it waits."""
    receiver.responses = [(500, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    waiting = only_delivery(client, tenant, sub.id)
    assert (waiting["status"], waiting["attempts"]) == ("pending", 1)
    clock.advance(when(waiting["next_attempt_at"]) - clock() + 1)
    harness.worker.sweep()
    _back_after_its_redrives(harness, take_the_only_message(harness))
    return sub, event_id, waiting


@pytest.mark.parametrize(
    "settings_overrides",
    [{"retry_schedule": "0,3600"}, {"retry_schedule": "0,3600", "direct_fanout_max": 0}],
    ids=["queued-directly", "fanned-out"],  # an event's counts read from its deliveries, or counted
)
def test_a_discarded_retry_fails_its_delivery_as_discarded_and_a_retry_sends_it(
    client, tenant: TenantInfo, late: tuple[Harness, Clock], receiver: Receiver
) -> None:
    # GIVEN a delivery whose first attempt failed, its retry due an hour ago, and the message of that retry back in
    # the dead-letter queue after its redrives: nothing else will make the attempt
    harness, clock = late
    sub, event_id, waiting = _a_due_retry_back_after_its_redrives(client, tenant, harness, clock, receiver)
    (letter,) = dead_letters(client)["sample"]
    assert (letter["poison"], letter["delivery_id"]) == (True, waiting["id"])
    # WHEN the operator discards it
    answer = discard(client, message_ids=[letter["message_id"]])
    # THEN it is gone, and its delivery failed without an attempt, as discarded: listed failed, not pending, and
    # counted failed for its event
    assert [out["message_id"] for out in answer["discarded"]] == [letter["message_id"]]
    assert (answer["not_discarded"], answer["remaining"]) == ([], 0)
    failed = only_delivery(client, tenant, sub.id)
    assert (failed["status"], failed["last_error_kind"]) == ("failed", "discarded")
    assert (failed["attempts"], failed["next_attempt_at"], failed["last_status_code"]) == (1, None, 500)
    assert [d["id"] for d in deliveries(client, tenant, sub.id, status="failed")] == [waiting["id"]]
    assert deliveries(client, tenant, sub.id, status="pending") == []
    assert event_counts(client, event_id) == fanned_out_counts(1, failed=1)
    assert len(receiver.received) == 1
    # AND discarding it again, had SQS kept a copy, changes nothing
    _back_after_its_redrives(harness, letter["body"])
    assert len(discard(client, all_poison=True)["discarded"]) == 1
    assert only_delivery(client, tenant, sub.id) == failed
    assert event_counts(client, event_id) == fanned_out_counts(1, failed=1)
    # AND the tenant's retry sends it, signed, and it succeeds
    clock.now = time.time()
    _retry(client, tenant, sub.id, waiting["id"])
    harness.drain()
    assert len(receiver.received) == 2
    assert verify(sub.secret, receiver.received[-1])["type"] == "invoice.paid"
    assert receiver.received[-1].headers["webhook-id"] == event_id
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"
    assert event_counts(client, event_id) == fanned_out_counts(1, succeeded=1)


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,300"}])
def test_a_discarded_retry_delayed_by_sqs_fails_its_delivery_however_far_behind_the_sweeps_are(
    client, tenant: TenantInfo, late: tuple[Harness, Clock], receiver: Receiver
) -> None:
    # GIVEN a delivery whose first attempt failed, its retry five minutes later (a copy delayed by SQS, never in the
    # schedule) due over an hour ago, and that copy back in the dead-letter queue after its redrives; the sweeps'
    # cursor far behind that retry (the worker's clock, which moved it, is two hours behind)
    harness, _ = late
    receiver.responses = [(500, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    publish(client, tenant.id)
    harness.drain()
    waiting = only_delivery(client, tenant, sub.id)
    assert harness.scheduled() == 0
    cursor = harness.services.store.schedule.cursor()
    assert cursor is not None
    assert cursor < when(waiting["next_attempt_at"])
    harness.reveal()
    _back_after_its_redrives(harness, take_the_only_message(harness))
    # WHEN the operator discards it
    assert len(discard(client, all_poison=True)["discarded"]) == 1
    # THEN its delivery failed, as discarded (nothing else carries it on: the schedule holds nothing of it), and a
    # retry sends it
    failed = only_delivery(client, tenant, sub.id)
    assert (failed["status"], failed["last_error_kind"]) == ("failed", "discarded")
    _retry(client, tenant, sub.id, waiting["id"])
    harness.drain()
    assert len(receiver.received) == 2
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"


@pytest.mark.parametrize("resend", ["a retry", "a recovery"])
def test_a_discarded_first_delivery_never_made_is_written_failed_and_sent_again_on_request(
    client, tenant: TenantInfo, harness: Harness, receiver: Receiver, resend: str
) -> None:
    # GIVEN an event's first delivery, whose message went to the dead-letter queue before any worker wrote it (the
    # worker died on it each time), and came back after its redrives
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    _back_after_its_redrives(harness, take_the_only_message(harness))
    (letter,) = dead_letters(client)["sample"]
    assert deliveries(client, tenant, sub.id) == []
    # WHEN the operator discards it
    assert len(discard(client, all_poison=True)["discarded"]) == 1
    # THEN its delivery is written failed, as discarded, without an attempt; its event counts it failed
    failed = only_delivery(client, tenant, sub.id)
    assert failed["id"] == delivery_id_of(harness.services.store, event_id, sub.id)
    assert (failed["status"], failed["last_error_kind"], failed["attempts"]) == ("failed", "discarded", 0)
    assert letter["event_id"] == failed["event_id"] == event_id
    assert [d["id"] for d in deliveries(client, tenant, sub.id, status="failed")] == [failed["id"]]
    assert event_counts(client, event_id) == fanned_out_counts(1, failed=1)
    assert receiver.received == []
    # AND the tenant's retry, or a recovery of the subscription, sends it, signed
    if resend == "a retry":
        _retry(client, tenant, sub.id, failed["id"])
    else:
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        job = client.post(f"/v1/subscriptions/{sub.id}/recover", json={"since": since}, headers=tenant.headers)
        assert job.status_code == 202, job.text
    harness.drain()
    (got,) = receiver.received
    assert verify(sub.secret, got)["type"] == "invoice.paid"
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"
    assert event_counts(client, event_id) == fanned_out_counts(1, succeeded=1)


@pytest.mark.parametrize(
    ("settings_overrides", "behind", "message"),
    [
        ({"retry_schedule": "0,3600"}, 0, "a copy of its retry"),
        ({"retry_schedule": "0,3600"}, 7200, "a copy of its retry"),
        ({"retry_schedule": "0,300"}, 400, "a copy of its retry"),
        ({"retry_schedule": "0,3600"}, 7200, "a manual retry"),
    ],
    ids=["retry-to-come", "retry-due-not-swept", "retry-due-delayed-by-sqs", "manual-retry"],
)
def test_a_discarded_message_whose_delivery_has_an_attempt_to_come_leaves_it_pending(
    client, tenant: TenantInfo, services: Any, aws: Any, receiver: Receiver, behind: int, message: str
) -> None:
    # GIVEN a delivery whose first attempt failed, its retry an hour later (in the schedule) or five minutes later
    # (delayed by SQS), with a worker ``behind`` real time: still to come; due already, its copy not swept yet
    # (the sweeps behind); or due less than 15 minutes ago, its copy delayed by SQS
    clock = Clock(time.time() - behind)
    harness = make_harness(services, aws, clock=clock)
    try:
        _attempt_to_come_survives_a_discard(client, tenant, harness, clock, receiver, message)
    finally:
        harness.close()


def _attempt_to_come_survives_a_discard(
    client: Any, tenant: TenantInfo, harness: Harness, clock: Clock, receiver: Receiver, message: str
) -> None:
    receiver.responses = [(500, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    waiting = only_delivery(client, tenant, sub.id)
    waits = when(waiting["next_attempt_at"]) - when(waiting["last_attempt_at"])
    assert harness.scheduled() == (1 if waits > MAX_DELAY_SECONDS else 0)
    # AND in the dead-letter queue, back after its redrives, a stale copy of its retry's message (its delivery was
    # carried on since), or a manual retry's (the delivery's schedule is carried by its own message)
    parked = DeliveryMessage(
        event_id=event_id,
        tenant_id=tenant.id,
        subscription_id=sub.id,
        delivery_id=waiting["id"],
        resumed=True if message == "a copy of its retry" else None,
        trigger=Trigger.SCHEDULED if message == "a copy of its retry" else Trigger.MANUAL,
    )
    _back_after_its_redrives(harness, dump_message(parked))
    # WHEN the operator discards it
    assert len(discard(client, all_poison=True)["discarded"]) == 1
    # THEN the delivery is as it was, its retry still to come; and that retry is made when due
    assert only_delivery(client, tenant, sub.id) == waiting
    assert event_counts(client, event_id) == fanned_out_counts(1)
    harness.reveal()
    clock.advance(when(waiting["next_attempt_at"]) - clock() + 1)
    harness.worker.sweep()
    harness.drain()
    assert len(receiver.received) == 2
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,3600"}])
def test_a_message_whose_delivery_dynamodb_did_not_let_fail_is_not_discarded(
    client, tenant: TenantInfo, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN a first delivery's message back in the dead-letter queue after its redrives
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    _back_after_its_redrives(harness, take_the_only_message(harness))
    (letter,) = dead_letters(client)["sample"]
    # WHEN the operator discards it while DynamoDB fails the read of its event (after botocore's retries)
    faults.install(harness.services.store.table.client, "dynamodb.GetItem:5xx@call=calls:1")
    answer = discard(client, message_ids=[letter["message_id"]])
    # THEN the message is not discarded, and the answer says why; nothing was written
    assert answer["discarded"] == []
    ((left,),) = [answer["not_discarded"]]
    assert left["message_id"] == letter["message_id"]
    assert left["reason"] == (
        "the deliveries it carried could not be marked failed (DynamoDB get_item failed: InternalServerError): "
        "it is still there"
    )
    assert (answer["kept"], answer["remaining"]) == (1, 1)
    assert deliveries(client, tenant, sub.id) == []
    # AND discarded again, it goes, its delivery failed
    assert len(discard(client, message_ids=[letter["message_id"]])["discarded"]) == 1
    failed = only_delivery(client, tenant, sub.id)
    assert (failed["status"], failed["last_error_kind"]) == ("failed", "discarded")
    assert event_counts(client, event_id) == fanned_out_counts(1, failed=1)


@pytest.mark.parametrize(
    ("settings_overrides", "write"),
    [
        # its event counted on its own: the delivery's write and its count, one transaction
        ({"retry_schedule": "0,3600", "direct_fanout_max": 0}, "TransactWriteItems"),
        # its event counted from its deliveries: the delivery's write alone
        ({"retry_schedule": "0,3600"}, "PutItem"),
    ],
    ids=["counted-on-the-event", "counted-from-the-delivery"],
)
def test_a_discard_whose_write_dynamodb_refuses_as_malformed_leaves_the_delivery_and_discards_the_message(
    client,
    tenant: TenantInfo,
    late: tuple[Harness, Clock],
    receiver: Receiver,
    write: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a due retry's message back in the dead-letter queue after its redrives
    harness, clock = late
    sub, event_id, waiting = _a_due_retry_back_after_its_redrives(client, tenant, harness, clock, receiver)
    counts = event_counts(client, event_id)
    (letter,) = dead_letters(client)["sample"]
    # WHEN the operator discards it while DynamoDB refuses the delivery's write as malformed for its item (as it
    # refuses an item over 400 KB: the same write would be refused again)
    injector = faults.install(harness.services.store.table.client, f"dynamodb.{write}:invalid@call=calls:1")
    with caplog.at_level("ERROR", logger="herald.domain.deliveries"):
        answer = discard(client, message_ids=[letter["message_id"]])
    # THEN the message is discarded all the same, the delivery and its event's counts are as they were, and the
    # delivery is logged as left
    assert injector is not None
    assert injector.count("invalid") == 1
    assert [gone["message_id"] for gone in answer["discarded"]] == [letter["message_id"]]
    assert answer["not_discarded"] == []
    assert only_delivery(client, tenant, sub.id) == waiting
    assert event_counts(client, event_id) == counts
    (left,) = [r for r in caplog.records if r.getMessage().startswith("a discarded message's delivery is left")]
    assert cast(Any, left).delivery_id == waiting["id"]


def test_a_discarded_message_of_several_first_deliveries_fails_each(
    client, tenant: TenantInfo, harness: Harness, make_receiver
) -> None:
    # GIVEN an event to two subscriptions, its one message of both first deliveries back in the dead-letter queue
    # after its redrives, no worker having written either
    subs = [subscribe(client, tenant, make_receiver().url) for _ in range(2)]
    event_id = publish(client, tenant.id)
    body = take_the_only_message(harness)
    assert json.loads(body)["kind"] == "deliveries"
    _back_after_its_redrives(harness, body)
    # WHEN the operator discards it
    assert len(discard(client, all_poison=True)["discarded"]) == 1
    # THEN each delivery is written failed as discarded, and its event counts both
    for sub in subs:
        failed = only_delivery(client, tenant, sub.id)
        assert (failed["status"], failed["last_error_kind"], failed["event_id"]) == ("failed", "discarded", event_id)
    assert event_counts(client, event_id) == fanned_out_counts(2, failed=2)


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_local_wait_seconds": 0}])
def test_a_discarded_stale_copy_leaves_a_delivery_a_rate_limit_holds_back_to_its_held_copy(
    client, tenant: TenantInfo, services: Any, aws: Any, receiver: Receiver
) -> None:
    # GIVEN a subscription limited to one delivery a second, and two events: the second's delivery is held back
    # without an attempt, pending, a copy of its message delayed for its slot
    clock = Clock(time.time())
    harness = make_harness(services, aws, clock=clock)
    try:
        body = {"url": receiver.url, "event_types": ["invoice.paid"], "rate_limit": 1}
        created = client.post("/v1/subscriptions", json=body, headers=tenant.headers)
        assert created.status_code == 201, created.text
        sub_id = created.json()["id"]
        events = [publish(client, tenant.id) for _ in range(2)]
        harness.drain()
        assert len(receiver.received) == 1
        (held,) = deliveries(client, tenant, sub_id, status="pending")
        assert (held["attempts"], held["next_attempt_at"]) == (0, None)
        # AND a stale copy of its first message back in the dead-letter queue after its redrives
        stale = DeliveryMessage(
            event_id=held["event_id"], tenant_id=tenant.id, subscription_id=sub_id, delivery_id=held["id"]
        )
        _back_after_its_redrives(harness, dump_message(stale))
        # WHEN the operator discards it
        assert len(discard(client, all_poison=True)["discarded"]) == 1
        # THEN the delivery is left to its held copy, which delivers it
        assert deliveries(client, tenant, sub_id, status="pending") == [held]
        for _ in range(5):
            step(harness, clock, 2)
        assert sorted(got.headers["webhook-id"] for got in receiver.received) == sorted(events)
        assert {d["status"] for d in deliveries(client, tenant, sub_id)} == {"succeeded"}
    finally:
        harness.close()


def test_a_discarded_stale_copy_leaves_a_delivery_postponed_far_behind_a_rate_limit_backlog_to_its_held_copy(
    client, tenant: TenantInfo, services: Any, aws: Any, receiver: Receiver
) -> None:
    # GIVEN a worker 2 h 45 min behind real time, and a rate-limited subscription whose slots are taken until a
    # minute before real time (a backlog other workers reserved): an event's first delivery is postponed without an
    # attempt, a copy of its message scheduled for its slot, its hold's end within SQS's longest delay of real time,
    # its start older than any hold's longest (2 h 15 min with the default breaker)
    clock = Clock(time.time() - 9900)
    harness = make_harness(services, aws, clock=clock)
    try:
        sub = subscribe(client, tenant, receiver.url, rate_limit=1)
        sub_id = sub.id
        store = harness.services.store
        store.client.put_item(
            TableName=store.table_name,
            Item=to_item({**keys.rate_slot(sub_id), "tat": clock() + 9840, "expires_at": int(clock()) + 86_400}),
        )
        event_id = publish(client, tenant.id)
        harness.drain()
        (held,) = deliveries(client, tenant, sub_id, status="pending")
        assert (held["attempts"], held["next_attempt_at"], receiver.received) == (0, None, [])
        # AND a stale copy of its first message back in the dead-letter queue after its redrives
        stale = DeliveryMessage(event_id=event_id, tenant_id=tenant.id, subscription_id=sub_id, delivery_id=held["id"])
        _back_after_its_redrives(harness, dump_message(stale))
        # WHEN the operator discards it
        assert len(discard(client, all_poison=True)["discarded"]) == 1
        # THEN the delivery is left to its held copy, which delivers it at its slot
        assert deliveries(client, tenant, sub_id, status="pending") == [held]
        clock.advance(9840 + 1)
        harness.worker.sweep()
        harness.drain()
        (got,) = receiver.received
        assert verify(sub.secret, got)["type"] == "invoice.paid"
        assert only_delivery(client, tenant, sub_id)["status"] == "succeeded"
    finally:
        harness.close()


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,3600"}])
def test_a_discarded_stale_copy_leaves_a_retry_an_open_breaker_holds_back_to_its_held_copy(
    client, tenant: TenantInfo, late: tuple[Harness, Clock], receiver: Receiver
) -> None:
    # GIVEN a delivery whose retry, when due, found its subscription's breaker open for half an hour more: claimed,
    # then held back without an attempt (its lease given back), a copy of its message scheduled for the breaker's end
    harness, clock = late
    receiver.responses = [(500, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    waiting = only_delivery(client, tenant, sub.id)
    due = when(waiting["next_attempt_at"])
    opened = harness.services.store.isolation.count_timeout(
        tenant.id, sub.id, now=due, slow_until=due, threshold=1, open_seconds=1800, max_open_seconds=3600
    )
    assert opened is not None
    assert opened[1]
    clock.advance(due - clock() + 1)
    harness.worker.sweep()
    harness.drain()
    held = only_delivery(client, tenant, sub.id)
    assert (held["status"], held["attempts"], len(receiver.received)) == ("pending", 1, 1)
    # AND a stale copy of its retry's message back in the dead-letter queue after its redrives
    stale = DeliveryMessage(
        event_id=event_id, tenant_id=tenant.id, subscription_id=sub.id, delivery_id=waiting["id"], resumed=True
    )
    _back_after_its_redrives(harness, dump_message(stale))
    # WHEN the operator discards it
    assert len(discard(client, all_poison=True)["discarded"]) == 1
    # THEN the delivery is left to its held copy, which sends it once the breaker lets it through
    assert only_delivery(client, tenant, sub.id) == held
    clock.advance(1800 * 1.2)
    harness.worker.sweep()
    harness.drain()
    assert len(receiver.received) == 2
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,3600", "direct_fanout_max": 0}])
def test_a_discard_dynamodb_fails_leaves_the_delivery_and_its_count_as_they_were_and_a_later_one_does_both(
    client, tenant: TenantInfo, late: tuple[Harness, Clock], receiver: Receiver
) -> None:
    # GIVEN a fanned-out event's delivery (its event counts it), its due retry's message back in the dead-letter
    # queue after its redrives
    harness, clock = late
    sub, event_id, waiting = _a_due_retry_back_after_its_redrives(client, tenant, harness, clock, receiver)
    (letter,) = dead_letters(client)["sample"]
    # WHEN the operator discards it while DynamoDB fails the write of the delivery and its count (one transaction,
    # failed after botocore's retries)
    faults.install(harness.services.store.table.client, "dynamodb.TransactWriteItems:5xx@call=calls:1")
    first = discard(client, message_ids=[letter["message_id"]])
    # THEN the message stays, said why, and neither the delivery nor its event's counts changed
    assert first["discarded"] == []
    assert first["not_discarded"] == [
        {
            "message_id": letter["message_id"],
            "reason": "the deliveries it carried could not be marked failed (DynamoDB transaction failed: "
            "InternalServerError): it is still there",
        }
    ]
    assert only_delivery(client, tenant, sub.id) == waiting
    assert event_counts(client, event_id) == fanned_out_counts(1)
    # AND discarded again (twice: a copy SQS kept), it goes, and the event counts the delivery failed once
    assert len(discard(client, message_ids=[letter["message_id"]])["discarded"]) == 1
    assert only_delivery(client, tenant, sub.id)["last_error_kind"] == "discarded"
    _back_after_its_redrives(harness, letter["body"])
    assert len(discard(client, all_poison=True)["discarded"]) == 1
    assert event_counts(client, event_id) == fanned_out_counts(1, failed=1)
    # AND once a retry delivers it, it counts as succeeded only
    clock.now = time.time()
    _retry(client, tenant, sub.id, waiting["id"])
    harness.drain()
    assert event_counts(client, event_id) == fanned_out_counts(1, succeeded=1)


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,3600"}])
def test_a_discarded_retry_whose_worker_died_mid_attempt_fails_its_delivery(
    client, tenant: TenantInfo, late: tuple[Harness, Clock], receiver: Receiver
) -> None:
    # GIVEN a due retry's message back in the dead-letter queue after its redrives, whose last worker died during
    # its attempt: the lease it took is left on the delivery, expired
    harness, clock = late
    sub, event_id, waiting = _a_due_retry_back_after_its_redrives(client, tenant, harness, clock, receiver)
    store = harness.services.store
    store.client.update_item(
        TableName=store.table_name,
        Key=to_item(delivery_key(sub.id, waiting["id"], event_id)),
        UpdateExpression="SET lease_token = :token, lease_until = :until",
        ExpressionAttributeValues={":token": {"S": "died"}, ":until": {"N": str(int(time.time()) - 60)}},
    )
    # WHEN the operator discards it
    assert len(discard(client, all_poison=True)["discarded"]) == 1
    # THEN its delivery failed as discarded: the lease its own worker left says nothing of another copy
    failed = only_delivery(client, tenant, sub.id)
    assert (failed["status"], failed["last_error_kind"]) == ("failed", "discarded")


def test_a_message_whose_delivery_cannot_be_read_is_discarded_with_the_rest(
    client, tenant: TenantInfo, harness: Harness
) -> None:
    # GIVEN a message of two first deliveries, the event item of one corrupt (reading it raises), the other never
    # written, back in the dead-letter queue after its redrives, beside a message no code reads
    sub = subscribe(client, tenant, "https://example.com/webhook")
    event_id = publish(client, tenant.id)
    take_the_only_message(harness)
    good = delivery_id_of(harness.services.store, event_id, sub.id)
    put_corrupt_event(harness.services.store, "evt_corrupt", "payload not an object")
    both = DeliveriesMessage(
        tenant_id=tenant.id,
        deliveries=[
            PlannedDelivery(event_id="evt_corrupt", subscription_id=sub.id, delivery_id="dlv_x"),
            PlannedDelivery(event_id=event_id, subscription_id=sub.id, delivery_id=good),
        ],
    )
    _back_after_its_redrives(harness, dump_message(both))
    _poison_letters(harness, 1)
    # WHEN the operator discards all poison
    answer = discard(client, all_poison=True)
    # THEN both messages are discarded (nothing this code writes would settle the corrupt one's), nothing is left
    # hidden, and the readable delivery is failed as discarded
    assert (len(answer["discarded"]), answer["not_discarded"], answer["remaining"]) == (2, [], 0)
    assert dead_letters(client)["in_flight"] == 0
    (failed,) = deliveries(client, tenant, sub.id)
    assert (failed["id"], failed["status"], failed["last_error_kind"]) == (good, "failed", "discarded")


def test_a_discarded_message_naming_another_tenants_event_writes_nothing(
    client, make_tenant, harness: Harness, make_receiver
) -> None:
    # GIVEN Acme's event to its subscription, and a message (crafted, or of a bug) naming that event for a
    # subscription of Globex's, back in the dead-letter queue after its redrives
    acme, globex = make_tenant("Acme"), make_tenant("Globex")
    subscribe(client, acme, make_receiver().url)
    theirs = subscribe(client, globex, make_receiver().url)
    event_id = publish(client, acme.id)
    harness.drain()
    counts = event_counts(client, event_id)
    stored = harness.services.store.events.get(event_id)
    assert stored is not None
    crafted = DeliveryMessage(
        event_id=event_id, tenant_id=globex.id, subscription_id=theirs.id, delivery_id=stored.delivery_id(theirs.id)
    )
    _back_after_its_redrives(harness, dump_message(crafted))
    # WHEN the operator discards it
    assert len(discard(client, all_poison=True)["discarded"]) == 1
    # THEN Globex's subscription shows no delivery of Acme's event, and Acme's event counts are as they were
    assert deliveries(client, globex, theirs.id) == []
    assert event_counts(client, event_id) == counts


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,3600,3600"}])
def test_a_discard_that_read_a_delivery_before_an_attempt_leaves_it_to_that_attempt(
    client, tenant: TenantInfo, late: tuple[Harness, Clock], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a delivery waiting for its due retry, as a discard reads it (its next attempt due, no lease, no hold)
    harness, clock = late
    receiver.default = (500, {}, b"", 0.0)
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    harness.drain()
    waiting = only_delivery(client, tenant, sub.id)
    repository = harness.services.store.deliveries
    before = repository.get_state(sub.id, waiting["id"], event_id)
    assert before is not None
    # AND that retry made by its live copy right after that read (it failed again: a later one is scheduled)
    clock.advance(when(waiting["next_attempt_at"]) - clock() + 1)
    harness.worker.sweep()
    harness.drain()
    retried = only_delivery(client, tenant, sub.id)
    assert (retried["status"], retried["attempts"]) == ("pending", 2)
    # WHEN the operator discards a stale copy of the retry's message, the discard's read being the one from before
    stale = DeliveryMessage(
        event_id=event_id, tenant_id=tenant.id, subscription_id=sub.id, delivery_id=waiting["id"], resumed=True
    )
    _back_after_its_redrives(harness, dump_message(stale))
    monkeypatch.setattr(repository, "get_state", lambda *_: before)
    assert len(discard(client, all_poison=True)["discarded"]) == 1
    # THEN the delivery is as the attempt left it, its next retry to come
    assert only_delivery(client, tenant, sub.id) == retried


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": "0,3600", "direct_fanout_max": 0}])
def test_a_discard_whose_transaction_meets_a_concurrent_one_is_made_again(
    client, tenant: TenantInfo, late: tuple[Harness, Clock], receiver: Receiver
) -> None:
    # GIVEN a fanned-out event's delivery, its due retry's message back in the dead-letter queue after its redrives
    harness, clock = late
    sub, event_id, _ = _a_due_retry_back_after_its_redrives(client, tenant, harness, clock, receiver)
    # WHEN the operator discards it while DynamoDB cancels its transaction for a concurrent one (moto never does)
    injector = faults.install(harness.services.store.table.client, "dynamodb.TransactWriteItems:conflict@call=calls:1")
    assert len(discard(client, all_poison=True)["discarded"]) == 1
    # THEN it was made again: the delivery failed, counted once
    assert injector is not None
    assert injector.count("conflict") == 1
    assert only_delivery(client, tenant, sub.id)["last_error_kind"] == "discarded"
    assert event_counts(client, event_id) == fanned_out_counts(1, failed=1)


def test_a_jobs_message_whose_delivery_has_an_attempt_under_way_is_kept_saying_so(
    client, services: Any, harness: Harness
) -> None:
    # GIVEN a recovery's ticket for a delivery, whose lock the job holds, the delivery leased for an attempt under
    # way, and the job's message for it in the dead-letter queue after its redrives
    jobs, table = services.store.jobs, services.store.table
    assert jobs.take_ticket("rcv_1", "dlv_1", lock_seconds=60, ticket_seconds=3600)
    table.call(
        "put_item",
        Item=to_item(
            {
                **keys.delivery("sub_1", "dlv_1"),
                "id": "dlv_1",
                "subscription_id": "sub_1",
                "lease_until": table.now() + 60,
            }
        ),
    )
    message = DeliveryMessage(
        event_id="evt_1",
        tenant_id="tnt_1",
        subscription_id="sub_1",
        delivery_id="dlv_1",
        trigger=Trigger.RECOVER,
        job_id="rcv_1",
    )
    used_up = {REDRIVES_ATTRIBUTE: {"DataType": "Number", "StringValue": "3"}}
    dead = harness.services.settings.dead_letter_queue_url
    harness.sqs.send_message(QueueUrl=dead, MessageBody=dump_message(message), MessageAttributes=used_up)
    # WHEN the operator discards the poison
    answer = discard(client, all_poison=True)
    # THEN the message is kept, the answer saying why and what to do, and the ticket is left to the attempt
    assert answer["discarded"] == []
    [(kept, why)] = [(out["message_id"], out["reason"]) for out in answer["not_discarded"]]
    assert why == "an attempt of delivery dlv_1 is under way: try again once it is over; it is still there"
    assert jobs.get_ticket("rcv_1", "dlv_1") == ("open", "rcv_1")
    # AND once the attempt is over (its lease ended), a discard ends the ticket and the message goes
    table.call("update_item", Key=to_item(keys.delivery("sub_1", "dlv_1")), UpdateExpression="REMOVE lease_until")
    again = discard(client, message_ids=[kept])
    assert [out["message_id"] for out in again["discarded"]] == [kept]
    assert jobs.get_ticket("rcv_1", "dlv_1") == ("failed", None)
