"""The subscriber portal as a person uses it: headless Chromium driven by Selenium (Debian's chromium and
chromium-driver) on the real app over HTTP, deliveries made by the worker to a real receiver on 127.0.0.1 and
verified with ``standardwebhooks``; each page checked with axe-core in the browser."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from herald.api import create_app
from herald.services import Services
from tests.delivery_support import Harness, verify
from tests.process_guard import Processes, logged
from tests.support import ADMIN, Receiver, TenantInfo, served

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
#: axe-core as the axe-selenium-python package ships it (from npm), read from its files: nothing is downloaded.
_AXE_PACKAGE = importlib.util.find_spec("axe_selenium_python")
assert _AXE_PACKAGE is not None, "pip install -e .[dev] installs axe-selenium-python"
assert _AXE_PACKAGE.origin is not None
AXE = Path(_AXE_PACKAGE.origin).parent / "node_modules" / "axe-core" / "axe.min.js"
DOCS = Path(__file__).resolve().parents[1] / "docs"
WAIT = int(
    os.environ.get("HERALD_BROWSER_WAIT", "60")
)  # seconds: a ceiling for conditions on a busy machine, never a pause


@pytest.fixture
def clock() -> Callable[[], float]:
    """The worker on real time: the deliveries the page lists newest first are made one after another."""
    return time.time


@pytest.fixture
def served_app(services: Services) -> Iterator[str]:
    with served(create_app(services)) as url:
        yield url


@pytest.fixture
def driver(tmp_path: Path, processes: Processes) -> Iterator[WebDriver]:
    """chromedriver (and the Chromium it starts) in their own process group, which ``processes`` stops whatever
    happens."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("CI") or os.environ.get("HERALD_REQUIRE_BROWSER"):
            pytest.fail("chromium and chromium-driver are required in CI (.ci/run installs them)")
        pytest.skip("chromium or chromium-driver is not installed (apt-get install chromium chromium-driver)")
    # On a port of its own choosing (0), which it names: none picked here that another process could take first.
    log = tmp_path / "chromedriver.log"
    with log.open("wb") as output:
        chromedriver = processes.start([CHROMEDRIVER, "--port=0"], stdout=output, stderr=subprocess.STDOUT)
    browser: WebDriver | None = None
    try:
        port = int(logged(chromedriver, log, r"started successfully on port (\d+)", seconds=WAIT)[1])
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1100,900",
            f"--user-data-dir={tmp_path / 'profile'}",
            # Anything not on 127.0.0.1 fails to resolve: the portal must not need a CDN.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ):
            options.add_argument(flag)
        browser = webdriver.Remote(command_executor=f"http://127.0.0.1:{port}", options=options)
        yield browser
    finally:
        if browser is not None:
            with contextlib.suppress(Exception):  # the process group is stopped next anyway
                browser.quit()


def wait_for(browser: WebDriver, css: str) -> Any:
    message = f"{css} never showed; at {browser.current_url}"
    try:
        return WebDriverWait(browser, WAIT).until(lambda b: b.find_element(By.CSS_SELECTOR, css))
    except TimeoutException:
        pytest.fail(f"{message}: {browser.find_element(By.TAG_NAME, 'main').text[:2000]}")


def submitted(browser: WebDriver, css: str, note: str) -> None:
    """Click a form's button and wait for the page the change leads to (its ``note``)."""
    click(browser, css)
    WebDriverWait(browser, WAIT).until(lambda b: f"note={note}" in b.current_url)
    wait_for(browser, ".flash")


def text_of(browser: WebDriver, css: str) -> str:
    return str(wait_for(browser, css).text)


def click(browser: WebDriver, css: str) -> None:
    wait_for(browser, css).click()


def cdp(browser: WebDriver, command: str, params: dict[str, Any]) -> Any:
    """A Chrome DevTools Protocol command, through chromedriver."""
    return browser.execute("executeCdpCommand", {"cmd": command, "params": params})["value"]


def color_scheme(browser: WebDriver, scheme: str) -> None:
    """The page as the browser shows it to a reader who prefers ``scheme`` (light or dark)."""
    cdp(browser, "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
    query = f"return matchMedia('(prefers-color-scheme: {scheme})').matches;"
    WebDriverWait(browser, WAIT).until(lambda b: b.execute_script(query))


def accessible(browser: WebDriver) -> None:
    """axe-core in the page, in light mode and in dark mode: no serious or critical finding."""
    browser.execute_script(AXE.read_text(encoding="utf-8"))
    try:
        for scheme in ("light", "dark"):
            color_scheme(browser, scheme)
            result = browser.execute_async_script(
                "const done = arguments[arguments.length - 1]; axe.run(document).then(r => done(r.violations));"
            )
            bad = [
                (v["id"], v["impact"], [n["target"] for n in v["nodes"]])
                for v in result
                if v["impact"] in ("serious", "critical")
            ]
            assert bad == [], f"{browser.current_url} in {scheme} mode: {bad}"
    finally:
        color_scheme(browser, "light")


def _channels(color: str) -> tuple[float, float, float]:
    """A computed CSS colour (``rgb()``/``rgba()``, or ``color(srgb ...)`` as ``color-mix`` computes) as sRGB 0..1."""
    inside = color[color.index("(") + 1 : color.rindex(")")].replace(",", " ").split()
    if color.startswith("color("):
        assert inside[0] == "srgb", color
        red, green, blue = (float(part) for part in inside[1:4])
        return red, green, blue
    red, green, blue = (float(part) / 255 for part in inside[:3])
    return red, green, blue


def contrast(one: str, other: str) -> float:
    """The WCAG contrast ratio of two computed CSS colours."""

    def luminance(color: str) -> float:
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in _channels(color)]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(one), luminance(other)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def shoot(browser: WebDriver, name: str) -> None:
    """Screenshots for the README, when asked for (HERALD_PORTAL_SCREENSHOTS=1)."""
    if os.environ.get("HERALD_PORTAL_SCREENSHOTS"):
        DOCS.mkdir(exist_ok=True)
        browser.save_screenshot(str(DOCS / f"portal-{name}.png"))


def open_page(browser: WebDriver, url: str) -> None:
    browser.get(url)
    wait_for(browser, "h1")
    accessible(browser)


def endpoint_page_open(driver: WebDriver, served_app: str, tenant: TenantInfo, url: str) -> str:
    """A new endpoint of the tenant's at ``url``, for every event type, its page open for the tenant signed in; its
    id."""
    created = httpx.post(
        f"{served_app}/v1/subscriptions", json={"url": url, "event_types": ["*"]}, headers=tenant.headers
    )
    assert created.status_code == 201, created.text
    signed_in(driver, served_app, tenant)
    open_page(driver, f"{served_app}/portal/endpoints/{created.json()['id']}")
    return str(created.json()["id"])


def newest_delivery(browser: WebDriver, base: str, sub_id: str) -> None:
    open_page(browser, f"{base}/portal/endpoints/{sub_id}")
    click(browser, "#deliveries tbody tr:first-child a")
    wait_for(browser, "#delivery-status")
    accessible(browser)


def signed_in(driver: WebDriver, base: str, tenant: TenantInfo) -> None:
    """The operator mints a link, and the browser opens it and signs in: the tenant's endpoints."""
    minted = httpx.post(f"{base}/v1/tenants/{tenant.id}/portal-sessions", json={}, headers=ADMIN)
    assert minted.status_code == 201, minted.text
    open_page(driver, minted.json()["url"])
    click(driver, "#sign-in")
    WebDriverWait(driver, WAIT).until(lambda b: b.current_url.endswith("/portal/endpoints"))


def sign_in_and_create(driver: WebDriver, base: str, tenant: TenantInfo, receiver: Receiver) -> str:
    """The operator mints a link, the browser opens it and creates an endpoint; its id."""
    # GIVEN a link the operator minted
    minted = httpx.post(f"{base}/v1/tenants/{tenant.id}/portal-sessions", json={}, headers=ADMIN)
    assert minted.status_code == 201, minted.text
    # WHEN the browser opens it, THEN the link's page names the tenant's portal and asks to sign in
    open_page(driver, minted.json()["url"])
    assert text_of(driver, "h1") == "Sign in"
    assert text_of(driver, "#tenant-name") == "Acme"
    # AND signing in lands on the tenant's endpoints
    click(driver, "#sign-in")
    WebDriverWait(driver, WAIT).until(lambda b: b.current_url.endswith("/portal/endpoints"))
    assert text_of(driver, "h1") == "Endpoints"
    accessible(driver)

    # WHEN it creates an endpoint at the receiver
    click(driver, "a.button[href='/portal/endpoints/new']")
    wait_for(driver, "#url").send_keys(receiver.url)
    accessible(driver)
    click(driver, "input[value='invoice.paid']")
    wait_for(driver, "#description").send_keys("Billing")
    submitted(driver, "#save", "created")
    assert text_of(driver, ".flash") == "Endpoint created."
    sub_id = driver.current_url.split("/endpoints/")[1].split("?")[0]
    accessible(driver)
    shoot(driver, "endpoint")

    return sub_id


def deliver_fail_and_retry(driver: WebDriver, base: str, sub_id: str, receiver: Receiver, harness: Harness) -> str:
    """Test events delivered, failed, filtered in the log and retried; the endpoint's secret."""
    # THEN its secret shows on click
    click(driver, "#reveal")
    secret = text_of(driver, "#secret-value")
    assert secret.startswith("whsec_")

    # WHEN it sends a test event, THEN the delivery is in the log with its attempt, verified at the receiver
    submitted(driver, "#send-test", "test-sent")
    harness.drain()
    assert len(receiver.received) == 1
    assert verify(secret, receiver.received[0])["type"] == "herald.ping"
    newest_delivery(driver, base, sub_id)
    assert text_of(driver, "#delivery-status") == "succeeded"
    assert "Attempt 1: succeeded" in text_of(driver, "#attempt-1")
    assert "herald.ping" in text_of(driver, ".payload")

    # WHEN the receiver fails, THEN the failed attempt shows with its response body
    receiver.default = (500, {}, b"receiver says no", 0.0)
    open_page(driver, f"{base}/portal/endpoints/{sub_id}")
    submitted(driver, "#send-test", "test-sent")
    harness.drain()
    newest_delivery(driver, base, sub_id)
    assert "Attempt 1: failed" in text_of(driver, "#attempt-1")
    assert text_of(driver, "pre.response") == "receiver says no"
    assert "500" in driver.page_source
    shoot(driver, "delivery")

    # AND the log filters by status and event type
    def listed(query: str) -> list[str]:
        open_page(driver, f"{base}/portal/endpoints/{sub_id}?{query}")
        return [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "#deliveries tbody td:nth-child(2)")]

    assert listed("status=pending&event_type=herald.ping") == ["pending"]  # failed once, a retry is due
    assert listed("status=succeeded") == ["succeeded"]
    assert listed("event_type=invoice.paid") == []
    newest_delivery(driver, base, sub_id)

    # WHEN it retries after the receiver is back, THEN the manual attempt succeeds
    receiver.default = (200, {}, b"ok", 0.0)
    submitted(driver, "#retry", "retried")
    harness.drain()
    driver.refresh()
    assert "Attempt 2: succeeded" in text_of(driver, "#attempt-2")
    assert "manual" in text_of(driver, "#attempt-2 ~ dl")

    return secret


def rotate_switch_and_recover(
    driver: WebDriver, base: str, sub_id: str, secret: str, receiver: Receiver, harness: Harness
) -> None:
    """Rotation, disabling and re-enabling, recovering a window; the other pages, at phone width too."""
    # WHEN it rotates the secret, THEN the next delivery is signed with the new one (and the old one)
    open_page(driver, f"{base}/portal/endpoints/{sub_id}")
    submitted(driver, "#rotate", "rotated")
    assert text_of(driver, ".flash") == "Signing secret rotated."
    click(driver, "#reveal")
    new_secret = text_of(driver, "#secret-value")
    assert new_secret.startswith("whsec_")
    assert new_secret != secret
    submitted(driver, "#send-test", "test-sent")
    harness.drain()
    assert verify(new_secret, receiver.received[-1])["type"] == "herald.ping"
    assert verify(secret, receiver.received[-1])["type"] == "herald.ping"

    # WHEN it disables and re-enables the endpoint
    submitted(driver, "#switch", "disabled")
    assert text_of(driver, ".flash") == "Endpoint disabled."
    assert text_of(driver, "#state").startswith("Disabled: disabled by the tenant")
    submitted(driver, "#switch", "enabled")
    assert text_of(driver, ".flash") == "Endpoint enabled."
    assert text_of(driver, "#state") == "Enabled"

    # WHEN it recovers the last hour, THEN the job's progress page shows it done
    since = driver.find_element(By.ID, "since")
    driver.execute_script(
        "arguments[0].value = arguments[1];", since, time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 3600))
    )
    click(driver, "#recover")
    wait_for(driver, "#job-status")

    def worked_and_done(browser: WebDriver) -> bool:
        # The worker runs as Lambda's event source would, while the page polls: work the job (and any message
        # SQS holds back until its delay is out) as it becomes visible, until the page shows the job done. The page
        # swaps its status in every 2 s (htmx): the status is read in one script, not found and then read, which
        # a swap between the two makes a stale element.
        harness.drain()
        return bool(browser.execute_script("return document.querySelector('#job-status')?.textContent;") == "done")

    WebDriverWait(driver, WAIT).until(worked_and_done)
    accessible(driver)  # once done, when the page no longer swaps its status under the check

    # AND the catalog and list pages pass the accessibility check too
    open_page(driver, f"{base}/portal/catalog")
    open_page(driver, f"{base}/portal/endpoints")
    shoot(driver, "endpoints")
    assert "Billing" in driver.page_source

    # AND at phone width the pages fit the screen (wide tables scroll inside their own box)
    driver.set_window_size(390, 844)
    for path in ("/portal/endpoints", f"/portal/endpoints/{sub_id}", "/portal/catalog"):
        open_page(driver, base + path)
        assert driver.execute_script("return window.innerWidth;") <= 400
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth;")
        assert overflow <= 0, f"{path} is {overflow} px wider than a phone"


# The failed test delivery's next scheduled attempt waits an hour: with the default schedule's 5 s, a slow machine
# reached it (its delay is SQS's, in real time) before the tenant's manual retry, which was then attempt 3.
@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": (0, 3600, 7200)}], ids=["retry-in-an-hour"])
def test_a_tenant_manages_an_endpoint_in_the_portal(
    driver: WebDriver, served_app: str, tenant: TenantInfo, receiver: Receiver, harness: Harness
) -> None:
    sub_id = sign_in_and_create(driver, served_app, tenant, receiver)
    secret = deliver_fail_and_retry(driver, served_app, sub_id, receiver, harness)
    rotate_switch_and_recover(driver, served_app, sub_id, secret, receiver, harness)


#: Clicks the sign-in button twice, as a double-click does, and counts the submissions the page let through; each
#: is stopped before it leaves the page (the listener on the window runs after the page's own, on the document).
TWO_CLICKS = """
let sent = 0;
const count = (event) => { if (!event.defaultPrevented) { sent += 1; } event.preventDefault(); };
window.addEventListener("submit", count);
const button = document.querySelector(arguments[0] || "#sign-in");
button.click();
button.click();
window.removeEventListener("submit", count);
return sent;
"""


def test_a_double_clicked_sign_in_sends_the_one_time_link_once(
    driver: WebDriver, served_app: str, tenant: TenantInfo
) -> None:
    # GIVEN the page of a link the operator minted
    minted = httpx.post(f"{served_app}/v1/tenants/{tenant.id}/portal-sessions", json={}, headers=ADMIN)
    assert minted.status_code == 201, minted.text
    open_page(driver, minted.json()["url"])
    # WHEN its Sign in button is clicked twice in a row
    # THEN the form is sent once: a second request would find the link spent by the first
    assert driver.execute_script(TWO_CLICKS) == 1
    # AND shown again from the browser's back/forward cache, the page can be sent once more
    driver.execute_script("window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}));")
    assert driver.execute_script(TWO_CLICKS) == 1
    # AND the page opened again (nothing was sent) signs in
    open_page(driver, minted.json()["url"])
    click(driver, "#sign-in")
    WebDriverWait(driver, WAIT).until(lambda b: b.current_url.endswith("/portal/endpoints"))
    assert text_of(driver, "h1") == "Endpoints"


def test_a_double_clicked_create_test_or_rotate_is_sent_once(
    driver: WebDriver, served_app: str, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN a signed-in tenant on the new endpoint form, filled in
    signed_in(driver, served_app, tenant)
    open_page(driver, f"{served_app}/portal/endpoints/new")
    driver.find_element(By.CSS_SELECTOR, "#url").send_keys(receiver.url)
    click(driver, "#et-all")
    # WHEN "Create endpoint" is clicked twice in a row
    # THEN the form is sent once: a second request would create a second endpoint, every event sent to both
    assert driver.execute_script(TWO_CLICKS, "#save") == 1
    # AND so are an endpoint's "Send test event" and its secret's rotation
    created = httpx.post(
        f"{served_app}/v1/subscriptions", json={"url": receiver.url, "event_types": ["*"]}, headers=tenant.headers
    )
    assert created.status_code == 201, created.text
    open_page(driver, f"{served_app}/portal/endpoints/{created.json()['id']}")
    assert driver.execute_script(TWO_CLICKS, "#send-test") == 1
    assert driver.execute_script(TWO_CLICKS, "form[action$='/rotate'] button[type=submit]") == 1


def test_a_tenant_pages_through_its_endpoints(
    driver: WebDriver, served_app: str, tenant: TenantInfo, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a tenant with three endpoints, two to a page
    monkeypatch.setattr("herald.portal.endpoints.ENDPOINTS_PER_PAGE", 2)
    urls = set()
    for n in range(3):
        url = f"{receiver.url}/{n}"
        created = httpx.post(
            f"{served_app}/v1/subscriptions", json={"url": url, "event_types": ["*"]}, headers=tenant.headers
        )
        assert created.status_code == 201, created.text
        urls.add(url)
    signed_in(driver, served_app, tenant)

    def listed() -> list[str]:
        wait_for(driver, "h1")
        return [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "tbody td:first-child a")]

    # WHEN it reads the first page, then follows "Next page"
    first = listed()
    accessible(driver)
    click(driver, "a[rel='next']")
    WebDriverWait(driver, WAIT).until(lambda b: "after=" in b.current_url)
    second = listed()
    accessible(driver)
    # THEN each endpoint showed once, the last page has no next link, and "First page" leads back
    assert len(first) == 2
    assert sorted(first + second) == sorted(urls)
    assert driver.find_elements(By.CSS_SELECTOR, "a[rel='next']") == []
    click(driver, "nav a[href='/portal/endpoints']")
    WebDriverWait(driver, WAIT).until(lambda b: b.current_url.endswith("/portal/endpoints"))
    assert listed() == first


def test_long_words_wrap_at_phone_width(
    driver: WebDriver, served_app: str, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint whose URL and description are long runs of characters with no place to break a line
    url = f"{receiver.url}/{'a' * 1500}"
    description = "see https://wiki.example.com/" + "b" * 200
    created = httpx.post(
        f"{served_app}/v1/subscriptions",
        json={"url": url, "event_types": ["*"], "description": description},
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    signed_in(driver, served_app, tenant)
    # WHEN its pages are read at phone width
    driver.set_window_size(390, 844)
    for path in (f"/portal/endpoints/{created.json()['id']}", "/portal/endpoints"):
        open_page(driver, served_app + path)
        # THEN they fit the screen, the words broken where they must be
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth;")
        assert overflow <= 0, f"{path} is {overflow} px wider than a phone"
    # AND the list's table, which may scroll inside its own box, keeps its other columns within reach of the URL's
    box = driver.execute_script(
        "const box = document.querySelector('.scroll'); return [box.scrollWidth, box.clientWidth];"
    )
    assert box[0] <= 2 * box[1], f"the endpoints table is {box[0]} px wide in a box of {box[1]}"


def test_a_progress_page_whose_session_ends_says_so_and_stops_polling(
    driver: WebDriver, served_app: str, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN a tenant's recovery whose progress page polls its job (the worker never runs here: it stays queued)
    created = httpx.post(
        f"{served_app}/v1/subscriptions",
        json={"url": receiver.url, "event_types": ["invoice.paid"]},
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    signed_in(driver, served_app, tenant)
    open_page(driver, f"{served_app}/portal/endpoints/{created.json()['id']}")
    since = driver.find_element(By.ID, "since")
    driver.execute_script(
        "arguments[0].value = arguments[1];", since, time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 3600))
    )
    click(driver, "#recover")
    assert text_of(driver, "#job-status") == "queued"
    # WHEN the operator revokes the tenant's portal access
    revoked = httpx.delete(f"{served_app}/v1/tenants/{tenant.id}/portal-sessions", headers=ADMIN)
    assert revoked.status_code == 204
    # THEN at its next poll the page is loaded again, and says the session ended: no job left on it to poll
    heading = "return document.querySelector('h1')?.textContent;"  # read in one script: the page is reloaded under it
    WebDriverWait(driver, WAIT).until(lambda b: b.execute_script(heading) == "Signed out")
    assert driver.find_elements(By.ID, "job") == []
    accessible(driver)


def test_a_filter_set_through_the_api_is_removed_in_the_form_to_change_the_event_types(
    driver: WebDriver, served_app: str, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint of invoice.paid whose filter, set through the API, is on the invoice's amount
    body = {"url": receiver.url, "event_types": ["invoice.paid"], "filter": {"amount_cents": {"$gte": 1000}}}
    created = httpx.post(f"{served_app}/v1/subscriptions", json=body, headers=tenant.headers)
    assert created.status_code == 201, created.text
    sub_id = created.json()["id"]
    signed_in(driver, served_app, tenant)
    # WHEN the tenant opens its form, moves it to order.shipped and removes the filter
    open_page(driver, f"{served_app}/portal/endpoints/{sub_id}/edit")
    click(driver, "input[value='invoice.paid']")
    click(driver, "input[value='order.shipped']")
    click(driver, "#remove-filter")
    submitted(driver, "#save", "saved")
    # THEN the endpoint takes order.shipped, with no filter
    assert text_of(driver, ".flash") == "Changes saved."
    assert text_of(driver, "#filter") == "none: every event of its types"
    accessible(driver)


def test_dark_mode_keeps_the_focus_outline_and_the_chart_readable(
    driver: WebDriver, served_app: str, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint's page (axe-core finds nothing in light or dark mode: text, links and buttons)
    endpoint_page_open(driver, served_app, tenant, receiver.url)
    # WHEN the reader prefers dark mode and moves the focus with the keyboard
    color_scheme(driver, "dark")
    background = driver.execute_script("return getComputedStyle(document.body).backgroundColor;")
    assert contrast(background, "rgb(0, 0, 0)") < 2, "the page is dark"
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    WebDriverWait(driver, WAIT).until(
        lambda b: b.execute_script("return document.activeElement.matches(':focus-visible');")
    )
    # THEN the focus outline stands out from the page (3:1 for a non-text indicator), as the chart's bars do
    outline = driver.execute_script("return getComputedStyle(document.activeElement).outlineColor;")
    assert contrast(outline, background) >= 3, outline
    for bar in (".chart .ok", ".chart .bad"):
        fill = driver.execute_script(f"return getComputedStyle(document.querySelector('{bar}')).fill;")
        assert contrast(fill, background) >= 3, (bar, fill)
    # AND a link's text reads against the page (4.5:1)
    link = driver.execute_script("return getComputedStyle(document.querySelector('#reveal')).color;")
    assert contrast(link, background) >= 4.5, link


def test_the_revealed_secret_takes_the_focus_from_the_link_it_replaces(
    driver: WebDriver, served_app: str, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN an endpoint's page
    endpoint_page_open(driver, served_app, tenant, receiver.url)
    # WHEN the reader presses Enter on "Reveal the signing secret", which the secret replaces
    wait_for(driver, "#reveal").send_keys(Keys.ENTER)
    # THEN the focus is on the secret, in a region that announces it: not lost to the top of the page
    active = "return document.activeElement && document.activeElement.id;"
    WebDriverWait(driver, WAIT).until(lambda b: b.execute_script(active) == "secret-value")
    assert text_of(driver, "#secret-value").startswith("whsec_")
    assert driver.find_element(By.ID, "secret").get_attribute("aria-live") == "polite"
    accessible(driver)


def test_a_refused_form_takes_the_focus_to_its_problems(
    driver: WebDriver, served_app: str, tenant: TenantInfo, receiver: Receiver
) -> None:
    # GIVEN a signed-in tenant on the new endpoint form
    signed_in(driver, served_app, tenant)
    open_page(driver, f"{served_app}/portal/endpoints/new")
    # WHEN it is sent with no event type ticked
    wait_for(driver, "#url").send_keys(receiver.url)
    click(driver, "#save")
    # THEN the page it comes back on has the focus on its list of problems, the event types marked invalid
    active = "return document.activeElement && document.activeElement.id;"
    WebDriverWait(driver, WAIT).until(lambda b: b.execute_script(active) == "error-summary")
    assert "Event types: tick at least one" in text_of(driver, "#form-errors")
    assert driver.find_element(By.ID, "event-types").get_attribute("aria-invalid") == "true"
    accessible(driver)


def test_a_recovery_progress_changes_inside_a_live_region_that_stays(
    driver: WebDriver, served_app: str, tenant: TenantInfo, receiver: Receiver, harness: Harness
) -> None:
    # GIVEN a tenant's recovery of the last hour, its progress page polling the job
    endpoint_page_open(driver, served_app, tenant, receiver.url)
    since = driver.find_element(By.ID, "since")
    driver.execute_script(
        "arguments[0].value = arguments[1];", since, time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 3600))
    )
    click(driver, "#recover")
    assert text_of(driver, "#job-status") == "queued"
    driver.execute_script(
        "window.liveRegion = document.querySelector('[role=status]');"
        "window.polledJob = document.querySelector('#job');"
        "window.polls = 0;"
        "document.addEventListener('htmx:afterRequest', () => { window.polls += 1; });"
    )
    # WHEN two polls bring the same progress (the job waits for the worker)
    WebDriverWait(driver, WAIT).until(lambda browser: browser.execute_script("return window.polls;") >= 2)
    # THEN the page keeps what it shows: nothing new for the live region to announce
    assert driver.execute_script("return window.polledJob === document.querySelector('#job');")

    # WHEN the worker runs the job, until the page shows it done
    def worked_and_done(browser: WebDriver) -> bool:
        harness.drain()
        return bool(browser.execute_script("return document.querySelector('#job-status')?.textContent;") == "done")

    WebDriverWait(driver, WAIT).until(worked_and_done)
    # THEN the status changed inside the live region the page had: a region swapped in whole is not announced
    assert driver.execute_script(
        "return window.liveRegion.isConnected && window.liveRegion.contains(document.querySelector('#job-status'));"
    )
    assert driver.execute_script("return window.polledJob !== document.querySelector('#job');")
    accessible(driver)
