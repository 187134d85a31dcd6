"""The table's stream, read by the DeliveryFunction: first attempts that succeeded, counted in their
subscriptions' stats a window at a time.

A delivered webhook's common case is one write: its new delivery item, with the first attempt inside, marked
``stats_from_stream`` (``storage.deliveries``). The worker writes no stats for it (``bookkeeping``); the
stream's event source (template.yaml, the ``Stats`` event) hands the function those items only (its filter:
``INSERT`` of an item with ``stats_from_stream``; Lambda does not bill what a filter drops, and reading the
stream is free to Lambda), up to 1,000 records of one shard gathered for up to 10 seconds, and each
subscription they name gets one UpdateItem for all of its successes (``HealthRepository.count_streamed``).
A subscription's deliveries share its partition key (``keys.delivery``), so its records come through one shard
at a time, and a subscription receiving many webhooks a second pays one stats write every ten seconds instead of
one per webhook.

What this costs the stats: they show a success up to the window (and Lambda's polling) late. Failures are
still counted by the worker at once, since the failure streak, auto-disable and the operator's notices
depend on them, and the worker ends a streak its batch read (the stream still counts the success). A streak
opened after that read (a failure of another batch, or one the eventually consistent read missed) is ended
by the stream's write when no failure later than the successes is counted; the operator then hears
``subscription.recovered`` from here.

The stream also carries the operator's notice that Herald disabled a subscription (``subscription.disabled``):
the disabling write puts it on the subscription's item (``DISABLED_NOTICE``), the filter's second pattern hands
over the records of items holding one, and they are published here, then removed from the item. The worker
publishes the notice at once, under the same event id (it is published once); from here it is published even when
the worker died between its write and its report, the write's record being on the stream whatever the worker did
next. A notice AWS refuses to publish is left to the work queue (``report``); one neither published nor queued is
logged, and stays on the item until a rewrite of its record removes it.

Each subscription's write stands alone: one DynamoDB refuses (after botocore's retries) is logged with what
it lost and the others go on. The batch is never failed for it, since Lambda would hand the whole batch over
again and the subscriptions already written would count twice. An invocation that dies halfway is retried
by Lambda (the template's ``MaximumRetryAttempts``: up to twice more): a subscription written before is
recognised by the window's id (a digest of its records' keys), kept on its stats with the three windows
counted before it, and not counted again, unless four more windows of other shards were counted in between
(then it counts again; the stats are bookkeeping, not the record: ``herald.repair`` recounts a subscription
from its attempt log).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from herald.domain.operational import OPERATOR_TENANT_ID
from herald.messages import NoticeMessage
from herald.storage import AttemptTally, keys
from herald.storage.deliveries import FIRST_ATTEMPT, STATS_FROM_STREAM
from herald.storage.subscriptions import DISABLED_NOTICE
from herald.storage.table import from_item
from herald.worker.bookkeeping import recovered, report, worth_reporting

if TYPE_CHECKING:
    from collections.abc import Iterable

    from herald.worker.runtime import Worker

logger = Logger(service="herald", child=True)

#: The ``eventSource`` of a DynamoDB stream record in a Lambda event.
STREAM_EVENT_SOURCE = "aws:dynamodb"


@dataclass
class _Successes:
    """One subscription's first attempts that succeeded, as the batch of stream records holds them."""

    tenant_id: str
    url: str
    expires_at: int = 0
    tallies: list[AttemptTally] = field(default_factory=list)
    #: The keys of the delivery items they come from: the same records handed over again make the same window.
    items: list[str] = field(default_factory=list)

    @property
    def window(self) -> str:
        """The id of this window of records (``HealthRepository.count_streamed`` recognises a window counted)."""
        return hashlib.sha256("\n".join(sorted(self.items)).encode()).hexdigest()[:16]


def is_stream_event(event: dict[str, Any]) -> bool:
    """Whether a DeliveryFunction event is a batch of the table's stream records."""
    records = event.get("Records") or []
    return bool(records) and records[0].get("eventSource") == STREAM_EVENT_SOURCE


def successes_of(records: Iterable[dict[str, Any]]) -> dict[str, _Successes]:
    """The first attempts that succeeded in a batch of stream records, by subscription. The filter of the event
    source selects these already; what it lets through otherwise (a record of another kind) is skipped here, and
    so is a record that cannot be read (logged): it must not fail the batch and the others' counts with it."""
    found: dict[str, _Successes] = {}
    for record in records:
        image = record.get("dynamodb", {}).get("NewImage")
        if record.get("eventName") != "INSERT" or not image:
            continue
        try:
            item = from_item(image)
            kept = item.get(FIRST_ATTEMPT) or {}
            if not keys.is_delivery(item) or not item.get(STATS_FROM_STREAM) or not kept.get("succeeded"):
                continue
            sub_id, tenant_id = str(item["subscription_id"]), str(item["tenant_id"])
            latency = kept.get("latency_ms")
            tally = AttemptTally(
                succeeded=True,
                status_code=kept.get("status_code"),
                at=datetime.fromisoformat(kept["finished_at"]),
                latency_ms=None if latency is None else int(latency),
            )
            expires_at = int(item.get("expires_at", 0))
        except (KeyError, TypeError, ValueError, AttributeError):
            logger.warning(
                "a stream record that cannot be read is not counted", extra={"keys": record["dynamodb"].get("Keys")}
            )
            continue
        successes = found.setdefault(sub_id, _Successes(tenant_id, str(kept.get("url", ""))))
        successes.expires_at = max(successes.expires_at, expires_at)
        successes.tallies.append(tally)
        successes.items.append(f"{item.get('pk')}\t{item.get('sk')}")
    return found


@dataclass(frozen=True)
class _Notice:
    """A notice on a subscription's item, as a stream record shows it (``DISABLED_NOTICE``)."""

    tenant_id: str
    subscription_id: str
    #: As written on the item: what its removal checks it still holds.
    written: str
    message: NoticeMessage


def notices_of(records: Iterable[dict[str, Any]]) -> list[_Notice]:
    """The notices on subscription items that a batch of stream records shows, each once. A record of another kind
    is skipped, and so is a notice that cannot be read (logged): it must not fail the batch."""
    found: dict[tuple[str, str], _Notice] = {}
    for record in records:
        image = record.get("dynamodb", {}).get("NewImage")
        if record.get("eventName") != "MODIFY" or not image or DISABLED_NOTICE not in image:
            continue
        try:
            item = from_item(image)
            written = str(item[DISABLED_NOTICE])
            notice = _Notice(
                str(item["tenant_id"]), str(item["id"]), written, NoticeMessage.model_validate_json(written)
            )
        except (KeyError, TypeError, ValueError):  # a pydantic ValidationError is a ValueError
            logger.error(
                "a subscription's notice that cannot be read is not published",
                extra={"keys": record["dynamodb"].get("Keys")},
            )
            continue
        found.setdefault((notice.subscription_id, written), notice)
    return list(found.values())


async def publish_notices(worker: Worker, records: list[dict[str, Any]]) -> int:
    """Publish the notices on subscription items that a batch of stream records shows, and remove each from its item
    once published or queued. Returns how many were."""

    async def publish(notice: _Notice) -> bool:
        message = notice.message
        extra = {"subscription_id": notice.subscription_id, "tenant_id": notice.tenant_id}
        if not await report(worker, [(message.event_type, message.data, tuple(message.key))], extra):
            return False
        try:
            await worker.io(
                worker.store.subscriptions.notice_published, notice.tenant_id, notice.subscription_id, notice.written
            )
        except Exception:  # published: left on the item, it is published again (once) on the item's next change
            logger.warning("a published notice was not removed from its subscription", extra=extra, exc_info=True)
        return True

    published = await asyncio.gather(*(publish(notice) for notice in notices_of(records)))
    return sum(published)


async def count(worker: Worker, records: list[dict[str, Any]]) -> dict[str, int]:
    """Count a batch of stream records' successes in their subscriptions' stats, one write per subscription,
    all at once, and publish the notices on subscription items it shows (``publish_notices``). Returns how many
    successes, subscriptions and notices were."""
    notices = await publish_notices(worker, records)
    found = successes_of(records)

    async def write(sub_id: str, successes: _Successes) -> bool:
        extra = {"subscription_id": sub_id, "tenant_id": successes.tenant_id, "successes": len(successes.tallies)}
        try:
            ended = await worker.io(
                worker.store.health.count_streamed,
                sub_id,
                successes.tallies,
                expires_at=successes.expires_at,
                window=successes.window,
            )
        except Exception:
            logger.exception("subscription stats not updated from the stream", extra=extra)
            return False
        # Never report on the operator's own endpoints, nor a streak too short to be news.
        if ended is not None and successes.tenant_id != OPERATOR_TENANT_ID and worth_reporting(worker, *ended):
            ref = {"tenant_id": successes.tenant_id, "subscription_id": sub_id, "url": successes.url}
            await report(worker, [recovered(ref, *ended)], extra)
        return True

    written = await asyncio.gather(*(write(sub_id, successes) for sub_id, successes in found.items()))
    counted = [successes for successes, done in zip(found.values(), written, strict=True) if done]
    return {"counted": sum(len(s.tallies) for s in counted), "subscriptions": len(counted), "notices": notices}
