"""The endpoint forms' metadata field, one ``key=value`` a line, over HTTP against the real app: a line that is not
one (no ``=``, or a key given again) is refused with the form shown again as typed, naming the line, and nothing is
saved; blank lines and spaces around keys and values stay fine. And the rate limit field states the server's range."""

from __future__ import annotations

import html
import re

import httpx
import pytest
from fastapi.testclient import TestClient

from herald.schemas import MAX_RATE_LIMIT
from tests.delivery_support import subscribe
from tests.portal_support import Browser, sign_in
from tests.support import Receiver, TenantInfo

#: The endpoint's metadata before the edit form is sent.
STORED = {"team": "payments", "region": "us"}

NO_EQUALS = "metadata: line {} has no “=”: write key=value (key= for an empty value)"

#: Metadata fields as a browser sends them (line breaks as CR LF), and what the form answers of their lines.
REFUSED = [
    pytest.param("team=payments\r\nteam: payments-eu\r\n", [NO_EQUALS.format(2)], id="no-equals"),
    pytest.param(
        "region=eu\r\n\r\nregion = us\r\nteam=payments",
        ["metadata: “region” is given twice (lines 1 and 3): keep one"],
        id="repeated-key",
    ),
    pytest.param(
        "region=eu\r\nteam\r\nregion=us\r\n  region=ap  ",
        ["metadata: “region” is given 3 times (lines 1, 3 and 4): keep one", NO_EQUALS.format(2)],
        id="both-in-line-order",
    ),
    pytest.param("\r\nteam: payments", [NO_EQUALS.format(2)], id="after-a-first-blank-line"),
]


def _errors(response: httpx.Response) -> list[str]:
    """The form's list of what kept it from being saved."""
    found = re.search(r'<div class="errors" role="alert" id="form-errors">(.*?)</div>', response.text, re.S)
    assert found, f"the form says why it was not saved: {response.text[:300]}"
    return [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", found.group(1), re.S)]


def _metadata_field(response: httpx.Response) -> tuple[bool, str]:
    """The form's metadata field: whether it points at the form's errors, and its text as a browser shows it (HTML
    drops a line break right after ``<textarea>``), line breaks as LF."""
    found = re.search(r'<textarea id="metadata" name="metadata"([^>]*)>(.*?)</textarea>', response.text, re.S)
    assert found, "the form has its metadata field"
    return 'aria-describedby="form-errors"' in found.group(1), html.unescape(found.group(2)).removeprefix("\n")


def _edit_form(me: TestClient, tenant: TenantInfo, client: TestClient, receiver: Receiver) -> tuple[str, str]:
    """An endpoint with ``STORED`` metadata (set through the API), and a signed-in tenant's CSRF token."""
    sub = subscribe(client, tenant, receiver.url)
    patched = client.patch(f"/v1/subscriptions/{sub.id}", json={"metadata": STORED}, headers=tenant.headers)
    assert patched.status_code == 200, patched.text
    return sub.id, sign_in(me, tenant.id)


@pytest.mark.parametrize(("typed", "errors"), REFUSED)
def test_metadata_lines_that_are_not_key_value_are_refused_on_the_edit_form(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver, typed: str, errors: list[str]
) -> None:
    # GIVEN an endpoint with metadata, and a signed-in tenant
    me = browser()
    sub_id, csrf = _edit_form(me, tenant, client, receiver)
    # WHEN the tenant saves the edit form with a new description and these metadata lines
    form = {"csrf_token": csrf, "url": receiver.url, "event_types": "invoice.paid", "description": "Billing"}
    response = me.post(f"/portal/endpoints/{sub_id}/edit", data={**form, "metadata": typed}, follow_redirects=False)
    # THEN the form comes back (422) saying which lines, as it says other fields' errors
    assert response.status_code == 422, response.text[:300]
    assert "The endpoint was not saved" in response.text
    assert _errors(response) == errors
    # AND the field shows the lines as typed, pointing at the errors; the other fields keep what the tenant entered
    assert _metadata_field(response) == (True, typed.replace("\r\n", "\n"))
    assert "Billing</textarea>" in response.text
    # AND nothing was saved: neither the metadata nor the description
    after = client.get(f"/v1/subscriptions/{sub_id}", headers=tenant.headers).json()
    assert (after["metadata"], after["description"]) == (STORED, "")
    # WHEN the lines are put right, THEN the form is saved
    fixed = "team=payments\r\nregion=eu"
    saved = me.post(f"/portal/endpoints/{sub_id}/edit", data={**form, "metadata": fixed}, follow_redirects=False)
    assert saved.status_code == 303, re.findall(r"<li>(.*?)</li>", saved.text)
    after = client.get(f"/v1/subscriptions/{sub_id}", headers=tenant.headers).json()
    assert (after["metadata"], after["description"]) == ({"team": "payments", "region": "eu"}, "Billing")


@pytest.mark.parametrize(("typed", "errors"), REFUSED)
def test_metadata_lines_that_are_not_key_value_are_refused_on_the_new_endpoint_form(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver, typed: str, errors: list[str]
) -> None:
    # GIVEN a signed-in tenant
    me = browser()
    csrf = sign_in(me, tenant.id)
    # WHEN it creates an endpoint with these metadata lines
    form = {"csrf_token": csrf, "url": receiver.url, "event_types": "invoice.paid", "metadata": typed}
    response = me.post("/portal/endpoints", data=form, follow_redirects=False)
    # THEN the form comes back (422) saying which lines, the lines as typed, the URL as entered
    assert response.status_code == 422, response.text[:300]
    assert "The endpoint was not saved" in response.text
    assert _errors(response) == errors
    assert _metadata_field(response) == (True, typed.replace("\r\n", "\n"))
    assert f'value="{receiver.url}"' in response.text
    # AND no endpoint was created
    assert client.get("/v1/subscriptions", headers=tenant.headers).json()["data"] == []


def test_metadata_the_lines_cannot_hold_is_kept_left_as_shown_and_its_lines_checked_once_edited(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint whose metadata, set through the API, has a value with a line break (shown as a second line
    # without "=") and keys that differ by a space at an end (shown as one key twice)
    me = browser()
    sub_id, csrf = _edit_form(me, tenant, client, receiver)
    metadata = {"note": "x\ny", "k": "1", "k ": "2"}
    patched = client.patch(f"/v1/subscriptions/{sub_id}", json={"metadata": metadata}, headers=tenant.headers)
    assert patched.status_code == 200, patched.text
    shown = _metadata_field(me.get(f"/portal/endpoints/{sub_id}/edit"))[1].replace("\n", "\r\n")
    assert shown == "note=x\r\ny\r\nk=1\r\nk =2"
    # WHEN the tenant saves the form with a new description, the metadata lines as the page gave them
    form = {"csrf_token": csrf, "url": receiver.url, "event_types": "invoice.paid", "description": "Billing"}
    saved = me.post(f"/portal/endpoints/{sub_id}/edit", data={**form, "metadata": shown}, follow_redirects=False)
    # THEN it is saved, the metadata kept as the API set it
    assert saved.status_code == 303, re.findall(r"<li>(.*?)</li>", saved.text)
    after = client.get(f"/v1/subscriptions/{sub_id}", headers=tenant.headers).json()
    assert (after["metadata"], after["description"]) == (metadata, "Billing")
    # WHEN the tenant edits those lines (a line added), THEN they are read as lines: refused, naming them
    edited = {**form, "metadata": shown + "\r\nteam=payments"}
    refused = me.post(f"/portal/endpoints/{sub_id}/edit", data=edited, follow_redirects=False)
    assert refused.status_code == 422, refused.text[:300]
    assert _errors(refused) == [NO_EQUALS.format(2), "metadata: “k” is given twice (lines 3 and 4): keep one"]
    assert client.get(f"/v1/subscriptions/{sub_id}", headers=tenant.headers).json()["metadata"] == metadata


VALID = "  team = payments \r\n\r\n\r\nregion=eu\r\n   \r\n note = a=b \r\nempty=\r\n"
VALID_READ = {"team": "payments", "region": "eu", "note": "a=b", "empty": ""}


def test_metadata_lines_with_blank_lines_and_spaces_are_saved_on_both_forms(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN a signed-in tenant
    me = browser()
    csrf = sign_in(me, tenant.id)
    # WHEN it creates an endpoint with metadata lines among blank lines, spaced around keys and values, one value
    # with "=" in it and one empty
    form = {"csrf_token": csrf, "url": receiver.url, "event_types": "invoice.paid", "metadata": VALID}
    created = me.post("/portal/endpoints", data=form, follow_redirects=False)
    # THEN it is created, with each line's key and value, trimmed
    assert created.status_code == 303, re.findall(r"<li>(.*?)</li>", created.text)
    (sub,) = client.get("/v1/subscriptions", headers=tenant.headers).json()["data"]
    assert sub["metadata"] == VALID_READ
    # WHEN the edit form is saved with other such lines
    lines = "\r\n owner = billing \r\n\r\nregion= eu-west\r\n"
    edited = me.post(f"/portal/endpoints/{sub['id']}/edit", data={**form, "metadata": lines}, follow_redirects=False)
    # THEN they are saved
    assert edited.status_code == 303, re.findall(r"<li>(.*?)</li>", edited.text)
    after = client.get(f"/v1/subscriptions/{sub['id']}", headers=tenant.headers).json()
    assert after["metadata"] == {"owner": "billing", "region": "eu-west"}


def test_the_rate_limit_field_states_the_range_the_server_takes(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint, and a signed-in tenant
    me = browser()
    sub_id, csrf = _edit_form(me, tenant, client, receiver)
    field = f'type="number" min="1" max="{MAX_RATE_LIMIT}" step="1"'
    # WHEN the tenant opens the new-endpoint form and the edit form, THEN the rate limit field takes whole numbers
    # from 1 to the server's maximum
    assert field in me.get("/portal/endpoints/new").text
    assert field in me.get(f"/portal/endpoints/{sub_id}/edit").text
    # AND the server refuses one over it, as the field does
    form = {"csrf_token": csrf, "url": receiver.url, "event_types": "invoice.paid"}
    over = me.post(f"/portal/endpoints/{sub_id}/edit", data={**form, "rate_limit": str(MAX_RATE_LIMIT + 1)})
    assert over.status_code == 422, over.text[:300]
    assert client.get(f"/v1/subscriptions/{sub_id}", headers=tenant.headers).json()["rate_limit"] is None
