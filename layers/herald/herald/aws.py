"""boto3 clients, created lazily (never at import time) with settings fit for Lambda.

Endpoints come from the standard ``AWS_ENDPOINT_URL`` variables, so the same code talks to AWS or moto.
With ``HERALD_FAULTS`` set (tests, the local stack), each client gets the fault injector (herald.faults).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

#: Enough pooled connections for a whole SQS batch worked concurrently; short timeouts so a stuck
#: call fails inside the Lambda's time budget and is retried by the standard retry mode. No client-side
#: validation of parameters: every call is typed against the services' models (mypy with boto3's stubs),
#: the services validate on their side (a ``ValidationException``), and botocore's walk of each request
#: against the model cost about a tenth of the worker's CPU per delivery.
CLIENT_CONFIG = Config(
    parameter_validation=False,
    retries={"mode": "standard", "max_attempts": 4},
    max_pool_connections=64,
    connect_timeout=3,
    read_timeout=10,
)


def _client(service: str, session: boto3.session.Session | None, faults: str | None) -> Any:
    """A client; with the fault injector on it when ``faults`` (by default the ``HERALD_FAULTS`` setting) says so."""
    client = (session or boto3.session.Session()).client(service, config=CLIENT_CONFIG)  # type: ignore[call-overload]
    if faults is None:
        from herald.settings import get_settings

        faults = get_settings().faults
    if faults:
        from herald.faults import install

        install(client, faults)
    return client


def dynamodb_client(session: boto3.session.Session | None = None, *, faults: str | None = None) -> DynamoDBClient:
    client: DynamoDBClient = _client("dynamodb", session, faults)
    return client


def sqs_client(session: boto3.session.Session | None = None, *, faults: str | None = None) -> SQSClient:
    client: SQSClient = _client("sqs", session, faults)
    return client


def secretsmanager_client(
    session: boto3.session.Session | None = None, *, faults: str | None = None
) -> SecretsManagerClient:
    client: SecretsManagerClient = _client("secretsmanager", session, faults)
    return client
