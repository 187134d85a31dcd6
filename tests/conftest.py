"""Shared fixtures: an embedded AWS (moto) built from template.yaml, the app, tenants, the worker."""

from __future__ import annotations

from herald.startup import models_built_on_first_use

# As the API function starts (functions/api/herald_api_handler.py): FastAPI's own models built when first used.
with models_built_on_first_use():
    import fastapi  # noqa: F401

import functools
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient
from moto import mock_aws

from herald.api import create_app
from herald.local.moto_fixes import moto_fixes
from herald.local.poller import SqsPoller
from herald.local.resources import LocalResources, create_local_resources
from herald.local.stream_poller import StreamPoller, table_stream_poller
from herald.services import Services
from herald.settings import Settings, get_settings
from herald.urls import LOCAL_NETWORKS
from herald.worker import Worker, settle_all
from tests.delivery_support import Harness, make_harness
from tests.portal_support import Browser
from tests.support import ADMIN, ADMIN_KEY, Clock, Receiver, TenantInfo

pytest_plugins = ["tests.process_guard"]


@pytest.fixture(autouse=True)
def _aws_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fake credentials and a region; never a real AWS account."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # botocore checks each request against the service's model (moto accepts some AWS refuses); subprocesses
    # started by tests inherit it.
    monkeypatch.setenv("HERALD_VALIDATE_AWS_REQUESTS", "true")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _forget_apps() -> Iterator[None]:
    """Empty FastAPI's module-level caches after each test. FastAPI notes what it learned about each endpoint and
    dependency in caches of up to 4,096 callables (``fastapi.dependencies.models``), and each callable holds its
    app, with the app's Services, boto3 clients and moto's answers. A process serves one app, so that is no leak
    in Herald; but each test builds an app of its own, and the caches kept dozens of them alive: after 142 tests,
    6 million objects where 240,000 remain without them. Every collection of the oldest generation walked them,
    and the interpreter's last one took minutes at the suite's end."""
    yield
    for name, module in list(sys.modules.items()):
        if name == "fastapi" or name.startswith("fastapi."):
            for value in list(vars(module).values()):
                if isinstance(value, functools._lru_cache_wrapper):
                    value.cache_clear()


@pytest.fixture
def aws() -> Iterator[boto3.session.Session]:
    # moto_fixes: moto's DynamoDB is not thread-safe (the worker calls it from many threads) and some of its
    # calls are O(table or queue size); see herald.local.moto_fixes.
    with mock_aws(), moto_fixes():
        yield boto3.session.Session(region_name="us-east-1")


@pytest.fixture
def resources(aws: boto3.session.Session) -> LocalResources:
    return create_local_resources(admin_key=ADMIN_KEY, session=aws)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Tests override settings by redefining this fixture or mutating the dict before ``services``."""
    return {}


@pytest.fixture
def settings(resources: LocalResources, settings_overrides: dict[str, Any], request: pytest.FixtureRequest) -> Settings:
    marker = request.node.get_closest_marker("faults")
    values: dict[str, Any] = {
        "table_name": resources.table_name,
        "queue_url": resources.queue_url,
        "dead_letter_queue_url": resources.dead_letter_queue_url,
        "slow_queue_url": resources.slow_queue_url,
        "admin_key_secret_arn": resources.admin_key_secret_arn,
        "max_receive_count": resources.max_receive_count,
        # Local tests deliver to receivers on 127.0.0.1 over http, as `make run` allows.
        "allowed_target_networks": LOCAL_NETWORKS,
        "allow_http_urls": True,
        "delivery_timeout_seconds": 5.0,
        # An in-process receiver held up by a busy machine for more than the default 2 s would have its delivery cut
        # short and sent again from the slow lane, an arrival more than a test counts: the slow lane's own tests set
        # their threshold themselves.
        "slow_lane_after_seconds": 4.0,
        # A recovery's counts read anew on each GET: the tests read them right after the work they follow (the
        # counts kept between reads have tests of their own, in test_recovery.py).
        "recovery_progress_seconds": 0,
        # The end of any failing streak reported, however short: the tests' streaks last seconds (the five minutes a
        # deployment waits for have tests of their own, in test_recovered_notices.py).
        "recovered_notice_after_seconds": 0,
        # Off unless the test is marked @pytest.mark.faults(spec) (herald.faults); never from the environment.
        "faults": marker.args[0] if marker else "",
        **settings_overrides,
    }
    return Settings(**values)


@pytest.fixture
def services(settings: Settings, aws: boto3.session.Session) -> Services:
    return Services.create(settings, session=aws)


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def make_tenant(client: TestClient) -> Callable[[str], TenantInfo]:
    def make(name: str = "Acme") -> TenantInfo:
        response = client.post("/v1/tenants", json={"name": name}, headers=ADMIN)
        assert response.status_code == 201, response.text
        body = response.json()
        return TenantInfo(body["id"], body["api_key"]["key"])

    return make


@pytest.fixture
def tenant(make_tenant: Callable[[str], TenantInfo]) -> TenantInfo:
    return make_tenant("Acme")


@pytest.fixture
def clock() -> Clock:
    """The worker's clock for ``harness``: starts at real time and moves only when told. A module that
    wants the worker on real time overrides it with ``time.time``."""
    return Clock(time.time())


@pytest.fixture
def harness(services: Services, aws: boto3.session.Session, clock: Callable[[], float]) -> Iterator[Harness]:
    """A worker on ``clock`` fed by the Lambda poller emulation (see ``tests.delivery_support.Harness``)."""
    made = make_harness(services, aws, clock=clock)
    yield made
    made.close()


@pytest.fixture
def worker(services: Services) -> Iterator[Worker]:
    instance = Worker(services)
    yield instance
    settle_all([instance])


@pytest.fixture
def poller(services: Services, worker: Worker, aws: boto3.session.Session) -> SqsPoller:
    return SqsPoller(
        aws.client("sqs"),
        services.settings.queue_url,
        worker.handle,
        batch_size=100,
        batching_window_seconds=0,
        function_timeout_seconds=60,
    )


@pytest.fixture
def stream(services: Services, worker: Worker, aws: boto3.session.Session) -> StreamPoller:
    """The table's stream, read like the DeliveryFunction's stream event source (template.yaml): ``drain()``
    hands over what it holds, as ``drain(poller)`` does a queue's messages."""
    return table_stream_poller(
        services.store.client, aws.client("dynamodbstreams"), services.store.table_name, worker.invoke
    )


# --- a real HTTP receiver on 127.0.0.1 -----------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def make_receiver() -> Iterator[Callable[[], Receiver]]:
    servers: list[Receiver] = []

    def make() -> Receiver:
        servers.append(Receiver())
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def browser(services: Services) -> Iterator[Browser]:
    """Separate cookie jars (browsers) on the same app, over https (the portal's cookie is Secure)."""
    opened: list[TestClient] = []

    def make() -> TestClient:
        client = TestClient(create_app(services), base_url="https://testserver", raise_server_exceptions=False)
        opened.append(client.__enter__())
        return opened[-1]

    yield make
    for client in opened:
        client.__exit__(None, None, None)
