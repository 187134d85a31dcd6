"""The subscriber portal's cost: its endpoints page against the API call listing the same subscriptions,
both through the ApiFunction's Mangum handler, interleaved after a warm-up; and the page's weight (HTML,
stylesheets and script, uncompressed)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.core import (
    ADMIN_HEADERS,
    UNUSED_URL,
    ApiGateway,
    BenchmarkError,
    local_stack,
    make_subscriptions,
    make_tenant,
    median,
)
from benchmarks.results import Ratio, Result
from herald.domain import portal
from herald.records import PortalCapability

WARMUP_REQUESTS = 5
#: The issue's budget for the endpoints page (HTML + CSS + JS).
PAGE_WEIGHT_BUDGET = 100 * 1024
STATIC = Path(portal.__file__).resolve().parents[1] / "portal" / "static"


def run(*, requests: int = 100, subscriptions: int = 20, out: Any = print) -> Result:
    result = Result("portal", f"Portal endpoints page vs the API listing ({requests} requests each, moto in process)")
    with local_stack() as stack:
        services = stack.services
        tenant = make_tenant(services)
        make_subscriptions(services, tenant.id, subscriptions, UNUSED_URL)
        token, _ = portal.mint_link(services, tenant.id, PortalCapability.READ, 5)
        opened = portal.open_session(services, token)
        if opened is None:
            raise BenchmarkError("the portal link did not open a session")
        cookie = {"cookie": f"herald_portal={opened[0]}"}
        api = ApiGateway(services)
        routes = {
            "GET /portal/endpoints": ("/portal/endpoints", cookie),
            "GET /v1/subscriptions": (f"/v1/subscriptions?tenant_id={tenant.id}&limit=250", ADMIN_HEADERS),
        }
        times: dict[str, list[float]] = {name: [] for name in routes}
        html = ""
        for index in range(WARMUP_REQUESTS + requests):
            for name, (path, headers) in routes.items():
                started = time.perf_counter()
                status, payload = api.request("GET", path, headers=headers)
                finished = time.perf_counter()
                if status != 200:
                    raise BenchmarkError(f"{name} answered {status}: {str(payload)[:200]}")
                if index >= WARMUP_REQUESTS:
                    times[name].append(finished - started)
                if name.startswith("GET /portal"):
                    html = str(payload)
    assets = sum((STATIC / name).stat().st_size for name in ("portal.css", "htmx.min.js"))
    weight = len(html.encode()) + assets + len(services.settings.portal_accent_color) + 20
    page, listing = median(times["GET /portal/endpoints"]), median(times["GET /v1/subscriptions"])
    result.measured.update({"page median_s": page, "api median_s": listing, "page_weight_bytes": weight})
    out(f"  endpoints page {page * 1000:6.2f} ms, API listing {listing * 1000:6.2f} ms; page weight {weight} bytes")
    result.ratios += [
        Ratio("GET /portal/endpoints / GET /v1/subscriptions", page, listing, "s", "<= 1.2"),
        Ratio("endpoints page weight / 100 KB", weight, PAGE_WEIGHT_BUDGET, "bytes", "< 1"),
    ]
    return result
