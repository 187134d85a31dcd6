"""Fan-out: find the subscriptions an event goes to, a page at a time, and queue a delivery for each (up to
ten to a message, ten messages to a ``SendMessageBatch``); a broadcast first fans out to one message per tenant;
a deleted tenant's subscriptions are purged a page at a time.

A fan-out page is counted on its event once (``matched``) however often its message runs, and a message
hands over to a continuation long before its invocation's timeout.

Payload filters: each routing item carries its subscription's filter (stored JSON), evaluated against the
event's type and data with no extra read (``herald.routing``); only the matches are queued, and the page counts
the others on the event (``filtered``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from herald.messages import DeliveryMessage, FanoutMessage, pack
from herald.metrics import Metric
from herald.records import WILDCARD
from herald.routing import matching

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from herald.messages import PurgeTenantMessage, WorkMessage
    from herald.storage import Route
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
    handled = queued = 0  # routing items read, deliveries queued
    async for page in route_pages(worker, message.tenant_id, event.type, message.route, message.cursor):
        marker = f"{message.tenant_id}|{page.route}|{page.cursor or ''}"
        sub_ids, filtered = matching(event, page.routed)
        deliveries = [DeliveryMessage.of(stored, message.tenant_id, sub_id) for sub_id in sub_ids]
        # Count the page first, once however often this message runs; then queue it. A crash in
        # between runs the page again: its deliveries are queued again (the same delivery ids, so
        # nothing is sent twice) but not counted again.
        if deliveries or filtered or page.last:
            await worker.io(
                worker.store.events.count_fanout_page,
                event.id,
                marker,
                expires_at=expires_at,
                matched=len(deliveries),
                filtered=filtered,
                fanout_open=-1 if page.last else 0,
            )
        await send_concurrently(worker, deliveries)
        handled += len(page.routed)
        queued += len(deliveries)
        if page.last:
            worker.metrics.add(Metric.FANOUT_SIZE, queued)
            logger.info("fan-out finished", extra={"event_id": event.id, "tenant_id": message.tenant_id})
            return
        if handled >= FANOUT_MAX_PER_MESSAGE or deadline - worker.clock() < FANOUT_MIN_SECONDS_LEFT:
            # Hand over to a continuation message, well before the invocation's timeout.
            continuation = FanoutMessage(
                event_id=event.id, tenant_id=message.tenant_id, route=page.next_route, cursor=page.next_cursor
            )
            await worker.io(worker.queue.send, continuation)
            worker.metrics.add(Metric.FANOUT_SIZE, queued)
            return


@dataclass(frozen=True)
class RoutePage:
    """One page of an event's routing items: where it starts (``route``, ``cursor``), its items, whether it is
    the last, and where the next one starts (what a continuation message carries)."""

    route: str
    cursor: str | None
    routed: list[Route]
    last: bool
    next_route: str
    next_cursor: str | None


async def route_pages(
    worker: Worker, tenant_id: str, event_type: str, route: str | None, cursor: str | None
) -> AsyncIterator[RoutePage]:
    """The routing items of an event's type, then of ``*``, a page at a time, from ``route`` and ``cursor`` (a
    continuation's) on: the one walk the fan-out and redelivery make."""
    routes = [event_type, WILDCARD]
    current = route if route in routes else routes[0]
    while True:
        routed, next_cursor = await worker.io(
            worker.store.subscriptions.routed, tenant_id, current, limit=worker.settings.fanout_page_size, cursor=cursor
        )
        last = next_cursor is None and current == routes[-1]
        following = routes[routes.index(current) + 1] if next_cursor is None and not last else current
        yield RoutePage(current, cursor, routed, last, following, next_cursor)
        if last:
            return
        current, cursor = following, next_cursor


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


async def send_concurrently(worker: Worker, messages: Sequence[WorkMessage]) -> None:
    """Queue messages, plain first deliveries packed up to ten a message (``messages.pack``), ten messages a
    SendMessageBatch, the batches at once."""
    messages = pack(messages)
    chunks = [messages[start : start + 10] for start in range(0, len(messages), 10)]
    await asyncio.gather(*(worker.io(worker.queue.send_batch, chunk) for chunk in chunks))


async def try_send_concurrently(worker: Worker, messages: Sequence[WorkMessage]) -> list[bool | None]:
    """Queue messages as they are (none packed), ten a SendMessageBatch, the batches at once, raising for none: for
    each message, in order, whether SQS took it (``WorkQueue.try_send_batch``: None if it may have)."""
    chunks = [messages[start : start + 10] for start in range(0, len(messages), 10)]
    outcomes = await asyncio.gather(*(worker.io(worker.queue.try_send_batch, chunk) for chunk in chunks))
    return [outcome for chunk in outcomes for outcome in chunk]


async def purge(worker: Worker, message: PurgeTenantMessage) -> None:
    """Delete a page of a deleted tenant's subscriptions; a continuation message carries on. Each message deletes
    the tenant's API keys once more first: the deletion found them through an index, whose read may miss a key
    issued a moment before (DynamoDB's eventual consistency); by the purge, delayed past any request under way,
    the index lists it, and the key stops working then instead of never. A tenant that still exists is left alone:
    its deletion queued the purge, then failed before the tenant's item went (a 503), and the operator may keep it;
    the deletion asked again queues a purge of its own."""
    if await worker.io(worker.store.tenants.get, message.tenant_id) is not None:
        logger.warning("purge of a tenant that still exists: dropped", extra={"tenant_id": message.tenant_id})
        return
    await worker.io(worker.store.tenants.delete_keys, message.tenant_id)
    done = await worker.io(worker.store.subscriptions.purge_page, message.tenant_id)
    if not done:
        await worker.io(worker.queue.send, message)
