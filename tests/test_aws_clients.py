"""Herald's boto3 clients: botocore checks requests against the service's model in tests and ``make run``
(``HERALD_VALIDATE_AWS_REQUESTS``), not in a deployment, where the service checks them itself."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError, ParamValidationError

from herald.aws import dynamodb_client
from herald.settings import get_settings


def test_the_tests_clients_refuse_a_request_the_model_does_not_allow(aws: boto3.session.Session) -> None:
    # GIVEN the test suite's setting (conftest turns the check on)
    client = dynamodb_client(aws, faults="")
    # WHEN a request misses a required parameter
    # THEN botocore refuses it before anything is sent
    with pytest.raises(ParamValidationError, match="Key"):
        client.get_item(TableName="herald")  # type: ignore[call-arg]


def test_a_deployments_clients_leave_the_check_to_the_service(
    aws: boto3.session.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a deployment's settings (the variable unset)
    monkeypatch.delenv("HERALD_VALIDATE_AWS_REQUESTS")
    get_settings.cache_clear()
    client = dynamodb_client(aws, faults="")
    # WHEN the same request is made
    # THEN it is sent, and the service (moto here) refuses it: a ClientError, as every caller handles
    with pytest.raises(ClientError):
        client.get_item(TableName="herald")  # type: ignore[call-arg]
