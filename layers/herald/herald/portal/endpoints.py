"""Endpoint pages: list, create, edit, enable and disable, delete, the signing secret, a test event.
Every change goes through ``herald.domain`` (the same rules and messages as the API)."""

from __future__ import annotations

import functools
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError

from herald.catalog import catalog, echoed
from herald.delivery_options import (
    MAX_HEADERS,
    CustomHeaders,
    InvalidFilterError,
    InvalidHeadersError,
    InvalidTransformError,
    is_sensitive_name,
)
from herald.delivery_options.headers import is_credential_value
from herald.domain import deliveries, subscriptions
from herald.domain.publishing import send_test
from herald.errors import (
    ConflictError,
    IdempotencyConflictError,
    InvalidInputError,
    ServiceUnavailableError,
    UnknownEventTypeError,
    UrlNotAllowedError,
)
from herald.ids import IDEMPOTENCY_KEY_MAX_LENGTH, is_idempotency_key
from herald.portal.render import checked_cursor, moment, page, retry_later
from herald.portal.security import change_form, fields_list, manager, visitor
from herald.records import WILDCARD, Delivery, DeliveryStatus, utcnow
from herald.schemas import MAX_RATE_LIMIT, SubscriptionIn, SubscriptionUpdate
from herald.settings import MAX_GRACE_HOURS

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

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
    after = checked_cursor(after, "endpoints")
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


#: The most problems a refused form names of one kind (metadata lines, event types, header rows, the API's details);
#: one more line counts the rest. A form of 512 KiB holds 255,000 metadata lines or 30,000 event types: a line for
#: each would make a page of megabytes, over Lambda's 6 MB response limit (API Gateway then answers a bare 500).
MAX_PROBLEMS_LISTED = 20


#: Where a problem is: a field of the form, and for a custom header its row and input (``Problem``).
_Where = tuple[str | None, str | None, str | None]


@dataclass(frozen=True)
class Problem:
    """One line of a refused form's summary, and what it is about: a field of the form (``FORM_FIELDS``), and for
    custom headers a row (the header's name as the API compares it; "" for a value typed without a name) and which
    of its inputs (``part``: "name" or "value"), or None for the form as a whole. A problem that is not ``invalid``
    points at a field without saying its value is wrong (a conflict: the field shows the endpoint's value now)."""

    text: str
    field: str | None = None
    row: str | None = None
    part: str | None = None
    invalid: bool = True
    #: Other places the problem is about: the API joins a field's problems in one message (custom headers: each row
    #: its own), which is listed once and points at each of them.
    also: tuple[_Where, ...] = ()

    @property
    def place(self) -> _Where:
        return self.field, self.row, self.part

    def about(self, field: str, row: str | None, part: str | None) -> bool:
        """Whether the problem is about ``field`` (its ``row``; ``part``, if given, of the row: a problem about no
        part of it is about both)."""
        return any(
            (place_field, place_row) == (field, row) and (part is None or place_part in (None, part))
            for place_field, place_row, place_part in (self.place, *self.also)
        )


#: The form's fields a problem may be about, by the names the API gives them (the first part of an error's ``loc``).
FORM_FIELDS = ("url", "event_types", "description", "metadata", "rate_limit", "headers", "filter", "transform")


def _capped(problems: Sequence[Problem], rest: str) -> list[Problem]:
    """``problems`` as a refused form lists them: the first ``MAX_PROBLEMS_LISTED``, then, when there are more, one
    line saying how many (``rest``, its ``{count}`` filled in), about their field if they are all about one."""
    if len(problems) <= MAX_PROBLEMS_LISTED:
        return list(problems)
    fields = {problem.field for problem in problems}
    more = rest.format(count=f"{len(problems) - MAX_PROBLEMS_LISTED:,}")
    return [*problems[:MAX_PROBLEMS_LISTED], Problem(more, fields.pop() if len(fields) == 1 else None)]


#: The form's label of each field a refused form may name, as the page shows it.
_FIELD_LABELS = {
    "url": "URL",
    "event_types": "Event types",
    "description": "Description",
    "metadata": "Metadata",
    "rate_limit": "Rate limit",
    "headers": "Custom headers",
}


def _problem(error: Any) -> Problem:
    """One problem of a refused form, as its reader knows the form: the field's label, then what is wrong."""
    loc = [str(part) for part in error["loc"]]
    field = _FIELD_LABELS.get(loc[0], loc[0]) if loc else "Form"
    if loc == ["event_types"] and error["type"] == "too_short":
        return Problem(f"{field}: tick at least one", "event_types")
    where = " ".join([field, *loc[1:]])
    return Problem(f"{where}: {error['msg'].removeprefix('Value error, ')}", *_field_of(loc, error["type"]))


#: The kinds of problem (an error detail's ``type``) about a custom header's value, not its name.
_VALUE_KINDS = frozenset({"invalid_header_value", "missing_header_value"})


def _field_of(loc: Sequence[Any], kind: str = "") -> _Where:
    """The form's field an error's ``loc`` names (None for one the form has no field of), and for a custom header its
    row and whether the problem (of ``kind``) is about the row's name or its value."""
    parts = [str(part) for part in loc]
    if parts[:1] == ["body"]:
        parts = parts[1:]
    if not parts or parts[0] not in FORM_FIELDS:
        return None, None, None
    if parts[0] != "headers" or len(parts) < 2:
        return parts[0], None, None
    return "headers", _folded(parts[1]), "value" if kind in _VALUE_KINDS or parts[2:3] == ["value"] else "name"


#: The field of an error that names none in its details.
_FIELD_OF_ERROR: dict[type[InvalidInputError], str] = {
    UrlNotAllowedError: "url",
    UnknownEventTypeError: "event_types",
    InvalidFilterError: "filter",
    InvalidTransformError: "transform",
    InvalidHeadersError: "headers",
}


def _errors(exc: Exception) -> list[Problem]:
    if isinstance(exc, ValidationError):
        return _capped([_problem(e) for e in exc.errors()], "and {count} more problems")
    assert isinstance(exc, InvalidInputError)
    # Once each: a detail the message says already is left out (the headers' message joins its details'). The
    # message is about the one field its details name, else the field of its kind of error.
    details = [
        (str(d.get("msg", "")), _field_of(d.get("loc") or (), str(d.get("type", ""))))
        for d in exc.details or []
        if d.get("msg")
    ]
    places = {where for _, where in details}
    also: tuple[_Where, ...] = ()
    if len(places) > 1 and len({field for field, _, _ in places}) == 1:
        also = tuple(sorted(places, key=str))  # the message is about the field, and about each place in it
        places = {(next(iter(places))[0], None, None)}
    field, row, part = places.pop() if len(places) == 1 else (None, None, None)
    field = field or next((name for kind, name in _FIELD_OF_ERROR.items() if isinstance(exc, kind)), None)
    unique = {exc.message: Problem(exc.message, field, row if field else None, part if field else None, also=also)}
    for text, where in details:
        if text not in exc.message:
            unique.setdefault(text, Problem(text, *where))
    return _capped([*unique.values()], "and {count} more problems")


def _event_type_problems(event_types: Sequence[str], kept: Sequence[str] = ()) -> list[Problem]:
    """The posted event types the catalog does not list, each as the API says it (``kept`` aside: the endpoint's own
    types that the catalog no longer lists, which it may keep), the first ``MAX_PROBLEMS_LISTED`` named. Checked by the
    form itself, so that a form of thousands of made-up names is told so in a few lines."""
    problems = [
        Problem(f"{echoed(name)!r} is not in the event catalog", "event_types")
        for name in dict.fromkeys(event_types)
        if name != WILDCARD and name not in catalog and name not in kept
    ]
    return _capped(problems, "event types: and {count} more that are not in the event catalog")


#: Empty rows the endpoint form shows for new custom headers; the rest, up to ``MAX_HEADERS`` in all, are behind
#: "More header rows" (an HTML disclosure: no script).
NEW_HEADER_ROWS = 3
#: A custom header row's fields: ``header_<n>_*`` for a header the edit form showed (its name a hidden field),
#: ``new_header_<n>_*`` for a new one. Each row's fields are named apart, so a value is one field, never split.
_HEADER_FIELD = re.compile(r"(new_)?header_([0-9]{1,2})_(name|value|sensitive|remove)")


@dataclass(frozen=True)
class HeaderRow:
    """One custom header row of the endpoint form, as typed (or as shown): a header the edit form showed (``shown``:
    its name fixed), or a new one. A sensitive header's stored value is never in a row: its field is left empty."""

    name: str
    value: str = ""
    sensitive: bool = False
    remove: bool = False
    shown: bool = False


def _header_rows(form: dict[str, str]) -> list[HeaderRow]:
    """The form's custom header rows that say something, shown ones first, each in its order; blank new rows are
    left out. Names and values are trimmed (a value cannot start or end with a space)."""
    fields: dict[tuple[bool, int], dict[str, str]] = {}
    for key, text in form.items():
        found = _HEADER_FIELD.fullmatch(key)
        if found is not None:
            fields.setdefault((found.group(1) is not None, int(found.group(2))), {})[found.group(3)] = text
    rows = []
    for (new, _), row in sorted(fields.items()):
        name, value = row.get("name", "").strip(), row.get("value", "").strip()
        if name or value:
            rows.append(HeaderRow(name, value, "sensitive" in row, "remove" in row and not new, shown=not new))
    return rows


def _folded(name: str) -> str:
    """A header name as the API compares it: without case, ``_`` read as ``-``."""
    return name.lower().replace("_", "-")


def _header_problems(rows: Sequence[HeaderRow]) -> list[Problem]:
    """What the API cannot be told of the header rows: a value typed without a name, a name given in two rows (in
    the API's words: a merge patch or a JSON object cannot name a header twice)."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for row in rows:
        if not row.name:
            no_name = "custom headers: a new header has a value but no name: give its name, or clear its value"
            problems.append(Problem(no_name, "headers", "", "name"))
        elif _folded(row.name) in seen:
            twice = f"header {row.name!r} is given twice (names ignore case, and _ is read as -)"
            problems.append(Problem(twice, "headers", _folded(row.name), "name"))
        seen.add(_folded(row.name))
    return _capped([*dict.fromkeys(problems)], "custom headers: and {count} more problems")


def _new_headers(rows: Sequence[HeaderRow]) -> dict[str, dict[str, Any]]:
    """The new-endpoint form's headers as the API's ``headers`` (a row without a value sends none: the API says
    it is required)."""
    return {
        row.name: {"sensitive": row.sensitive, **({"value": row.value} if row.value else {})}
        for row in rows
        if row.name and not row.shown
    }


def _metadata_of(text: str) -> dict[str, str]:
    """The form's metadata: one ``key=value`` a line, each side trimmed, blank lines skipped."""
    metadata: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip():
            key, _, value = line.partition("=")
            metadata[key.strip()] = value.strip()
    return metadata


def _metadata_problems(text: str) -> list[Problem]:
    """What keeps the form's metadata lines from reading as one ``key=value`` a line, each naming its lines (numbered
    as the field shows them, blank ones too), in their order: a line without ``=`` (it would be a key with no value),
    a key given twice (its last line would win, the others lost). A key left empty is the API's to refuse. The first
    ``MAX_PROBLEMS_LISTED`` are named, the rest counted."""
    problems: list[tuple[int, str]] = []
    lines_of: dict[str, list[int]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, equals, _ = line.partition("=")
        if equals:
            lines_of.setdefault(key.strip(), []).append(number)
        else:
            problems.append((number, f"metadata: line {number} has no “=”: write key=value (key= for an empty value)"))
    for key, numbers in lines_of.items():
        if key and len(numbers) > 1:
            times = "twice" if len(numbers) == 2 else f"{len(numbers)} times"
            where = ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"
            problems.append((numbers[0], f"metadata: “{key}” is given {times} (lines {where}): keep one"))
    ordered = [Problem(message, "metadata") for _, message in sorted(problems, key=lambda problem: problem[0])]
    return _capped(ordered, "metadata: and {count} more problems on later lines")


def _same_lines(text: str, other: str) -> bool:
    """Whether two metadata fields have the same lines, blank lines and the spaces at the ends of each aside."""
    return [line.strip() for line in text.splitlines() if line.strip()] == [
        line.strip() for line in other.splitlines() if line.strip()
    ]


def _metadata_text(metadata: dict[str, str] | None) -> str:
    """The form's lines of ``metadata``."""
    return "\n".join(f"{key}={value}" for key, value in (metadata or {}).items())


def _as_the_form_reads(metadata: dict[str, str] | None) -> dict[str, str]:
    """``metadata`` as its form lines read back: itself, unless it was set through the API in a way the lines
    cannot hold (a key with ``=``, a line break, spaces at either end of a key or a value)."""
    return _metadata_of(_metadata_text(metadata))


def _form_page(
    request: Request,
    guest: Visitor,
    values: dict[str, Any],
    *,
    removing: Sequence[str] = (),
    sub: Subscription | None = None,
    refused_metadata: str | None = None,
    header_rows: Sequence[HeaderRow] | None = None,
    new_header_rows: Sequence[HeaderRow] = (),
    errors: Sequence[Problem | str] = (),
    **context: Any,
) -> Response:
    """The endpoint form, showing ``values``; or, for its metadata, ``refused_metadata``: the lines the tenant typed,
    refused, shown again as they were typed. ``header_rows`` are the rows of the headers the endpoint has (by
    default, as it has them), ``new_header_rows`` the new headers typed, followed by empty rows. ``errors`` (a text
    is about the form as a whole) are listed at the top, each field pointing at its own."""
    if header_rows is None:
        header_rows = _rows_of(Shown.headers_of(sub)) if sub else []
    # Empty rows: as many as the endpoint can still take, ``NEW_HEADER_ROWS`` at least (past the limit, the API says
    # so), the first of them shown after the rows typed, the others behind "More header rows".
    room = max(MAX_HEADERS - len(header_rows) - len(new_header_rows), NEW_HEADER_ROWS - len(new_header_rows), 0)
    shown_blank = max(NEW_HEADER_ROWS - len(new_header_rows), 0)
    blank = [HeaderRow("") for _ in range(room)]
    if refused_metadata is not None:
        refused_metadata = _lines(refused_metadata)
        # An HTML textarea drops a first line break: one more keeps the lines where the errors number them.
        metadata_text = "\n" + refused_metadata if refused_metadata.startswith("\n") else refused_metadata
    else:
        metadata_text = _metadata_text(values.get("metadata"))
    return page(
        request,
        "endpoint_form.html",
        guest,
        values=values,
        removing=removing,
        metadata_text=metadata_text,
        # The form says so: saved unchanged, it is kept as it is; edited, it is saved as the lines read.
        metadata_lossy=refused_metadata is None
        and _as_the_form_reads(values.get("metadata")) != (values.get("metadata") or {}),
        max_rate_limit=MAX_RATE_LIMIT,
        event_types=list(catalog),
        # A type the endpoint has that the catalog no longer lists has a box of its own, ticked while the form keeps
        # it: a form without it would send the event types without it, as if the tenant had removed it. Only a stored
        # type: a posted one the catalog does not list is refused (``_event_type_problems``), not shown.
        retired_types=subscriptions.retired_types(sub.event_types) if sub else [],
        sub=sub,
        version_field=VERSION_FIELD,
        shown_field=SHOWN_FIELD,
        # Compact JSON, escaped to ASCII: the hidden field gives it back as it is (no line break for the browser to
        # rewrite), to tell what the tenant changed from what the form showed.
        shown=json.dumps(Shown.of(sub).model_dump(), separators=(",", ":")) if sub else "",
        header_rows=header_rows,
        new_header_rows=[*new_header_rows, *blank[:shown_blank]],
        more_header_rows=blank[shown_blank:],
        max_headers=MAX_HEADERS,
        summary=ErrorSummary([error if isinstance(error, Problem) else Problem(error) for error in errors]),
        **context,
    )


class ErrorSummary:
    """A refused form's problems as its page lists them, in their order: in lists of consecutive problems about the
    same field (and row, and input of the row), each list with an id its field's ``aria-describedby`` names. A field
    whose problems are all the summary lists is described by the summary itself (``form-errors``)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.lists: list[tuple[str, list[Problem]]] = []
        for problem in problems:
            last = self.lists[-1][1] if self.lists else None
            if last is not None and last[0].place == problem.place:
                last.append(problem)
            else:
                self.lists.append((f"form-errors-{len(self.lists) + 1}", [problem]))
        if len(self.lists) == 1:
            self.lists = [("form-errors", self.lists[0][1])]

    def __bool__(self) -> bool:
        return bool(self.lists)

    def _about(self, field: str, row: str | None, part: str | None) -> list[tuple[str, list[Problem]]]:
        """Each list, with those of its problems about ``field`` (``row``, ``part``), for the lists that have any."""
        folded = None if row is None else _folded(row)
        found = [(ident, [p for p in problems if p.about(field, folded, part)]) for ident, problems in self.lists]
        return [(ident, problems) for ident, problems in found if problems]

    def ids(self, field: str, row: str | None = None, part: str | None = None) -> str:
        """The ids of the lists of the problems about ``field`` (for custom headers, about ``row``: a header's name,
        "" for a value typed without one; and with ``part``, about that input of the row only), space-separated; ""
        if none is."""
        return " ".join(ident for ident, _ in self._about(field, row, part))

    def invalid(self, field: str, row: str | None = None, part: str | None = None) -> bool:
        """Whether a problem says the value of ``field`` (or ``row``, or its ``part``) is wrong."""
        return any(problem.invalid for _, problems in self._about(field, row, part) for problem in problems)


#: What a form says when its save got no answer (503): it may have been saved.
UNANSWERED_SAVE = (
    "{what} could not be saved for certain: a service Herald depends on did not answer, and it may have been saved."
)

#: The new-endpoint form's field naming its one creation (the ``Idempotency-Key`` the API takes): sent twice (a
#: double click with scripting off, a reload that posts again), it makes one endpoint.
REQUEST_KEY_FIELD = "request_key"


def _request_key_problems(key: str | None) -> list[str]:
    """A creation key the portal did not make (a hand-made post): bounded as the API's ``Idempotency-Key`` is. The
    form comes back with a key of its own."""
    if key is None or is_idempotency_key(key):
        return []
    return [
        f"This form's creation key is not valid (1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters without"
        " spaces): the form now has a new one."
    ]


def _new_form_page(
    request: Request, guest: Visitor, values: dict[str, Any], *, request_key: str | None = None, **context: Any
) -> Response:
    """The new-endpoint form, with a fresh key for the creation it sends, or ``request_key`` (the one it was sent
    with, to send again: a creation that may have been made)."""
    key = request_key or secrets.token_urlsafe(16)
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
    rows = [row for row in _header_rows(form) if not row.shown]
    values["headers"] = _new_headers(rows)
    key = form.get(REQUEST_KEY_FIELD) or None
    metadata_problems = _metadata_problems(form.get("metadata", ""))
    problems: list[Problem | str] = [
        *_event_type_problems(values["event_types"]),
        *metadata_problems,
        *_header_problems(rows),
        *_request_key_problems(key),
    ]
    if problems:
        typed = form.get("metadata", "") if metadata_problems else None
        return _new_form_page(
            request,
            guest,
            values,
            errors=problems,
            refused_metadata=typed,
            new_header_rows=rows,
            status_code=422,
        )
    try:
        body = SubscriptionIn.model_validate(values)
        sub, _ = await subscriptions.create(
            guest.services, guest.tenant_id, body, idempotency_key=f"portal:{key}" if key else None
        )
    except (ValidationError, InvalidInputError) as exc:
        return _new_form_page(request, guest, values, errors=_errors(exc), new_header_rows=rows, status_code=422)
    except IdempotencyConflictError as exc:
        # This form made an endpoint already, and was changed and sent again (the browser's back button), or that
        # endpoint was deleted since.
        why = (
            "was deleted since"
            if isinstance(exc, subscriptions.KeyedSubscriptionGone)
            else "exists; these changes were not saved"
        )
        errors = [f"The endpoint this form created {why}. Send the form again to create another."]
        return _new_form_page(request, guest, values, errors=errors, new_header_rows=rows, status_code=409)
    except ServiceUnavailableError:
        # Storage did not answer, or not in time: the endpoint may have been made. The form comes back with its own
        # key, so that sending it again finishes this creation, or finds it made, and never makes a second endpoint
        # (a form sent without one, which the portal's never is, gets a new key and no such promise).
        as_sent = functools.partial(_new_form_page, request, guest, values, request_key=key, new_header_rows=rows)
        again = ["Send the form again: it makes one endpoint, whatever happened to this try."] if key else []
        return _unanswered(as_sent, "The endpoint", *again)
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
    after = checked_cursor(after, "deliveries")
    sub = _find(guest, sub_id)
    wanted = DeliveryStatus(status) if status in DeliveryStatus else None
    # The catalog's types, and those the endpoint still takes that the catalog no longer lists: their deliveries are
    # listed (a `*` endpoint's are known once asked for).
    types = [*catalog.names(), *subscriptions.retired_types(sub.event_types)]
    of_type = event_type if event_type in types or subscriptions.may_have_retired(sub, event_type or "") else None
    if of_type is not None and of_type not in types:
        types.append(of_type)
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
        slot=CHART_SLOT,
        stats=deliveries.stats(guest.services, sub),
        deliveries=listed.items,
        after=after,
        next_after=listed.cursor,
        status=status,
        event_type=of_type or "",
        since=since,
        until=until,
        options=CustomHeaders.from_stored(sub.headers).out(),
        event_types=types,
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


#: The edit form's hidden fields: the version of the endpoint it showed, and the values it showed (JSON of
#: ``Shown``). A save applies only the fields the tenant changed from those, over the endpoint as it is then: a change
#: made meanwhile (through the API, or another page) to another field is kept, not reverted with the form's stale
#: value, and an unchanged field is not checked again against limits lowered since it was set.
VERSION_FIELD = "version"
SHOWN_FIELD = "shown"
#: Reads and writes of an endpoint that keeps changing while the form is saved, before the save gives up (409).
SAVE_ATTEMPTS = 3


class ShownHeader(BaseModel):
    """A custom header as the API shows it: a sensitive one without its value (never in a page)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    value: str | None
    sensitive: bool


class Shown(BaseModel):
    """The fields the edit form changes, as stored: what a form showed, or what the endpoint holds now. Custom
    headers as the API shows them: a sensitive value is not in it, so a change of one made elsewhere is not seen."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: str
    event_types: list[str]
    description: str
    metadata: dict[str, str]
    rate_limit: int | None
    filter: str | None
    transform: str | None
    #: None in a form rendered before the form carried headers (it had no header rows).
    headers: dict[str, ShownHeader] | None = None

    @classmethod
    def of(cls, sub: Subscription) -> Shown:
        fields = {name: getattr(sub, name) for name in cls.model_fields if name != "headers"}
        return cls.model_validate({**fields, "headers": cls.headers_of(sub)})

    @staticmethod
    def headers_of(sub: Subscription) -> dict[str, ShownHeader]:
        return {
            name: ShownHeader(value=header.value, sensitive=header.sensitive)
            for name, header in CustomHeaders.from_stored(sub.headers).out().items()
        }


#: How the conflict note names each field.
FIELD_NAMES = {
    "url": "URL",
    "event_types": "event types",
    "description": "description",
    "metadata": "metadata",
    "rate_limit": "rate limit",
    "filter": "filter",
    "transform": "transform",
    "headers": "custom headers",
}


def _names(fields: Sequence[str]) -> str:
    """The fields as a note lists them."""
    return ", ".join(FIELD_NAMES[name] for name in fields)


def _shown_in(form: dict[str, str], sub: Subscription) -> Shown | None:
    """What the posted edit form showed: ``sub`` as it is, if the form names its version (or none: a form sent by a
    script, or rendered before the form carried it, is taken as made of the endpoint as it is); else the values it
    carried. None if it names another version and its values cannot be read: whatever it sends may be stale."""
    version = form.get(VERSION_FIELD)
    if version is None or version == str(sub.version):
        return Shown.of(sub)
    try:
        return Shown.model_validate_json(form.get(SHOWN_FIELD, ""))
    except ValidationError:
        return None


def _edited_metadata_problems(form: dict[str, str], shown: Shown | None, now: Shown) -> list[Problem]:
    """The problems of the edit form's metadata lines (``_metadata_problems``), unless they are the lines the form
    showed, or those of the endpoint now: left unchanged, metadata set through the API that the lines cannot hold (a
    value with a line break, keys that differ by a space at an end) is kept as it is, not read from its lines."""
    text = form.get("metadata", "")
    if any(_same_lines(text, _metadata_text(it.metadata)) for it in (shown, now) if it is not None):
        return []
    return _metadata_problems(text)


def _moved_note(shown: Shown | None, now: Shown) -> list[str]:
    """What a refused edit form adds when the endpoint changed elsewhere (in fields the tenant did not change) since
    the form was opened: the form it answers shows the endpoint as it is now."""
    if shown is None:
        return []
    # A form rendered before the form carried headers says nothing of them: they are not counted as moved.
    fields = [n for n in Shown.model_fields if n != "headers" or shown.headers is not None]
    moved = [n for n in fields if not _same(n, getattr(now, n), getattr(shown, n))]
    if not moved:
        return []
    return [
        f"This endpoint was also changed elsewhere after this form was opened ({_names(moved)}): the form now shows it "
        "as it is, with your changes."
    ]


def _posted(form: dict[str, str], shown: Shown | None, now: Shown) -> dict[str, Any]:
    """The form's fields as an update would set them. A filter or transform is removed by its box, which names the
    one the form showed (the endpoint's own, for a form that showed nothing readable); left unticked, it is kept."""
    values = _form_values(form)
    removing = fields_list(form, "remove")
    for name in ("filter", "transform"):
        values[name] = None if name in removing else getattr(shown or now, name)
    before = shown.headers if shown is not None and shown.headers is not None else now.headers
    values["headers"] = _header_patch(_header_rows(form), before or {})
    return values


def _header_in(headers: dict[str, ShownHeader] | None, name: str) -> ShownHeader | None:
    """The header ``name`` of ``headers``, as the API finds it (without case, ``_`` read as ``-``)."""
    for key, header in (headers or {}).items():
        if _folded(key) == _folded(name):
            return header
    return None


def _header_patch(rows: Sequence[HeaderRow], before: dict[str, ShownHeader]) -> dict[str, dict[str, Any] | None]:
    """The header rows as the API's merge patch of them: only what the tenant changed from the headers ``before``
    (what the form showed). A removed header is ``None``; a value sent only when typed (a sensitive header's empty
    field keeps its stored value); a header left as shown is not in it."""
    patch: dict[str, dict[str, Any] | None] = {}
    for row in rows:
        if not row.name:
            continue
        was = _header_in(before, row.name) if row.shown else None
        if row.remove:
            patch[row.name] = None
        elif was is None:
            patch[row.name] = {"sensitive": row.sensitive, **({"value": row.value} if row.value else {})}
        else:
            typed = bool(row.value) if was.sensitive else row.value != was.value
            if typed or row.sensitive != was.sensitive:
                patch[row.name] = {"sensitive": row.sensitive, **({"value": row.value} if typed else {})}
    return patch


def _is_now(name: str, change: dict[str, Any] | None, current: ShownHeader | None) -> bool:
    """Whether ``change`` gives the header ``name`` what it has now (known only of values that are not sensitive)."""
    if change is None or current is None:
        return change is None and current is None
    if "value" not in change:  # the stored value kept: only its being sensitive changes
        return current.sensitive == bool(change.get("sensitive"))
    value = change.get("value")
    return (
        value is not None
        and not (current.sensitive or _sensitive(change, name))
        and current == ShownHeader(value=value, sensitive=False)
    )


def _sensitive(change: dict[str, Any], name: str) -> bool:
    """Whether the API keeps the header ``name`` that ``change`` sets sensitive (by the tenant's box or its rules)."""
    value = str(change.get("value") or "")
    return bool(change.get("sensitive")) or is_sensitive_name(name) or is_credential_value(value)


def _merged_headers(
    patch: dict[str, dict[str, Any] | None], shown: Shown | None, now: Shown
) -> tuple[dict[str, dict[str, Any] | None], list[str]]:
    """The header changes the form makes to the endpoint as it is ``now`` (``_merged``, header by header): a
    header the endpoint changed meanwhile (as the API shows it: a sensitive value changed elsewhere is not seen) is
    a conflict (the second list) if the tenant changed it too, to something else; headers the tenant left as shown
    are not in ``patch``, so a header added, changed or removed elsewhere is kept as it is now."""
    changes: dict[str, dict[str, Any] | None] = {}
    conflicts: list[str] = []
    for name, change in patch.items():
        current = _header_in(now.headers, name)
        if shown is not None and _header_in(shown.headers, name) == current:
            changes[name] = change
        elif not _is_now(name, change, current):
            conflicts.append(name)
    return changes, conflicts


def _change_text(name: str, change: dict[str, Any] | None) -> str:
    """What the tenant did to a header, as the conflict note says it (never a sensitive value)."""
    if change is None:
        return f"you removed {name}"
    value = change.get("value")
    if value is None:
        return f"you made {name} {'sensitive' if change.get('sensitive') else 'not sensitive'}"
    if _sensitive(change, name):
        return f"you set {name} to a new sensitive value"
    return f"you set {name} to “{value}”"


def _header_text(header: ShownHeader | None) -> str:
    if header is None:
        return "not set"
    return "set, sensitive" if header.sensitive else f"“{header.value}”"


def _rows_of(headers: dict[str, ShownHeader]) -> list[HeaderRow]:
    """The rows of ``headers`` as the form shows them: a sensitive one with its value field empty."""
    return [HeaderRow(name, header.value or "", header.sensitive, shown=True) for name, header in headers.items()]


def _rebased_rows(
    sub: Subscription, rows: Sequence[HeaderRow], changes: dict[str, Any]
) -> tuple[list[HeaderRow], list[HeaderRow]]:
    """The header rows sent back with the form (``_rebased``): each header the endpoint has now, as the tenant left
    it where its change is kept, else as it is now; and the new headers as the tenant typed them, but for one whose
    name was set elsewhere meanwhile, a conflict (the form shows that header as it is now)."""
    kept = changes.get("headers", {})
    now = Shown.headers_of(sub)
    typed = {_folded(row.name): row for row in rows if row.shown}
    shown_rows = []
    for row in _rows_of(now):
        mine = typed.get(_folded(row.name))
        shown_rows.append(mine if mine is not None and any(_folded(n) == _folded(row.name) for n in kept) else row)
    new_rows = [
        row for row in rows if not row.shown and (_header_in(now, row.name) is None or row.name in kept or not row.name)
    ]
    return shown_rows, new_rows


def _reads_as(name: str, posted: Any, value: Any) -> bool:
    """Whether the form's ``posted`` value of field ``name`` is ``value`` as the form shows it: event types in any
    order, a description with its line breaks as a browser sends them and its ends trimmed (an HTML textarea drops a
    first line break), metadata as its lines read back (metadata set through the API in a way the lines cannot hold
    reads as those lines)."""
    if name == "event_types":
        posted, value = set(posted), set(value)
    elif name == "description":
        value = _lines(value).strip()
    elif name == "metadata":
        value = _as_the_form_reads(value)
    return bool(posted == value)


def _same(name: str, one: Any, other: Any) -> bool:
    """Whether two stored values of field ``name`` are the same (event types in any order)."""
    return set(one) == set(other) if name == "event_types" else bool(one == other)


def _merged(posted: dict[str, Any], shown: Shown | None, now: Shown) -> tuple[dict[str, Any], list[str]]:
    """The changes the form makes to the endpoint as it is ``now``: the fields the tenant changed from what the form
    showed. A field sent as the form showed it is no change, so it is not checked again: a URL whose host no longer
    passes the URL policy (checked at each send), or a field over a limit the operator lowered since, must not keep
    the tenant from changing the others, as the API's PATCH without them does not. A field the endpoint changed
    meanwhile is kept as it is now, unless the tenant changed it too, to another value: that is a conflict (the second
    list), and nothing is saved. A form whose ``shown`` values are unknown conflicts in every field it does not send
    as the endpoint now has it."""
    changes: dict[str, Any] = {}
    conflicts: list[str] = []
    for name in Shown.model_fields:
        if name == "headers":
            header_changes, header_conflicts = _merged_headers(posted[name], shown, now)
            if header_changes:
                changes[name] = header_changes
            if header_conflicts:
                conflicts.append(name)
            continue
        mine, current = posted[name], getattr(now, name)
        if _reads_as(name, mine, current) or (shown is not None and _reads_as(name, mine, getattr(shown, name))):
            continue  # as the form showed it, or as it is now: not a change
        if shown is not None and _same(name, current, getattr(shown, name)):
            changes[name] = mine
        else:
            conflicts.append(name)
    return changes, conflicts


def _value_text(name: str, value: Any) -> str:
    """A value of field ``name`` as the conflict note quotes it."""
    if name == "event_types":
        return ", ".join(value) if value else "none"
    if name == "metadata":
        return "; ".join(_metadata_text(value).splitlines()) or "none"
    if value is None or value == "":
        return "none"
    return f"“{value}”" if name == "description" else str(value)


def _conflict_note(
    conflicts: list[str], changes: dict[str, Any], posted: dict[str, Any], now: Shown, shown: Shown | None
) -> list[Problem | str]:
    """What the conflict answer says: the endpoint changed since the form was opened, in which fields the tenant
    changed too, and what the tenant had entered in each (the form shows the endpoint's values there now)."""
    changed = "This endpoint was changed elsewhere (through the API, or on another page) after this form was opened"
    if shown is None:
        return [
            f"{changed}, and the form does not say what it showed. Nothing was saved: the form now shows the "
            "endpoint as it is. Make your changes again, and save."
        ]
    kept = ", and keeps your other changes (not saved yet)" if changes else ""
    note: list[Problem | str] = [
        f"{changed}, in fields you changed too: {_names(conflicts)}. Nothing was saved: the form now shows those "
        f"fields as they are{kept}. Check them, and save again."
    ]
    for name in conflicts:
        label = FIELD_NAMES[name][0].upper() + FIELD_NAMES[name][1:]
        if name == "headers":
            conflicting = _merged_headers(posted[name], shown, now)[1]
            note.extend(
                Problem(
                    f"{label}: {_change_text(header, posted[name][header])}; it is now "
                    f"{_header_text(_header_in(now.headers, header))}.",
                    name,
                    _folded(header),
                    invalid=False,
                )
                for header in conflicting
            )
            continue
        now_text = _value_text(name, getattr(now, name))
        if name in ("filter", "transform"):
            text = f"{label}: you removed {_value_text(name, getattr(shown, name))}; it is now {now_text}."
        else:
            text = f"{label}: you entered {_value_text(name, posted[name])}; it is now {now_text}."
        # The field shows its value now, which is not wrong: the line points at it, as a conflict.
        note.append(Problem(text, name, invalid=False))
    return note


def _rebased(sub: Subscription, changes: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The form sent back, made of the endpoint as it is with the tenant's changes: the values it shows, and the
    option boxes it keeps ticked."""
    values = {**Shown.of(sub).model_dump(), **{name: value for name, value in changes.items() if name != "headers"}}
    return values, [name for name in ("filter", "transform") if name in changes]


@router.post("/{sub_id}/edit")
async def update_endpoint(request: Request, sub_id: str) -> Response:
    """Save the edit form: the fields the tenant changed from what the form showed (its hidden fields), over the
    endpoint as it is now. A field changed meanwhile which the tenant changed too answers the form again (409) with
    the endpoint's values and a note, and nothing is saved; a change written between this read and the save is read
    again."""
    guest = _guest(request)
    form = await change_form(request, guest)
    sub = _find(guest, sub_id)
    shown = _shown_in(form, sub)
    rows = _header_rows(form)
    for _ in range(SAVE_ATTEMPTS):
        now = Shown.of(sub)
        posted = _posted(form, shown, now)
        changes, conflicts = _merged(posted, shown, now)
        values, removing = _rebased(sub, changes)
        header_rows, new_header_rows = _rebased_rows(sub, rows, changes)
        # Metadata lines that do not read as key=value are refused, and shown again as typed: checked whether or not
        # they read as a change (a key given twice may read as the metadata the endpoint has), unless the form now
        # shows the endpoint's metadata instead (a conflict in it, or any conflict of a form that showed nothing
        # readable).
        showing_now = "metadata" in conflicts or (bool(conflicts) and shown is None)
        metadata_problems = [] if showing_now else _edited_metadata_problems(form, shown, now)
        # Event types are checked as the API checks them, only when changed: the endpoint's retired ones may stay.
        type_problems = _event_type_problems(
            changes.get("event_types", ()), subscriptions.retired_types(sub.event_types)
        )
        problems = [*type_problems, *metadata_problems, *_header_problems(rows)]

        # The form sent back (with its errors and status): the endpoint as it is with the tenant's changes, its
        # metadata lines as typed when they were refused.
        refused = functools.partial(
            _form_page,
            request,
            guest,
            values,
            sub=sub,
            removing=removing,
            refused_metadata=form.get("metadata", "") if metadata_problems else None,
            header_rows=header_rows,
            new_header_rows=new_header_rows,
        )
        if conflicts:
            return refused(errors=[*_conflict_note(conflicts, changes, posted, now, shown), *problems], status_code=409)
        if problems:
            return refused(errors=[*problems, *_moved_note(shown, now)], status_code=422)
        if not changes:
            return _back(sub.id, "saved")
        try:
            try:
                await subscriptions.update(guest.services, sub, SubscriptionUpdate.model_validate(changes))
            except ConflictError:
                sub = _find(guest, sub_id)  # changed between the read and the write: merged again over what it is now
                continue
        except (ValidationError, InvalidInputError) as exc:
            return refused(errors=[*_errors(exc), *_moved_note(shown, now)], status_code=422)
        except ServiceUnavailableError:  # the save's, or the read again's after a change meanwhile
            return _unanswered(refused, "The changes")
        return _back(sub.id, "saved")
    raise ConflictError("this endpoint kept changing while the form was saved; open it again")


def _unanswered(form: Callable[..., Response], what: str, *notes: str) -> Response:
    """A form whose save got no answer (storage did not answer, or not in time: ``what`` may have been saved), as
    the tenant sent it (``form``, given its errors and status: 503), with ``notes``. The new-endpoint form keeps its
    creation's key. The edit form sent again is merged over the endpoint as it is then, saved or not: a sensitive
    header's new value, never compared with the stored one, then reads as changed elsewhere too (409), the first save
    standing."""
    return retry_later(form(errors=[UNANSWERED_SAVE.format(what=what), *notes], status_code=503))


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
    if grace and (not WHOLE_NUMBER.fullmatch(grace) or int(grace) > MAX_GRACE_HOURS):
        raise InvalidInputError(f"the grace period is a whole number of hours from 0 to {MAX_GRACE_HOURS}")
    subscriptions.rotate_signing_secret(guest.services, sub, int(grace) if grace else None)
    return _back(sub.id, "rotated")


@router.post("/{sub_id}/test")
async def test_endpoint(request: Request, sub_id: str) -> Response:
    guest = _guest(request)
    await change_form(request, guest)
    send_test(guest.services, _find(guest, sub_id))
    return _back(sub_id, "test-sent")
