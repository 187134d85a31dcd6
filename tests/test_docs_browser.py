"""/docs and /redoc as a person sees them: rendered by headless Chromium, with no internet."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from herald.api import create_app
from herald.catalog import catalog
from herald.services import Services
from tests.process_guard import run_group
from tests.support import served

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def served_app(services: Services) -> Iterator[str]:
    with served(create_app(services)) as url:
        yield url


def render(url: str, tmp_path: Path, screenshot: Path | None = None) -> str:
    """The DOM after the page's scripts ran, from headless Chromium with every outside connection off."""
    if CHROMIUM is None:
        if os.environ.get("CI") or os.environ.get("HERALD_REQUIRE_BROWSER"):
            pytest.fail("Chromium is required in CI (.ci/run installs it)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    flags = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        # Anything not on 127.0.0.1 fails to resolve: the page must not need a CDN.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=20000",
        "--window-size=1280,4000",
    ]
    if screenshot is not None:
        shot = run_group([*flags, f"--screenshot={screenshot}", url], timeout=120, capture_output=True)
        assert shot.returncode == 0, shot.stderr
    # Chromium starts children of its own (zygote, renderer, GPU): run_group stops the whole group
    result = run_group([*flags, "--dump-dom", url], timeout=120, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return str(result.stdout)


def test_swagger_ui_renders_the_webhooks_section_offline(served_app: str, tmp_path: Path) -> None:
    # GIVEN the app serving /docs, its Swagger UI assets served from the app itself
    html = httpx.get(f"{served_app}/docs").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, "the docs page references its assets"
    assert all(asset.startswith("/") for asset in assets), f"assets must be served locally: {assets}"
    # WHEN Chromium renders it, with every host but 127.0.0.1 unreachable
    dom = render(f"{served_app}/docs", tmp_path, screenshot=tmp_path / "docs.png")
    # THEN Swagger UI drew the API and the Webhooks section with every catalog event type
    assert 'class="swagger-ui' in dom
    assert re.search(r">\s*Webhooks\s*<", dom), "the Webhooks section is rendered"
    for event_type in catalog:
        assert event_type.name in dom, f"{event_type.name} is missing from the rendered docs"
    assert "/v1/subscriptions" in dom
    assert (tmp_path / "docs.png").stat().st_size > 10_000


def test_redoc_renders_offline(served_app: str, tmp_path: Path) -> None:
    dom = render(f"{served_app}/redoc", tmp_path)
    assert "redoc" in dom.lower()
    assert "subscription.created" in dom
    assert "Publish an event" in dom
