"""The ``herald`` operator CLI against the real app, served by uvicorn over real HTTP on 127.0.0.1.

The CLI runs in-process (``herald.cli.main``) and once as the installed console script. The API is the
real app on moto-backed AWS; deliveries go to a real receiver and are verified with ``standardwebhooks``.
"""

# Over 400 lines on purpose: one module per area of behaviour, whose tests share its fixtures and helpers and read
# in order as that area's specification.

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from standardwebhooks import Webhook

from herald.api import create_app
from herald.cli import main
from herald.cli.output import MAX_CELL_WIDTH, record, table
from herald.local.poller import SqsPoller
from herald.local.resources import LocalResources
from herald.local.stack import free_port
from herald.messages import DeliveryMessage
from herald.services import Services
from tests.portal_support import follow
from tests.support import ADMIN_KEY, INVOICE, Receiver, TenantInfo, drain, served

pytestmark = pytest.mark.e2e

CONSOLE_SCRIPT = Path(sys.executable).parent / "herald"


# ---------------------------------------------------------------------------------------------- harness


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """One attempt per delivery: a failed delivery is failed for good at once (what recovery is for)."""
    return {"retry_schedule": (0,)}


@pytest.fixture
def api_url(services: Services) -> Iterator[str]:
    """The app served by uvicorn in a thread (moto's in-process AWS is shared with the test)."""
    with served(create_app(services), lifespan="off") as url:
        yield url


@pytest.fixture
def cli_env(api_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The CLI configured through the environment, as an operator would."""
    monkeypatch.setenv("HERALD_API_URL", api_url)
    monkeypatch.setenv("HERALD_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.delenv("HERALD_STACK_NAME", raising=False)
    return api_url


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        # A delivery function running in a thread meanwhile prints its metrics (one EMF line each) to stdout too.
        return json.loads("\n".join(line for line in self.out.splitlines() if not line.startswith('{"_aws"')))


@pytest.fixture
def herald(capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    def run(*argv: str) -> Run:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err, captured.err
        return Run(code, captured.out, captured.err)

    return run


def api(api_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def make_tenant_via_cli(herald: Callable[..., Run], name: str = "Acme") -> TenantInfo:
    run = herald("--json", "tenants", "create", name)
    assert run.code == 0, run.err
    body = run.json()
    return TenantInfo(body["id"], body["api_key"]["key"])


def subscribe(api_url: str, tenant: TenantInfo, url: str) -> dict[str, Any]:
    with api(api_url, tenant.key) as http:
        response = http.post("/v1/subscriptions", json={"url": url, "event_types": ["invoice.paid"]})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def table_rows(text: str) -> list[list[str]]:
    """The rows of an aligned table, split on runs of two or more spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


# ---------------------------------------------------------------------------------------------- the command


def test_console_script_is_installed_and_talks_to_the_api(cli_env: str, herald: Callable[..., Run]) -> None:
    # GIVEN a tenant created through the in-process CLI
    tenant = make_tenant_via_cli(herald, "Initech")

    # WHEN the installed `herald` command runs in its own process, configured by the environment
    help_run = subprocess.run([str(CONSOLE_SCRIPT), "--help"], capture_output=True, text=True, timeout=60, check=False)
    listed = subprocess.run(
        [str(CONSOLE_SCRIPT), "--json", "tenants", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # THEN it exists, documents its commands and reads the API's JSON
    assert help_run.returncode == 0, help_run.stderr
    for area in ("tenants", "subscriptions", "events", "deliveries", "dlq"):
        assert area in help_run.stdout
    assert listed.returncode == 0, listed.stderr
    assert [t["id"] for t in json.loads(listed.stdout)["data"]] == [tenant.id]


def test_usage_errors_exit_2_before_any_request(cli_env: str, herald: Callable[..., Run]) -> None:
    # WHEN the command line is incomplete or a value is malformed
    missing_action = herald("tenants")
    not_an_object = herald("events", "publish", "invoice.paid", "--data", "[1, 2]", "--tenant", "ten_x")
    bad_time = herald("deliveries", "recover", "--subscription", "sub_x", "--since", "yesterday")
    # THEN argparse says why and the exit code is 2
    assert missing_action.code == 2
    assert not_an_object.code == 2
    assert "must be a JSON object" in not_an_object.err
    assert bad_time.code == 2
    assert "ISO 8601" in bad_time.err
    # ... and nothing reached the API
    with api(cli_env, ADMIN_KEY) as http:
        assert http.get("/v1/tenants").json()["data"] == []


# ---------------------------------------------------------------------------------------------- tenants


def test_tenants_create_list_and_issue_key(cli_env: str, herald: Callable[..., Run]) -> None:
    # WHEN the operator creates two tenants (one as a table, one as JSON)
    created = herald("tenants", "create", "Acme", "--metadata", "plan=pro")
    acme_id = next(row[1] for row in table_rows(created.out) if row[0] == "id")
    acme_key = next(row[1] for row in table_rows(created.out) if row[0] == "api_key.key")
    globex = make_tenant_via_cli(herald, "Globex")

    # THEN the table shows the new tenant and its key once, with a reminder on stderr
    assert created.code == 0, created.err
    assert table_rows(created.out)[0] == ["FIELD", "VALUE"]
    assert acme_key.startswith("hrk_")
    # ... with the metadata it was given
    assert ["metadata.plan", "pro"] in table_rows(created.out)
    assert "shown only once" in created.err
    # ... the key whole, as the table shows it: it is the tenant's key
    assert re.fullmatch(r"hrk_[A-Za-z0-9_-]{43}", acme_key), created.out
    with api(cli_env, acme_key) as http:
        assert http.get("/v1/subscriptions").status_code == 200
    with api(cli_env, ADMIN_KEY) as http:
        acme = http.get(f"/v1/tenants/{acme_id}").json()
    assert acme["name"] == "Acme"
    assert acme["metadata"] == {"plan": "pro"}

    # WHEN the operator lists them
    listed = herald("tenants", "list")
    listed_json = herald("tenants", "list", "--json")
    # THEN the table has a header and one row per tenant; --json is the API's page
    rows = table_rows(listed.out)
    assert rows[0] == ["ID", "NAME", "CREATED_AT"]
    assert sorted((row[0], row[1]) for row in rows[1:]) == sorted([(acme_id, "Acme"), (globex.id, "Globex")])
    with api(cli_env, ADMIN_KEY) as http:
        assert listed_json.json() == http.get("/v1/tenants").json()

    # WHEN a new key is issued to Globex, revoking the others
    issued = herald("--json", "tenants", "issue-key", globex.id, "--revoke-existing")
    new_key = issued.json()["key"]
    # THEN the new key works and the old one does not
    assert issued.code == 0, issued.err
    with api(cli_env, new_key) as http:
        assert http.get("/v1/subscriptions").status_code == 200
    with api(cli_env, globex.key) as http:
        assert http.get("/v1/subscriptions").status_code == 401


def test_tenants_create_with_an_idempotency_key_makes_one_tenant(cli_env: str, herald: Callable[..., Run]) -> None:
    # WHEN the operator creates a tenant with an idempotency key, and runs the same command again
    created = herald("tenants", "create", "Acme", "--metadata", "plan=pro", "--idempotency-key", "signup-acme-1")
    again = herald("tenants", "create", "Acme", "--metadata", "plan=pro", "--idempotency-key", "signup-acme-1")
    again_json = herald(
        "--json", "tenants", "create", "Acme", "--metadata", "plan=pro", "--idempotency-key", "signup-acme-1"
    )
    # THEN the first made the tenant and showed its key
    assert created.code == 0, created.err
    first = dict(row for row in table_rows(created.out)[1:] if len(row) == 2)
    assert first["api_key.key"].startswith("hrk_")
    assert "created before" not in created.err
    # AND each repeat shows that tenant, without a key, and says so on stderr, naming how to get a key
    assert again.code == again_json.code == 0, (again.err, again_json.err)
    shown = dict(row for row in table_rows(again.out)[1:] if len(row) == 2)
    assert shown["id"] == again_json.json()["id"] == first["id"]
    assert shown["metadata.plan"] == "pro"
    assert "api_key.key" not in shown
    assert "api_key" not in again_json.json()
    for repeat in (again, again_json):
        assert "created before with this key" in repeat.err
        assert f"herald tenants issue-key {first['id']} --revoke-existing" in repeat.err
    # AND there is one tenant
    with api(cli_env, ADMIN_KEY) as http:
        assert [tenant["id"] for tenant in http.get("/v1/tenants").json()["data"]] == [first["id"]]


def test_tenants_portal_link_mints_a_one_time_link(cli_env: str, herald: Callable[..., Run]) -> None:
    # GIVEN a tenant
    acme = make_tenant_via_cli(herald, "Acme")
    # WHEN the operator mints a read-only portal link for it
    minted = herald("--json", "tenants", "portal-link", acme.id, "--capability", "read", "--expires-in", "5")
    # THEN the link is the API's answer, and it opens the tenant's portal once
    assert minted.code == 0, minted.err
    link = minted.json()
    assert link["capability"] == "read"
    assert link["path"].startswith("/portal/login?token=")
    with api(cli_env, ADMIN_KEY) as http:
        assert follow(http, link["path"]).status_code == 200
        assert follow(http, link["path"]).status_code == 403
    # AND a minute count out of bounds is the API's 422
    assert herald("tenants", "portal-link", acme.id, "--expires-in", "61").code != 0


def test_tenants_portal_link_table_shows_the_whole_link(cli_env: str, herald: Callable[..., Run]) -> None:
    # GIVEN a tenant
    acme = make_tenant_via_cli(herald, "Acme")
    # WHEN the operator mints a portal link, as a table
    minted = herald("tenants", "portal-link", acme.id, "--capability", "read", "--expires-in", "10")
    # THEN the table shows the link whole (longer than a listing's cell), and that link opens the portal once
    assert minted.code == 0, minted.err
    rows = dict((row[0], row[1]) for row in table_rows(minted.out)[1:])
    url = rows["url"]
    assert "…" not in minted.out
    assert len(url) > MAX_CELL_WIDTH
    assert re.fullmatch(re.escape(cli_env) + r"/portal/login\?token=hpl_[A-Za-z0-9_-]+", url), url
    assert rows["tenant_id"] == acme.id
    with api(cli_env, ADMIN_KEY) as http:
        assert follow(http, url).status_code == 200
        assert follow(http, url).status_code == 403


def test_tables_never_cut_a_value_to_copy() -> None:
    # GIVEN values to copy longer than a listing's cell: a key, a link, an id; and free text as long
    key, link, event_id = "hrk_" + "k" * 80, "https://api.example.com/portal/login?token=hpl_" + "t" * 60, "e" * 128
    reason = "r" * 80
    # WHEN they are shown as a record, and as a listing
    shown = record({"id": event_id, "api_key": {"key": key}, "url": link, "reason": reason})
    listed = table([{"id": event_id, "url": link, "subscription_id": event_id, "reason": reason}], TABLE_COLUMNS)
    # THEN the record shows every value whole; the listing every id and URL whole, and cuts only the free text
    assert dict((row[0], row[1]) for row in table_rows(shown)[1:]) == {
        "id": event_id,
        "api_key.key": key,
        "url": link,
        "reason": reason,
    }
    assert table_rows(listed)[1] == [event_id, link, event_id, reason[: MAX_CELL_WIDTH - 1] + "…"]


TABLE_COLUMNS = ("id", "url", "subscription_id", "reason")


def test_tenants_list_pages_with_iterator_and_all(cli_env: str, herald: Callable[..., Run]) -> None:
    # GIVEN three tenants
    ids = {make_tenant_via_cli(herald, f"T{index}").id for index in range(3)}
    # WHEN the operator lists one per page
    first = herald("tenants", "list", "--limit", "1")
    everything = herald("--json", "tenants", "list", "--limit", "1", "--all")
    # THEN the table says how to get the next page, and --all follows every iterator
    assert len(table_rows(first.out)) == 2
    assert "--iterator" in first.err
    assert {tenant["id"] for tenant in everything.json()["data"]} == ids
    assert everything.json()["done"] is True


# ---------------------------------------------------------------------------------------------- subscriptions


def test_subscriptions_list_disable_enable_with_a_tenant_key(
    cli_env: str, herald: Callable[..., Run], receiver: Receiver
) -> None:
    # GIVEN a tenant with a subscription
    tenant = make_tenant_via_cli(herald)
    sub = subscribe(cli_env, tenant, receiver.url)

    # WHEN the tenant's key lists its subscriptions
    listed = herald("--key", tenant.key, "subscriptions", "list")
    # THEN the table shows it, enabled
    rows = table_rows(listed.out)
    assert listed.code == 0, listed.err
    assert rows[0][:3] == ["ID", "URL", "EVENT_TYPES"]
    assert rows[1][:4] == [sub["id"], receiver.url, "invoice.paid", "true"]

    # WHEN it is disabled, then enabled again
    disabled = herald("--key", tenant.key, "--json", "subscriptions", "disable", sub["id"])
    with api(cli_env, tenant.key) as http:
        after_disable = http.get(f"/v1/subscriptions/{sub['id']}").json()
    enabled = herald("--key", tenant.key, "subscriptions", "enable", sub["id"])
    with api(cli_env, tenant.key) as http:
        after_enable = http.get(f"/v1/subscriptions/{sub['id']}").json()

    # THEN the API recorded each change
    assert disabled.code == 0, disabled.err
    assert disabled.json()["enabled"] is False
    assert after_disable["enabled"] is False
    assert after_disable["disabled_reason"]
    assert enabled.code == 0, enabled.err
    assert ["enabled", "true"] in table_rows(enabled.out)
    assert after_enable["enabled"] is True


def test_subscriptions_show_has_the_delivery_options_with_sensitive_values_masked(
    cli_env: str, herald: Callable[..., Run], receiver: Receiver
) -> None:
    # GIVEN a subscription with a sensitive header, a plain one, a filter and a transform
    tenant = make_tenant_via_cli(herald)
    options = {
        "headers": {"X-Api-Key": {"value": "ak-cli-0123456789"}, "X-Route": {"value": "eu-1"}},
        "filter": {"currency": "EUR"},
        "transform": "{id: data.invoice_id}",
    }
    with api(cli_env, tenant.key) as http:
        response = http.post(
            "/v1/subscriptions", json={"url": receiver.url, "event_types": ["invoice.paid"], **options}
        )
    assert response.status_code == 201, response.text
    sub_id = response.json()["id"]
    # WHEN the operator shows it, as a table and as JSON
    shown = herald("subscriptions", "show", sub_id, "--tenant", tenant.id)
    as_json = herald("--json", "subscriptions", "show", sub_id, "--tenant", tenant.id)
    # THEN both have the options, and neither the sensitive value
    assert shown.code == 0, shown.err
    rows = dict((row[0], row[-1]) for row in table_rows(shown.out)[1:])
    assert rows["headers.X-Api-Key"] == '{"value":null,"sensitive":true}'
    assert rows["headers.X-Route"] == '{"value":"eu-1","sensitive":false}'
    assert (rows["filter.currency"], rows["transform"]) == ("EUR", "{id: data.invoice_id}")
    assert as_json.json()["filter"] == {"currency": "EUR"}
    assert "ak-cli-0123456789" not in shown.out + as_json.out


def test_operator_lists_a_tenants_subscriptions(cli_env: str, herald: Callable[..., Run], receiver: Receiver) -> None:
    # GIVEN a tenant with a subscription
    tenant = make_tenant_via_cli(herald)
    sub = subscribe(cli_env, tenant, receiver.url)
    # WHEN the operator (admin key) lists them for the tenant
    listed = herald("--json", "subscriptions", "list", "--tenant", tenant.id)
    # THEN it sees the tenant's subscription
    assert listed.code == 0, listed.err
    assert [s["id"] for s in listed.json()["data"]] == [sub["id"]]


# ---------------------------------------------------------------------------------------------- events and deliveries


def test_publish_show_list_and_resend_a_delivery(
    cli_env: str,
    herald: Callable[..., Run],
    receiver: Receiver,
    poller: SqsPoller,
    tmp_path: Path,
) -> None:
    # GIVEN a tenant subscribed to invoice.paid, and the payload in a file
    tenant = make_tenant_via_cli(herald)
    sub = subscribe(cli_env, tenant, receiver.url)
    payload = tmp_path / "invoice.json"
    payload.write_text(json.dumps(INVOICE))

    # WHEN the operator publishes it twice with the same idempotency key
    args = ("events", "publish", "invoice.paid", "--data", f"@{payload}", "--tenant", tenant.id)
    published = herald(*args, "--idempotency-key", "order-1001")
    again = herald("--json", *args, "--idempotency-key", "order-1001")
    # THEN one event exists, shown as a table the first time and as JSON the second
    assert published.code == 0, published.err
    event_id = dict(row for row in table_rows(published.out)[1:] if len(row) == 2)["id"]
    assert again.json()["id"] == event_id
    # AND a repeat shown as a table says it is the event published before, as the first publish did not
    replayed = herald(*args, "--idempotency-key", "order-1001")
    assert dict(row for row in table_rows(replayed.out)[1:] if len(row) == 2)["id"] == event_id
    assert "published before" in replayed.err
    assert "published before" not in published.err

    # WHEN the delivery function runs and the operator looks at the event
    drain(poller)
    shown = herald("events", "show", event_id)
    shown_json = herald("--json", "events", "show", event_id)
    # THEN its deliveries are counted and its data shown
    fields = dict(row for row in table_rows(shown.out)[1:] if len(row) == 2)
    assert fields["deliveries.succeeded"] == "1"
    assert fields["deliveries.pending"] == "0"
    assert fields["data.invoice_id"] == INVOICE["invoice_id"]
    assert shown_json.json()["data"] == INVOICE

    # WHEN the tenant lists the subscription's deliveries and resends the one delivery
    listed = herald("--key", tenant.key, "deliveries", "list", "--subscription", sub["id"])
    rows = table_rows(listed.out)
    delivery_id = rows[1][0]
    resent = herald("--key", tenant.key, "deliveries", "resend", delivery_id, "--subscription", sub["id"])
    drain(poller)

    # ... and the operator redelivers the event to every subscription it goes to
    redelivered = herald("--json", "events", "redeliver", event_id)
    drain(poller)

    # THEN the list showed it succeeded, and the receiver got the same message three times, all verifiable
    assert rows[0][:4] == ["ID", "EVENT_ID", "EVENT_TYPE", "STATUS"]
    assert rows[1][1:4] == [event_id, "invoice.paid", "succeeded"]
    assert resent.code == 0, resent.err
    assert redelivered.code == 0, redelivered.err
    assert redelivered.json()["event_id"] == event_id
    assert len(receiver.received) == 3
    webhook = Webhook(sub["secret"])
    for got in receiver.received:
        assert webhook.verify(got.body, got.headers)["data"] == INVOICE
    assert len({got.headers["webhook-id"] for got in receiver.received}) == 1


def test_deliveries_recover_waits_for_the_job(
    cli_env: str, herald: Callable[..., Run], receiver: Receiver, poller: SqsPoller
) -> None:
    # GIVEN a delivery that failed for good (one attempt in this module's schedule; the receiver was down)
    tenant = make_tenant_via_cli(herald)
    sub = subscribe(cli_env, tenant, receiver.url)
    since = datetime.now(UTC) - timedelta(minutes=1)
    receiver.default = (500, {}, b"down", 0.0)
    assert herald("events", "publish", "invoice.paid", "--data", json.dumps(INVOICE), "--tenant", tenant.id).code == 0
    drain(poller)
    failed = herald("--key", tenant.key, "--json", "deliveries", "list", "--subscription", sub["id"])
    assert [d["status"] for d in failed.json()["data"]] == ["failed"]
    # ... and a receiver that is back, with the delivery function running
    receiver.default = (200, {}, b"ok", 0.0)
    stop = threading.Event()
    worker_thread = threading.Thread(target=_keep_draining, args=(poller, stop), daemon=True)
    worker_thread.start()
    try:
        # WHEN the tenant recovers the subscription's failed deliveries and waits for the job
        recovered = herald(
            *("--key", tenant.key, "--json", "deliveries", "recover", "--subscription", sub["id"]),
            *("--since", since.isoformat(), "--wait", "--poll-interval", "0.1", "--wait-timeout", "60"),
        )
    finally:
        stop.set()
        worker_thread.join(timeout=30)
    # THEN the job finished, and the receiver got the event once more, verifiable
    assert recovered.code == 0, recovered.err
    job = recovered.json()
    assert job["status"] == "done"
    assert job["sent"] == 1
    assert len(receiver.received) == 2
    last = receiver.received[-1]
    assert Webhook(sub["secret"]).verify(last.body, last.headers)["data"] == INVOICE
    # ... and the job can be looked up later
    progress = herald("--key", tenant.key, "deliveries", "recovery", job["id"], "--subscription", sub["id"])
    assert progress.code == 0, progress.err
    assert ["status", "done"] in table_rows(progress.out)
    assert ["sent", "1"] in table_rows(progress.out)


def _keep_draining(poller: SqsPoller, stop: threading.Event) -> None:
    while not stop.is_set():
        drain(poller)
        stop.wait(0.05)


# ---------------------------------------------------------------------------------------------- dead letters


def test_dlq_show_and_redrive(
    cli_env: str, herald: Callable[..., Run], resources: LocalResources, aws: boto3.session.Session
) -> None:
    # GIVEN two retired (readable) work messages in the dead-letter queue
    tenant = make_tenant_via_cli(herald)
    sqs = aws.client("sqs")
    for event_id in ("evt_1", "evt_2"):
        message = DeliveryMessage(
            event_id=event_id, tenant_id=tenant.id, subscription_id="sub_1", delivery_id=f"dlv_{event_id}"
        )
        sqs.send_message(QueueUrl=resources.dead_letter_queue_url, MessageBody=message.model_dump_json())

    # WHEN the operator looks at the dead-letter queue, a sample of one
    shown = herald("dlq", "show", "--sample", "1")
    shown_json = herald("--json", "dlq", "show")
    # THEN it sees the count and one message (of kind delivery), and both are still there
    assert shown.code == 0, shown.err
    summary, sample = shown.out.strip().split("\n\n")
    assert ["count", "2"] in table_rows(summary)
    sample_rows = table_rows(sample)
    assert sample_rows[0][:2] == ["MESSAGE_ID", "KIND"]
    assert len(sample_rows) == 2
    assert sample_rows[1][1] == "delivery"
    assert shown_json.json()["count"] == 2
    assert {letter["event_id"] for letter in shown_json.json()["sample"]} == {"evt_1", "evt_2"}

    # WHEN it redrives at most one, then the rest
    first = herald("--json", "dlq", "redrive", "--limit", "1")
    rest = herald("dlq", "redrive")
    # THEN the messages moved back to the work queue
    assert first.code == 0, first.err
    assert first.json()["moved"] == 1
    assert rest.code == 0, rest.err
    assert ["moved", "1"] in table_rows(rest.out)
    attributes = sqs.get_queue_attributes(
        QueueUrl=resources.dead_letter_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"


def test_dlq_discard_deletes_poison_and_leaves_readable_messages(
    cli_env: str, herald: Callable[..., Run], resources: LocalResources, aws: boto3.session.Session
) -> None:
    # GIVEN a readable work message and two poison ones in the dead-letter queue
    tenant = make_tenant_via_cli(herald)
    sqs = aws.client("sqs")
    message = DeliveryMessage(event_id="evt_1", tenant_id=tenant.id, subscription_id="sub_1", delivery_id="dlv_1")
    readable = sqs.send_message(QueueUrl=resources.dead_letter_queue_url, MessageBody=message.model_dump_json())
    poison = [sqs.send_message(QueueUrl=resources.dead_letter_queue_url, MessageBody=f"not json {n}") for n in range(2)]

    # WHEN the operator discards one poison message and the readable one by id
    named = herald("dlq", "discard", "--id", poison[0]["MessageId"], "--id", readable["MessageId"])
    # THEN the poison message is gone and shown; the readable one is left, said on stderr, and the command exits 1
    assert named.code == 1
    summary, rows = named.out.strip().split("\n\n")
    assert table_rows(summary)[1:] == [["discarded", "1"], ["kept", "2"], ["remaining", "2"]]  # the count of the rows
    assert table_rows(rows)[0][:3] == ["MESSAGE_ID", "REASON", "POISON"]  # a body no code reads names no kind
    assert [row[0] for row in table_rows(rows)[1:]] == [poison[0]["MessageId"]]
    assert "not discarded, still in the dead-letter queue:" in named.err
    assert f"{readable['MessageId']}: not poison: a redrive sends it back to work" in named.err

    # WHEN it discards all poison
    rest = herald("--json", "dlq", "discard", "--all-poison")
    # THEN the last poison message is gone, the readable one stays, and the command succeeds
    assert rest.code == 0, rest.err
    assert [letter["body"] for letter in rest.json()["discarded"]] == ["not json 1"]
    assert rest.json()["remaining"] == 1

    # WHEN it names nothing, gives a limit to a discard by id, or names more messages than a call takes
    nothing = herald("dlq", "discard")
    limited = herald("dlq", "discard", "--id", readable["MessageId"], "--limit", "5")
    too_many = herald("dlq", "discard", *[arg for n in range(101) for arg in ("--id", f"m{n}")])
    # THEN each is a usage error, nothing sent; the readable message is still there
    assert (nothing.code, limited.code, too_many.code) == (2, 2, 2)
    assert "--limit goes with --all-poison" in limited.err
    assert "at most 100 --id in one call" in too_many.err
    attributes = sqs.get_queue_attributes(
        QueueUrl=resources.dead_letter_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "1"


# ---------------------------------------------------------------------------------------------- errors


def test_api_errors_print_the_code_and_exit_1(cli_env: str, herald: Callable[..., Run]) -> None:
    tenant = make_tenant_via_cli(herald)
    # WHEN the key is wrong
    bad_key = herald("--key", "hrk_" + "x" * 43, "tenants", "list")
    # THEN the API's code is printed on stderr, nothing on stdout
    assert bad_key.code == 1
    assert bad_key.err.startswith("error: unauthorized: ")
    assert bad_key.out == ""

    # WHEN a tenant key calls an operator command
    forbidden = herald("--key", tenant.key, "tenants", "list")
    assert forbidden.code == 1
    assert forbidden.err.startswith("error: forbidden: ")

    # WHEN the operator runs a tenant's command without naming the tenant
    unnamed = herald("subscriptions", "list")
    # THEN the error is followed by the flag that names it
    assert unnamed.code == 1
    error, *hint = unnamed.err.splitlines()
    assert error.startswith("error: forbidden: ")
    assert hint == ["the operator acts for a tenant with --tenant TENANT_ID"]
    # ... which an operator command a tenant's key was refused never says, one with a --tenant of its own included
    assert "--tenant" not in forbidden.err
    broadcast = herald("--key", tenant.key, "events", "publish", "invoice.paid", "--broadcast", "--data", "{}")
    assert broadcast.code == 1
    assert broadcast.err.startswith("error: forbidden: ")
    assert "--tenant" not in broadcast.err

    # WHEN something does not exist
    missing = herald("events", "show", "evt_does_not_exist")
    assert missing.code == 1
    assert missing.err.startswith("error: not_found: ")

    # WHEN the payload does not fit the event type, the API's field-level details follow
    invalid = herald("events", "publish", "invoice.paid", "--data", '{"invoice_id": 1}', "--tenant", tenant.id)
    assert invalid.code == 1
    first, *details = invalid.err.splitlines()
    assert first.startswith("error: ")
    assert details
    assert all(line.startswith("  ") for line in details)


def test_connection_failure_is_an_error_not_a_traceback(herald: Callable[..., Run]) -> None:
    # GIVEN nothing listening on a port
    url = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    # WHEN the CLI calls it
    run = herald("--api-url", url, "--key", "k", "tenants", "list")
    # THEN it says it could not connect
    assert run.code == 1
    assert run.err.startswith(f"error: connection_failed: could not reach {url}/")


# ---------------------------------------------------------------------------------------------- stack discovery

STACK_TEMPLATE = """
Resources:
  Placeholder:
    Type: AWS::SQS::Queue
Outputs:
  ApiUrl:
    Value: {api_url}/
  AdminKeySecretArn:
    Value: {secret_arn}
"""


def deployed_stack(
    aws: boto3.session.Session, monkeypatch: pytest.MonkeyPatch, name: str, *, api_url: str, secret_arn: str
) -> None:
    """A stack ``name`` whose outputs name the API (``api_url``) and its admin key's secret, and no URL, key or
    stack name in the environment (the CLI finds them through the stack, when asked)."""
    for variable in ("HERALD_API_URL", "HERALD_ADMIN_KEY", "HERALD_STACK_NAME"):
        monkeypatch.delenv(variable, raising=False)
    template = STACK_TEMPLATE.format(api_url=api_url, secret_arn=secret_arn)
    aws.client("cloudformation").create_stack(StackName=name, TemplateBody=template)


def test_url_and_admin_key_come_from_the_stack_outputs(
    api_url: str,
    herald: Callable[..., Run],
    resources: LocalResources,
    aws: boto3.session.Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN no URL or key in the environment, and a deployed stack whose outputs name the API and the secret
    deployed_stack(aws, monkeypatch, "herald-prod", api_url=api_url, secret_arn=resources.admin_key_secret_arn)
    secret = aws.client("secretsmanager").get_secret_value(SecretId=resources.admin_key_secret_arn)["SecretString"]
    assert secret == ADMIN_KEY

    # WHEN the operator names the stack (by flag, then by environment)
    by_flag = herald("--stack-name", "herald-prod", "tenants", "create", "Acme")
    monkeypatch.setenv("HERALD_STACK_NAME", "herald-prod")
    by_env = herald("--json", "tenants", "list")

    # THEN the CLI found the API and authenticated with the secret's admin key
    assert by_flag.code == 0, by_flag.err
    assert by_env.code == 0, by_env.err
    assert [tenant["name"] for tenant in by_env.json()["data"]] == ["Acme"]


def test_a_missing_stack_is_a_configuration_error(
    aws: boto3.session.Session, herald: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HERALD_API_URL", "HERALD_ADMIN_KEY", "HERALD_STACK_NAME"):
        monkeypatch.delenv(name, raising=False)
    # WHEN no configuration is given and the default stack does not exist
    run = herald("tenants", "list")
    # THEN the error says which stack it looked for, and how to use an API of one's own instead
    assert run.code == 1
    assert run.err.startswith("error: not_configured: could not read the outputs of stack 'herald'")
    assert "for an API of your own (`make run`'s), set HERALD_API_URL and HERALD_ADMIN_KEY" in run.err
    assert run.err.count("\n") == 1, run.err


def test_publish_batch_answers_each_event(
    cli_env: str, herald: Callable[..., Run], receiver: Receiver, poller: SqsPoller, tmp_path: Path
) -> None:
    # GIVEN a tenant subscribed to invoice.paid, and a file of three events, one of an unknown type
    tenant = make_tenant_via_cli(herald)
    sub = subscribe(cli_env, tenant, receiver.url)
    events = [
        {
            "type": "invoice.paid",
            "tenant_id": tenant.id,
            "id": f"batch-{n}",
            "data": {**INVOICE, "invoice_id": f"in_{n}"},
        }
        for n in (1, 2)
    ]
    events.append({"type": "invoice.unheard_of", "tenant_id": tenant.id, "data": {}})
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps({"events": events}))
    # WHEN the operator publishes the file
    shown = herald("events", "publish-batch", f"@{batch}")
    drain(poller)
    # THEN one row per event says what became of it, the command fails for the refused one, and the two good
    # ones arrived, signed
    assert shown.code == 1, shown.err
    rows = table_rows(shown.out)
    assert rows[0] == ["INDEX", "STATUS", "ID", "REPLAYED", "ERROR"]
    assert [row[:3] for row in rows[1:3]] == [["0", "202", "batch-1"], ["1", "202", "batch-2"]]
    assert rows[3][1] == "422"
    assert "1 of 3 refused" in shown.err + shown.out
    webhook = Webhook(sub["secret"])
    assert sorted(webhook.verify(got.body, got.headers)["data"]["invoice_id"] for got in receiver.received) == [
        "in_1",
        "in_2",
    ]
