"""The operator's notice that Herald disabled a subscription outlives the worker that disabled it: the disabling
write puts the notice on the subscription's item, and the table's stream publishes it (``herald.worker.streamed``)
under the event id the worker's own report has, so it is published once, whether the worker reported it or died
first."""

from __future__ import annotations

from typing import Any

import pytest

from herald.storage import keys
from herald.storage.subscriptions import DISABLED_NOTICE
from herald.worker import bookkeeping
from tests.delivery_support import Harness, publish, subscribe
from tests.support import TenantInfo
from tests.test_operational_webhooks import operational, register

pytestmark = pytest.mark.e2e


def _gone_endpoint(client: Any, tenant: TenantInfo, make_receiver: Any) -> tuple[dict[str, Any], Any, Any, Any]:
    """An operator endpoint for subscription.disabled (as registered) and its receiver, and a tenant subscription
    whose endpoint answers 410 Gone (disabled by its first attempt) with its receiver."""
    ops, gone = make_receiver(), make_receiver()
    gone.default = (410, {}, b"gone", 0.0)
    endpoint = register(client, ops.url, ["subscription.disabled"])
    sub = subscribe(client, tenant, gone.url)
    return endpoint, ops, sub, gone


def _notice_on(services: Any, tenant: TenantInfo, sub_id: str) -> Any:
    item = services.store.table.read(keys.subscription(tenant.id, sub_id))
    return item.get(DISABLED_NOTICE)


def _drain_without_the_stream(harness: Harness) -> None:
    """Drain the queues only: the table's stream is left unread."""
    stream, harness.stream = harness.stream, None
    try:
        harness.drain()
    finally:
        harness.stream = stream


def _read_the_stream(harness: Harness) -> None:
    """Read the table's stream, then deliver what it published."""
    assert harness.stream is not None
    harness.stream.drain()
    harness.drain()


def test_a_worker_that_dies_after_disabling_a_subscription_loses_no_notice(
    client, tenant: TenantInfo, services, harness: Harness, make_receiver, monkeypatch
) -> None:
    # GIVEN a subscription whose endpoint answers 410 Gone, and a worker that dies right after the write that
    # disables it, before it reports it
    endpoint, ops, sub, gone = _gone_endpoint(client, tenant, make_receiver)

    async def dies(*_: Any) -> bool:
        raise RuntimeError("the invocation died")

    monkeypatch.setattr(bookkeeping, "report", dies)
    # WHEN an event is delivered to it, and the table's stream is read (what it publishes is then delivered)
    publish(client, tenant.id)
    harness.drain()
    harness.drain()
    # THEN the subscription is disabled
    shown = client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()
    assert shown["enabled"] is False
    # AND the operator got the notice once, signed, as the worker would have sent it
    (notice,) = operational(endpoint["secret"], ops)
    assert notice["type"] == "subscription.disabled"
    data = notice["data"]
    assert (data["tenant_id"], data["subscription_id"], data["url"]) == (tenant.id, sub.id, gone.url)
    assert data["reason"] == shown["disabled_reason"]
    assert data["disabled_at"] == shown["disabled_at"]
    assert data["last_status_code"] == 410
    # AND the notice is off the subscription's item once published
    assert _notice_on(services, tenant, sub.id) is None


def test_a_notice_the_worker_reported_is_not_sent_again_from_the_stream(
    client, tenant: TenantInfo, services, harness: Harness, make_receiver
) -> None:
    # GIVEN a subscription whose endpoint answers 410 Gone
    endpoint, ops, sub, _ = _gone_endpoint(client, tenant, make_receiver)
    # WHEN an event is delivered to it: the worker reports the disabling at once
    publish(client, tenant.id)
    _drain_without_the_stream(harness)
    # THEN the notice is on the subscription's item, and the operator has it once
    assert _notice_on(services, tenant, sub.id) is not None
    assert [payload["type"] for payload in operational(endpoint["secret"], ops)] == ["subscription.disabled"]
    # WHEN the table's stream is read too
    _read_the_stream(harness)
    # THEN it publishes the same event, which is no second notice, and takes the notice off the item
    assert [payload["type"] for payload in operational(endpoint["secret"], ops)] == ["subscription.disabled"]
    assert _notice_on(services, tenant, sub.id) is None


def test_a_rewrite_of_the_subscription_takes_a_notice_off_it(
    client, tenant: TenantInfo, services, harness: Harness, make_receiver
) -> None:
    # GIVEN a subscription disabled for its 410, its notice on its item (the stream not read yet)
    endpoint, ops, sub, gone = _gone_endpoint(client, tenant, make_receiver)
    publish(client, tenant.id)
    _drain_without_the_stream(harness)
    assert _notice_on(services, tenant, sub.id) is not None
    # WHEN the tenant re-enables it
    gone.default = (200, {}, b"ok", 0.0)
    enabled = client.patch(f"/v1/subscriptions/{sub.id}", json={"enabled": True}, headers=tenant.headers)
    assert enabled.status_code == 200, enabled.text
    # THEN the notice is off its item, and the stream, read, sends the operator no second one
    assert _notice_on(services, tenant, sub.id) is None
    _read_the_stream(harness)
    assert [payload["type"] for payload in operational(endpoint["secret"], ops)] == ["subscription.disabled"]
