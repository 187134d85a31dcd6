"""The portal's edit form against changes made while it was open (through the API, or on another page): a save
applies only the fields the tenant changed from what the form showed, and a field changed meanwhile that the tenant
changed too answers the form again (409) with the endpoint as it is, nothing overwritten."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from herald.catalog import catalog
from herald.faults import install
from tests import test_portal_browser as portal_browser
from tests.delivery_support import subscribe
from tests.portal_support import Browser, sign_in
from tests.support import Receiver, TenantInfo

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from selenium.webdriver.remote.webdriver import WebDriver

    from herald.services import Services

# The browser test's app and Chromium, as the portal's browser tests run them.
served_app = portal_browser.served_app
driver = portal_browser.driver


class _EditForm(HTMLParser):
    """The fields the edit form sends as a browser sends them: hidden, text, URL and number inputs, the ticked
    boxes, and each textarea's text (its first line break dropped, as HTML's parser does; line breaks as CR LF)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.fields: list[tuple[str, str]] = []
        self._in_form = False
        self._textarea: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = {key: value or "" for key, value in attrs}
        if tag == "form" and named.get("action", "").endswith("/edit"):
            self._in_form = True
        elif self._in_form and tag == "input":
            if named.get("type") != "checkbox" or "checked" in named:
                self.fields.append((named["name"], named.get("value", "")))
        elif self._in_form and tag == "textarea":
            self._textarea, self._text = named["name"], ""

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "textarea" and self._textarea is not None:
            text = self._text.removeprefix("\n")
            self.fields.append((self._textarea, text.replace("\r\n", "\n").replace("\n", "\r\n")))
            self._textarea = None


def _form(page: str) -> dict[str, Any]:
    """The edit form in ``page`` as ``data`` for a post: repeated fields (the event types) as lists."""
    reader = _EditForm()
    reader.feed(page)
    assert reader.fields, "the page has the edit form"
    form: dict[str, Any] = {}
    for name, value in reader.fields:
        if name in form:
            form[name] = [*(form[name] if isinstance(form[name], list) else [form[name]]), value]
        else:
            form[name] = value
    return form


def _opened(me: TestClient, sub_id: str) -> dict[str, Any]:
    page = me.get(f"/portal/endpoints/{sub_id}/edit")
    assert page.status_code == 200, page.text[:300]
    return _form(page.text)


def _endpoint_and_portal(browser: Browser, client: TestClient, tenant: TenantInfo, url: str) -> tuple[Any, TestClient]:
    """A new endpoint at ``url``, and the tenant signed in to the portal in a browser of its own."""
    sub = subscribe(client, tenant, url)
    me = browser()
    sign_in(me, tenant.id)
    return sub, me


def _saved(me: TestClient, sub_id: str, form: dict[str, Any]) -> httpx.Response:
    response: httpx.Response = me.post(f"/portal/endpoints/{sub_id}/edit", data=form, follow_redirects=False)
    return response


def _stored(client: TestClient, tenant: TenantInfo, sub_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/subscriptions/{sub_id}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _patched(client: TestClient, tenant: TenantInfo, sub_id: str, body: dict[str, Any]) -> None:
    response = client.patch(f"/v1/subscriptions/{sub_id}", json=body, headers=tenant.headers)
    assert response.status_code == 200, response.text


def _notes(page: str) -> list[str]:
    return [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", page, re.S)]


def test_a_form_opened_before_an_api_change_saves_only_what_the_tenant_changed(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint of invoice.paid whose form the tenant opened
    sub, me = _endpoint_and_portal(browser, client, tenant, receiver.url)
    form = _opened(me, sub.id)
    # AND its event types and rate limit changed through the API while the form was open
    _patched(client, tenant, sub.id, {"event_types": ["invoice.paid", "order.shipped"], "rate_limit": 5})
    # WHEN the tenant saves the form with only its description changed
    saved = _saved(me, sub.id, {**form, "description": "Billing"})
    # THEN it is saved, and the API's change stays: the form's stale values are not written back
    assert saved.status_code == 303, _notes(saved.text)
    after = _stored(client, tenant, sub.id)
    assert (after["event_types"], after["rate_limit"]) == (["invoice.paid", "order.shipped"], 5)
    assert after["description"] == "Billing"


def test_a_field_changed_meanwhile_that_the_tenant_changed_too_answers_the_form_again_with_its_current_value(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint whose form the tenant opened, and whose rate limit was set to 5 through the API meanwhile
    sub, me = _endpoint_and_portal(browser, client, tenant, receiver.url)
    form = _opened(me, sub.id)
    _patched(client, tenant, sub.id, {"rate_limit": 5})
    # WHEN the tenant saves a rate limit of 10 and a description
    refused = _saved(me, sub.id, {**form, "rate_limit": "10", "description": "Billing"})
    # THEN the form comes back (409) saying the endpoint changed meanwhile, and what the tenant had entered
    assert refused.status_code == 409, _notes(refused.text)
    notes = _notes(refused.text)
    assert "changed elsewhere" in notes[0]
    assert "rate limit" in notes[0]
    assert "Rate limit: you entered 10; it is now 5." in notes
    # ... showing the rate limit as it is now, the tenant's other change kept in it
    again = _form(refused.text)
    assert (again["rate_limit"], again["description"]) == ("5", "Billing")
    # ... and nothing was saved
    after = _stored(client, tenant, sub.id)
    assert (after["rate_limit"], after["description"]) == (5, "")
    # WHEN the tenant sends that form again with its rate limit of 10, THEN both changes are saved
    saved = _saved(me, sub.id, {**again, "rate_limit": "10"})
    assert saved.status_code == 303, _notes(saved.text)
    after = _stored(client, tenant, sub.id)
    assert (after["rate_limit"], after["description"]) == (10, "Billing")


def test_the_same_change_made_meanwhile_is_no_conflict(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN a form opened, and the endpoint moved to order.shipped through the API meanwhile
    sub, me = _endpoint_and_portal(browser, client, tenant, receiver.url)
    form = _opened(me, sub.id)
    _patched(client, tenant, sub.id, {"event_types": ["order.shipped"]})
    # WHEN the tenant makes the same change in the form, THEN it is saved
    saved = _saved(me, sub.id, {**form, "event_types": "order.shipped"})
    assert saved.status_code == 303, _notes(saved.text)
    assert _stored(client, tenant, sub.id)["event_types"] == ["order.shipped"]


@pytest.mark.parametrize(
    ("option", "shown", "replaced"),
    [
        ("filter", {"amount_cents": {"$gte": 1000}}, {"amount_cents": {"$gte": 5000}}),
        ("transform", "{amount: data.amount_cents}", "{cents: data.amount_cents}"),
    ],
)
def test_removing_a_filter_or_transform_removes_the_one_the_form_showed(
    browser: Browser,
    client: TestClient,
    tenant: TenantInfo,
    receiver: Receiver,
    option: str,
    shown: object,
    replaced: object,
) -> None:
    # GIVEN an endpoint with a filter (or a transform) set through the API, whose form the tenant opened
    sub = subscribe(client, tenant, receiver.url)
    _patched(client, tenant, sub.id, {option: shown})
    me = browser()
    sign_in(me, tenant.id)
    form = {**_opened(me, sub.id), "remove": option}
    # AND the option was replaced through the API meanwhile
    _patched(client, tenant, sub.id, {option: replaced})
    stored = _stored(client, tenant, sub.id)[option]
    # WHEN the tenant saves the form with the option's removal ticked
    refused = _saved(me, sub.id, form)
    # THEN the form comes back (409), offering to remove the option as it is now (not ticked), which stays
    assert refused.status_code == 409, _notes(refused.text)
    assert any(note.startswith(f"{option.capitalize()}: you removed") for note in _notes(refused.text))
    assert "remove" not in _form(refused.text)
    assert f'id="remove-{option}"' in refused.text
    assert _stored(client, tenant, sub.id)[option] == stored

    # GIVEN a form opened on the option as it is now, and the description changed through the API meanwhile
    form = {**_opened(me, sub.id), "remove": option}
    _patched(client, tenant, sub.id, {"description": "Billing"})
    # WHEN the tenant removes the option, THEN it is removed, and the API's description stays
    saved = _saved(me, sub.id, form)
    assert saved.status_code == 303, _notes(saved.text)
    after = _stored(client, tenant, sub.id)
    assert (after[option], after["description"]) == (None, "Billing")


def test_an_endpoint_over_limits_lowered_since_changes_its_rate_limit_in_the_portal_as_through_the_api(
    browser: Browser,
    client: TestClient,
    services: Services,
    tenant: TenantInfo,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN an endpoint of three event types, with a description and metadata
    sub = subscribe(client, tenant, receiver.url, ["herald.ping", "invoice.paid", "order.shipped"])
    description, metadata = "Billing webhooks of the EU shop", {"team": "payments", "note": "x" * 100}
    _patched(client, tenant, sub.id, {"description": description, "metadata": metadata})
    # AND the operator lowered the limits since: two event types, ten characters of description, 64 bytes of metadata
    lowered = {"max_event_types_per_subscription": 2, "max_description_length": 10, "max_metadata_bytes": 64}
    monkeypatch.setattr(services, "settings", services.settings.model_copy(update=lowered))
    me = browser()
    sign_in(me, tenant.id)
    form = _opened(me, sub.id)
    # WHEN the tenant changes only its rate limit in the portal
    saved = _saved(me, sub.id, {**form, "rate_limit": "5"})
    # THEN it is saved, the other fields as they were (not checked again), as the API's PATCH of it is
    assert saved.status_code == 303, _notes(saved.text)
    after = _stored(client, tenant, sub.id)
    assert after["rate_limit"] == 5
    assert (after["event_types"], after["description"], after["metadata"]) == (
        ["herald.ping", "invoice.paid", "order.shipped"],
        description,
        metadata,
    )
    _patched(client, tenant, sub.id, {"rate_limit": 6})
    # ... while a description changed in the form is checked against the limit as it is now
    refused = _saved(me, sub.id, {**_opened(me, sub.id), "description": "Billing webhooks"})
    assert refused.status_code == 422
    assert any("the limit is 10" in note for note in _notes(refused.text))


def test_a_form_of_an_older_version_that_does_not_say_what_it_showed_saves_nothing(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN a form opened, the endpoint's rate limit changed through the API meanwhile
    sub, me = _endpoint_and_portal(browser, client, tenant, receiver.url)
    form = _opened(me, sub.id)
    _patched(client, tenant, sub.id, {"rate_limit": 5})
    # WHEN it is sent with its version, but its shown values cut off (what it sends may be stale)
    refused = _saved(me, sub.id, {**form, "shown": form["shown"][:10], "description": "Billing"})
    # THEN it comes back (409) with the endpoint as it is, and nothing changed
    assert refused.status_code == 409, _notes(refused.text)
    assert "does not say what it showed" in _notes(refused.text)[0]
    assert (_form(refused.text)["rate_limit"], _form(refused.text)["description"]) == ("5", "")
    after = _stored(client, tenant, sub.id)
    assert (after["rate_limit"], after["description"]) == (5, "")


def test_a_change_written_between_the_forms_read_and_its_save_is_merged_again(
    browser: Browser,
    client: TestClient,
    services: Services,
    tenant: TenantInfo,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a form opened, and a change of the rate limit that lands between the save's read and its write
    sub, me = _endpoint_and_portal(browser, client, tenant, receiver.url)
    form = _opened(me, sub.id)
    store = services.store.subscriptions
    replace = store.replace
    raced: list[bool] = []

    def racing(old: Any, new: Any) -> None:
        if not raced:
            raced.append(True)
            replace(old, old.model_copy(update={"rate_limit": 7, "version": old.version + 1}))
        replace(old, new)

    monkeypatch.setattr(store, "replace", racing)
    # WHEN the tenant saves a description
    saved = _saved(me, sub.id, {**form, "description": "Billing"})
    # THEN the save is merged again over the endpoint as it is: both changes stay
    assert saved.status_code == 303, _notes(saved.text)
    assert raced == [True]
    after = _stored(client, tenant, sub.id)
    assert (after["rate_limit"], after["description"]) == (7, "Billing")


@pytest.mark.browser
def test_in_chromium_a_form_open_during_an_api_change_keeps_it_and_says_so_on_a_conflict(
    driver: WebDriver, served_app: str, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint of invoice.paid whose form is open in the browser
    body = {"url": receiver.url, "event_types": ["invoice.paid"], "description": 'Billing "EU" <shop>\nline two'}
    created = httpx.post(f"{served_app}/v1/subscriptions", json=body, headers=tenant.headers)
    assert created.status_code == 201, created.text
    sub_id = created.json()["id"]
    portal_browser.signed_in(driver, served_app, tenant)
    portal_browser.open_page(driver, f"{served_app}/portal/endpoints/{sub_id}/edit")
    # AND its event types and rate limit change through the API meanwhile
    patch = {"event_types": ["invoice.paid", "order.shipped"], "rate_limit": 5}
    patched = httpx.patch(f"{served_app}/v1/subscriptions/{sub_id}", json=patch, headers=tenant.headers)
    assert patched.status_code == 200, patched.text
    # WHEN the tenant sets a rate limit of 10 in the form and saves
    portal_browser.wait_for(driver, "#rate_limit").send_keys("10")
    portal_browser.click(driver, "#save")
    # THEN the form comes back saying the endpoint changed in its rate limit (the description the form showed, with
    # its quotes, brackets and line break, read back as it was), showing the rate limit of 5
    assert "in fields you changed too: rate limit." in portal_browser.text_of(driver, "#form-errors")
    assert portal_browser.wait_for(driver, "#rate_limit").get_attribute("value") == "5"
    portal_browser.accessible(driver)
    # WHEN the tenant enters 10 again and saves, THEN it is saved, the API's event types and the description kept
    field = driver.find_element(By.ID, "rate_limit")
    field.clear()
    field.send_keys("10")
    portal_browser.submitted(driver, "#save", "saved")
    after = httpx.get(f"{served_app}/v1/subscriptions/{sub_id}", headers=tenant.headers).json()
    assert (after["event_types"], after["rate_limit"]) == (["invoice.paid", "order.shipped"], 10)
    assert after["description"] == body["description"]


def test_an_event_type_the_catalog_no_longer_lists_is_kept_unless_the_tenant_unticks_it(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an endpoint of two event types, one of which the catalog has since dropped (a deploy that retired it)
    sub, me = _endpoint_and_portal(browser, client, tenant, receiver.url)
    _patched(client, tenant, sub.id, {"event_types": ["invoice.paid", "order.shipped"]})
    monkeypatch.delitem(catalog._types, "order.shipped")
    # WHEN the tenant opens its form
    form = _opened(me, sub.id)
    # THEN the retired type has a box of its own, ticked
    assert "no longer in the catalog" in me.get(f"/portal/endpoints/{sub.id}/edit").text
    assert form["event_types"] == ["invoice.paid", "order.shipped"]
    # WHEN the event types change through the API meanwhile (the retired type kept), and the tenant saves only a new
    # description
    _patched(client, tenant, sub.id, {"event_types": ["invoice.paid", "order.shipped", "subscription.created"]})
    saved = _saved(me, sub.id, {**form, "description": "Billing"})
    # THEN it is saved, no conflict, and every event type is kept
    assert saved.status_code == 303, _notes(saved.text)
    after = _stored(client, tenant, sub.id)
    assert (after["event_types"], after["description"]) == (
        ["invoice.paid", "order.shipped", "subscription.created"],
        "Billing",
    )
    # WHEN the tenant changes the event types, the retired one still ticked
    form = _opened(me, sub.id)
    fewer = {**form, "event_types": ["invoice.paid", "order.shipped"]}
    # THEN the change is saved, the retired type kept (only a type added is checked against the catalog)
    assert _saved(me, sub.id, fewer).status_code == 303
    assert _stored(client, tenant, sub.id)["event_types"] == ["invoice.paid", "order.shipped"]
    # WHEN the tenant unticks the retired type
    untick = {**_opened(me, sub.id), "event_types": ["invoice.paid"]}
    # THEN it is removed, and cannot be added again
    assert _saved(me, sub.id, untick).status_code == 303
    assert _stored(client, tenant, sub.id)["event_types"] == ["invoice.paid"]
    again = client.patch(
        f"/v1/subscriptions/{sub.id}", json={"event_types": ["invoice.paid", "order.shipped"]}, headers=tenant.headers
    )
    assert again.status_code == 422, again.text


def test_a_subscription_of_retired_types_only_takes_no_filter_or_transform_it_could_not_be_checked_against(
    client: TestClient, tenant: TenantInfo, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscription of two types, one of which the catalog has since dropped
    sub = subscribe(client, tenant, receiver.url)
    _patched(client, tenant, sub.id, {"event_types": ["invoice.paid", "order.shipped"]})
    monkeypatch.delitem(catalog._types, "order.shipped")
    path = f"/v1/subscriptions/{sub.id}"
    # WHEN it keeps only the retired type, with a transform
    narrowed = client.patch(path, json={"event_types": ["order.shipped"], "transform": "`5`"}, headers=tenant.headers)
    # THEN it is a 422: no catalog type is left to check the transform against (it would fail every delivery)
    assert narrowed.status_code == 422, narrowed.text
    assert narrowed.json()["error"]["details"][0]["type"] == "transform_unchecked"
    # AND narrowed to the retired type alone, a filter set then is refused too
    assert client.patch(path, json={"event_types": ["order.shipped"]}, headers=tenant.headers).status_code == 200
    filtered = client.patch(path, json={"filter": {"carrier": "DHL"}}, headers=tenant.headers)
    assert filtered.status_code == 422, filtered.text
    assert filtered.json()["error"]["details"][0]["type"] == "filter_unchecked"


def test_a_subscription_of_retired_types_only_keeps_its_options_sent_back_as_they_are(
    client: TestClient, tenant: TenantInfo, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscription with a filter and a transform, whose one type the catalog has since dropped
    made = client.post(
        "/v1/subscriptions",
        json={
            "url": receiver.url,
            "event_types": ["order.shipped"],
            "filter": {"carrier": "DHL"},
            "transform": "{c: data.carrier}",
        },
        headers=tenant.headers,
    )
    assert made.status_code == 201, made.text
    monkeypatch.delitem(catalog._types, "order.shipped")
    path = f"/v1/subscriptions/{made.json()['id']}"
    # WHEN a client PATCHes back the whole object it read, with a new description
    stored = client.get(path, headers=tenant.headers).json()
    fields = ("url", "event_types", "metadata", "filter", "transform")
    sent_back = client.patch(path, json={**{k: stored[k] for k in fields}, "description": "z"}, headers=tenant.headers)
    # THEN it is saved: the options sent as they are stored are no change, and are kept
    assert sent_back.status_code == 200, sent_back.text
    assert (sent_back.json()["filter"], sent_back.json()["transform"]) == ({"carrier": "DHL"}, "{c: data.carrier}")
    # AND a dry run of a transform it could not take is refused as setting it is
    dry = client.post(f"{path}/transform/dry-run", json={"transform": "`5`"}, headers=tenant.headers)
    assert dry.status_code == 422, dry.text
    assert dry.json()["error"]["details"][0]["type"] == "transform_unchecked"


@pytest.mark.parametrize(
    "fault",
    [
        "dynamodb.TransactWriteItems:lost=calls:1",  # saved, its answer lost after botocore's retries
        "dynamodb.TransactWriteItems:5xx@call=calls:1",  # an outage: not saved
    ],
    ids=["saved-unanswered", "not-saved"],
)
def test_a_save_that_got_no_answer_answers_the_form_again_as_typed_and_sent_again_saves_it(
    browser: Browser, client: TestClient, tenant: TenantInfo, services: Services, receiver: Receiver, fault: str
) -> None:
    # GIVEN an endpoint whose form the tenant opened and filled in, and DynamoDB giving its save no answer
    sub, me = _endpoint_and_portal(browser, client, tenant, receiver.url)
    typed = {**_opened(me, sub.id), "description": "Billing, typed at length", "metadata": "team=billing\r\nowner=ann"}
    injector = install(services.store.client, fault)
    assert injector is not None
    # WHEN the tenant saves it
    failed = _saved(me, sub.id, typed)
    # THEN the form comes back (503, Retry-After) with what the tenant typed, saying the changes may have been saved
    assert [hit.operation for hit in injector.injected] == ["TransactWriteItems"]
    assert failed.status_code == 503, _notes(failed.text)
    assert failed.headers["retry-after"] == "1"
    assert any("may have been saved" in note for note in _notes(failed.text))
    again = _form(failed.text)
    assert (again["description"], again["metadata"]) == (typed["description"], typed["metadata"])
    # WHEN the tenant sends the form it got back
    saved = _saved(me, sub.id, again)
    # THEN the changes are saved, once
    assert saved.status_code == 303, _notes(saved.text)
    after = _stored(client, tenant, sub.id)
    assert (after["description"], after["metadata"]) == (
        "Billing, typed at length",
        {"team": "billing", "owner": "ann"},
    )


def test_a_save_whose_read_again_after_a_change_meanwhile_got_no_answer_answers_the_form_again_as_typed(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an endpoint whose form the tenant opened and filled in, its save refused for a change made meanwhile (the
    # endpoint's version moved), and DynamoDB giving no answer to the form's read of the endpoint again
    from herald.domain import subscriptions
    from herald.errors import ConflictError, ServiceUnavailableError
    from herald.portal import endpoints

    sub, me = _endpoint_and_portal(browser, client, tenant, receiver.url)
    typed = {**_opened(me, sub.id), "description": "Billing, typed at length"}
    find = endpoints._find
    reads: list[str] = []

    def find_then_fail(guest: Any, sub_id: str) -> Any:
        reads.append(sub_id)
        if len(reads) > 1:
            raise ServiceUnavailableError("DynamoDB get_item failed: ProvisionedThroughputExceededException")
        return find(guest, sub_id)

    async def changed_meanwhile(*_: Any, **__: Any) -> Any:
        raise ConflictError("the subscription changed meanwhile; read it again and retry")

    monkeypatch.setattr(endpoints, "_find", find_then_fail)
    monkeypatch.setattr(subscriptions, "update", changed_meanwhile)
    # WHEN the tenant saves it
    failed = _saved(me, sub.id, typed)
    # THEN the form comes back (503, Retry-After) with what the tenant typed, not a page without it
    assert reads == [sub.id, sub.id]
    assert failed.status_code == 503, _notes(failed.text)
    assert failed.headers["retry-after"] == "1"
    assert any("may have been saved" in note for note in _notes(failed.text))
    assert _form(failed.text)["description"] == typed["description"]


def test_a_form_sent_again_after_a_save_made_unanswered_with_a_new_sensitive_header_reads_as_changed_elsewhere(
    browser: Browser, client: TestClient, tenant: TenantInfo, services: Services, receiver: Receiver
) -> None:
    # GIVEN an endpoint whose form the tenant filled in with a new sensitive header, saved by DynamoDB with the answer
    # lost (the form came back, 503)
    sub, me = _endpoint_and_portal(browser, client, tenant, receiver.url)
    typed = {
        **_opened(me, sub.id),
        "new_header_0_name": "X-Token",
        "new_header_0_value": "s3cret-value",
        "new_header_0_sensitive": "on",
    }
    install(services.store.client, "dynamodb.TransactWriteItems:lost=calls:1")
    failed = _saved(me, sub.id, typed)
    assert failed.status_code == 503, _notes(failed.text)
    # WHEN the tenant sends it again, the value typed again (a sensitive value is never shown back)
    again = _saved(me, sub.id, typed)
    # THEN the header's new value, never compared with the stored one, reads as changed elsewhere (409), and the first
    # save stands: the header set, sensitive, its value never shown
    assert again.status_code == 409, _notes(again.text)
    assert "s3cret-value" not in again.text
    assert _stored(client, tenant, sub.id)["headers"] == {"X-Token": {"value": None, "sensitive": True}}
    stored = services.store.subscriptions.get(tenant.id, sub.id)
    assert stored is not None
    assert [(header["name"], header["value"]) for header in stored.headers] == [("X-Token", "s3cret-value")]
