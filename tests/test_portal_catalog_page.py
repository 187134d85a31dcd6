"""The portal's event catalog page over HTTP against the real app: what a subscriber's endpoint receives for each
event type, described as the OpenAPI document describes it."""

from __future__ import annotations

import html
import json
import re

from herald.catalog import catalog
from tests.portal_support import Browser, sign_in
from tests.support import TenantInfo


def test_the_catalog_page_shows_each_type_s_delivered_body_and_its_description_as_written(
    browser: Browser, client, tenant: TenantInfo
) -> None:
    # GIVEN a subscriber signed in to the portal
    me = browser()
    sign_in(me, tenant.id, "read")
    # WHEN it opens the event catalog
    page = me.get("/portal/catalog")
    assert page.status_code == 200, page.text[:300]
    sections = re.findall(r'<section class="event-type".*?</section>', page.text, flags=re.DOTALL)
    # THEN each type has a section, in the catalog's order
    names = [re.search(r"<h2[^>]*><code>([^<]+)</code></h2>", section)[1] for section in sections]  # type: ignore[index]
    assert names == catalog.names()
    webhooks = client.get("/openapi.json").json()
    for event_type, section in zip(catalog, sections, strict=True):
        # AND it shows the whole body an endpoint receives, the OpenAPI document's example of the webhook's body
        (shown,) = re.findall(r"<summary>A delivery of [^<]+</summary><pre[^>]*>(.*?)</pre>", section, re.DOTALL)
        body = json.loads(html.unescape(shown))
        assert set(body) == {"type", "timestamp", "data"}
        assert body["type"] == event_type.name
        assert body["data"] == event_type.delivered_example
        assert [body] == webhooks["components"]["schemas"][event_type.envelope_name]["examples"]
        # AND its description: a paragraph for each of the docstring's, names in backticks shown as code
        paragraphs = re.findall(r"<p>(.*?)</p>", section, re.DOTALL)
        assert len(paragraphs) == event_type.description.count("\n\n") + 1, event_type.name
        assert not any("`" in paragraph for paragraph in paragraphs), event_type.name
    ping = sections[catalog.names().index("herald.ping")]
    assert "<code>POST /v1/subscriptions/{id}/test</code>" in ping
