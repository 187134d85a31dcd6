"""``inflight_per_waiting_retry``: messages held in the work queue's in-flight set per delivery waiting for a
later retry. SQS caps a standard queue at about 120,000 messages in flight, and past it every consumer
stalls: a waiting retry must not be one of them.

A subscriber that answers 500 to ``deliveries`` deliveries; the worker (on a simulated clock) makes their
attempts, and after each step of the retry schedule the queue's in-flight, delayed and scheduled counts are
read. The figure is the largest in-flight count seen over the deliveries waiting then; its baseline, 1, is
what holding each waiting message (``ChangeMessageVisibility``) costs. moto runs in this process.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.core import ADMIN_HEADERS, local_stack
from benchmarks.results import Figure
from herald.local.loopback import LoopbackServer, QuietHandler

#: Immediately, then 5 s and 5 min (delayed copies), 30 min and 2 h (the schedule).
SCHEDULE = "0,5,300,1800,7200"


class _Failing:
    """Real HTTP on 127.0.0.1 answering 500 to every POST."""

    def __init__(self) -> None:
        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.read_body()
                self.answer(500)

        self.http = LoopbackServer(Handler)

    @property
    def url(self) -> str:
        return self.http.url("/hook")

    def close(self) -> None:
        self.http.close()


def run(*, deliveries: int = 100, out: Callable[[str], None] = print) -> list[Figure]:
    # Long on purpose: one measurement, its set-up and its report, in the order they happen.
    import time

    from fastapi.testclient import TestClient

    from herald.api import create_app
    from herald.local.moto_fixes import release_delays
    from herald.local.poller import SqsPoller
    from herald.worker import Worker, settle_all

    receiver = _Failing()
    now = [time.time()]
    seen: list[tuple[int, int, int]] = []
    with local_stack(moto="inprocess", retry_schedule=SCHEDULE) as stack:
        services = stack.services
        worker = Worker(services, clock=lambda: now[0])
        worker.sweep()
        sqs = stack.session.client("sqs")
        url = services.settings.queue_url
        poller = SqsPoller(sqs, url, worker.handle, batch_size=100, function_timeout_seconds=60)

        def counts() -> tuple[int, int, int]:
            attributes = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=["ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"],
            )["Attributes"]
            scheduled = sum(1 for _ in services.store.schedule.falling_due(now[0] - 60, now[0] + 3 * 86_400))
            in_flight = int(attributes["ApproximateNumberOfMessagesNotVisible"])
            return in_flight, int(attributes["ApproximateNumberOfMessagesDelayed"]), scheduled

        try:
            with TestClient(create_app(services)) as client:
                tenant = client.post("/v1/tenants", json={"name": "Inflight"}, headers=ADMIN_HEADERS).json()
                headers = {"Authorization": f"Bearer {tenant['api_key']['key']}"}
                client.post(
                    "/v1/subscriptions",
                    json={"url": receiver.url, "event_types": ["invoice.paid"]},
                    headers=headers,
                ).raise_for_status()
                data = {
                    "invoice_id": "in_1",
                    "customer_id": "c",
                    "amount_cents": 1,
                    "currency": "EUR",
                    "paid_at": "2026",
                }
                for _ in range(deliveries):
                    body = {"type": "invoice.paid", "data": data, "tenant_id": tenant["id"]}
                    client.post("/v1/events", json=body, headers=ADMIN_HEADERS).raise_for_status()
                while poller.poll_once().received:
                    pass
                seen.append(counts())
                for wait in (5, 300, 1800, 7200):
                    now[0] += wait * 1.25
                    worker.sweep()
                    release_delays(url)
                    while poller.poll_once().received:
                        pass
                    seen.append(counts())
        finally:
            settle_all([worker])
            receiver.close()
    waiting = [delayed + scheduled for _, delayed, scheduled in seen[:-1]]
    in_flight = max(in_flight for in_flight, _, _ in seen[:-1])
    out(f"  {deliveries} failing deliveries, per step (in flight, delayed, scheduled): {seen}")
    return [
        Figure(
            name="inflight_per_waiting_retry",
            value=in_flight / max(1, min(waiting)),
            unit="messages",
            baseline=1.0,
            baseline_label="one in flight per waiting retry (a hidden message, ChangeMessageVisibility)",
            target="<= 0.05",
            met=in_flight <= 0.05 * min(waiting),
            low=0.0,
            high=0.05,
            details={"deliveries": deliveries, "steps": seen, "schedule": SCHEDULE},
            note="counted on the queue after each step of the schedule; every waiting delivery was a delayed "
            "copy or a scheduled item",
        )
    ]
