"""boto3 clients, created lazily (never at import time) with settings fit for Lambda.

Endpoints come from the standard ``AWS_ENDPOINT_URL`` variables, so the same code talks to AWS or moto.
With ``HERALD_FAULTS`` set (tests, the local stack), each client gets the fault injector (herald.faults), and
with ``HERALD_VALIDATE_AWS_REQUESTS`` (the same) botocore checks each request against the service's model.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from herald.deadline import CONNECT_SECONDS, attempt_seconds, within_deadline

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

#: Enough pooled connections for a whole SQS batch worked concurrently; short timeouts so a stuck
#: call fails inside the Lambda's time budget and is retried by the standard retry mode. No client-side
#: validation of parameters in a deployment: botocore's walk of each request against the service's model
#: cost about a tenth of the worker's CPU per delivery, and the services validate on their side (a
#: ``ValidationException``, which Herald's callers handle as any failed call). Tests and the local stack
#: turn it on (``validate_aws_requests``): moto accepts some requests AWS would refuse, and most of Herald's
#: DynamoDB calls go through ``Table.call``, whose keyword arguments mypy does not check against the model.
CLIENT_CONFIG = Config(
    parameter_validation=False,
    retries={"mode": "standard", "max_attempts": 4},
    max_pool_connections=64,
    connect_timeout=CONNECT_SECONDS,
    read_timeout=10,  # the setting's default: ``aws_read_timeout_seconds``
)


def _client(service: str, session: boto3.session.Session | None, faults: str | None) -> Any:
    """A client; with the fault injector on it when ``faults`` (by default the ``HERALD_FAULTS`` setting) says so."""
    from herald.settings import get_settings

    settings = get_settings()
    config = CLIENT_CONFIG.merge(Config(read_timeout=settings.aws_read_timeout_seconds))
    if settings.validate_aws_requests:
        config = config.merge(Config(parameter_validation=True))
    client = (session or boto3.session.Session()).client(service, config=config)  # type: ignore[call-overload]
    # First: before any other handler that would answer the attempt (moto's, in tests; the fault injector's) and make
    # the call. botocore runs the handlers of a more specific event name first, so the hook is registered for this
    # service's events, where the fault injector registers its own, and before it.
    service = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register_first(
        f"before-send.{service}", functools.partial(within_deadline, attempt_seconds(settings))
    )
    if faults is None:
        faults = settings.faults
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


def refused_at_once(exc: Exception) -> bool:
    """Whether a failed AWS call surely did nothing: the service refused its first try (a 4xx: throttled, invalid,
    denied). A lost answer (a timeout, a connection closed) may follow a call carried out, and so may an error botocore
    got after retrying one; a 5xx may come from a call the service carried out (botocore does not retry it once its
    retry quota is spent, so it may be a first try too)."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    metadata = exc.response.get("ResponseMetadata", {})
    return metadata.get("RetryAttempts", 0) == 0 and 400 <= metadata.get("HTTPStatusCode", 500) < 500


def surely_refused(failure: BaseException) -> bool:
    """Whether the AWS call a failure was raised for (its cause) surely did nothing (``refused_at_once``): else it may
    have been carried out, its answer lost."""
    cause = failure.__cause__
    return isinstance(cause, Exception) and refused_at_once(cause)
