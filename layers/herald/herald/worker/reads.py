"""What a batch reads before it sends: the subscriptions of its delivery messages, their failure streaks, the
states of their deliveries and the events the worker does not hold yet, in one batch read (BatchGetItem calls of
100 keys made side by side, eventually consistent) instead of two reads per delivery and one per event. An event
never changes once written: the read finds it as it is, or, written a moment before, not yet (its deliveries then
read it strongly, ``EventCache``).

The streaks say whose stats the batch need not write: a subscription with no failure streak whose attempts in
the batch are all first attempts that succeeded leaves its stats to the table's stream (``bookkeeping``).

The states say which deliveries are new. A delivery message received for the first time almost always starts
a new delivery, and then no lease is written: SQS's visibility timeout is the lease of a first receive (the
message stays hidden from every other worker until this invocation is over), and the delivery is written once,
with its attempt, when the attempt is done (``DeliveryRepository.record`` without a token: only if no one else
wrote it). A message whose delivery exists already (a duplicate, a fan-out page run twice), one the batch holds
more than once, a later receive or a manual attempt takes the lease in DynamoDB as before, so that it never
sends an attempt another worker is making. A duplicate send stays possible only where the read cannot see the
other copy's work: two copies of one message in two invocations at the same time (SQS's at-least-once, or a
message shown again after a crash): receivers drop it by its ``webhook-id``, and the worker counts it
(``DuplicateSends``).

If the read fails (DynamoDB refused after botocore's retries), the batch goes on without it: each delivery
reads what it needs and takes its lease, as a later receive does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from herald.messages import PoisonMessageError, WorkMessage, deliveries_of, parse_message

if TYPE_CHECKING:
    from collections.abc import Iterable

    from herald.records import Subscription
    from herald.storage import DeliveryState
    from herald.worker.runtime import Worker

logger = Logger(service="herald", child=True)


@dataclass(frozen=True)
class BatchReads:
    """What the batch read before it began (nothing, when it could not: each delivery then reads for itself)."""

    subscriptions: dict[tuple[str, str], Subscription] = field(default_factory=dict)
    states: dict[str, DeliveryState] = field(default_factory=dict)
    #: The delivery ids whose state was read, each held once by the batch.
    read_once: frozenset[str] = frozenset()
    #: The subscriptions that were looked for (found or not).
    looked_up: frozenset[tuple[str, str]] = frozenset()
    #: The failure streak of each subscription looked for (0 without stats yet).
    streaks: dict[str, int] = field(default_factory=dict)
    #: The batch's messages as parsed for this read, by body (what did not parse is not here).
    parsed: dict[str, WorkMessage] = field(default_factory=dict)

    def message(self, body: str) -> WorkMessage:
        """The work message in ``body``: as parsed for the batch's read, or parsed now (raises
        ``PoisonMessageError`` if it cannot be read)."""
        found = self.parsed.get(body)
        return found if found is not None else parse_message(body)

    def is_new(self, delivery_id: str) -> bool:
        """Whether the batch read that this delivery does not exist yet, and holds one message of it."""
        return delivery_id in self.read_once and delivery_id not in self.states

    def knows_subscription(self, tenant_id: str, sub_id: str) -> bool:
        return (tenant_id, sub_id) in self.looked_up

    def subscription(self, tenant_id: str, sub_id: str) -> Subscription | None:
        return self.subscriptions.get((tenant_id, sub_id))

    def without_streak(self, sub_id: str) -> bool:
        """Whether the batch read that this subscription has no failure streak (nothing for a success to end)."""
        return self.streaks.get(sub_id) == 0


def _parse(bodies: Iterable[str]) -> dict[str, WorkMessage]:
    """The batch's messages that parse, by body; what does not is left to its stage (the DLQ)."""
    parsed: dict[str, WorkMessage] = {}
    for body in bodies:
        try:
            parsed[body] = parse_message(body)
        except PoisonMessageError:
            continue
    return parsed


async def read_batch(worker: Worker, bodies: Iterable[str]) -> BatchReads:
    """One read for the batch's deliveries (those of its delivery messages, not a recovery's, and those its
    messages of several carry): their subscriptions and their deliveries' states; and every message of the
    batch, parsed once."""
    bodies = list(bodies)
    parsed = _parse(bodies)
    # One per message, not per distinct body: two copies of a message in the batch must count twice.
    found = [parsed[body] for body in bodies if body in parsed]
    messages = [d for m in found for d in deliveries_of(m) if d.job_id is None]
    if not messages:
        return BatchReads(parsed=parsed)
    subscriptions = list(dict.fromkeys((m.tenant_id, m.subscription_id) for m in messages))
    held = Counter(m.delivery_id for m in messages)
    deliveries = list(dict.fromkeys((m.subscription_id, m.delivery_id, m.event_id) for m in messages))
    events = [event_id for event_id in dict.fromkeys(m.event_id for m in messages) if not worker.events.holds(event_id)]
    try:
        read = await worker.io(worker.store.batch_read, subscriptions, deliveries, events)
    except Exception:
        # Each delivery then reads what it needs, and one whose item cannot be read fails alone.
        logger.warning("the batch's read failed; each delivery reads for itself", exc_info=True)
        return BatchReads(parsed=parsed)
    worker.events.keep(read.events.values())
    return BatchReads(
        read.subscriptions,
        read.states,
        read_once=frozenset(delivery_id for delivery_id, count in held.items() if count == 1),
        looked_up=frozenset(subscriptions),
        streaks=read.streaks,
        parsed=parsed,
    )
