"""How `make run` starts its embedded AWS (``herald.local.stack``): every AWS call of the process goes to it, whatever
the user's AWS environment says."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import boto3
import pytest

from herald.local.moto_fixes import moto_fixes
from herald.local.stack import start_aws, use_embedded_aws
from herald.settings import get_settings
from tests.support import ADMIN_KEY


@pytest.fixture
def restored_environment() -> Iterator[None]:
    """The local stack sets this process's environment: put it back as it was."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()


def _closed_port() -> int:
    """A port nothing listens on (bound to find it, then released)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_service_endpoints_of_the_environment_give_way_to_the_embedded_aws(tmp_path: Path) -> None:
    # GIVEN a user's environment that names other endpoints for some services, ignores configured endpoints, and a
    # config file whose profile names its own endpoint for SQS and ignores configured endpoints too
    config = tmp_path / "config"
    config.write_text(
        "[default]\nregion = us-east-1\nignore_configured_endpoint_urls = true\nservices = elsewhere\n\n"
        "[services elsewhere]\nsqs =\n  endpoint_url = http://127.0.0.1:1\n",
        encoding="utf-8",
    )
    environ = {
        "AWS_ENDPOINT_URL_SQS": "https://sqs.us-east-1.amazonaws.com",
        "AWS_ENDPOINT_URL_DYNAMODB": "https://dynamodb.us-east-1.amazonaws.com",
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true",
        "AWS_CONFIG_FILE": str(config),
        "AWS_PROFILE": "default",
        "AWS_SESSION_TOKEN": "a-real-looking-token",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    # WHEN the local stack points the process at its embedded AWS
    use_embedded_aws("http://127.0.0.1:4566", environ)
    # THEN every client the process makes calls the embedded AWS, with the local keys, in the user's region
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(environ)
        session = boto3.session.Session()
        clients = [session.client("sqs"), session.client("dynamodb"), session.client("dynamodbstreams")]
        clients.append(session.client("secretsmanager"))
        for client in clients:
            assert client.meta.endpoint_url == "http://127.0.0.1:4566", client.meta.service_model.service_name
        credentials = session.get_credentials()
        assert credentials is not None
        assert (credentials.access_key, credentials.token) == ("local", None)
        assert session.region_name == "eu-west-1"
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.usefixtures("restored_environment")
def test_the_stacks_sqs_client_calls_the_embedded_aws_when_the_user_set_another_sqs_endpoint() -> None:
    # GIVEN a user's AWS_ENDPOINT_URL_SQS (here a port nothing answers on; one attempt per call)
    os.environ["AWS_ENDPOINT_URL_SQS"] = f"http://127.0.0.1:{_closed_port()}"
    os.environ["AWS_MAX_ATTEMPTS"] = "1"
    # WHEN the local stack starts its embedded AWS
    with moto_fixes():
        server, endpoint, resources = start_aws("127.0.0.1", None, ADMIN_KEY)
        try:
            # THEN its SQS client is the embedded AWS's, where the template's queues are
            sqs = boto3.session.Session().client("sqs")
            assert sqs.meta.endpoint_url == endpoint
            assert resources.queue_url in sqs.list_queues()["QueueUrls"]
        finally:
            server.stop()
