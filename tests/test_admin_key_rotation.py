"""`herald admin-key rotate` on a stack (moto): the new key works, the old one stops, only AWSCURRENT is read."""

from __future__ import annotations

import json
import re
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient

from herald.api import create_app
from herald.auth import AdminKeyProvider
from herald.cli import main
from herald.local.resources import LocalResources
from herald.services import Services
from tests.support import ADMIN, ADMIN_KEY, Clock

STACK = "herald-prod"
STACK_TEMPLATE = """
Resources:
  Placeholder:
    Type: AWS::SQS::Queue
Outputs:
  AdminKeySecretArn:
    Value: {secret_arn}
{material_output}"""


def rotation_stack_template(secret_arn: str, material_arn: str) -> str:
    """A stack whose outputs name the admin key's secret and its material secret."""
    output = f"  AdminKeyMaterialArn:\n    Value: {material_arn}\n"
    return STACK_TEMPLATE.format(secret_arn=secret_arn, material_output=output)


@pytest.fixture
def stack(aws: boto3.session.Session, resources: LocalResources, monkeypatch: pytest.MonkeyPatch) -> str:
    """A deployed stack whose outputs name the admin key secret and its material secret."""
    secrets = aws.client("secretsmanager")
    material_arn = secrets.create_secret(Name="herald-admin-key-material", SecretString="x" * 48)["ARN"]
    template = rotation_stack_template(resources.admin_key_secret_arn, material_arn)
    aws.client("cloudformation").create_stack(StackName=STACK, TemplateBody=template)
    for name in ("HERALD_API_URL", "HERALD_ADMIN_KEY", "HERALD_STACK_NAME"):
        monkeypatch.delenv(name, raising=False)
    return material_arn


def containers(
    services: Services, aws: boto3.session.Session, clock: Clock, count: int, reads: list[dict[str, Any]]
) -> list[TestClient]:
    """``count`` API containers, each with its own admin key cache, on one clock; ``reads`` collects the
    parameters of their GetSecretValue calls."""
    made = []
    for _ in range(count):
        secrets = aws.client("secretsmanager")
        secrets.meta.events.register(
            "provide-client-params.secrets-manager.GetSecretValue", lambda params, **_: reads.append(dict(params))
        )
        own = Services.create(services.settings, session=aws)
        own.admin_keys = AdminKeyProvider(services.settings, client=secrets, clock=clock)
        made.append(TestClient(create_app(own), raise_server_exceptions=False))
    return made


def test_rotate_writes_a_new_key_the_api_takes_and_the_old_one_stops(
    services: Services,
    aws: boto3.session.Session,
    resources: LocalResources,
    stack: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secrets = aws.client("secretsmanager")
    gets: list[dict[str, Any]] = []
    clock = Clock(1000.0)
    # GIVEN two warm API containers that have both used (and cached) the admin key
    first, second = containers(services, aws, clock, 2, gets)
    for container in (first, second):
        assert container.get("/v1/tenants", headers=ADMIN).status_code == 200

    # WHEN the operator rotates the key of the stack
    code = main(["--json", "admin-key", "rotate", "--stack-name", STACK])
    out, err = capsys.readouterr()

    # THEN the key is a new hra_ key built from new material, and neither is printed
    assert code == 0, err
    new_key = secrets.get_secret_value(SecretId=resources.admin_key_secret_arn)["SecretString"]
    material = secrets.get_secret_value(SecretId=stack)["SecretString"]
    assert new_key == "hra_" + material
    assert re.fullmatch(r"[A-Za-z0-9]{48}", material)
    assert new_key != ADMIN_KEY
    assert new_key not in out + err
    assert material not in out + err
    assert json.loads(out)["secret_arn"] == resources.admin_key_secret_arn  # where to read it
    # ... the old key stays readable to the operator as AWSPREVIOUS only
    stages = secrets.describe_secret(SecretId=resources.admin_key_secret_arn)["VersionIdsToStages"]
    previous = secrets.get_secret_value(SecretId=resources.admin_key_secret_arn, VersionStage="AWSPREVIOUS")
    assert previous["SecretString"] == ADMIN_KEY
    assert sorted(map(sorted, stages.values())) == [["AWSCURRENT"], ["AWSPREVIOUS"]]

    # ... the first container takes the new key once the refresh floor has passed, and then refuses the old
    new = {"Authorization": f"Bearer {new_key}"}
    clock.advance(services.settings.admin_key_refresh_seconds)
    assert first.get("/v1/tenants", headers=new).status_code == 200
    assert first.get("/v1/tenants", headers=ADMIN).status_code == 401
    # ... a container that never saw the new key refuses the old one once its cache expires
    assert second.get("/v1/tenants", headers=ADMIN).status_code == 200
    clock.advance(services.settings.admin_key_cache_seconds - services.settings.admin_key_refresh_seconds)
    assert second.get("/v1/tenants", headers=ADMIN).status_code == 401
    assert second.get("/v1/tenants", headers=new).status_code == 200
    # ... and every read of the secret by the API asked for AWSCURRENT (what its role's condition allows)
    assert len(gets) >= 4
    assert all(params.get("VersionStage") == "AWSCURRENT" for params in gets), gets


def test_a_later_stack_update_writes_back_the_current_key(
    aws: boto3.session.Session, resources: LocalResources, stack: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a rotated key
    assert main(["admin-key", "rotate", "--stack-name", STACK]) == 0
    assert "aws secretsmanager get-secret-value" in capsys.readouterr().err
    secrets = aws.client("secretsmanager")
    # WHEN CloudFormation rebuilds AdminKeySecret from its template value (hra_ + the material's current value)
    rebuilt = "hra_" + secrets.get_secret_value(SecretId=stack)["SecretString"]
    # THEN that is the current key, not the first one
    assert rebuilt == secrets.get_secret_value(SecretId=resources.admin_key_secret_arn)["SecretString"]
    assert rebuilt != ADMIN_KEY


def test_a_stack_without_the_material_output_is_a_configuration_error(
    aws: boto3.session.Session, resources: LocalResources, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    template = STACK_TEMPLATE.format(secret_arn=resources.admin_key_secret_arn, material_output="")
    aws.client("cloudformation").create_stack(StackName="old-herald", TemplateBody=template)
    code = main(["admin-key", "rotate", "--stack-name", "old-herald"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: not_configured: stack 'old-herald' has no AdminKeySecretArn and AdminKeyMaterialArn")
    # and nothing was written
    secrets = aws.client("secretsmanager")
    assert secrets.get_secret_value(SecretId=resources.admin_key_secret_arn)["SecretString"] == ADMIN_KEY
