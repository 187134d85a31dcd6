"""The dead-letter queue when SQS fails a whole batch call after botocore's retries, or loses its answer after doing
the work: a redrive never sends a message back twice for an operator who calls again, a discard says which
messages may be gone, and an answer counts the messages hidden for now. Faults come from ``herald.faults`` on the
app's own SQS client; messages travel through moto's SQS."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest

from herald.dlq import DeadLetterQueue
from tests.api_support import assert_error
from tests.delivery_support import (
    Harness,
    attempts,
    delivery_id_of,
    make_harness,
    only_delivery,
    publish,
    subscribe,
    take_the_only_message,
    verify,
)
from tests.support import ADMIN, Clock, Receiver, TenantInfo
from tests.test_cli import Run, api_url, cli_env, herald

pytestmark = pytest.mark.e2e

__all__ = ["api_url", "cli_env", "herald"]  # the fixtures this module shares with tests.test_cli

DEAD_LETTERS = "/v1/admin/dead-letters"
REDRIVE = "/v1/admin/dead-letters/redrive"
DISCARD = "/v1/admin/dead-letters/discard"


@pytest.fixture
def harness(services: Any, aws: Any) -> Iterator[Harness]:
    made = make_harness(services, aws)
    yield made
    made.close()


def redrive(client: Any) -> dict[str, Any]:
    response = client.post(REDRIVE, headers=ADMIN)
    assert response.status_code == 202, response.text
    return dict(response.json())


def dead_letters(client: Any) -> dict[str, Any]:
    response = client.get(DEAD_LETTERS, params={"sample": 10}, headers=ADMIN)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _readable_letters(harness: Harness, count: int) -> None:
    """``count`` readable messages in the dead-letter queue (purges of made-up tenants)."""
    for index in range(count):
        harness.sqs.send_message(
            QueueUrl=harness.services.settings.dead_letter_queue_url,
            MessageBody=json.dumps({"v": 1, "kind": "purge_tenant", "tenant_id": f"tnt_{index}"}),
        )


def _poison_letters(harness: Harness, count: int) -> None:
    for index in range(count):
        harness.sqs.send_message(
            QueueUrl=harness.services.settings.dead_letter_queue_url, MessageBody=f"not json {index}"
        )


def _on_work_queue(harness: Harness) -> int:
    attributes = harness.sqs.get_queue_attributes(
        QueueUrl=harness.services.settings.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


# ---------------------------------------------------------------------------------------------- redrive


@pytest.mark.faults("sqs.DeleteMessageBatch:5xx@call=calls:1")
def test_messages_sent_back_whose_delete_fails_count_as_moved_and_are_not_sent_again_at_once(
    client, harness: Harness
) -> None:
    # GIVEN three readable messages in the dead-letter queue, and SQS failing the redrive's delete after its retries
    _readable_letters(harness, 3)
    # WHEN the operator redrives
    first = redrive(client)
    # THEN the three sent back count as moved, and the answer says the call stopped and that they are hidden here
    assert (first["moved"], first["uncertain"], first["kept"]) == (3, 0, 0)
    assert (first["remaining"], first["in_flight"]) == (0, 3)
    assert first["interrupted"] == "SQS delete_message_batch failed on the dead-letter queue"
    assert _on_work_queue(harness) == 3
    # WHEN the operator calls again, as after any failure
    second = redrive(client)
    # THEN nothing is sent a second time: the three are still hidden here, and said so
    assert (second["moved"], second["uncertain"], second["remaining"], second["in_flight"]) == (0, 0, 0, 3)
    assert second["interrupted"] is None
    assert _on_work_queue(harness) == 3


@pytest.mark.parametrize(
    "on_work_queue",
    [
        pytest.param(3, marks=pytest.mark.faults("sqs.SendMessageBatch:lost@call=calls:1"), id="answer-lost"),
        pytest.param(0, marks=pytest.mark.faults("sqs.SendMessageBatch:5xx@call=calls:1"), id="5xx-after-retries"),
    ],
)
def test_messages_whose_send_back_fails_uncertainly_stay_hidden_and_are_said_uncertain(
    client, harness: Harness, on_work_queue: int
) -> None:
    # GIVEN three readable messages in the dead-letter queue, and SQS failing the send back after it may have made it
    # (its answer lost: it did; an error after botocore's retries: it may have)
    _readable_letters(harness, 3)
    # WHEN the operator redrives
    first = redrive(client)
    # THEN none counts as moved: the three are said uncertain, left hidden here, and the call says why it stopped
    assert (first["moved"], first["uncertain"], first["kept"]) == (0, 3, 0)
    assert (first["remaining"], first["in_flight"]) == (0, 3)
    assert first["interrupted"] == "the work queue could not be reached"
    assert _on_work_queue(harness) == on_work_queue
    # WHEN the operator calls again at once THEN nothing is sent back a second time
    second = redrive(client)
    assert (second["moved"], second["uncertain"], second["in_flight"]) == (0, 0, 3)
    assert _on_work_queue(harness) == on_work_queue


@pytest.mark.faults("sqs.SendMessageBatch:throttle@call=calls:1")
def test_messages_whose_send_back_sqs_surely_refused_are_shown_again_at_once_and_answer_503(
    client, harness: Harness
) -> None:
    # GIVEN three readable messages in the dead-letter queue, and SQS refusing the send back outright (throttled)
    _readable_letters(harness, 3)
    # WHEN the operator redrives THEN it is a 503, nothing went, and the three are visible again at once
    assert_error(client.post(REDRIVE, headers=ADMIN), 503, "service_unavailable")
    assert _on_work_queue(harness) == 0
    seen = dead_letters(client)
    assert (seen["count"], seen["in_flight"]) == (3, 0)
    # AND called again, the redrive moves them, once
    again = redrive(client)
    assert (again["moved"], again["in_flight"]) == (3, 0)
    assert _on_work_queue(harness) == 3


class _RedrivesDuringItsDelete:
    """An SQS client that, before the first DeleteMessageBatch of the discard using it, lets ``redrive`` run (an
    operator's redrive while the discard holds the messages it set aside)."""

    def __init__(self, sqs: Any, redrive: Callable[[], dict[str, Any]]) -> None:
        self._sqs = sqs
        self._redrive = redrive
        self.answer: dict[str, Any] | None = None

    def delete_message_batch(self, **request: Any) -> Any:
        if self.answer is None:
            self.answer = self._redrive()
        return self._sqs.delete_message_batch(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


def test_a_redrive_while_a_discard_holds_the_messages_says_they_are_hidden(client, harness: Harness) -> None:
    # GIVEN two readable messages and a poison one in the dead-letter queue, and a discard of poison under way: it
    # holds the readable ones it set aside (hidden) while it deletes the poison
    _readable_letters(harness, 2)
    _poison_letters(harness, 1)
    settings = harness.services.settings
    sqs = _RedrivesDuringItsDelete(harness.sqs, lambda: redrive(client))
    discarding = DeadLetterQueue(cast(Any, sqs), settings.dead_letter_queue_url, settings.queue_url)
    # WHEN the operator redrives meanwhile
    discarding.discard(limit=100)
    # THEN the redrive found nothing to receive and moved nothing, none visible: and it says the three the discard
    # holds are hidden for now
    answer = sqs.answer
    assert answer is not None
    assert (answer["moved"], answer["remaining"], answer["in_flight"]) == (0, 0, 3)
    # AND once the discard is done, a redrive moves them
    assert redrive(client)["moved"] == 2


# ---------------------------------------------------------------------------------------------- discard


@pytest.mark.faults("sqs.DeleteMessageBatch:lost@call=calls:1")
def test_a_discard_whose_delete_answer_is_lost_names_the_messages_perhaps_gone_and_logged_them(
    client, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN three poison messages whose bodies carry a tenant's data, and SQS losing the answer of the delete it made
    for index in range(3):
        harness.sqs.send_message(
            QueueUrl=harness.services.settings.dead_letter_queue_url, MessageBody=f"card 4111-{index} not json"
        )
    ids = sorted(letter["message_id"] for letter in dead_letters(client)["sample"])
    assert len(ids) == 3
    # WHEN the operator discards poison
    with caplog.at_level("INFO", logger="herald.dlq"):
        response = client.post(DISCARD, json={"all_poison": True}, headers=ADMIN)
    # THEN it is a 503 that says the three may be gone, naming each
    error = assert_error(response, 503, "service_unavailable")
    assert "may have carried it out" in error["message"]
    assert "nothing else was discarded" in error["message"]
    assert sorted(detail["loc"][0] for detail in error["details"]) == ids
    assert {detail["type"] for detail in error["details"]} == {"maybe_discarded"}
    # AND each was logged, without its body, before the delete: the record of what was thrown away
    logged = [r for r in caplog.records if r.getMessage().startswith("poison message being discarded")]
    assert sorted(record.message_id for record in logged) == ids  # type: ignore[attr-defined]
    assert not any("4111" in str(record.__dict__) for record in caplog.records)
    # AND they are gone indeed, nothing left hidden
    seen = dead_letters(client)
    assert (seen["count"], seen["in_flight"]) == (0, 0)


@pytest.mark.faults("sqs.DeleteMessageBatch:lost@call=calls:2")
def test_a_discard_whose_later_delete_answer_is_lost_lists_those_perhaps_discarded(client, harness: Harness) -> None:
    # GIVEN 13 poison messages, and SQS losing the answer of the discard's second delete (of the last three)
    _poison_letters(harness, 13)
    # WHEN the operator discards poison
    response = client.post(DISCARD, json={"all_poison": True}, headers=ADMIN)
    # THEN the answer lists the ten discarded, and the three perhaps discarded apart, and says why it stopped
    assert response.status_code == 200, response.text
    answer = response.json()
    assert len(answer["discarded"]) == 10
    assert len(answer["maybe_discarded"]) == 3
    discarded = {letter["message_id"] for letter in answer["discarded"]}
    assert not discarded & {letter["message_id"] for letter in answer["maybe_discarded"]}
    assert answer["interrupted"] == "SQS delete_message_batch failed on the dead-letter queue"
    assert (answer["kept"], answer["remaining"]) == (0, 0)


# ---------------------------------------------------------------------------------------------- worker


@pytest.mark.parametrize("settings_overrides", [{"slow_lane_after_seconds": 10}])
def test_two_copies_of_a_redriven_first_delivery_in_two_invocations_send_once(
    client, tenant: TenantInfo, services: Any, aws: Any, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a first delivery's message back from the dead-letter queue twice (a redrive that sent it back, its delete
    # there failing, and a later redrive that sent it again), each copy received for the first time, a subscriber slow
    # enough to answer (2 s) that both copies are in flight together, and two invocations taking one copy each
    receiver.default = (200, {}, b"ok", 2.0)
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    workers = [make_harness(services, aws, clock=clock, batch_size=1) for _ in range(2)]
    try:
        body = take_the_only_message(workers[0])
        for _ in range(2):
            services.queue.send_body(body, redrives=1)
        # WHEN both invocations run at the same time
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda harness: harness.poller.poll_once(), workers))
        # AND the copy held back meanwhile comes back
        clock.advance(60)
        workers[0].reveal()
        workers[0].drain()
    finally:
        for harness in workers:
            harness.close()
    # THEN the subscriber got one request: each copy took the delivery's lease, and only one could
    (got,) = receiver.received
    verify(sub.secret, got)
    assert got.headers["webhook-id"] == event_id
    delivery = only_delivery(client, tenant, sub.id)
    assert delivery["id"] == delivery_id_of(services.store, event_id, sub.id)
    assert (delivery["status"], delivery["attempts"]) == ("succeeded", 1)
    assert len(attempts(client, tenant, sub.id, delivery["id"])) == 1
    assert workers[0].counts() == (0, 0)


# ---------------------------------------------------------------------------------------------- the CLI


@pytest.mark.faults("sqs.DeleteMessageBatch:5xx@call=calls:1")
def test_dlq_redrive_says_when_it_stopped_and_what_is_hidden(
    cli_env: str, herald: Callable[..., Run], harness: Harness
) -> None:
    # GIVEN three readable messages in the dead-letter queue, and SQS failing the redrive's delete
    _readable_letters(harness, 3)
    # WHEN the operator redrives
    first = herald("dlq", "redrive")
    # THEN it says the call stopped (exit 1), and that the three, moved, are hidden in the dead-letter queue for now
    assert first.code == 1, first.err
    assert "stopped before it was done (SQS delete_message_batch failed on the dead-letter queue)" in first.err
    assert "3 messages in the dead-letter queue hidden for now" in first.err
    # WHEN it redrives again at once THEN nothing moves, and it says why: the three are hidden, not gone
    second = herald("--json", "dlq", "redrive")
    assert second.code == 0, second.err
    assert (second.json()["moved"], second.json()["remaining"]) == (0, 0)
    assert "3 messages in the dead-letter queue hidden for now" in second.err
    assert "run `herald dlq redrive` again in a minute" in second.err


@pytest.mark.faults("sqs.SendMessageBatch:lost@call=calls:1")
def test_dlq_redrive_says_which_messages_may_have_been_sent_back(
    cli_env: str, herald: Callable[..., Run], harness: Harness
) -> None:
    # GIVEN a readable message in the dead-letter queue, and SQS losing the answer of the send back it made
    _readable_letters(harness, 1)
    # WHEN the operator redrives THEN it says the message may have gone back, and stays hidden for a minute
    run = herald("dlq", "redrive")
    assert run.code == 1, run.err
    assert "1 message perhaps sent back" in run.err
    assert "hidden for a minute" in run.err
