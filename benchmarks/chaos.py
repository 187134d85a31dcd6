"""Chaos figures: a stream of events under the fault mix (``herald.faults.CHAOS_MIX``), counted at real
receivers. ``chaos_lost_per_10k``: deliveries that never arrived with a valid signature (must be 0);
``chaos_duplicates_per_10k``: arrivals beyond the first, against what at-least-once allows: one more arrival
per write recording a delivery's send that failed after botocore's retries (the send is then made again; a
failed claim of its lease, made before any send, allows none). Each delivery that came more than once is
listed in the details with the faults that touched it.

Events are published through the app (a 503 is published again with the same Idempotency-Key, as a
client must); the worker runs on a simulated clock, and everything it put back on the queue (delayed
copies, the schedule) comes back at each step (as time passing would), until the queue is empty. moto
runs in this process.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from benchmarks.core import ADMIN_HEADERS, BenchmarkError, local_stack
from benchmarks.results import Figure
from herald.faults import Injected, key_label
from herald.local.loopback import LoopbackServer, QuietHandler
from herald.storage import keys
from herald.storage.deliveries import delivery_key

if TYPE_CHECKING:
    from herald.storage import Store

PER = 10_000
STEP_SECONDS = 70.0
#: What an item written with a send's record holds: an attempt item its number, the delivery its last attempt.
_OF_A_SEND = frozenset({"attempt_number", "last_attempt_at"})
#: What a claim's item holds: the lease it takes before the send.
_LEASE = "lease_token"


def records_a_send(fault: Injected) -> bool:
    """Whether the write a fault hit may be the record of a send, whose failure has the send made again: it
    writes an attempt item or a delivery after an attempt (its record), and takes no lease. A claim (which
    holds the delivery's last attempt too, once it has one) comes before any send: its failure sends nothing
    twice. Releases write no whole item, nor do reads; a new delivery listed or cancelled without an attempt
    shows none (the cancellation of a delivery tried before does: rare, and only generous)."""
    return any(names & _OF_A_SEND for names in fault.written) and not any(_LEASE in names for names in fault.written)


def _labels_of(store: Store, event_id: str, sub_id: str) -> tuple[str, str]:
    """How the faults name (``Injected.keys``) a delivery's item and its attempts' partition."""
    stored = store.events.get(event_id)
    if stored is None:
        raise BenchmarkError(f"event {event_id} is gone")
    delivery_id = stored.delivery_id(sub_id)
    item = delivery_key(sub_id, delivery_id, event_id)
    return key_label(item["pk"], item["sk"]), key_label(keys.delivery_partition(delivery_id), "")


@dataclass
class _Receiver:
    """Real HTTP on 127.0.0.1: notes (path, webhook-id, verified) of each POST and answers 200."""

    secrets: dict[str, str] = field(default_factory=dict)
    arrivals: list[tuple[str, str, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from standardwebhooks import Webhook

        outer = self
        lock = threading.Lock()

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.read_body()
                msg_id, stamp = self.headers["webhook-id"], int(self.headers["webhook-timestamp"])
                expected = Webhook(outer.secrets[self.path]).sign(
                    msg_id, datetime.fromtimestamp(stamp, UTC), body.decode()
                )
                with lock:
                    outer.arrivals.append((self.path, msg_id, expected in self.headers["webhook-signature"].split(" ")))
                self.answer(200)

        self.http = LoopbackServer(Handler)

    def url(self, name: str) -> str:
        return self.http.url(f"/{name}")

    def close(self) -> None:
        self.http.close()


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run(*, events: int, subscriptions: int, seed: int = 16, out: Callable[[str], None] = print) -> list[Figure]:
    # Long on purpose: one measurement, its set-up and its report, in the order they happen.
    import time

    from fastapi.testclient import TestClient

    from herald import faults
    from herald.api import create_app
    from herald.local.moto_fixes import release_delays
    from herald.local.poller import SqsPoller
    from herald.worker import Worker, settle_all

    receiver = _Receiver()
    clock = _Clock(time.time())
    with local_stack(moto="inprocess", faults=f"{faults.CHAOS_MIX}, seed={seed}") as stack:
        services = stack.services
        worker = Worker(services, clock=clock)
        sqs = stack.session.client("sqs")
        poller = SqsPoller(sqs, services.settings.queue_url, worker.handle, batch_size=100, function_timeout_seconds=60)
        handles: list[str] = []
        receive = poller.receive_batch

        def noting(wait_seconds: int = 0) -> Any:
            batch = receive(wait_seconds)
            handles.extend(message["ReceiptHandle"] for message in batch)
            return batch

        poller.receive_batch = noting  # type: ignore[method-assign]

        def drain() -> None:
            while poller.poll_once().received:
                pass

        def reveal() -> None:
            worker.sweep()  # the schedule's sweep, as the clock has moved on
            release_delays(services.settings.queue_url)  # SQS delays pass with the simulated clock too
            for handle in handles:
                try:
                    sqs.change_message_visibility(
                        QueueUrl=services.settings.queue_url, ReceiptHandle=handle, VisibilityTimeout=0
                    )
                except ClientError:  # deleted since: nothing to show again
                    continue
            handles.clear()

        statuses: Counter[int] = Counter()
        try:
            with TestClient(create_app(services)) as client:
                with faults.suspended():
                    tenant = client.post("/v1/tenants", json={"name": "Chaos"}, headers=ADMIN_HEADERS).json()
                    headers = {"Authorization": f"Bearer {tenant['api_key']['key']}"}
                    subs: dict[str, str] = {}
                    for n in range(subscriptions):
                        sub_body = {"url": receiver.url(f"s{n}"), "event_types": ["invoice.paid"]}
                        created = client.post("/v1/subscriptions", json=sub_body, headers=headers).json()
                        receiver.secrets[f"/s{n}"] = created["secret"]
                        subs[f"/s{n}"] = created["id"]
                event_ids = []
                for n in range(events):
                    data = {
                        "invoice_id": f"in_{n}",
                        "customer_id": "cus_1",
                        "amount_cents": 100,
                        "currency": "EUR",
                        "paid_at": "2026-01-31T09:30:00Z",
                    }
                    body: dict[str, Any] = {"type": "invoice.paid", "data": data, "tenant_id": tenant["id"]}
                    for _ in range(20):
                        answer = client.post(
                            "/v1/events", json=body, headers={**ADMIN_HEADERS, "Idempotency-Key": f"c{n}"}
                        )
                        statuses[answer.status_code] += 1
                        if answer.status_code == 202:
                            event_ids.append(answer.json()["id"])
                            break
                    else:
                        raise BenchmarkError(f"event {n} was never accepted: {dict(statuses)}")
                    if n % 10 == 9:
                        drain()
                expected = {(path, event_id) for path in subs for event_id in event_ids}
                for _ in range(60):
                    clock.now += STEP_SECONDS
                    reveal()
                    drain()
                    with faults.suspended():
                        attributes = sqs.get_queue_attributes(
                            QueueUrl=services.settings.queue_url,
                            AttributeNames=[
                                "ApproximateNumberOfMessages",
                                "ApproximateNumberOfMessagesNotVisible",
                                "ApproximateNumberOfMessagesDelayed",
                            ],
                        )["Attributes"]
                    if {(path, msg) for path, msg, _ in receiver.arrivals} >= expected and set(attributes.values()) == {
                        "0"
                    }:
                        break
                with faults.suspended():
                    labels = {pair: _labels_of(services.store, pair[1], subs[pair[0]]) for pair in expected}
        finally:
            settle_all([worker])
            receiver.close()
        injector = faults.injector_of(services.store.client)
        injected = injector.injected if injector else []
    # A write recording a send that failed as the worker saw it (a fault at the call stage: after botocore's
    # retries) has the send made again. Each such failed write allows its delivery one more arrival (a delivery
    # whose record fails twice may come three times).
    failed_records = [fault for fault in injected if fault.stage == "call" and records_a_send(fault)]

    def failed_writes(pair: tuple[str, str]) -> int:
        """The failed record writes that touched the delivery's item or its attempts (a write touching both,
        a job's transaction, once)."""
        item, attempts = labels[pair]
        return sum(1 for fault in failed_records if item in fault.keys or attempts in fault.keys)

    verified = Counter((path, msg) for path, msg, good in receiver.arrivals if good)
    lost = len(expected - set(verified))
    duplicates = sum(count - 1 for count in verified.values())
    allowed = sum(failed_writes(pair) for pair in expected)
    bad = sum(1 for _, _, good in receiver.arrivals if not good)
    # Each delivery that came more than once, with the DynamoDB faults that touched its items (SQS faults are not
    # tied to a delivery here): where a duplicate came from. The allowance holds per delivery: a duplicate of a
    # delivery no failed write touched is never covered by another delivery's.
    duplicated = {}
    unexplained = 0
    for (path, event_id), count in verified.items():
        if count > 1:
            item, attempts = labels[path, event_id]
            touched = [
                f"{fault.operation}:{fault.fault}@{fault.stage}"
                for fault in injected
                if item in fault.keys or attempts in fault.keys
            ]
            duplicated[item] = {"arrivals": count, "faults": touched}
            unexplained += max(0, count - 1 - failed_writes((path, event_id)))
    out(
        f"  {len(expected)} deliveries ({events} events x {subscriptions} subscriptions) under {faults.CHAOS_MIX}: "
        f"{lost} lost, {duplicates} duplicates, {allowed} failed records of sends, "
        f"{bad} bad signatures; publish answers {dict(statuses)}; came more than once: {duplicated or 'none'}"
    )
    scale = PER / len(expected)
    details = {
        "deliveries": len(expected),
        "lost": lost,
        "duplicates": duplicates,
        "failed_writes": allowed,
        "duplicates_beyond_their_delivery_allowance": unexplained,
        "bad_signatures": bad,
        "duplicated": duplicated,
        "publish_answers": dict(statuses),
        "faults": faults.CHAOS_MIX,
        "seed": seed,
    }
    return [
        Figure(
            name="chaos_lost_per_10k",
            value=lost * scale,
            unit="deliveries",
            baseline=PER,
            baseline_label=f"every delivery, per 10,000 ({len(expected)} delivered, scaled)",
            target="= 0",
            met=lost == 0 and bad == 0,
            low=0.0,
            high=0.0,
            details=details,
            note="a delivery counts as arrived only with a signature standardwebhooks computes the same",
        ),
        Figure(
            name="chaos_duplicates_per_10k",
            value=duplicates * scale,
            unit="deliveries",
            baseline=allowed * scale,
            baseline_label="records of sends that failed (at-least-once's allowance)",
            target="ratio <= 1, and per delivery",
            met=unexplained == 0,
            low=0.0,
            high=1.0,
            details=details,
        ),
    ]
