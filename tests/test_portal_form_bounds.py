"""The endpoint forms' answers stay small whatever is posted: a refused form names the first problems of a kind
(metadata lines, event types, header rows) and counts the rest, far under Lambda's 6 MB response limit; and only an
event type the endpoint has stored is shown as retired, a posted one the catalog does not list is refused."""

from __future__ import annotations

import html
import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest

from herald.catalog import catalog
from herald.faults import install
from herald.lambda_response import ANSWER_MAX_BYTES
from herald.portal.endpoints import MAX_PROBLEMS_LISTED
from herald.portal.render import TOO_LARGE_FORM, TOO_LARGE_UNANSWERED
from herald.settings import MAX_REQUEST_BYTES
from tests.delivery_support import subscribe
from tests.portal_support import Browser, sign_in
from tests.test_portal_custom_headers import _row
from tests.test_portal_edit_conflicts import _form

if TYPE_CHECKING:
    import httpx
    from fastapi.testclient import TestClient

    from tests.support import Receiver, TenantInfo

#: A metadata field of 255,000 lines without "=" (510,000 bytes: the form's body stays under 512 KiB).
NO_EQUALS_LINES = 255_000
#: Made-up event types, each a short hex number (about 510,000 bytes of form).
MADE_UP_TYPES = 30_000
#: What a refused form may weigh besides the text it shows again as typed.
SMALL_PAGE = 200_000

NO_EQUALS = "metadata: line {} has no “=”: write key=value (key= for an empty value)"
NOT_IN_CATALOG = "{!r} is not in the event catalog"
RETIRED = "no longer in the catalog"


def _errors(response: httpx.Response) -> list[str]:
    """The form's list of what kept it from being saved."""
    found = re.search(r'<div class="errors" role="alert" id="form-errors">(.*?)</div>', response.text, re.S)
    assert found, f"the form says why it was not saved: {response.text[:300]}"
    return [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", found.group(1), re.S)]


def _posted(
    me: TestClient, path: str, fields: dict[str, Any], raw: str = "", *, limit: int = 512 * 1024
) -> httpx.Response:
    """``fields`` posted as a form to ``path``, followed by ``raw`` as it is (a field of many lines, its line breaks
    sent unencoded, as a script may send them: a form body's bytes, not a browser's)."""
    body = urlencode(fields, doseq=True) + raw
    assert len(body) < limit, "the form is under the request limit"
    response: httpx.Response = me.post(
        path,
        content=body.encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    return response


def _control_characters(fields: dict[str, Any], limit: int) -> str:
    """Control characters filling a form body of ``limit`` bytes with ``fields`` (each is six bytes once escaped in
    Lambda's response, ``\\u0001``)."""
    return "\x01" * (limit - len(urlencode(fields, doseq=True)) - 100)


def _form_of(me: TestClient, tenant: TenantInfo, client: TestClient, receiver: Receiver, which: str) -> tuple[str, Any]:
    """Where the ``which`` form ("new" or "edit") posts, and its fields as a signed-in tenant sends them (the edit
    form's as it showed them)."""
    if which == "new":
        csrf = sign_in(me, tenant.id)
        return "/portal/endpoints", {"csrf_token": csrf, "url": receiver.url, "event_types": ["invoice.paid"]}
    sub = subscribe(client, tenant, receiver.url)
    sign_in(me, tenant.id)
    page = me.get(f"/portal/endpoints/{sub.id}/edit")
    assert page.status_code == 200, page.text[:300]
    return f"/portal/endpoints/{sub.id}/edit", _form(page.text)


def _nothing_saved(client: TestClient, tenant: TenantInfo) -> None:
    """No endpoint was created, and none changed from ``subscribe``'s."""
    listed = client.get("/v1/subscriptions", headers=tenant.headers).json()["data"]
    assert [(sub["event_types"], sub["metadata"]) for sub in listed] in ([], [(["invoice.paid"], {})])


@pytest.mark.parametrize("which", ["new", "edit"])
def test_a_metadata_field_of_many_lines_without_equals_answers_a_small_page_naming_the_first(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver, which: str
) -> None:
    # GIVEN a signed-in tenant's form (a new endpoint's, or an endpoint's edit form)
    me = browser()
    path, fields = _form_of(me, tenant, client, receiver, which)
    fields.pop("metadata", None)
    # WHEN it is sent with 255,000 metadata lines that have no "="
    typed = "a\n" * NO_EQUALS_LINES
    response = _posted(me, path, fields, "&metadata=" + typed)
    # THEN the form comes back (422), a small page: the lines shown again as typed, and little more (an error line
    # for each was 22.8 MB)
    assert response.status_code == 422, response.text[:300]
    assert len(response.content) - len(typed) < SMALL_PAGE, len(response.content)
    # AND it names the first lines, and counts the others in one more line
    more = NO_EQUALS_LINES - MAX_PROBLEMS_LISTED
    assert _errors(response) == [
        *(NO_EQUALS.format(n) for n in range(1, MAX_PROBLEMS_LISTED + 1)),
        f"metadata: and {more:,} more problems on later lines",
    ]
    _nothing_saved(client, tenant)


@pytest.mark.parametrize("which", ["new", "edit"])
def test_many_made_up_event_types_answer_a_small_page_naming_the_first_and_none_as_retired(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver, which: str
) -> None:
    # GIVEN a signed-in tenant's form (a new endpoint's, or an endpoint's edit form)
    me = browser()
    path, fields = _form_of(me, tenant, client, receiver, which)
    # WHEN it is sent with invoice.paid and 30,000 event types the catalog does not list
    made_up = [f"{n:x}" for n in range(MADE_UP_TYPES)]
    response = _posted(me, path, {**fields, "event_types": ["invoice.paid", *made_up]})
    # THEN the form comes back (422), a small page: none of them is offered as a retired type (the page was 8.5 MB of
    # such boxes)
    assert response.status_code == 422, response.text[:300]
    assert RETIRED not in response.text
    assert len(response.content) < SMALL_PAGE, len(response.content)
    # AND it says the first are not in the catalog, as the API says it, and counts the others
    more = MADE_UP_TYPES - MAX_PROBLEMS_LISTED
    assert _errors(response) == [
        *(NOT_IN_CATALOG.format(name) for name in made_up[:MAX_PROBLEMS_LISTED]),
        f"event types: and {more:,} more that are not in the event catalog",
    ]
    _nothing_saved(client, tenant)


def test_a_stored_retired_type_is_shown_as_retired_and_a_made_up_one_is_refused_not_shown(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an endpoint of two event types, one of which the catalog has since dropped (a deploy that retired it)
    sub = subscribe(client, tenant, receiver.url, ["invoice.paid", "order.shipped"])
    monkeypatch.delitem(catalog._types, "order.shipped")
    me = browser()
    csrf = sign_in(me, tenant.id)
    path = f"/portal/endpoints/{sub.id}/edit"
    form = _form(me.get(path).text)
    assert form["event_types"] == ["invoice.paid", "order.shipped"]
    # WHEN the tenant saves its form with a made-up type ticked too (a script: the form has no box for it)
    response = _posted(me, path, {**form, "event_types": ["invoice.paid", "order.shipped", "made.up"]})
    # THEN the form comes back (422): the stored retired type still shown as retired, ticked; the made-up one in no box
    assert response.status_code == 422, response.text[:300]
    again = _form(response.text)
    assert response.text.count(RETIRED) == 1
    assert 'value="made.up"' not in response.text
    assert again["event_types"] == ["invoice.paid", "order.shipped"]
    # AND it says the made-up type is not in the catalog; the retired one is not refused
    assert _errors(response) == [NOT_IN_CATALOG.format("made.up")]
    # WHEN the tenant unticks the retired type, and the form is refused for its metadata
    unticked = _posted(me, path, {**form, "event_types": "invoice.paid", "metadata": "team"})
    # THEN the retired type's box is still there, unticked as the tenant left it
    assert unticked.status_code == 422, unticked.text[:300]
    assert _errors(unticked) == [NO_EQUALS.format(1)]
    assert unticked.text.count(RETIRED) == 1
    assert _form(unticked.text)["event_types"] == "invoice.paid"
    assert client.get(f"/v1/subscriptions/{sub.id}", headers=tenant.headers).json()["event_types"] == [
        "invoice.paid",
        "order.shipped",
    ]
    # WHEN a new endpoint's form is sent with the retired type (no endpoint has it there)
    created = _posted(
        me, "/portal/endpoints", {"csrf_token": csrf, "url": receiver.url, "event_types": "order.shipped"}
    )
    # THEN it is refused as not in the catalog, and not shown as retired
    assert created.status_code == 422, created.text[:300]
    assert RETIRED not in created.text
    assert _errors(created) == [NOT_IN_CATALOG.format("order.shipped")]


def test_many_header_rows_given_twice_are_named_up_to_the_limit_and_counted(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint's edit form
    me = browser()
    path, fields = _form_of(me, tenant, client, receiver, "edit")
    # WHEN it is sent with 50 new header rows, each name given twice
    rows: dict[str, str] = {}
    for n in range(50):
        rows |= {f"new_header_{n}_name": f"X-H{n}", f"new_header_{n}_value": "v"}
        rows |= {f"new_header_{n + 50}_name": f"x_h{n}", f"new_header_{n + 50}_value": "w"}
    response = _posted(me, path, {**fields, **rows})
    # THEN the form comes back (422) naming the first, counting the others
    assert response.status_code == 422, response.text[:300]
    more = 50 - MAX_PROBLEMS_LISTED
    assert _errors(response) == [
        *(
            f"header 'x_h{n}' is given twice (names ignore case, and _ is read as -)"
            for n in range(MAX_PROBLEMS_LISTED)
        ),
        f"custom headers: and {more:,} more problems",
    ]


@pytest.mark.parametrize("settings_overrides", [{"max_request_bytes": MAX_REQUEST_BYTES}])
@pytest.mark.parametrize("field", ["url", "metadata"])
@pytest.mark.parametrize("which", ["new", "edit"])
def test_a_form_too_large_to_show_again_in_a_lambda_response_is_a_small_413(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver, which: str, field: str
) -> None:
    # GIVEN the largest request body a deployment may take (1 MiB), and a signed-in tenant's form
    me = browser()
    path, fields = _form_of(me, tenant, client, receiver, which)
    fields.pop(field, None)

    # WHEN it is sent with a field of control characters filling the body (each six bytes once escaped in Lambda's
    # response, \u0001): a URL, or a metadata key given twice (shown twice as typed, and quoted in its error)
    def typed(limit: int) -> str:
        filling = _control_characters(fields, limit)
        half = filling[: len(filling) // 2 - 2]
        return filling if field == "url" else f"{half}=\n{half}="

    response = _posted(me, path, fields, f"&{field}={typed(MAX_REQUEST_BYTES)}", limit=MAX_REQUEST_BYTES)
    # THEN the form is not shown again, which would pass Lambda's limit (API Gateway's bare 500): a small 413 says
    # nothing was saved
    assert response.status_code == 413, response.text[:300]
    assert TOO_LARGE_FORM in html.unescape(response.text)
    assert len(json.dumps(response.text)) < SMALL_PAGE
    _nothing_saved(client, tenant)
    # AND one filling the default request limit (512 KiB) is shown again as typed (422), within Lambda's limit
    smaller = typed(512 * 1024)
    response = _posted(me, path, fields, f"&{field}={smaller}", limit=512 * 1024)
    assert response.status_code == 422, response.text[:300]
    assert smaller.partition("=")[0] in response.text
    assert len(json.dumps(response.text)) <= ANSWER_MAX_BYTES
    _nothing_saved(client, tenant)


@pytest.mark.parametrize("settings_overrides", [{"max_request_bytes": MAX_REQUEST_BYTES}])
def test_a_form_too_large_to_show_again_after_a_save_without_an_answer_says_it_may_have_been_saved(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver, services: Any
) -> None:
    # GIVEN an endpoint with a header, its edit form removing it with a value of control characters typed in the
    # removed row (never checked: the row is removed), and DynamoDB making the save with its answer lost
    made = client.post(
        "/v1/subscriptions",
        json={"url": receiver.url, "event_types": ["invoice.paid"], "headers": {"X-Team": {"value": "core"}}},
        headers=tenant.headers,
    )
    assert made.status_code == 201, made.text
    sub_id = made.json()["id"]
    me = browser()
    sign_in(me, tenant.id)
    form = _form(me.get(f"/portal/endpoints/{sub_id}/edit").text)
    row = _row(form, "X-Team")
    fields = {**form, f"{row}_remove": "on"}
    fields.pop(f"{row}_value")
    typed = _control_characters(fields, MAX_REQUEST_BYTES)
    install(services.store.client, "dynamodb.TransactWriteItems:lost=calls:1")
    # WHEN it is sent, and the form (503: it may have been saved) would be too large to show again
    response = _posted(me, f"/portal/endpoints/{sub_id}/edit", fields, f"&{row}_value={typed}", limit=MAX_REQUEST_BYTES)
    # THEN a short 503 says the change may have been saved, not that nothing was, and when to try again
    assert response.status_code == 503, response.text[:300]
    assert TOO_LARGE_UNANSWERED in html.unescape(response.text)
    assert response.headers["retry-after"] == "1"
    assert len(json.dumps(response.text)) < SMALL_PAGE
    # AND the change was saved
    stored = client.get(f"/v1/subscriptions/{sub_id}", headers=tenant.headers).json()
    assert stored["headers"] == {}
