"""A subscription's custom headers in the portal's endpoint forms: added, changed, made sensitive and removed as the
API's merge patch does it (its rules and messages), a sensitive value never in a page, a refused form shown again
with what was typed, and a header changed through the API while the form was open kept."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from tests import test_portal_browser as portal_browser
from tests.delivery_support import publish, subscribe
from tests.portal_support import Browser, sign_in
from tests.support import Receiver, TenantInfo, drain
from tests.test_portal_edit_conflicts import _form, _notes

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from selenium.webdriver.remote.webdriver import WebDriver

    from herald.services import Services

# The browser test's app and Chromium, as the portal's browser tests run them.
served_app = portal_browser.served_app
driver = portal_browser.driver

SECRET = "Bearer 8f14e45fceea167a-s3cr3t"


def _stored(client: TestClient, tenant: TenantInfo, sub_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/subscriptions/{sub_id}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    headers: dict[str, Any] = response.json()["headers"]
    return headers


def _patched(client: TestClient, tenant: TenantInfo, sub_id: str, body: dict[str, Any]) -> None:
    response = client.patch(f"/v1/subscriptions/{sub_id}", json=body, headers=tenant.headers)
    assert response.status_code == 200, response.text


def _endpoint(
    browser: Browser, client: TestClient, tenant: TenantInfo, url: str, headers: dict[str, Any] | None = None
) -> tuple[str, TestClient]:
    """An endpoint at ``url`` with ``headers`` set through the API, and the tenant signed in to the portal."""
    sub = subscribe(client, tenant, url)
    if headers:
        _patched(client, tenant, sub.id, {"headers": headers})
    me = browser()
    sign_in(me, tenant.id)
    return sub.id, me


def _opened(me: TestClient, sub_id: str) -> dict[str, Any]:
    page = me.get(f"/portal/endpoints/{sub_id}/edit")
    assert page.status_code == 200, page.text[:300]
    return _form(page.text)


def _row(form: dict[str, Any], name: str) -> str:
    """The field prefix (``header_<n>``) of the edit form's row of the header ``name``."""
    for key, value in form.items():
        if key.startswith("header_") and key.endswith("_name") and value == name:
            return key.removesuffix("_name")
    raise AssertionError(f"no row of {name} in {sorted(form)}")


def _stored_value(services: Services, tenant: TenantInfo, sub_id: str, name: str) -> str:
    """The value the store holds for header ``name`` (what no page may show of a sensitive one)."""
    sub = services.store.subscriptions.get(tenant.id, sub_id)
    assert sub is not None
    return next(str(header["value"]) for header in sub.headers or [] if header["name"] == name)


def _saved(me: TestClient, sub_id: str, form: dict[str, Any]) -> httpx.Response:
    response: httpx.Response = me.post(f"/portal/endpoints/{sub_id}/edit", data=form, follow_redirects=False)
    return response


def test_a_header_added_in_the_edit_form_is_stored_and_sent_with_each_delivery(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver, poller: Any
) -> None:
    # GIVEN an endpoint without custom headers, whose form the tenant opened
    sub_id, me = _endpoint(browser, client, tenant, receiver.url)
    form = _opened(me, sub_id)
    assert form["new_header_1_name"] == ""
    # WHEN the tenant adds a header and a sensitive one in the empty rows, and saves
    added = {
        "new_header_1_name": "X-Route",
        "new_header_1_value": "eu-1",
        "new_header_2_name": "X-Gateway",
        "new_header_2_value": SECRET.removeprefix("Bearer "),
        "new_header_2_sensitive": "on",
    }
    saved = _saved(me, sub_id, {**form, **added})
    # THEN both are stored, the sensitive one masked as the API shows it
    assert saved.status_code == 303, _notes(saved.text)
    assert _stored(client, tenant, sub_id) == {
        "X-Route": {"value": "eu-1", "sensitive": False},
        "X-Gateway": {"value": None, "sensitive": True},
    }
    # AND a delivery carries both
    publish(client, tenant.id)
    drain(poller)
    (received,) = receiver.received
    assert (received.headers["x-route"], received.headers["x-gateway"]) == ("eu-1", SECRET.removeprefix("Bearer "))


def test_the_edit_form_changes_a_value_makes_a_header_sensitive_and_removes_one(
    browser: Browser, client: TestClient, services: Services, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint with three headers set through the API, one sensitive
    headers = {"X-Route": {"value": "eu-1"}, "X-Team": {"value": "billing"}, "Authorization": {"value": SECRET}}
    sub_id, me = _endpoint(browser, client, tenant, receiver.url, headers)
    form = _opened(me, sub_id)
    route, team, auth = _row(form, "X-Route"), _row(form, "X-Team"), _row(form, "Authorization")
    # ... the form shows the plain values, the sensitive one's field empty (its box ticked)
    assert (form[f"{route}_value"], form[f"{team}_value"], form[f"{auth}_value"]) == ("eu-1", "billing", "")
    assert form[f"{auth}_sensitive"] == "on"
    assert f"{team}_sensitive" not in form
    # WHEN the tenant changes X-Route's value, makes X-Team sensitive (its value as shown), and saves
    saved = _saved(me, sub_id, {**form, f"{route}_value": "us-1", f"{team}_sensitive": "on"})
    # THEN X-Route has its new value, X-Team is sensitive, and Authorization's stored value is kept
    assert saved.status_code == 303, _notes(saved.text)
    assert _stored(client, tenant, sub_id) == {
        "X-Route": {"value": "us-1", "sensitive": False},
        "X-Team": {"value": None, "sensitive": True},
        "Authorization": {"value": None, "sensitive": True},
    }
    # WHEN the tenant removes X-Route in the form opened again
    form = _opened(me, sub_id)
    saved = _saved(me, sub_id, {**form, f"{_row(form, 'X-Route')}_remove": "on"})
    # THEN it is gone, the others kept
    assert saved.status_code == 303, _notes(saved.text)
    assert sorted(_stored(client, tenant, sub_id)) == ["Authorization", "X-Team"]
    assert _stored_value(services, tenant, sub_id, "Authorization") == SECRET
    # WHEN the tenant types a new value in the sensitive header's empty field, THEN it replaces the stored one
    form = _opened(me, sub_id)
    saved = _saved(me, sub_id, {**form, f"{_row(form, 'Authorization')}_value": "Bearer another-0123456789"})
    assert saved.status_code == 303, _notes(saved.text)
    assert _stored_value(services, tenant, sub_id, "Authorization") == "Bearer another-0123456789"
    # WHEN the tenant unticks X-Team's sensitive box without typing its value again
    form = _opened(me, sub_id)
    team = _row(form, "X-Team")
    refused = _saved(me, sub_id, {key: value for key, value in form.items() if key != f"{team}_sensitive"})
    # THEN the API's rule answers: its value is needed again to show it (422)
    assert refused.status_code == 422, _notes(refused.text)
    assert "header 'X-Team' is sensitive: give its value again to make it non-sensitive" in _notes(refused.text)
    # ... and with its value typed again, it is saved non-sensitive
    again = {key: value for key, value in _form(refused.text).items() if key != f"{team}_sensitive"}
    saved = _saved(me, sub_id, {**again, f"{team}_value": "payments"})
    assert saved.status_code == 303, _notes(saved.text)
    assert _stored(client, tenant, sub_id)["X-Team"] == {"value": "payments", "sensitive": False}


def test_a_new_endpoint_is_created_with_headers(browser: Browser, client: TestClient, tenant: TenantInfo) -> None:
    # GIVEN a signed-in tenant on the new endpoint form
    me = browser()
    csrf = sign_in(me, tenant.id)
    page = me.get("/portal/endpoints/new")
    assert 'name="new_header_1_name"' in page.text
    # WHEN it creates an endpoint with a header and a sensitive one
    form = {
        "csrf_token": csrf,
        "url": "http://127.0.0.1:9/hook",
        "event_types": "invoice.paid",
        "new_header_1_name": "X-Route",
        "new_header_1_value": "eu-1",
        "new_header_3_name": "X-Api-Key",
        "new_header_3_value": "k3y-value",
    }
    created = me.post("/portal/endpoints", data=form, follow_redirects=False)
    # THEN the endpoint has both, the key masked (its name makes it sensitive, ticked or not)
    assert created.status_code == 303, _notes(created.text)
    sub_id = created.headers["location"].split("/endpoints/")[1].split("?")[0]
    assert _stored(client, tenant, sub_id) == {
        "X-Route": {"value": "eu-1", "sensitive": False},
        "X-Api-Key": {"value": None, "sensitive": True},
    }
    assert "k3y-value" not in me.get(f"/portal/endpoints/{sub_id}").text
    # WHEN another is created with a reserved header, THEN the form comes back with the API's reason and what was typed
    refused = me.post(
        "/portal/endpoints", data={**form, "new_header_1_name": "Webhook-Signature", "new_header_1_value": "v1,x"}
    )
    assert refused.status_code == 422
    assert "header 'Webhook-Signature' cannot be set: Herald sets the webhook-* signature headers" in _notes(
        refused.text
    )
    again = _form_of_new(refused.text)
    assert (again["url"], again["new_header_1_name"], again["new_header_1_value"]) == (
        "http://127.0.0.1:9/hook",
        "Webhook-Signature",
        "v1,x",
    )
    assert len(client.get("/v1/subscriptions", headers=tenant.headers).json()["data"]) == 1


def _new_rows(page: str) -> tuple[int, int]:
    """How many new-header rows ``page`` shows at once, and how many are behind "More header rows"."""
    shown, _, more = page.partition('<details id="more-header-rows">')
    return shown.count('name="new_header_'), more.count('name="new_header_')


def test_the_forms_offer_rows_up_to_the_limit_the_first_three_shown(
    browser: Browser, client: TestClient, tenant: TenantInfo
) -> None:
    # GIVEN a signed-in tenant
    me = browser()
    csrf = sign_in(me, tenant.id)
    # WHEN it opens the new endpoint form, THEN it has a row for each header an endpoint may have (20), three shown
    # and the rest behind "More header rows" (3 fields a row: name, value, sensitive)
    assert _new_rows(me.get("/portal/endpoints/new").text) == (3 * 3, 17 * 3)
    # WHEN it creates an endpoint with five headers in one save, two of them typed in the rows behind "More"
    form = {"csrf_token": csrf, "url": "http://127.0.0.1:9/hook", "event_types": "invoice.paid"}
    form |= {f"new_header_{n}_name": f"X-H{n}" for n in range(1, 6)}
    form |= {f"new_header_{n}_value": f"v{n}" for n in range(1, 6)}
    created = me.post("/portal/endpoints", data=form, follow_redirects=False)
    # THEN it has all five
    assert created.status_code == 303, _notes(created.text)
    sub_id = created.headers["location"].split("/endpoints/")[1].split("?")[0]
    assert _stored(client, tenant, sub_id) == {f"X-H{n}": {"value": f"v{n}", "sensitive": False} for n in range(1, 6)}
    # AND its edit form offers as many new rows as it can still take (15), three shown
    assert _new_rows(me.get(f"/portal/endpoints/{sub_id}/edit").text) == (3 * 3, 12 * 3)
    # AND an endpoint at the limit still shows three (the API says there are too many), with none behind "More"
    _patched(client, tenant, sub_id, {"headers": {f"X-H{n}": {"value": "v"} for n in range(1, 21)}})
    assert _new_rows(me.get(f"/portal/endpoints/{sub_id}/edit").text) == (3 * 3, 0)


def _form_of_new(page: str) -> dict[str, Any]:
    """The new endpoint form's fields in ``page`` (the edit form's reader, on the form posted to the list)."""
    return _form(page.replace('action="/portal/endpoints"', 'action="/portal/endpoints/new/edit"'))


def _too_many() -> dict[str, Any]:
    return {f"X-H{n}": {"value": "v"} for n in range(20)}


@pytest.mark.parametrize(
    ("existing", "typed", "message"),
    [
        ({}, {"name": "X Bad", "value": "v"}, "header name 'X Bad' is not an HTTP token"),
        ({}, {"name": "webhook_signature", "value": "v"}, "header 'webhook_signature' cannot be set: Herald sets"),
        ({}, {"name": "X-Line", "value": "a\r\nX-Injected: 1"}, "the value of header 'X-Line' must be visible ASCII"),
        ({}, {"name": "X-New", "value": ""}, "header 'X-New' is not set yet: give its value"),
        ({}, {"name": "", "value": "orphan-value"}, "a new header has a value but no name"),
        ({"X-Route": {"value": "eu-1"}}, {"name": "x_route", "value": "v"}, "header 'x_route' is given twice"),
        (_too_many(), {"name": "X-One-More", "value": "v"}, "21 headers; at most 20"),
    ],
    ids=["name", "reserved", "crlf", "no-value", "no-name", "duplicate", "too-many"],
)
def test_a_refused_header_answers_the_form_again_with_what_was_typed(
    browser: Browser,
    client: TestClient,
    tenant: TenantInfo,
    receiver: Receiver,
    existing: dict[str, Any],
    typed: dict[str, str],
    message: str,
) -> None:
    # GIVEN an endpoint (with headers set through the API, for some), whose form the tenant opened
    sub_id, me = _endpoint(browser, client, tenant, receiver.url, existing)
    form = _opened(me, sub_id)
    before = _stored(client, tenant, sub_id)
    # WHEN the tenant saves it with a new description, and a header the API refuses in a new row
    row = {"new_header_1_name": typed["name"], "new_header_1_value": typed["value"], "new_header_1_sensitive": "on"}
    refused = _saved(me, sub_id, {**form, "description": "Billing", **row})
    # THEN the form comes back (422, never a 500) with the API's message
    assert refused.status_code == 422, refused.text[:500]
    assert any(message in note for note in _notes(refused.text)), _notes(refused.text)
    # ... with every value typed kept (a typed value, sensitive or not, is the tenant's own, in a page never cached)
    assert refused.headers["cache-control"] == "no-store"
    again = _form(refused.text)
    assert again["description"] == "Billing"
    assert (again["new_header_1_name"], again["new_header_1_value"]) == (typed["name"], typed["value"].strip())
    assert again["new_header_1_sensitive"] == "on"
    # ... and nothing saved
    assert _stored(client, tenant, sub_id) == before
    assert client.get(f"/v1/subscriptions/{sub_id}", headers=tenant.headers).json()["description"] == ""


def test_a_header_changed_through_the_api_while_the_form_was_open_is_kept(
    browser: Browser, client: TestClient, services: Services, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint with two headers, one sensitive, whose form the tenant opened
    headers = {"X-Route": {"value": "eu-1"}, "X-Token": {"value": "first-token"}}
    sub_id, me = _endpoint(browser, client, tenant, receiver.url, headers)
    form = _opened(me, sub_id)
    # AND through the API meanwhile, the sensitive one got another value, and a header was added
    _patched(client, tenant, sub_id, {"headers": {"X-Token": {"value": "second-token"}, "X-Team": {"value": "ops"}}})
    # WHEN the tenant changes X-Route's value and adds a header in the form
    added = {"new_header_1_name": "X-Shop", "new_header_1_value": "eu"}
    saved = _saved(me, sub_id, {**form, f"{_row(form, 'X-Route')}_value": "us-1", **added})
    # THEN its changes are saved, and the API's kept: the added header, and the sensitive value set meanwhile
    assert saved.status_code == 303, _notes(saved.text)
    assert _stored(client, tenant, sub_id) == {
        "X-Route": {"value": "us-1", "sensitive": False},
        "X-Token": {"value": None, "sensitive": True},
        "X-Team": {"value": "ops", "sensitive": False},
        "X-Shop": {"value": "eu", "sensitive": False},
    }
    assert _stored_value(services, tenant, sub_id, "X-Token") == "second-token"


def test_a_header_the_tenant_changed_that_was_changed_through_the_api_too_is_a_conflict(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint with two headers whose form the tenant opened, and X-Route changed through the API meanwhile
    headers = {"X-Route": {"value": "eu-1"}, "X-Team": {"value": "billing"}}
    sub_id, me = _endpoint(browser, client, tenant, receiver.url, headers)
    form = _opened(me, sub_id)
    _patched(client, tenant, sub_id, {"headers": {"X-Route": {"value": "eu-2"}}})
    # WHEN the tenant removes X-Route and changes X-Team
    mine = {f"{_row(form, 'X-Route')}_remove": "on", f"{_row(form, 'X-Team')}_value": "payments"}
    refused = _saved(me, sub_id, {**form, **mine})
    # THEN the form comes back (409) saying so, nothing saved; X-Route shown as it is now, X-Team as the tenant left it
    assert refused.status_code == 409, _notes(refused.text)
    notes = _notes(refused.text)
    assert "in fields you changed too: custom headers." in notes[0]
    assert "Custom headers: you removed X-Route; it is now “eu-2”." in notes
    assert _stored(client, tenant, sub_id) == {
        "X-Route": {"value": "eu-2", "sensitive": False},
        "X-Team": {"value": "billing", "sensitive": False},
    }
    again = _form(refused.text)
    route, team = _row(again, "X-Route"), _row(again, "X-Team")
    assert (again[f"{route}_value"], again[f"{team}_value"]) == ("eu-2", "payments")
    assert f"{route}_remove" not in again
    # WHEN the tenant saves that form, THEN X-Team's change is saved, X-Route kept as the API set it
    saved = _saved(me, sub_id, again)
    assert saved.status_code == 303, _notes(saved.text)
    assert _stored(client, tenant, sub_id) == {
        "X-Route": {"value": "eu-2", "sensitive": False},
        "X-Team": {"value": "payments", "sensitive": False},
    }


def test_an_edit_form_rendered_before_it_carried_headers_still_saves_over_a_change_made_meanwhile(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint with a header, whose edit form was rendered before the form carried headers (no header rows,
    # no headers in what it showed)
    sub_id, me = _endpoint(browser, client, tenant, receiver.url, {"X-Route": {"value": "eu-1"}})
    form = {key: value for key, value in _opened(me, sub_id).items() if not key.startswith(("header_", "new_header_"))}
    shown = json.loads(form["shown"])
    del shown["headers"]
    form["shown"] = json.dumps(shown, separators=(",", ":"))
    # AND its rate limit changed through the API meanwhile
    _patched(client, tenant, sub_id, {"rate_limit": 5})
    # WHEN the tenant saves that form with a new description
    saved = _saved(me, sub_id, {**form, "description": "Billing"})
    # THEN it is saved, the change made meanwhile and the header kept
    assert saved.status_code == 303, _notes(saved.text)
    stored = client.get(f"/v1/subscriptions/{sub_id}", headers=tenant.headers).json()
    assert (stored["description"], stored["rate_limit"]) == ("Billing", 5)
    assert stored["headers"] == {"X-Route": {"value": "eu-1", "sensitive": False}}


def test_a_header_made_sensitive_in_the_form_and_through_the_api_meanwhile_is_no_conflict(
    browser: Browser, client: TestClient, services: Services, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint with a header whose form the tenant opened, the header made sensitive through the API meanwhile
    sub_id, me = _endpoint(browser, client, tenant, receiver.url, {"X-Team": {"value": "billing"}})
    form = _opened(me, sub_id)
    _patched(client, tenant, sub_id, {"headers": {"X-Team": {"sensitive": True}}})
    # WHEN the tenant ticks its sensitive box too, and saves
    saved = _saved(me, sub_id, {**form, f"{_row(form, 'X-Team')}_sensitive": "on"})
    # THEN it is saved (both made it what it is), its value kept
    assert saved.status_code == 303, _notes(saved.text)
    assert _stored(client, tenant, sub_id) == {"X-Team": {"value": None, "sensitive": True}}
    assert _stored_value(services, tenant, sub_id, "X-Team") == "billing"


def test_each_of_several_header_problems_is_said_once(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint whose form the tenant opened
    sub_id, me = _endpoint(browser, client, tenant, receiver.url)
    form = _opened(me, sub_id)
    # WHEN the tenant adds two headers the API refuses, for two reasons
    rows = {
        "new_header_1_name": "Host",
        "new_header_1_value": "x",
        "new_header_2_name": "X-A",
        "new_header_2_value": "\u00e9",
    }
    refused = _saved(me, sub_id, {**form, **rows})
    # THEN the form says each once
    assert refused.status_code == 422, refused.text[:500]
    notes = _notes(refused.text)
    for name in ("'Host'", "'X-A'"):
        assert sum(name in note for note in notes) == 1, notes


def test_a_sensitive_value_is_in_no_portal_page(
    browser: Browser, client: TestClient, services: Services, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint with a sensitive header and one whose value is an authentication scheme's
    headers = {"X-Gateway": {"value": "gw-s3cr3t-value", "sensitive": True}, "X-Forward": {"value": SECRET}}
    sub_id, me = _endpoint(browser, client, tenant, receiver.url, headers)
    # WHEN the tenant reads its pages, saves the form unchanged, and gets a conflict and a refusal
    form = _opened(me, sub_id)
    pages = [me.get(path).text for path in ("/portal/endpoints", f"/portal/endpoints/{sub_id}")]
    pages.append(me.get(f"/portal/endpoints/{sub_id}/edit").text)
    saved = _saved(me, sub_id, form)
    assert saved.status_code == 303, _notes(saved.text)
    pages.append(me.get(saved.headers["location"]).text)
    _patched(client, tenant, sub_id, {"headers": {"X-Route": {"value": "eu-2"}}})
    conflict = _saved(me, sub_id, {**form, "new_header_1_name": "X-Route", "new_header_1_value": "eu-3"})
    assert conflict.status_code == 409, _notes(conflict.text)
    pages.append(conflict.text)
    refused = _saved(me, sub_id, {**_opened(me, sub_id), "new_header_1_name": "Host", "new_header_1_value": "x"})
    assert refused.status_code == 422, _notes(refused.text)
    pages.append(refused.text)
    # THEN no page carries either stored value (nor its name's row a value field with it)
    for page in pages:
        assert "gw-s3cr3t-value" not in page
        assert "8f14e45fceea167a" not in page
    # AND the values are kept as stored
    assert _stored(client, tenant, sub_id)["X-Gateway"] == {"value": None, "sensitive": True}
    assert _stored_value(services, tenant, sub_id, "X-Gateway") == "gw-s3cr3t-value"


def test_header_names_and_values_with_quotes_and_brackets_are_escaped(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint whose form the tenant opened
    sub_id, me = _endpoint(browser, client, tenant, receiver.url)
    form = _opened(me, sub_id)
    value = "\"><script>alert('x')</script>"
    # WHEN it adds a header whose value has quotes and brackets, THEN it is saved as typed and shown escaped
    saved = _saved(me, sub_id, {**form, "new_header_1_name": "X-Odd", "new_header_1_value": value})
    assert saved.status_code == 303, _notes(saved.text)
    assert _stored(client, tenant, sub_id)["X-Odd"]["value"] == value
    for path in (f"/portal/endpoints/{sub_id}", f"/portal/endpoints/{sub_id}/edit"):
        page = me.get(path).text
        assert "<script>alert" not in page
    form = _opened(me, sub_id)
    assert form[f"{_row(form, 'X-Odd')}_value"] == value
    # AND a name with brackets is refused, shown escaped
    refused = _saved(me, sub_id, {**form, "new_header_1_name": "<b>X", "new_header_1_value": "v"})
    assert refused.status_code == 422
    assert "<b>X" not in refused.text
    assert _form(refused.text)["new_header_1_name"] == "<b>X"


def test_a_read_session_or_a_post_without_the_csrf_token_changes_no_header(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint with a header, a manage session's form of it, and a read session
    sub_id, me = _endpoint(browser, client, tenant, receiver.url, {"X-Route": {"value": "eu-1"}})
    form = _opened(me, sub_id)
    reader = browser()
    read_csrf = sign_in(reader, tenant.id, "read")
    change = {f"{_row(form, 'X-Route')}_remove": "on", "new_header_1_name": "X-New", "new_header_1_value": "v"}
    # WHEN the read session posts the change, THEN it is refused (403)
    assert _saved(reader, sub_id, {**form, **change, "csrf_token": read_csrf}).status_code == 403
    assert reader.get(f"/portal/endpoints/{sub_id}/edit").status_code == 403
    # AND so is the manage session's post without its CSRF token
    assert _saved(me, sub_id, {**{k: v for k, v in form.items() if k != "csrf_token"}, **change}).status_code == 403
    # AND nothing changed
    assert _stored(client, tenant, sub_id) == {"X-Route": {"value": "eu-1", "sensitive": False}}


@pytest.mark.browser
def _edit_form_in_chromium(driver: WebDriver, served_app: str, tenant: TenantInfo, receiver: Receiver) -> str:
    """A new endpoint of ``tenant``'s at ``receiver``, its edit form open in the browser: its id."""
    body = {"url": receiver.url, "event_types": ["invoice.paid"]}
    created = httpx.post(f"{served_app}/v1/subscriptions", json=body, headers=tenant.headers)
    assert created.status_code == 201, created.text
    sub_id: str = created.json()["id"]
    portal_browser.signed_in(driver, served_app, tenant)
    portal_browser.open_page(driver, f"{served_app}/portal/endpoints/{sub_id}/edit")
    return sub_id


def test_in_chromium_a_tenant_adds_a_header_and_removes_it(
    driver: WebDriver, served_app: str, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint whose form is open in the browser
    sub_id = _edit_form_in_chromium(driver, served_app, tenant, receiver)
    # WHEN the tenant types a header and a sensitive one in the empty rows, and saves
    portal_browser.wait_for(driver, "#new-header-1-name").send_keys("X-Route")
    driver.find_element(By.ID, "new-header-1-value").send_keys("eu-1")
    driver.find_element(By.ID, "new-header-2-name").send_keys("X-Gateway")
    driver.find_element(By.ID, "new-header-2-value").send_keys("gw-s3cr3t-value")
    portal_browser.click(driver, "#new-header-2-sensitive")
    portal_browser.submitted(driver, "#save", "saved")
    # THEN the endpoint's page shows both, the sensitive value masked
    assert portal_browser.text_of(driver, "#headers") == "X-Route: eu-1, X-Gateway: (sensitive, set)"
    assert "gw-s3cr3t-value" not in driver.page_source
    url = f"{served_app}/v1/subscriptions/{sub_id}"
    assert httpx.get(url, headers=tenant.headers).json()["headers"] == {
        "X-Route": {"value": "eu-1", "sensitive": False},
        "X-Gateway": {"value": None, "sensitive": True},
    }
    # WHEN the tenant opens the form again (the sensitive field empty), and removes X-Route
    portal_browser.open_page(driver, f"{served_app}/portal/endpoints/{sub_id}/edit")
    assert driver.find_element(By.ID, "header-1-value").get_attribute("value") == ""
    assert "gw-s3cr3t-value" not in driver.page_source
    portal_browser.click(driver, "#header-0-remove")
    portal_browser.submitted(driver, "#save", "saved")
    # THEN only the sensitive header is left, its value kept
    assert portal_browser.text_of(driver, "#headers") == "X-Gateway: (sensitive, set)"
    portal_browser.accessible(driver)
    assert httpx.get(url, headers=tenant.headers).json()["headers"] == {"X-Gateway": {"value": None, "sensitive": True}}


def test_in_chromium_a_tenant_adds_four_headers_at_once(
    driver: WebDriver, served_app: str, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint whose form is open in the browser
    sub_id = _edit_form_in_chromium(driver, served_app, tenant, receiver)
    # WHEN the tenant fills the three rows shown, opens "More header rows" and fills a fourth, and saves
    for n in range(1, 4):
        portal_browser.wait_for(driver, f"#new-header-{n}-name").send_keys(f"X-H{n}")
        driver.find_element(By.ID, f"new-header-{n}-value").send_keys(f"v{n}")
    assert not driver.find_element(By.ID, "new-header-4-name").is_displayed()
    portal_browser.click(driver, "#more-header-rows summary")
    portal_browser.wait_for(driver, "#new-header-4-name").send_keys("X-H4")
    driver.find_element(By.ID, "new-header-4-value").send_keys("v4")
    portal_browser.accessible(driver)
    portal_browser.submitted(driver, "#save", "saved")
    # THEN the endpoint has all four
    url = f"{served_app}/v1/subscriptions/{sub_id}"
    assert httpx.get(url, headers=tenant.headers).json()["headers"] == {
        f"X-H{n}": {"value": f"v{n}", "sensitive": False} for n in range(1, 5)
    }
