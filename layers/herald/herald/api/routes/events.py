"""Publishing events (operator only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Response, status
from pydantic import ValidationError

from herald.api.deps import OperatorDep, ServicesDep
from herald.api.errors import capped_details, status_of
from herald.api.routers import api_router
from herald.domain import tenants
from herald.domain.publishing import MaybeStoredError, NotQueuedError, Published, publish, publish_many
from herald.errors import HeraldError, InvalidInputError, NotFoundError, RequestShapeError, ServiceUnavailableError
from herald.ids import (
    EVENT_ID_PATTERN,
    EVENT_ID_RULE,
    IDEMPOTENCY_KEY_MAX_LENGTH,
    IDEMPOTENCY_KEY_PATTERN,
    STORED_EVENT_ID_PATTERN,
)
from herald.schemas import DeliveryCounts, ErrorBody, EventBatchIn, EventBatchItem, EventBatchOut, EventIn, EventOut
from herald.services import Services
from herald.storage import StoredEvent

router = api_router(prefix="/v1/events", tags=["events"])


def event_out(stored: StoredEvent) -> EventOut:
    event = stored.event
    matched, succeeded, failed = stored.matched, stored.succeeded, stored.failed
    counts = DeliveryCounts(
        matched=matched,
        pending=max(matched - succeeded - failed, 0),
        succeeded=succeeded,
        failed=failed,
        filtered=stored.filtered,
        fanout_complete=stored.fanout_open <= 0,
    )
    return EventOut(**event.model_dump(exclude={"payload", "idempotency_key"}), data=event.data, deliveries=counts)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Publish an event",
    responses={
        status.HTTP_409_CONFLICT: {
            "description": "`idempotency_key_reused`: the event's `id` or `Idempotency-Key` was published with "
            "another request (other data, or another tenant's event); publish it with a new one. Rarely `conflict`: "
            "the same event was being published at that moment by another request; send it again.",
        },
        status.HTTP_202_ACCEPTED: {
            "headers": {
                "Idempotent-Replayed": {
                    "description": "`true` when the event was published before (the same `Idempotency-Key`, or "
                    "the same `id`): the answer is the original event, and nothing was published again. Absent "
                    "otherwise.",
                    "schema": {"type": "string", "enum": ["true"]},
                }
            }
        },
    },
)
async def publish_event(
    body: EventIn,
    response: Response,
    services: ServicesDep,
    _: OperatorDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="Makes retries safe: the same key returns the original event instead of publishing again. "
            "Keys are the deployment's, not each tenant's: the same key for another tenant's event is a 409.",
        ),
    ] = None,
) -> EventOut:
    """Validates `data` against the event type's schema, stores the event and queues its delivery to
    every matching subscription of `tenant_id` (or of every tenant with `broadcast: true`). A 503 whose error has
    an `event_id` stored the event and did not queue all of it: publish it again with that `id` (nothing is sent
    twice). An `id` or an `Idempotency-Key` makes any retry safe."""
    if (refused := _refused_id(services, body, ["body", "id"])) is not None:
        raise refused  # before the tenant, as the batch checks its items
    if body.tenant_id is not None:
        # Half the price of a strong read, on every publish; a tenant deleted a second ago may still take it.
        tenants.find(services, body.tenant_id, consistent=False)
    published = publish(services, body, idempotency_key=idempotency_key)
    if published.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return event_out(published.stored)


@router.post("/batch", summary="Publish up to 100 events in one call")
async def publish_batch(
    body: EventBatchIn,
    services: ServicesDep,
    _: OperatorDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            description="Not taken here: a batch is made safe to send again by each event's `id`. Given, the call "
            "is a 422 and nothing is published (a retried batch would publish its events without an `id` again).",
        ),
    ] = None,
) -> EventBatchOut:
    """Each event is validated and published on its own, as `POST /v1/events` would: the answer holds one
    item per event, in order, with the status that call would have answered (202 when published) and the
    event or the error. An event with an `id` that was published before is answered with the original
    (`replayed`), so a batch whose answer was lost can be sent again safely when every event has an `id`.
    When storage is unavailable for some events, those items are 503 and the others are published; when nothing
    could be stored, the whole call is a 503 with `Retry-After`: send it again as it is. An event whose write went
    unanswered (it may be stored) is a 503 item naming the id it was given (`error.event_id`): publish it again with
    that `id`, and it is published once. An event stored and not
    fully queued (the queue did not take all its messages; some of its deliveries may be on their way) is a 503
    item with the event as stored: publish it again with that `id`, and the rest is queued, nothing sent twice. An
    event with an `id` sent again is answered as stored; one without an `id` is published again. An
    `Idempotency-Key` header is a 422: the events' ids do its work."""
    if idempotency_key is not None:
        message = "a batch takes no Idempotency-Key: give each event an `id`, which makes it safe to send again"
        detail = {"loc": ["header", "idempotency-key"], "msg": message, "type": "not_taken"}
        raise InvalidInputError(message, details=[detail])
    parsed = [_parse(index, raw) for index, raw in enumerate(body.events)]
    for index, item in enumerate(parsed):
        if isinstance(item, EventIn):
            parsed[index] = _refused_id(services, item, ["body", "events", index, "id"]) or item
    audiences: dict[str, HeraldError | None] = {}
    for index, item in enumerate(parsed):
        if isinstance(item, EventIn) and item.tenant_id is not None:
            if item.tenant_id not in audiences:
                try:
                    tenants.find(services, item.tenant_id, consistent=False)
                    audiences[item.tenant_id] = None
                except NotFoundError as missing:
                    audiences[item.tenant_id] = missing
            parsed[index] = audiences[item.tenant_id] or item
    results = publish_many(services, parsed)
    unavailable = [r for r in results if isinstance(r, ServiceUnavailableError)]
    if unavailable and all(
        isinstance(r, HeraldError) and not isinstance(r, (NotQueuedError, MaybeStoredError)) for r in results
    ):
        raise unavailable[0]  # nothing was stored: the whole batch is a 503, to be sent again as it is
    return EventBatchOut(data=[_batch_item(result) for result in results])


def _parse(index: int, raw: Any) -> EventIn | HeraldError:
    try:
        return EventIn.model_validate(raw)
    except ValidationError as exc:
        details = [
            {"loc": ["body", "events", index, *error["loc"]], "msg": error["msg"], "type": error["type"]}
            for error in exc.errors(include_url=False)
        ]
        return RequestShapeError(f"event {index} does not match the shape of an event", details=details)


def _refused_id(services: Services, body: EventIn, loc: list[str | int]) -> RequestShapeError | None:
    """The refusal of an id with a ``.`` for a new event (``ids.EVENT_ID_PATTERN``), or None. An event stored under
    one before dots were refused is found (one read, for such an id only) and published again as any repeat is:
    answered as stored, and queued if it was not fully."""
    if body.id is None or EVENT_ID_PATTERN.fullmatch(body.id) or services.store.events.get(body.id) is not None:
        return None
    return RequestShapeError(EVENT_ID_RULE, details=[{"loc": loc, "msg": EVENT_ID_RULE, "type": "value_error"}])


def _batch_item(result: Published | HeraldError) -> EventBatchItem:
    if isinstance(result, HeraldError):
        message, details, total = capped_details(result.message, result.details)
        error = ErrorBody(
            code=result.code, message=message, details=details, details_total=total, event_id=result.event_id
        )
        stored = event_out(result.stored) if isinstance(result, NotQueuedError) else None
        return EventBatchItem(status=status_of(result), error=error, event=stored)
    return EventBatchItem(status=202, replayed=result.replayed, event=event_out(result.stored))


@router.get("/{event_id}", summary="Get an event and the status of its deliveries")
async def get_event(event_id: str, services: ServicesDep, _: OperatorDep) -> EventOut:
    stored = services.store.events.get_with_counts(event_id) if STORED_EVENT_ID_PATTERN.fullmatch(event_id) else None
    if stored is None:
        raise NotFoundError(f"event {event_id} not found")
    return event_out(stored)
