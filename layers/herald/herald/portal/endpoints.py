"""Endpoint pages: list, create, edit, enable and disable, delete, the signing secret, a test event.
Every change goes through ``herald.domain`` (the same rules and messages as the API)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from herald.catalog import catalog
from herald.delivery_options import CustomHeaders
from herald.domain import deliveries, subscriptions
from herald.domain.publishing import send_test
from herald.errors import IdempotencyConflictError, InvalidInputError
from herald.portal.render import moment, page
from herald.portal.security import change_form, fields_list, manager, visitor
from herald.records import Delivery, DeliveryStatus, utcnow
from herald.schemas import SubscriptionIn, SubscriptionUpdate
from herald.storage.table import MAX_CURSOR_LENGTH

if TYPE_CHECKING:
    from collections.abc import Sequence

    from herald.portal.security import Visitor
    from herald.records import Subscription

router = APIRouter(prefix="/endpoints", include_in_schema=False)

#: Endpoints listed per page (a tenant may have up to ``HERALD_MAX_SUBSCRIPTIONS_PER_TENANT``).
ENDPOINTS_PER_PAGE = 50
#: Deliveries listed per page of an endpoint's page, newest first (a link leads to the older ones).
DELIVERIES_PER_PAGE = 50
#: A form's whole number: ASCII digits, few enough for ``int`` (anything else goes to the domain's validation:
#: "²" is a digit to ``str.isdigit`` but not to ``int``, and ``int`` refuses strings of over 4,300 digits).
WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")


def _guest(request: Request) -> Visitor:
    return visitor(request, request.app.state.api)


def _back(sub_id: str, note: str = "") -> Response:
    suffix = f"?note={note}" if note else ""
    return RedirectResponse(f"/portal/endpoints/{sub_id}{suffix}", status_code=303)


@router.get("")
async def list_endpoints(request: Request, after: str | None = None) -> Response:
    """A page of the tenant's endpoints; ``after`` is the previous page's cursor (a link on the page)."""
    guest = _guest(request)
    if after is not None and not 0 < len(after) <= MAX_CURSOR_LENGTH:
        raise InvalidInputError("this page of endpoints does not exist: start from the first")
    listed = guest.services.store.subscriptions.list(guest.tenant_id, limit=ENDPOINTS_PER_PAGE, cursor=after)
    rows = list(zip(listed.items, deliveries.stats_of_many(guest.services, listed.items), strict=True))
    return page(request, "endpoints.html", guest, rows=rows, after=after, next_after=listed.cursor)


def _form_values(form: dict[str, str]) -> dict[str, Any]:
    """The form as an API body: blank optional fields are left out, so the domain's defaults apply."""
    values: dict[str, Any] = {
        "url": form.get("url", "").strip(),
        "event_types": fields_list(form, "event_types"),
        "description": _lines(form.get("description", "")).strip(),
    }
    values["metadata"] = _metadata_of(form.get("metadata", ""))
    rate = form.get("rate_limit", "").strip()
    values["rate_limit"] = int(rate) if WHOLE_NUMBER.fullmatch(rate) else (rate or None)
    return values


def _lines(text: str) -> str:
    """A textarea's text with its line breaks as the API keeps them: browsers send each as CR LF (HTML's form
    encoding), and count it as one character against the field's ``maxlength``, as the API does ``\n``."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _errors(exc: Exception) -> list[str]:
    if isinstance(exc, ValidationError):
        return [f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()]
    assert isinstance(exc, InvalidInputError)
    return [exc.message, *(str(d.get("msg", "")) for d in exc.details or [] if d.get("msg"))]


def _metadata_of(text: str) -> dict[str, str]:
    """The form's metadata: one ``key=value`` a line, each side trimmed, blank lines skipped."""
    metadata: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip():
            key, _, value = line.partition("=")
            metadata[key.strip()] = value.strip()
    return metadata


def _metadata_text(metadata: dict[str, str] | None) -> str:
    """The form's lines of ``metadata``."""
    return "\n".join(f"{key}={value}" for key, value in (metadata or {}).items())


def _as_the_form_reads(metadata: dict[str, str] | None) -> dict[str, str]:
    """``metadata`` as its form lines read back: itself, unless it was set through the API in a way the lines
    cannot hold (a key with ``=``, a line break, spaces at either end of a key or a value)."""
    return _metadata_of(_metadata_text(metadata))


def _form_page(
    request: Request, guest: Visitor, values: dict[str, Any], *, removing: Sequence[str] = (), **context: Any
) -> Response:
    return page(
        request,
        "endpoint_form.html",
        guest,
        values=values,
        removing=removing,
        metadata_text=_metadata_text(values.get("metadata")),
        # The form says so: saved unchanged, it is kept as it is; edited, it is saved as the lines read.
        metadata_lossy=_as_the_form_reads(values.get("metadata")) != (values.get("metadata") or {}),
        event_types=list(catalog),
        **context,
    )


#: The new-endpoint form's field naming its one creation (the ``Idempotency-Key`` the API takes): sent twice (a
#: double click with scripting off, a reload that posts again), it makes one endpoint.
REQUEST_KEY_FIELD = "request_key"


def _new_form_page(request: Request, guest: Visitor, values: dict[str, Any], **context: Any) -> Response:
    """The new-endpoint form, with a fresh key for the creation it sends."""
    key = secrets.token_urlsafe(16)
    return _form_page(request, guest, values, request_key_field=REQUEST_KEY_FIELD, request_key=key, **context)


@router.get("/new")
async def new_endpoint(request: Request) -> Response:
    guest = manager(_guest(request))
    return _new_form_page(
        request, guest, {"url": "", "event_types": [], "description": "", "rate_limit": None, "metadata": {}}
    )


@router.post("")
async def create_endpoint(request: Request) -> Response:
    guest = _guest(request)
    form = await change_form(request, guest)
    values = _form_values(form)
    key = form.get(REQUEST_KEY_FIELD) or None
    try:
        body = SubscriptionIn.model_validate(values)
        sub, _ = await subscriptions.create(
            guest.services, guest.tenant_id, body, idempotency_key=f"portal:{key}" if key else None
        )
    except (ValidationError, InvalidInputError) as exc:
        return _new_form_page(request, guest, values, errors=_errors(exc), status_code=422)
    except IdempotencyConflictError as exc:
        # This form made an endpoint already, and was changed and sent again (the browser's back button), or that
        # endpoint was deleted since.
        why = (
            "was deleted since"
            if isinstance(exc, subscriptions.KeyedSubscriptionGone)
            else "exists; these changes were not saved"
        )
        errors = [f"The endpoint this form created {why}. Send the form again to create another."]
        return _new_form_page(request, guest, values, errors=errors, status_code=409)
    return _back(sub.id, "created")


def _find(guest: Visitor, sub_id: str) -> Subscription:
    return subscriptions.find(guest.services, guest.tenant_id, sub_id, what="endpoint")


@router.get("/{sub_id}")
async def show_endpoint(  # noqa: PLR0917 - the delivery log's filters, as the query string names them
    request: Request,
    sub_id: str,
    status: str = "",
    event_type: str = "",
    since: str = "",
    until: str = "",
    note: str = "",
    after: str | None = None,
) -> Response:
    """An endpoint: its settings, stats, chart of recent attempts, and its deliveries, ``DELIVERIES_PER_PAGE`` a
    page, newest first, as the filter in the query string picks them; ``after`` is the previous page's cursor (a
    link on the page, which keeps the filter)."""
    guest = _guest(request)
    if after is not None and not 0 < len(after) <= MAX_CURSOR_LENGTH:
        raise InvalidInputError("this page of deliveries does not exist: start from the first")
    sub = _find(guest, sub_id)
    wanted = DeliveryStatus(status) if status in DeliveryStatus else None
    of_type = event_type if event_type in catalog else None
    listed = guest.services.store.deliveries.list(
        sub.id,
        status=wanted,
        limit=DELIVERIES_PER_PAGE,
        cursor=after,
        event_type=of_type,
        since=moment(since, "since"),
        until=moment(until, "until"),
    )
    recent = guest.services.store.deliveries.list(sub.id, status=None, limit=CHART_DELIVERIES, cursor=None).items
    return page(
        request,
        "endpoint.html",
        guest,
        sub=sub,
        chart=recent_attempts(recent, utcnow()),
        # A full page of the newest deliveries leaves older ones out: the chart says from when it counts.
        chart_since=recent[-1].created_at if len(recent) == CHART_DELIVERIES else None,
        chart_deliveries=CHART_DELIVERIES,
        stats=deliveries.stats(guest.services, sub),
        deliveries=listed.items,
        after=after,
        next_after=listed.cursor,
        status=status,
        event_type=of_type or "",
        since=since,
        until=until,
        options=CustomHeaders.from_stored(sub.headers).out(),
        event_types=catalog.names(),
        statuses=[s.value for s in DeliveryStatus],
        note=note,
        previous_until=subscriptions.previous_valid_until(sub, utcnow()),
        grace_hours=guest.services.settings.secret_rotation_grace_hours,
    )


@dataclass(frozen=True)
class Bar:
    """One bar of the chart of recent attempts: a two-hour slot, how many deliveries' latest attempt in it
    succeeded and failed, and the bar's heights (of 50)."""

    start: datetime
    succeeded: int
    failed: int
    ok_height: float
    bad_height: float


CHART_SLOTS = 12
CHART_SLOT = timedelta(hours=2)
#: The chart counts the newest deliveries, up to this many (one read): on a busy endpoint, only the latest hours.
CHART_DELIVERIES = 100


def recent_attempts(recent: list[Delivery], now: datetime) -> list[Bar]:
    """The latest attempt of each of the newest deliveries, in two-hour slots over the last 24 hours: what the
    endpoint's page draws (successes over failures, oldest slot first)."""
    first = now - CHART_SLOT * CHART_SLOTS
    counts = [[0, 0] for _ in range(CHART_SLOTS)]
    for delivery in recent:
        at = delivery.last_attempt_at
        if at is None or at < first or at > now:
            continue
        slot = min(CHART_SLOTS - 1, int((at - first) / CHART_SLOT))
        counts[slot][0 if delivery.status is DeliveryStatus.SUCCEEDED else 1] += 1
    tallest = max([ok + bad for ok, bad in counts] + [1])
    return [
        Bar(first + CHART_SLOT * index, ok, bad, 50 * ok / tallest, 50 * bad / tallest)
        for index, (ok, bad) in enumerate(counts)
    ]


@router.get("/{sub_id}/edit")
async def edit_endpoint(request: Request, sub_id: str) -> Response:
    guest = manager(_guest(request))
    sub = _find(guest, sub_id)
    return _form_page(request, guest, sub.model_dump(), sub=sub)


@router.post("/{sub_id}/edit")
async def update_endpoint(request: Request, sub_id: str) -> Response:
    guest = _guest(request)
    form = await change_form(request, guest)
    sub = _find(guest, sub_id)
    values = _form_values(form)
    shown = _as_the_form_reads(sub.metadata)
    if shown != sub.metadata and values["metadata"] == shown:
        # The lines as the form showed them (line endings and spaces aside): the tenant did not edit them, and the
        # metadata stays as the API set it, not as those lines would read it.
        values["metadata"] = sub.metadata
    if values["description"] == _lines(sub.description).strip():
        # The description as the form showed it, but for its line breaks' encoding and spaces at its ends (and a
        # first line break, which an HTML textarea drops): unchanged, it stays as the API set it.
        values["description"] = sub.description
    # A filter or a transform (set through the API) the tenant removes: new event types they do not fit are refused.
    removing = [name for name in fields_list(form, "remove") if name in ("filter", "transform")]
    values.update(dict.fromkeys(removing))
    # The URL as the form showed it: unchanged, it is not checked again. Its host's name may no longer pass the URL
    # policy (it does not resolve today, or resolves to a private address): that is checked at each send, and must
    # not keep the tenant from changing the endpoint's other fields, as the API's PATCH without `url` does not.
    changes = {name: value for name, value in values.items() if name != "url" or value != sub.url}
    try:
        await subscriptions.update(guest.services, sub, SubscriptionUpdate.model_validate(changes))
    except (ValidationError, InvalidInputError) as exc:
        return _form_page(request, guest, values, sub=sub, errors=_errors(exc), removing=removing, status_code=422)
    return _back(sub.id, "saved")


@router.post("/{sub_id}/enabled")
async def switch_endpoint(request: Request, sub_id: str) -> Response:
    guest = _guest(request)
    form = await change_form(request, guest)
    sub = _find(guest, sub_id)
    enabled = form.get("enabled") == "true"
    subscriptions.set_enabled(guest.services, sub, enabled=enabled, reason="disabled by the tenant")
    return _back(sub.id, "enabled" if enabled else "disabled")


@router.get("/{sub_id}/delete")
async def confirm_delete(request: Request, sub_id: str) -> Response:
    guest = manager(_guest(request))
    return page(request, "delete.html", guest, sub=_find(guest, sub_id))


@router.post("/{sub_id}/delete")
async def delete_endpoint(request: Request, sub_id: str) -> Response:
    guest = _guest(request)
    await change_form(request, guest)
    subscriptions.delete(guest.services, _find(guest, sub_id))
    return RedirectResponse("/portal/endpoints?note=deleted", status_code=303)


@router.get("/{sub_id}/secret")
async def reveal_secret(request: Request, sub_id: str) -> Response:
    guest = _guest(request)
    sub = _find(guest, sub_id)
    fragment = request.headers.get("hx-request") == "true"
    return page(request, "secret_value.html" if fragment else "secret.html", guest, sub=sub)


@router.post("/{sub_id}/rotate")
async def rotate_secret(request: Request, sub_id: str) -> Response:
    guest = _guest(request)
    form = await change_form(request, guest)
    sub = _find(guest, sub_id)
    grace = form.get("grace_hours", "").strip()
    if grace and (not WHOLE_NUMBER.fullmatch(grace) or int(grace) > 168):
        raise InvalidInputError("the grace period is a whole number of hours from 0 to 168")
    subscriptions.rotate_signing_secret(guest.services, sub, int(grace) if grace else None)
    return _back(sub.id, "rotated")


@router.post("/{sub_id}/test")
async def test_endpoint(request: Request, sub_id: str) -> Response:
    guest = _guest(request)
    await change_form(request, guest)
    send_test(guest.services, _find(guest, sub_id))
    return _back(sub_id, "test-sent")
