"""A delivery that exists already (a retry, a duplicate) is claimed from the batch's read when that read
shows an attempt due: no read of its own first. The batch's read is eventually consistent, so a stale
state must only ever cost a failed claim and a strong read, never a send too many or a message held on it.

moto is always consistent: a stale read is emulated by handing the batch an older state of the delivery.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from herald.storage import DeliveryState
from herald.worker import runtime
from herald.worker.reads import BatchReads, read_batch
from tests.delivery_support import Harness, attempts, delivery_key_of, only_delivery, publish, step, subscribe, when
from tests.support import Clock, Receiver

pytestmark = pytest.mark.e2e


def _is(key: dict[str, Any], delivery_key: dict[str, str]) -> bool:
    return all(key[name]["S"] == value for name, value in delivery_key.items())


def _reads_of(harness: Harness, delivery_key: dict[str, str]) -> int:
    """The GetItem calls the worker made on the delivery's item so far."""
    return sum(1 for call in harness.table_calls.of("GetItem") if _is(call.params["Key"], delivery_key))


def test_a_due_retry_is_claimed_from_the_batch_read_and_a_retry_not_due_is_held_on_a_strong_read(
    client, tenant, harness: Harness, clock: Clock, receiver: Receiver
) -> None:
    # GIVEN a receiver that fails once, then answers 200, and a first attempt made
    receiver.responses = [(500, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    delivery_pk = delivery_key_of(harness.services.store, event_id, sub.id)
    harness.drain()
    delay = when(only_delivery(client, tenant, sub.id)["next_attempt_at"]) - clock()
    # WHEN the retry's message shows up before it is due
    before = _reads_of(harness, delivery_pk)
    harness.reveal()
    harness.drain()
    # THEN nothing is sent, and the hold was decided on a strong read of the delivery, not on the batch's
    assert len(receiver.received) == 1
    assert _reads_of(harness, delivery_pk) == before + 1
    # WHEN it comes due
    before = _reads_of(harness, delivery_pk)
    step(harness, clock, delay + 1)
    # THEN the second attempt was made from the batch's read of the delivery, with no read of its own
    assert len(receiver.received) == 2
    assert _reads_of(harness, delivery_pk) == before
    log = attempts(client, tenant, sub.id, delivery_pk["sk"])
    assert [(a["attempt_number"], a["status_code"]) for a in log] == [(1, 500), (2, 200)]
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"


def test_a_stale_batch_read_costs_a_failed_claim_and_a_strong_read_never_a_send_too_many(
    client, tenant, harness: Harness, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a receiver that fails twice, then answers 200, and the delivery's state after its first attempt kept
    receiver.responses = [(500, {}, b"", 0.0), (500, {}, b"", 0.0)]
    sub = subscribe(client, tenant, receiver.url)
    event_id = publish(client, tenant.id)
    key = delivery_key_of(harness.services.store, event_id, sub.id)
    delivery_id = key["sk"]
    harness.drain()
    after_first = harness.services.store.deliveries.get_state(sub.id, delivery_id, event_id)
    assert after_first is not None
    assert after_first.delivery.attempts == 1
    step(harness, clock, when(only_delivery(client, tenant, sub.id)["next_attempt_at"]) - clock() + 1)
    assert len(receiver.received) == 2
    # AND from now on, the batch's read shows that older state (a write it does not see yet)
    real_read_batch = read_batch
    stale: list[DeliveryState] = []

    async def stale_read_batch(worker: Any, bodies: Any) -> BatchReads:
        reads = await real_read_batch(worker, bodies)
        if delivery_id not in reads.states:
            return reads
        stale.append(after_first)
        return dataclasses.replace(reads, states={**reads.states, delivery_id: after_first})

    monkeypatch.setattr(runtime, "read_batch", stale_read_batch)
    puts_before = len(harness.table_calls.of("PutItem"))
    reads_before = _reads_of(harness, key)
    # WHEN the third attempt comes due
    step(harness, clock, when(only_delivery(client, tenant, sub.id)["next_attempt_at"]) - clock() + 1)
    # THEN the batch did start from the stale state, its claim failed, and a strong read carried the delivery on:
    # one third attempt, sent once
    assert stale
    assert _reads_of(harness, key) == reads_before + 1
    claims = [
        call
        for call in harness.table_calls.of("PutItem")[puts_before:]
        if _is(call.params["Item"], key) and "lease_token" in call.params["Item"]
    ]
    assert len(claims) == 2  # the stale one that failed, and the one that held
    assert len(receiver.received) == 3
    assert len({got.headers["webhook-id"] for got in receiver.received}) == 1
    log = attempts(client, tenant, sub.id, delivery_id)
    assert [(a["attempt_number"], a["status_code"]) for a in log] == [(1, 500), (2, 500), (3, 200)]
    assert only_delivery(client, tenant, sub.id)["status"] == "succeeded"
