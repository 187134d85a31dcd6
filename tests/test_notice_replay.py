"""A notice about a delivery is not lost with the invocation that made its attempt: one that dies after recording the
attempt and before reporting it leaves the delivery's message undeleted, and the message, back, finds the attempt
made and reports what it did (``bookkeeping.report_missed``), once: a notice's id is what it reports. Over real HTTP,
verified with ``standardwebhooks``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from herald.worker.bookkeeping import Bookkeeping
from tests.delivery_support import Harness, only_delivery, publish, subscribe
from tests.support import TenantInfo
from tests.test_operational_webhooks import drain_until, operational, register

pytestmark = pytest.mark.e2e


@pytest.fixture
def clock() -> Callable[[], float]:
    """The worker runs on the real clock here (the shared ``harness`` takes it)."""
    return time.time


class Died(Exception):
    """The invocation ends here, as a crash or a timeout would end it."""


def _dies_before_reporting(monkeypatch: pytest.MonkeyPatch, when: Callable[[Any, int | None], bool]) -> list[str]:
    """The first attempt ``when`` picks (its settled delivery, its schedule's step) ends its invocation right after
    it is recorded, before the batch's bookkeeping reports it. Returns the ids of the deliveries it happened to."""
    died: list[str] = []
    attempted = Bookkeeping.attempted

    async def dying(self: Bookkeeping, event: Any, sub: Any, outcome: Any, settled: Any, *args: Any, **kwargs: Any):
        if not died and when(settled, kwargs.get("scheduled")):
            died.append(settled.id)
            raise Died
        return await attempted(self, event, sub, outcome, settled, *args, **kwargs)

    monkeypatch.setattr(Bookkeeping, "attempted", dying)
    return died


def _reported_after_a_death(
    client: Any,
    tenant: TenantInfo,
    harness: Harness,
    make_receiver: Callable[[], Any],
    monkeypatch: pytest.MonkeyPatch,
    notice: str,
    when: Callable[[Any, int | None], bool],
) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """An event published to a tenant endpoint that always fails, an operator endpoint taking ``notice``, and the
    invocation of the attempt ``when`` picks dying before it reports it; then that invocation's message back, and
    the queues worked until the operator heard once (and worked again, to show nothing more comes). The delivery,
    the notice's payload (verified) and the tenant's endpoint."""
    ops, down = make_receiver(), make_receiver()
    down.default = (500, {}, b"down", 0.0)
    endpoint = register(client, ops.url, [notice])
    sub = subscribe(client, tenant, down.url)
    died = _dies_before_reporting(monkeypatch, when)
    publish(client, tenant.id)
    drain_until(harness, lambda: bool(died))
    assert ops.received == []
    harness.reveal()
    drain_until(harness, lambda: len(ops.received) == 1)
    harness.reveal()
    harness.drain()
    delivery = only_delivery(client, tenant, sub.id)
    assert died == [delivery["id"]]
    (payload,) = operational(endpoint["secret"], ops)
    assert (payload["type"], payload["data"]["delivery_id"]) == (notice, delivery["id"])
    return delivery, payload, down


@pytest.mark.parametrize(
    "settings_overrides", [{"retry_schedule": (0, 0), "retry_jitter": 0.0, "failing_after_failures": 3}]
)
def test_a_delivery_exhausted_by_an_invocation_that_died_is_reported_by_its_message_back(
    client, tenant: TenantInfo, harness: Harness, make_receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an operator endpoint taking delivery.exhausted, a tenant endpoint that always fails, and an invocation
    # that dies once the last attempt, failing the delivery for good, is recorded
    # WHEN an event is delivered (two attempts), and the message of the invocation that died comes back
    delivery, payload, down = _reported_after_a_death(
        client,
        tenant,
        harness,
        make_receiver,
        monkeypatch,
        "delivery.exhausted",
        lambda settled, _: settled.status == "failed",
    )
    # THEN the operator heard that the delivery failed for good, once, as it would have from the invocation
    assert (delivery["status"], delivery["attempts"]) == ("failed", 2)
    assert (payload["data"]["attempts"], payload["data"]["last_status_code"]) == (2, 500)
    assert payload["data"]["reason"] == "every scheduled attempt failed"
    assert len(down.received) == 2


@pytest.mark.parametrize(
    ("settings_overrides", "attempts"),
    [
        ({"retry_schedule": (0, 0, 0, 0, 3600), "retry_jitter": 0.0, "failing_after_failures": 3}, 4),
        ({"retry_schedule": (0, 0, 0, 0, 0, 3600), "retry_jitter": 0.0, "failing_after_failures": 3}, 5),
    ],
    ids=["next-step-later", "next-step-due-on-return"],
)
def test_a_delivery_failing_at_its_4th_step_in_an_invocation_that_died_is_reported_by_its_message_back(
    client, tenant: TenantInfo, harness: Harness, make_receiver, monkeypatch: pytest.MonkeyPatch, attempts: int
) -> None:
    # GIVEN an operator endpoint taking delivery.failing, a tenant endpoint that always fails, and an invocation
    # that dies once the 4th step of the schedule is recorded (its next an hour away, or due at once)
    # WHEN an event is delivered, and the message of the invocation that died comes back
    delivery, payload, down = _reported_after_a_death(
        client, tenant, harness, make_receiver, monkeypatch, "delivery.failing", lambda _, scheduled: scheduled == 4
    )
    # THEN the operator heard that the delivery failed its 4th step, once (the message back reported it before the
    # 5th attempt, when that was due), and the delivery waits for its next retry
    assert (delivery["status"], delivery["attempts"], len(down.received)) == ("pending", attempts, attempts)
    assert payload["data"]["attempts"] == 4
    if attempts == 4:
        assert payload["data"]["next_attempt_at"] == delivery["next_attempt_at"]
