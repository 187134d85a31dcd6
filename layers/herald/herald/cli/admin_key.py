"""``herald admin-key rotate``: a new admin key for a deployed stack; the old one stops working.

The stack keeps the key in two secrets (template.yaml): ``AdminKeyMaterial``, 48 random letters and digits,
and ``AdminKeySecret``, the key itself (``hra_`` + the material), which the API reads. Rotating writes new
material to both, material first, so a later stack update that rebuilds ``AdminKeySecret`` from the material
writes back the new key, never the first one. Both writes are ``PutSecretValue``: the previous values keep
the ``AWSPREVIOUS`` label for the operator, and the API's role may only read ``AWSCURRENT``.

The API picks the new key up within ``HERALD_ADMIN_KEY_REFRESH_SECONDS`` of its first use (30 s), and the
old key is refused by every warm container within ``HERALD_ADMIN_KEY_CACHE_SECONDS`` (5 minutes).
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from herald.cli.config import ADMIN_KEY_SECRET_OUTPUT, aws_client, stack_outputs
from herald.cli.errors import CliConfigError, CliError
from herald.ids import ADMIN_KEY_PREFIX

if TYPE_CHECKING:
    import boto3

#: Output of template.yaml naming the material secret.
ADMIN_KEY_MATERIAL_OUTPUT = "AdminKeyMaterialArn"
#: As AdminKeyMaterial's GenerateSecretString: 48 characters, letters and digits.
MATERIAL_LENGTH = 48
_ALPHABET = string.ascii_letters + string.digits
ROTATION_FAILED = "rotation_failed"


@dataclass(frozen=True)
class Rotation:
    """What a rotation did (never the key: read it from the secret)."""

    secret_arn: str
    version_id: str
    previous_version_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "secret_arn": self.secret_arn,
            "version_id": self.version_id,
            "previous_version_id": self.previous_version_id,
        }


def new_material() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(MATERIAL_LENGTH))


def rotate_admin_key(session: boto3.session.Session, stack_name: str) -> Rotation:
    """Write a new admin key to the stack's secrets (material first, then the key)."""
    from botocore.exceptions import BotoCoreError, ClientError

    outputs = stack_outputs(session, stack_name)
    secret_arn = outputs.get(ADMIN_KEY_SECRET_OUTPUT)
    material_arn = outputs.get(ADMIN_KEY_MATERIAL_OUTPUT)
    if not secret_arn or not material_arn:
        raise CliConfigError(
            f"stack {stack_name!r} has no {ADMIN_KEY_SECRET_OUTPUT} and {ADMIN_KEY_MATERIAL_OUTPUT} outputs "
            "(deploy the current template first)"
        )
    client = aws_client(session, "secretsmanager")
    material = new_material()
    try:
        previous = _current_version(client, secret_arn)
        client.put_secret_value(SecretId=material_arn, SecretString=material)
    except (ClientError, BotoCoreError) as exc:
        raise CliError(f"could not rotate the admin key: {_aws_message(exc)}", code=ROTATION_FAILED) from exc
    try:
        written = client.put_secret_value(SecretId=secret_arn, SecretString=ADMIN_KEY_PREFIX + material)
    except (ClientError, BotoCoreError) as exc:
        # Half done: the API still takes the old key, but a deploy would rebuild the key out of the new material.
        raise CliError(
            f"the new key material was written to {material_arn}, but the admin key secret could not be: "
            f"{_aws_message(exc)}. The API still takes the old key; run `herald admin-key rotate` again to finish "
            "(until then, deploying the stack again would give the API a key made of the new material)",
            code=ROTATION_FAILED,
        ) from exc
    return Rotation(secret_arn=secret_arn, version_id=str(written["VersionId"]), previous_version_id=previous)


def _aws_message(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message", str(exc)))
    return str(exc)


def _current_version(client: Any, secret_arn: str) -> str | None:
    versions = client.describe_secret(SecretId=secret_arn).get("VersionIdsToStages", {})
    return next((version for version, stages in versions.items() if "AWSCURRENT" in stages), None)
