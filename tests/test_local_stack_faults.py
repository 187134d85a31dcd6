"""`make run` with the README's example that loses answers (``HERALD_FAULTS``: one DynamoDB or SQS answer in
twenty lost, and botocore sends the request again, which DynamoDB or SQS then receives twice): tenants,
subscriptions and publishes all answer as without the fault, every delivery arrives signed, each attempt is
counted once, answers of both services were lost on the way (the stack logs each fault it injects), and a
webhook sent twice is one the stack counted in its ``DuplicateSends`` metric (a lost answer of an SQS send
queues its messages twice; copies worked at the same moment are the duplicate the README's Duplicates row
allows).

Everything is waited for as a condition; the stack's process group is stopped whatever happens."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.local_stack_support import (
    DELIVER_SECONDS,
    START_SECONDS,
    Stack,
    api_of,
    arrivals,
    new_tenant,
    running_stack,
    subscribe_all,
    wait_for,
    wait_until_settled,
)
from tests.support import INVOICE, Receiver, readme_fault_examples

#: A bound above the start's ceiling and the four conditions' together, so that a condition that fails says what it
#: saw before pytest-timeout stops the test.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(START_SECONDS + 5 * DELIVER_SECONDS)]

ADMIN_KEY = f"hra_faults_{uuid.uuid4().hex}"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SUBSCRIPTIONS = 30


def _readme_example(fault: str) -> str:
    """The README's `make run` example of HERALD_FAULTS that injects ``fault``."""
    (example,) = [spec for spec in readme_fault_examples() if fault in spec]
    return example


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log = tmp_path_factory.mktemp("stack") / "stack.log"
    with running_stack(log, ADMIN_KEY, {"HERALD_FAULTS": _readme_example("lost@send")}) as running:
        yield running


def _metrics(stack: Stack) -> Counter[str]:
    """Each metric the stack's workers printed (CloudWatch's embedded format, in its log), summed. Threads print
    to the log at once: a line may hold two metric documents, or a document and another's newline."""
    decoder = json.JSONDecoder()
    totals: Counter[str] = Counter()
    for line in stack.log.read_text(encoding="utf-8", errors="replace").splitlines():
        position = 0
        while line.startswith('{"_aws"', position):
            document, position = decoder.raw_decode(line, position)
            for metric in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                values = document[metric["Name"]]
                totals[metric["Name"]] += sum(values) if isinstance(values, list) else values
    return totals


def test_a_stack_losing_answers_delivers_each_event_signed_and_counts_each_attempt_once(
    stack: Stack, receiver: Receiver
) -> None:
    assert "FAULT INJECTION ON (HERALD_FAULTS)" in stack.log.read_text(encoding="utf-8")
    with api_of(stack) as api:
        # GIVEN a tenant with 30 subscriptions, on a stack that loses answers
        tenant, headers = new_tenant(api, ADMIN, "Lossy")
        secrets = subscribe_all(api, headers, [f"{receiver.url}/lossy/{n}" for n in range(SUBSCRIPTIONS)])
        # WHEN 20 events are published one by one and 50 in a batch, each with its id
        event_ids = []
        for n in range(20):
            body = {"type": "invoice.paid", "tenant_id": tenant, "id": f"lossy-{n}", "data": INVOICE}
            published = api.post("/v1/events", json=body, headers=ADMIN)
            assert published.status_code == 202, published.text
            assert "idempotent-replayed" not in published.headers  # a resent first put is not a replay
            event_ids.append(published.json()["id"])
        batch = [{"type": "invoice.paid", "tenant_id": tenant, "id": f"lossy-b{n}", "data": INVOICE} for n in range(50)]
        answered = api.post("/v1/events/batch", json={"events": batch}, headers=ADMIN)
        assert answered.status_code == 200, answered.text
        assert [(item["status"], item["replayed"]) for item in answered.json()["data"]] == [(202, False)] * 50
        event_ids += [item["event"]["id"] for item in answered.json()["data"]]
        expected = len(event_ids) * SUBSCRIPTIONS

        # THEN every delivery arrives, and each event's counts settle with its 30 deliveries succeeded
        wait_for(lambda: len(arrivals([receiver])) >= expected, lambda: f"{len(arrivals([receiver]))} arrived", stack)
        wait_until_settled(api, ADMIN, event_ids, stack)
        for event_id in event_ids:
            counts = api.get(f"/v1/events/{event_id}", headers=ADMIN).json()["deliveries"]
            assert (counts["matched"], counts["succeeded"], counts["failed"]) == (SUBSCRIPTIONS, SUBSCRIPTIONS, 0)
        # AND each subscription's stats (written from the table's stream, after the deliveries) count each event's
        # attempt once
        listed = api.get("/v1/subscriptions", params={"limit": 100}, headers=headers).json()["data"]
        assert len(listed) == SUBSCRIPTIONS

        def stats(sub_id: str) -> tuple[int, int, int]:
            found = api.get(f"/v1/subscriptions/{sub_id}/stats", headers=headers).json()
            return found["attempts"], found["succeeded"], found["failed"]

        wait_for(
            lambda: all(stats(sub["id"])[0] >= len(event_ids) for sub in listed),
            lambda: f"the stats showed {[stats(sub['id']) for sub in listed]}",
            stack,
        )
        assert [stats(sub["id"]) for sub in listed] == [(len(event_ids), len(event_ids), 0)] * SUBSCRIPTIONS
    # AND each subscription got each event, signed with its secret
    arrived = arrivals([receiver])
    assert len(secrets) == SUBSCRIPTIONS  # by each subscription's path
    assert set(arrived) == {(path, event_id) for path in secrets for event_id in event_ids}

    # AND each webhook sent twice is one the stack counted, once the workers printed their metrics (at the end of
    # each batch): every success, and every duplicate
    def sent_again() -> int:
        return sum(arrivals([receiver]).values()) - len(arrived)

    def counted() -> bool:
        metrics = _metrics(stack)
        return metrics["DeliverySucceeded"] >= expected and metrics["DuplicateSends"] == sent_again()

    wait_for(counted, lambda: f"{sent_again()} sent twice, the metrics: {_metrics(stack)}", stack)
    for got in receiver.received:
        payload: Any = Webhook(secrets[got.path]).verify(got.body, got.headers)
        assert (payload["type"], payload["data"]) == ("invoice.paid", INVOICE)
    # AND the stack did lose answers of both services on the way (its log names each fault it injected): the run
    # above was not one without faults
    lost = Counter(re.findall(r"fault injected: (\w+)\.\w+ lost@send", stack.log.read_text(encoding="utf-8")))
    assert lost["dynamodb"] > 0, lost
    assert lost["sqs"] > 0, lost
