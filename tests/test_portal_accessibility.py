"""The subscriber portal's pages for readers of assistive technology, over HTTP against the real app: a refused form
ties each problem to its field, the chart's counts are in text, a recovery's progress is a live region that polling
does not replace, the header says until when the session lasts; and an accent colour too light to read is shown
darkened."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from herald import portal
from herald.portal.theme import MIN_CONTRAST, PANEL, WHITE, contrast, legible_accent
from tests import test_portal_custom_headers as custom_headers
from tests.delivery_support import subscribe
from tests.portal_support import Browser, sign_in
from tests.support import Receiver, TenantInfo


class _Tags(HTMLParser):
    """A page's start tags: those with an id, by id, and every one in order."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, str]] = {}
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        self.tags.append((tag, found))
        if "id" in found:
            self.by_id[found["id"]] = found


def _tags(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    return parser


def _text_of(page: str, ident: str) -> str:
    """The text of the element ``ident`` (its tags dropped)."""

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.depth = 0
            self.parts: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if self.depth or dict(attrs).get("id") == ident:
                self.depth += 1

        def handle_endtag(self, tag: str) -> None:
            self.depth = max(self.depth - 1, 0)

        def handle_data(self, data: str) -> None:
            if self.depth:
                self.parts.append(data)

    parser = Text()
    parser.feed(page)
    return " ".join(" ".join(parser.parts).split())


def _described(tags: _Tags, ident: str, page: str) -> str:
    """The text that describes the element ``ident`` (its ``aria-describedby``'s elements)."""
    return " ".join(_text_of(page, ref) for ref in tags.by_id[ident].get("aria-describedby", "").split())


def _new_endpoint_form(browser: Browser, tenant: TenantInfo) -> tuple[TestClient, dict[str, str]]:
    """The tenant signed in, and a new-endpoint form that would be taken (a URL, a type) for a test to spoil."""
    me = browser()
    csrf = sign_in(me, tenant.id)
    return me, {"csrf_token": csrf, "url": "https://example.com/hook", "event_types": "invoice.paid"}


def _refused(me: TestClient, form: dict[str, str]) -> tuple[httpx.Response, _Tags]:
    """A new-endpoint form posted and refused (422): the answer, and its page's tags."""
    response = me.post("/portal/endpoints", data=form)
    assert response.status_code == 422, response.text[:300]
    return response, _tags(response.text)


def test_a_refused_field_is_marked_invalid_and_described_by_its_own_problem(
    browser: Browser, tenant: TenantInfo
) -> None:
    # GIVEN a signed-in tenant
    me = browser()
    csrf = sign_in(me, tenant.id)
    # WHEN it creates an endpoint with no event type ticked and a value typed in a new header row without a name
    form = {"csrf_token": csrf, "url": "https://example.com/hook", "new_header_1_value": "eu-1"}
    response, tags = _refused(me, form)
    # THEN the header row's name field is invalid, described by the header problem (the summary's only one)
    assert tags.by_id["new-header-1-name"].get("aria-invalid") == "true"
    described = _described(tags, "new-header-1-name", response.text)
    assert described.endswith("custom headers: a new header has a value but no name: give its name, or clear its value")
    # AND the fields without a problem are neither
    for ident in ("url", "rate_limit", "metadata", "description", "event-types"):
        assert "aria-invalid" not in tags.by_id[ident], ident
        assert "aria-describedby" not in tags.by_id[ident], ident
    # AND the error summary is focused when the page opens
    summary = tags.by_id["error-summary"]
    assert (summary.get("tabindex"), "autofocus" in summary) == ("-1", True)

    # WHEN the header is named, and the form sent with a rate limit of zero and no event type
    response, tags = _refused(me, {**form, "new_header_1_name": "X-Route", "rate_limit": "0"})
    # THEN the event types and the rate limit are each invalid, described by their own problem
    assert tags.by_id["event-types"].get("aria-invalid") == "true"
    assert _described(tags, "event-types", response.text) == "Event types: tick at least one"
    assert tags.by_id["rate_limit"].get("aria-invalid") == "true"
    assert _described(tags, "rate_limit", response.text).startswith("Rate limit: ")
    assert "Event types" not in _described(tags, "rate_limit", response.text)
    # AND the URL, which was fine, is not
    assert "aria-invalid" not in tags.by_id["url"]


def test_a_url_the_policy_refuses_marks_the_url_field(browser: Browser, tenant: TenantInfo) -> None:
    # GIVEN a signed-in tenant
    me, form = _new_endpoint_form(browser, tenant)
    # WHEN it creates an endpoint at a URL the URL policy refuses (credentials in it), a valid URL otherwise
    response, tags = _refused(me, {**form, "url": "https://user:pw@example.com/hook"})
    # THEN the URL field is invalid and described by the policy's problem
    assert tags.by_id["url"].get("aria-invalid") == "true"
    assert "credentials" in _described(tags, "url", response.text)
    assert "aria-invalid" not in tags.by_id["event-types"]


def test_a_new_headers_value_refused_marks_its_value_not_its_name(browser: Browser, tenant: TenantInfo) -> None:
    # GIVEN a signed-in tenant
    me, form = _new_endpoint_form(browser, tenant)
    # WHEN it creates an endpoint with a new header whose name is fine and whose value holds a control character
    form |= {"new_header_1_name": "X-Route", "new_header_1_value": "a\x01b"}
    response, tags = _refused(me, form)
    # THEN the value field is invalid and described by the problem; the name field is neither
    assert tags.by_id["new-header-1-value"].get("aria-invalid") == "true"
    assert "must be visible ASCII" in _described(tags, "new-header-1-value", response.text)
    assert "aria-invalid" not in tags.by_id["new-header-1-name"]
    assert "aria-describedby" not in tags.by_id["new-header-1-name"]
    # WHEN the same row's name is refused instead (a name Herald sets itself)
    response, tags = _refused(me, {**form, "new_header_1_name": "webhook-id", "new_header_1_value": "1"})
    # THEN it is the name that is marked, not the value
    assert tags.by_id["new-header-1-name"].get("aria-invalid") == "true"
    assert "cannot be set" in _described(tags, "new-header-1-name", response.text)
    assert "aria-invalid" not in tags.by_id["new-header-1-value"]


def test_each_header_row_a_joined_problem_names_is_marked(browser: Browser, tenant: TenantInfo) -> None:
    # GIVEN a signed-in tenant
    me, form = _new_endpoint_form(browser, tenant)
    # WHEN it creates an endpoint with three new headers, the first and the third refused by name (the API joins
    # their problems in one message)
    for number, (name, value) in enumerate([("bad name", "1"), ("X-Ok", "2"), ("webhook-id", "3")], start=1):
        form |= {f"new_header_{number}_name": name, f"new_header_{number}_value": value}
    response, tags = _refused(me, form)
    # THEN the headers' fieldset and each refused row's name are invalid, described by the message naming them
    assert tags.by_id["custom-headers"].get("aria-invalid") == "true"
    for ident in ("new-header-1-name", "new-header-3-name"):
        assert tags.by_id[ident].get("aria-invalid") == "true", ident
        described = _described(tags, ident, response.text)
        assert "'bad name'" in described, described
        assert "'webhook-id' cannot be set" in described, described
    # AND the good row, and the refused rows' values, are not
    for ident in ("new-header-2-name", "new-header-2-value", "new-header-1-value", "new-header-3-value"):
        assert "aria-invalid" not in tags.by_id[ident], ident
        assert "aria-describedby" not in tags.by_id[ident], ident


def test_a_new_header_given_twice_marks_the_new_row_not_the_kept_one(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint with the header X-Route, and its edit form
    sub_id, me = custom_headers._endpoint(browser, client, tenant, receiver.url, {"X-Route": {"value": "eu-1"}})
    form = custom_headers._opened(me, sub_id)
    kept = custom_headers._row(form, "X-Route").replace("_", "-")
    # WHEN a new row names it again, as x_route (names ignore case, and _ is read as -)
    response = custom_headers._saved(me, sub_id, {**form, "new_header_1_name": "x_route", "new_header_1_value": "2"})
    assert response.status_code == 422, response.text[:300]
    tags = _tags(response.text)
    # THEN the new row's name is invalid, described by the problem; the kept row's value, which is fine, is not
    assert tags.by_id["new-header-1-name"].get("aria-invalid") == "true"
    assert "given twice" in _described(tags, "new-header-1-name", response.text)
    assert "aria-invalid" not in tags.by_id[f"{kept}-value"]


def test_the_chart_has_a_legend_and_its_counts_in_a_table(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint, the tenant signed in
    sub_id, me = custom_headers._endpoint(browser, client, tenant, receiver.url)
    # WHEN the tenant opens its page
    page = me.get(f"/portal/endpoints/{sub_id}").text
    # THEN the chart's colours are named in a legend, and each slot's counts are in a table: a row a slot
    assert "Succeeded" in _text_of(page, "chart-legend")
    assert "Failed" in _text_of(page, "chart-legend")
    table = _text_of(page, "chart-table")
    assert "Slot (UTC) Succeeded Failed" in table
    assert table.count("\u2013") == 12


def test_the_header_says_until_when_the_session_lasts(browser: Browser, tenant: TenantInfo) -> None:
    # GIVEN a signed-in tenant (sessions last 60 minutes by default, from the sign-in)
    me = browser()
    before = datetime.now(UTC)
    sign_in(me, tenant.id)
    after = datetime.now(UTC)
    # WHEN it opens a page, THEN its header says until when it is signed in, in UTC
    text = _text_of(me.get("/portal/endpoints").text, "session-expiry")
    ends = {(moment + timedelta(minutes=60)).strftime("%H:%M") for moment in (before, after)}
    assert text in {f", signed in until {end} UTC" for end in ends}, text


def test_a_recovery_page_announces_its_progress_in_a_region_polling_does_not_replace(
    browser: Browser, client: TestClient, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint, and a recovery of its last hour
    sub = subscribe(client, tenant, receiver.url)
    me = browser()
    csrf = sign_in(me, tenant.id)
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    started = me.post(f"/portal/endpoints/{sub.id}/recover", data={"csrf_token": csrf, "since": since})
    assert started.status_code == 200, started.text[:300]
    page = started.text
    tags = _tags(page)
    # THEN the live region wraps the polled element, which has no role of its own (each poll replaces it)
    assert tags.by_id["job-progress"].get("role") == "status"
    assert "role" not in tags.by_id["job"]
    assert tags.by_id["job"].get("hx-select") == "#job"
    order = [attrs.get("id") for _, attrs in tags.tags if attrs.get("id") in ("job-progress", "job")]
    assert order == ["job-progress", "job"]
    # AND with scripting off, the page says to reload it
    assert "<noscript>" in page
    assert "reload it" in page


@pytest.mark.parametrize("color", ["#4f46e5", "#0a7f3c", "#767676", "#6e6e6e", "#ffcc00", "#ffffff", "#00ffff"])
def test_an_accent_colour_too_light_to_read_is_shown_darkened(color: str) -> None:
    # GIVEN an accent colour: links are written in it on the page and its panels, and button text is white on it
    shown = legible_accent(color)
    # THEN it is shown as it is when it has 4.5:1 against the panels (the darkest of those backgrounds)
    if contrast(color, PANEL) >= MIN_CONTRAST:
        assert shown == color
        return
    # AND else darkened to it against the panels and white, no further than a hundredth more of black would take it,
    # keeping its hue
    assert contrast(shown, PANEL) >= MIN_CONTRAST
    assert contrast(shown, WHITE) >= MIN_CONTRAST
    red, green, blue = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    share = 1 - max(int(shown[i : i + 2], 16) for i in (1, 3, 5)) / max(red, green, blue)
    lighter = "#" + "".join(f"{round(value * (1 - share + 0.01)):02x}" for value in (red, green, blue))
    assert contrast(lighter, PANEL) < MIN_CONTRAST, (shown, lighter)
    assert (int(shown[1:3], 16) >= int(shown[3:5], 16)) == (red >= green)


def test_the_panel_the_accent_is_checked_against_is_the_style_sheets() -> None:
    # The light theme's --panel, which legible_accent measures against, is PANEL
    css = (Path(portal.__file__).parent / "static" / "portal.css").read_text()
    assert f"--panel: {PANEL};" in css


@pytest.mark.parametrize("settings_overrides", [{"portal_accent_color": "#ffcc00"}])
def test_the_portal_serves_a_light_accent_darkened(browser: Browser) -> None:
    # GIVEN a deployment whose accent is a light yellow (1.5:1 against white): the API starts with it
    me = browser()
    # WHEN the portal's theme is asked for
    theme = me.get("/portal/static/theme.css")
    # THEN it holds the accent darkened to 4.5:1, not the colour set
    assert theme.status_code == 200
    assert "#ffcc00" not in theme.text
    assert f"--accent: {legible_accent('#ffcc00')};" in theme.text


def test_the_contrast_is_wcag_relative_luminance() -> None:
    # WCAG's own extremes and the default accent, either way round
    assert contrast("#000000") == pytest.approx(21.0)
    assert contrast(WHITE, "#000000") == pytest.approx(21.0)
    assert contrast("#ffffff") == pytest.approx(1.0)
    assert contrast("#4f46e5") == pytest.approx(6.29, abs=0.01)
