"""Operations (operator only): the dead-letter queue of the work queue."""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Query, status

from herald.api.deps import OperatorDep, ServicesDep
from herald.api.routers import api_router
from herald.dlq import DISCARD_LIMIT, MAX_SAMPLE, DeadLetterQueue
from herald.domain import deliveries
from herald.schemas import DeadLettersOut, DiscardIn, DiscardOut, RedriveIn, RedriveOut
from herald.services import Services

router = api_router(prefix="/v1/admin", tags=["operations"])


def dead_letter_queue(services: Services) -> DeadLetterQueue:
    return DeadLetterQueue(
        services.queue.client,
        services.settings.dead_letter_queue_url,
        services.settings.queue_url,
        max_redrives=services.settings.dead_letter_max_redrives,
        settle=lambda body: deliveries.fail_discarded(services, body),
    )


@router.get("/dead-letters", summary="What is in the dead-letter queue")
def get_dead_letters(
    services: ServicesDep,
    _: OperatorDep,
    sample: Annotated[int, Query(ge=0, le=MAX_SAMPLE, description="How many messages to show (none consumed).")] = 10,
) -> DeadLettersOut:
    """The number of messages, the oldest among those looked at, and a sample with why each is there.
    `poison` messages cannot be processed by the running code and stay; the others can be redriven."""
    return dead_letter_queue(services).peek(sample)


@router.post("/dead-letters/redrive", status_code=status.HTTP_202_ACCEPTED, summary="Redrive the dead-letter queue")
def redrive_dead_letters(
    services: ServicesDep,
    _: OperatorDep,
    body: Annotated[RedriveIn | None, Body()] = None,
) -> RedriveOut:
    """Send up to `limit` messages back to the work queue, where they are processed normally. Poison messages
    (unreadable, a `notice` the catalog does not take, or back after several redrives) stay in the dead-letter
    queue. A call works for at most about 15 seconds: call again while it moves messages. Should SQS fail after
    messages were sent back, or may have been, the answer is still 202, with `uncertain`, `in_flight` and
    `interrupted` saying what happened; before that it is a 503, every message held visible again."""
    return dead_letter_queue(services).redrive((body or RedriveIn()).limit)


@router.post("/dead-letters/discard", summary="Discard poison from the dead-letter queue")
def discard_dead_letters(services: ServicesDep, _: OperatorDep, body: DiscardIn) -> DiscardOut:
    """Delete poison messages for good: those named in `message_ids`, or with `"all_poison": true` up to `limit` of
    those met. Only poison is discarded: back after its redrives, parked by a worker that could not read it (or a
    `notice` the catalog does not take), or no work message at all. `all_poison` leaves a message of a kind or version
    this code does not know, or a `notice` of a type or with fields its catalog does not declare (newer code may work
    it): name it to discard it. A message named and left is listed in `not_discarded` with why (a readable one: a
    redrive sends it back to work). A delivery whose next attempt a discarded message carried is failed
    first, without an attempt (`last_error_kind: discarded`): retry it, or recover its subscription, to send it
    again. Once the poison is gone and the rest redriven,
    `DeadLetterQueueAlarm` goes back to OK and notifies again when the next message arrives. A call works for at
    most about 15 seconds. A delete SQS failed after it may have carried it out lists its messages in
    `maybe_discarded` (or, before anything was discarded, names them in the 503's `details`)."""
    return dead_letter_queue(services).discard(body.message_ids, limit=body.limit or DISCARD_LIMIT)
