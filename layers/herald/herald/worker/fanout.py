"""Fan-out: find the subscriptions an event goes to, a page at a time, and queue one delivery message for
each (``SendMessageBatch``, 10 a call); a broadcast first fans out to one message per tenant; a deleted
tenant's subscriptions are purged a page at a time.

A fan-out page is counted on its event once (``matched``) however often its message runs, and a message
hands over to a continuation long before its invocation's timeout.

Payload filters: each routing item carries its subscription's filter (stored JSON), evaluated against the
event's type and data with no extra read (``herald.routing``); only the matches are queued, and the page counts
the others on the event (``filtered``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from herald.messages import DeliveryMessage, FanoutMessage
from herald.metrics import Metric
from herald.records import WILDCARD
from herald.routing import matching

if TYPE_CHECKING:
    from herald.messages import PurgeTenantMessage
    from herald.worker.runtime import Worker

logger = Logger(service="herald", child=True)

#: Subscriptions handled by one fan-out message before it hands over to a continuation message.
FANOUT_MAX_PER_MESSAGE = 5_000
#: A fan-out message stops reading pages when its invocation has less time left than this.
FANOUT_MIN_SECONDS_LEFT = 15.0


async def fanout(worker: Worker, message: FanoutMessage, deadline: float) -> None:
    stored = await worker.io(worker.store.events.get, message.event_id)
    if stored is None:
        logger.warning("fan-out of an event that no longer exists", extra={"event_id": message.event_id})
        return
    expires_at = stored.expires_at
    if message.tenant_id is None:
        await _fanout_tenants(worker, message, expires_at)
        return
    event = stored.event
    routes = [event.type, WILDCARD]
    route = message.route if message.route in routes else routes[0]
    page_token = message.cursor
    handled = queued = 0  # routing items read, deliveries queued
    while True:
        marker = f"{message.tenant_id}|{route}|{page_token or ''}"
        routed, next_token = await worker.io(
            worker.store.subscriptions.routed,
            message.tenant_id,
            route,
            limit=worker.settings.fanout_page_size,
            cursor=page_token,
        )
        last = next_token is None and route == routes[-1]
        sub_ids, filtered = matching(event, routed)
        deliveries = [
            DeliveryMessage(event_id=event.id, tenant_id=message.tenant_id, subscription_id=sub_id)
            for sub_id in sub_ids
        ]
        # Count the page first, once however often this message runs; then queue it. A crash in
        # between runs the page again: its deliveries are queued again (the same delivery ids, so
        # nothing is sent twice) but not counted again.
        if deliveries or filtered or last:
            await worker.io(
                worker.store.events.count_fanout_page,
                event.id,
                marker,
                expires_at=expires_at,
                matched=len(deliveries),
                filtered=filtered,
                fanout_open=-1 if last else 0,
            )
        await send_concurrently(worker, deliveries)
        handled += len(routed)
        queued += len(deliveries)
        if last:
            worker.metrics.add(Metric.FANOUT_SIZE, queued)
            logger.info("fan-out finished", extra={"event_id": event.id, "tenant_id": message.tenant_id})
            return
        if next_token is None:
            route, page_token = routes[routes.index(route) + 1], None
        else:
            page_token = next_token
        if handled >= FANOUT_MAX_PER_MESSAGE or deadline - worker.clock() < FANOUT_MIN_SECONDS_LEFT:
            # Hand over to a continuation message, well before the invocation's timeout.
            continuation = FanoutMessage(event_id=event.id, tenant_id=message.tenant_id, route=route, cursor=page_token)
            await worker.io(worker.queue.send, continuation)
            worker.metrics.add(Metric.FANOUT_SIZE, queued)
            return


async def _fanout_tenants(worker: Worker, message: FanoutMessage, expires_at: int) -> None:
    """A broadcast: one fan-out message per tenant, a page of tenants at a time."""
    page = await worker.io(worker.store.tenants.list, limit=100, cursor=message.cursor)
    per_tenant = [FanoutMessage(event_id=message.event_id, tenant_id=tenant.id) for tenant in page.items]
    last = page.cursor is None
    # Opened before they are queued, so the fan-out never looks complete while tenants remain.
    await worker.io(
        worker.store.events.count_fanout_page,
        message.event_id,
        f"tenants|{message.cursor or ''}",
        expires_at=expires_at,
        fanout_open=len(per_tenant) - (1 if last else 0),
    )
    await send_concurrently(worker, per_tenant)
    if not last:
        await worker.io(worker.queue.send, message.model_copy(update={"cursor": page.cursor}))


async def send_concurrently(worker: Worker, messages: list[DeliveryMessage] | list[FanoutMessage]) -> None:
    """Queue messages ten a SendMessageBatch, the batches at once."""
    chunks = [messages[start : start + 10] for start in range(0, len(messages), 10)]
    await asyncio.gather(*(worker.io(worker.queue.send_batch, chunk) for chunk in chunks))


async def purge(worker: Worker, message: PurgeTenantMessage) -> None:
    """Delete a page of a deleted tenant's subscriptions; a continuation message carries on."""
    done = await worker.io(worker.store.subscriptions.purge_page, message.tenant_id)
    if not done:
        await worker.io(worker.queue.send, message)
