"""Delivery pages: one delivery with its payload and every attempt, retrying it, recovering a time window
of failed deliveries and following the job's progress."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from herald import ids
from herald.domain import deliveries, jobs, subscriptions
from herald.errors import InvalidInputError, NotFoundError
from herald.lambda_response import text_bytes
from herald.portal.render import checked_cursor, moment, page
from herald.portal.security import change_form, visitor
from herald.schemas import RecoveryIn

if TYPE_CHECKING:
    from herald.portal.security import Visitor

router = APIRouter(prefix="/endpoints/{sub_id}", include_in_schema=False)

#: Attempts shown on a page of a delivery (a link leads to the later ones).
ATTEMPTS_PER_PAGE = 250


#: The most a delivery page's payload may take in the page's Lambda response, indented (``_shown_payload``): the page
#: holds up to ``ATTEMPTS_PAGE_BYTES`` of attempts too, under Lambda's 6 MB response limit (past it, API Gateway
#: answers a bare 500). Indenting grows with nesting, each level indenting every line within it (256 KiB of data
#: nested 30 deep is 9 MB indented); past this bound the payload is shown as it was sent, which at the largest data
#: a deployment may take (350 KiB) is under 1.8 MB even of ``&`` (``&amp;``, five bytes).
PAYLOAD_SHOWN_BYTES = 2_000_000


def _shown_payload(payload: str) -> tuple[str, bool]:
    """The payload as its delivery's page shows it, indented, and whether it is: else as it was sent, when indented
    it would take more than ``PAYLOAD_SHOWN_BYTES`` of the page (HTML-escaped, a ``"`` six bytes at most, then
    escaped in Lambda's response)."""
    indented = json.dumps(json.loads(payload), indent=2, sort_keys=True, ensure_ascii=False)
    if text_bytes(html.escape(indented)) <= PAYLOAD_SHOWN_BYTES:
        return indented, True
    return payload, False


def _guest(request: Request) -> Visitor:
    return visitor(request, request.app.state.api)


@router.get("/deliveries/{delivery_id}")
async def show_delivery(
    request: Request, sub_id: str, delivery_id: str, note: str = "", after: str | None = None
) -> Response:
    """A delivery, its payload and its attempts, ``ATTEMPTS_PER_PAGE`` a page, oldest first; ``after`` is the
    previous page's cursor (a link on the page)."""
    guest = _guest(request)
    after = checked_cursor(after, "attempts")
    delivery = deliveries.find(guest.services, guest.tenant_id, sub_id, delivery_id)
    stored = guest.services.store.events.get(delivery.event_id)
    if stored is not None and not stored.has_delivery(delivery.subscription_id, delivery.id):
        # Its id published again once it expired: another event, maybe another tenant's, never shown here.
        stored = None
    listed = guest.services.store.deliveries.list_attempts(
        sub_id, delivery.id, limit=ATTEMPTS_PER_PAGE, cursor=after, event_id=delivery.event_id
    )
    payload, indented = _shown_payload(stored.event.payload) if stored else (None, False)
    return page(
        request,
        "delivery.html",
        guest,
        sub_id=sub_id,
        delivery=delivery,
        payload=payload,
        payload_indented=indented,
        attempts=listed.items,
        after=after,
        next_after=listed.cursor,
        note=note,
    )


@router.post("/deliveries/{delivery_id}/retry")
async def retry_delivery(request: Request, sub_id: str, delivery_id: str) -> Response:
    guest = _guest(request)
    await change_form(request, guest)
    deliveries.retry(guest.services, deliveries.find(guest.services, guest.tenant_id, sub_id, delivery_id))
    return RedirectResponse(f"/portal/endpoints/{sub_id}/deliveries/{delivery_id}?note=retried", status_code=303)


@router.post("/recover")
async def recover(request: Request, sub_id: str) -> Response:
    guest = _guest(request)
    form = await change_form(request, guest)
    sub = subscriptions.find(guest.services, guest.tenant_id, sub_id, what="endpoint")
    since = moment(form.get("since", ""), "since") or datetime.now(UTC) - timedelta(hours=1)
    until = moment(form.get("until", ""), "until")
    try:
        window = RecoveryIn(since=since, until=until)
    except ValidationError as exc:  # the API's own rules for a window (`until` after `since`), as a page
        reasons = [error["msg"].removeprefix("Value error, ") for error in exc.errors()]
        raise InvalidInputError("; ".join(reasons)) from exc
    job = jobs.start_recovery(guest.services, sub, window)
    return RedirectResponse(f"/portal/endpoints/{sub_id}/recoveries/{job.id}", status_code=303)


@router.get("/recoveries/{job_id}")
async def show_recovery(request: Request, sub_id: str, job_id: str) -> Response:
    guest = _guest(request)
    subscriptions.find(guest.services, guest.tenant_id, sub_id, what="endpoint")
    job = None
    if ids.is_id(job_id, jobs.RECOVERY):
        job = jobs.read_recovery(guest.services, job_id, tenant_id=guest.tenant_id, subscription_id=sub_id)
    if job is None:
        raise NotFoundError(f"recovery {job_id} not found")
    return page(request, "recovery.html", guest, sub_id=sub_id, job=job)
