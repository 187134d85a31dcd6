"""Herald's AWS resources for the local stack, created from ``template.yaml`` (the one source of truth).

The local stack and the tests run against moto. Rather than describing the table, queues and secret a
second time, this module reads them from the SAM template and translates each CloudFormation resource
into the matching API calls, so a property changed in the template changes the local stack too:

- ``AWS::DynamoDB::Table`` -> ``create_table`` (+ ``update_time_to_live``, ``update_continuous_backups``);
- ``AWS::SQS::Queue`` -> ``create_queue`` with its attributes (the RedrivePolicy points at the real DLQ ARN);
- ``AWS::SecretsManager::Secret`` -> ``create_secret`` (the admin key secret holds the given admin key).

Intrinsics are resolved the way CloudFormation would for a stack deployed with default parameters:
``!Ref`` of a parameter gives its ``Default``, ``!Ref``/``!GetAtt`` of a resource give the local resource's
name, URL or ARN. Physical names are ``f"{prefix}-{logical_id}"``; calling :func:`create_local_resources`
again against the same endpoint reuses what exists.

(A little over 400 lines: the translation of each resource type and the builder that applies it read together.)
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError

from herald.local.template import (
    TEMPLATE_PATH_ENV,
    CloudFormationLoader,
    LocalResourcesError,
    Resolver,
    TemplateResourceNotFoundError,
    TemplateTranslationError,
    default_template_path,
    function_properties,
    load_template,
    references,
    refuse_unknown,
    template_resource,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType

__all__ = [
    "ADMIN_KEY_SECRET_ID",
    "DEAD_LETTER_QUEUE_ID",
    "DELIVERY_FUNCTION_ID",
    "SLOW_QUEUE_ID",
    "TABLE_ID",
    "TEMPLATE_PATH_ENV",
    "WORK_QUEUE_ID",
    "CloudFormationLoader",
    "LocalResources",
    "LocalResourcesError",
    "TemplateResourceNotFoundError",
    "TemplateTranslationError",
    "create_local_resources",
    "default_template_path",
    "function_properties",
    "load_template",
]


# Logical ids in template.yaml that the application's settings point at.
TABLE_ID = "Table"
WORK_QUEUE_ID = "WorkQueue"
DEAD_LETTER_QUEUE_ID = "DeadLetterQueue"
SLOW_QUEUE_ID = "SlowQueue"
ADMIN_KEY_SECRET_ID = "AdminKeySecret"  # noqa: S105 - a logical id, not a secret
DELIVERY_FUNCTION_ID = "DeliveryFunction"

#: AWS defaults used when the template leaves a value out.
LAMBDA_DEFAULT_TIMEOUT_SECONDS = 3
SQS_EVENT_DEFAULT_BATCH_SIZE = 10

_TABLE = "AWS::DynamoDB::Table"
_QUEUE = "AWS::SQS::Queue"
_SECRET = "AWS::SecretsManager::Secret"  # noqa: S105 - a resource type, not a secret
_LOCAL_TYPES = (_TABLE, _QUEUE, _SECRET)

#: AWS::SQS::Queue properties that are queue attributes of the same name.
_QUEUE_ATTRIBUTES: frozenset[QueueAttributeNameType] = frozenset(
    {
        "ContentBasedDeduplication",
        "DeduplicationScope",
        "DelaySeconds",
        "FifoQueue",
        "FifoThroughputLimit",
        "KmsDataKeyReusePeriodSeconds",
        "KmsMasterKeyId",
        "MaximumMessageSize",
        "MessageRetentionPeriod",
        "ReceiveMessageWaitTimeSeconds",
        "RedriveAllowPolicy",
        "RedrivePolicy",
        "SqsManagedSseEnabled",
        "VisibilityTimeout",
    }
)
#: Properties with no local meaning (the physical name is the local one; the rest are cloud-side features).
_IGNORED_PROPERTIES = {
    _TABLE: frozenset(
        {
            "TableName",
            "ContributorInsightsSpecification",
            "KinesisStreamSpecification",
            "ResourcePolicy",
            "WarmThroughput",
            "OnDemandThroughput",
        }
    ),
    _QUEUE: frozenset({"QueueName"}),
    _SECRET: frozenset({"Name", "KmsKeyId", "ReplicaRegions", "ResourcePolicy"}),
}
#: AWS::DynamoDB::Table properties passed to create_table unchanged.
_TABLE_PASSTHROUGH = (
    "AttributeDefinitions",
    "KeySchema",
    "BillingMode",
    "ProvisionedThroughput",
    "LocalSecondaryIndexes",
    "TableClass",
    "DeletionProtectionEnabled",
    "Tags",
)
_TABLE_HANDLED = frozenset(
    {
        *_TABLE_PASSTHROUGH,
        "GlobalSecondaryIndexes",
        "SSESpecification",
        "StreamSpecification",
        "TimeToLiveSpecification",
        "PointInTimeRecoverySpecification",
    }
)
_GSI_KEYS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput")

# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class LocalResources:
    """The physical names of the local resources, as the application's settings expect them."""

    table_name: str
    queue_url: str
    dead_letter_queue_url: str
    admin_key_secret_arn: str
    max_receive_count: int
    #: The slow lane's queue (empty if the template has none).
    slow_queue_url: str = ""
    #: The functions' environment variables from the template (``functions_environment``), resolved as
    #: CloudFormation would for a stack deployed with default parameters, pointing at these resources.
    function_environment: dict[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        """The ``HERALD_*`` environment variables pointing the application at these resources."""
        return {
            "HERALD_TABLE_NAME": self.table_name,
            "HERALD_QUEUE_URL": self.queue_url,
            "HERALD_DEAD_LETTER_QUEUE_URL": self.dead_letter_queue_url,
            "HERALD_ADMIN_KEY_SECRET_ARN": self.admin_key_secret_arn,
            "HERALD_MAX_RECEIVE_COUNT": str(self.max_receive_count),
            **({"HERALD_SLOW_QUEUE_URL": self.slow_queue_url} if self.slow_queue_url else {}),
        }

    def queue_url_of(self, logical_id: str) -> str:
        """The URL of the template's queue ``logical_id`` (the work queue or the slow lane's)."""
        urls = {WORK_QUEUE_ID: self.queue_url, SLOW_QUEUE_ID: self.slow_queue_url}
        if not urls.get(logical_id):
            raise TemplateResourceNotFoundError(f"no local queue for {logical_id}")
        return urls[logical_id]


def _environment_value(name: str, value: Any) -> str:
    """An environment variable's value as Lambda receives it: a string (CloudFormation writes booleans in
    lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateTranslationError(f"environment variable {name} is not a string: {value!r}")


def functions_environment(template: dict[str, Any], resolver: Resolver) -> dict[str, str]:
    """The environment variables of the template's functions (``Globals.Function`` merged, intrinsics resolved).

    Locally every function runs in this one process (the API and the delivery worker), so they share one
    environment: the union of their variables. A variable only one function sets (ApiFunction's
    ``HERALD_ADMIN_KEY_SECRET_ARN``) is seen by the others too; one that two functions set to different values
    cannot be emulated, and is refused rather than silently given one function's value."""
    environment: dict[str, str] = {}
    origin: dict[str, str] = {}
    for logical_id, resource in (template.get("Resources") or {}).items():
        if not isinstance(resource, dict) or resource.get("Type") != "AWS::Serverless::Function":
            continue
        variables = (function_properties(template, logical_id).get("Environment") or {}).get("Variables") or {}
        for name, value in resolver.resolve(variables).items():
            text = _environment_value(name, value)
            if name in environment and environment[name] != text:
                raise TemplateTranslationError(
                    f"{name} is {environment[name]!r} for {origin[name]} and {text!r} for {logical_id}: the local "
                    "stack runs every function in one process, with one environment"
                )
            environment[name] = text
            origin.setdefault(name, logical_id)
    return environment


# ---------------------------------------------------------------------------------------------- translation


def _check_properties(
    logical_id: str,
    resource_type: str,
    properties: dict[str, Any],
    handled: frozenset[str],
) -> None:
    refuse_unknown(f"{logical_id} ({resource_type})", properties, handled | _IGNORED_PROPERTIES[resource_type])


def _table_request(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    """create_table keyword arguments for an AWS::DynamoDB::Table's (resolved) properties."""
    request: dict[str, Any] = {"TableName": name}
    request.update({key: properties[key] for key in _TABLE_PASSTHROUGH if key in properties})
    if "GlobalSecondaryIndexes" in properties:
        request["GlobalSecondaryIndexes"] = [
            {key: index[key] for key in _GSI_KEYS if key in index} for index in properties["GlobalSecondaryIndexes"]
        ]
    if "SSESpecification" in properties:
        sse = properties["SSESpecification"]
        request["SSESpecification"] = {
            "Enabled": bool(sse.get("SSEEnabled", False)),
            **{key: sse[key] for key in ("SSEType", "KMSMasterKeyId") if key in sse},
        }
    if "StreamSpecification" in properties:
        request["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": properties["StreamSpecification"]["StreamViewType"],
        }
    return request


def _queue_attributes(properties: dict[str, Any]) -> dict[QueueAttributeNameType, str]:
    """create_queue Attributes for an AWS::SQS::Queue's (resolved) properties: every value a string."""
    attributes: dict[QueueAttributeNameType, str] = {}
    for key in sorted(_QUEUE_ATTRIBUTES):
        if key not in properties:
            continue
        value = properties[key]
        if isinstance(value, bool):
            attributes[key] = "true" if value else "false"
        elif isinstance(value, dict):
            attributes[key] = json.dumps(value, separators=(",", ":"))
        else:
            attributes[key] = str(value)
    return attributes


def _generated_secret(spec: dict[str, Any]) -> str:
    """A value for a GenerateSecretString without template, for secrets other than the admin key."""
    alphabet = string.ascii_letters + string.digits
    if not spec.get("ExcludePunctuation", False):
        alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
    return "".join(secrets.choice(alphabet) for _ in range(int(spec.get("PasswordLength", 32))))


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class _Builder:
    """Creates (or reuses) the template's local resources in dependency order."""

    def __init__(
        self,
        template: dict[str, Any],
        *,
        admin_key: str,
        session: boto3.session.Session,
        endpoint_url: str | None,
        prefix: str,
    ) -> None:
        self._template = template
        self._admin_key = admin_key
        self._prefix = prefix
        self._dynamodb: DynamoDBClient = session.client("dynamodb", endpoint_url=endpoint_url)
        self._sqs: SQSClient = session.client("sqs", endpoint_url=endpoint_url)
        self._secretsmanager: SecretsManagerClient = session.client("secretsmanager", endpoint_url=endpoint_url)
        self._session = session
        self._endpoint_url = endpoint_url
        region = self._sqs.meta.region_name
        self.resolver = Resolver(
            template,
            pseudo={
                "AWS::Region": region,
                "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com",
                "AWS::StackName": prefix,
            },
            account_id=self._account_id,
        )
        self._local = {
            logical_id: resource
            for logical_id, resource in template["Resources"].items()
            if isinstance(resource, dict) and resource.get("Type") in _LOCAL_TYPES
        }
        self._in_progress: set[str] = set()

    def _account_id(self) -> str:
        sts = self._session.client("sts", endpoint_url=self._endpoint_url)
        return sts.get_caller_identity()["Account"]

    def build_all(self) -> None:
        for logical_id in self._local:
            self._ensure(logical_id)

    def _ensure(self, logical_id: str) -> None:
        if logical_id in self.resolver.refs:
            return
        if logical_id in self._in_progress:
            raise TemplateTranslationError(f"circular reference through {logical_id}")
        self._in_progress.add(logical_id)
        resource = self._local[logical_id]
        raw_properties = resource.get("Properties", {}) or {}
        for dependency in set(references(raw_properties)):
            if dependency in self._local:
                self._ensure(dependency)
        properties: dict[str, Any] = self.resolver.resolve(raw_properties)
        name = f"{self._prefix}-{logical_id}"
        creators: dict[str, Callable[[str, str, dict[str, Any]], None]] = {
            _TABLE: self._table,
            _QUEUE: self._queue,
            _SECRET: self._secret,
        }
        creators[resource["Type"]](logical_id, name, properties)
        self._in_progress.discard(logical_id)

    def _table(self, logical_id: str, name: str, properties: dict[str, Any]) -> None:
        _check_properties(logical_id, _TABLE, properties, _TABLE_HANDLED)
        try:
            self._dynamodb.create_table(**_table_request(name, properties))
        except ClientError as error:
            if _error_code(error) != "ResourceInUseException":
                raise
        self._dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        description = self._dynamodb.describe_table(TableName=name)["Table"]

        ttl = properties.get("TimeToLiveSpecification")
        if ttl is not None:
            wanted = bool(ttl.get("Enabled", False))
            current = self._dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            enabled = current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING")
            if wanted != enabled or (wanted and current.get("AttributeName") != ttl["AttributeName"]):
                self._dynamodb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={
                        "Enabled": wanted,
                        "AttributeName": ttl["AttributeName"],
                    },
                )
        pitr = properties.get("PointInTimeRecoverySpecification")
        if pitr is not None:
            self._dynamodb.update_continuous_backups(TableName=name, PointInTimeRecoverySpecification=pitr)

        self.resolver.refs[logical_id] = name
        self.resolver.attributes[(logical_id, "Arn")] = description["TableArn"]
        if "LatestStreamArn" in description:
            self.resolver.attributes[(logical_id, "StreamArn")] = description["LatestStreamArn"]

    def _queue(self, logical_id: str, name: str, properties: dict[str, Any]) -> None:
        _check_properties(logical_id, _QUEUE, properties, _QUEUE_ATTRIBUTES | {"Tags"})
        attributes = _queue_attributes(properties)
        if attributes.get("FifoQueue") == "true":
            name += ".fifo"
        tags = {tag["Key"]: str(tag["Value"]) for tag in properties.get("Tags", [])}
        try:
            url = self._sqs.create_queue(QueueName=name, Attributes=attributes, tags=tags)["QueueUrl"]
        except ClientError as error:
            # The queue exists with other attributes (the template changed): bring it in line.
            if _error_code(error) not in ("QueueAlreadyExists", "QueueNameExists"):
                raise
            url = self._sqs.get_queue_url(QueueName=name)["QueueUrl"]
            mutable: dict[QueueAttributeNameType, str] = {
                key: value for key, value in attributes.items() if key != "FifoQueue"
            }
            self._sqs.set_queue_attributes(QueueUrl=url, Attributes=mutable)
        arn = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.resolver.refs[logical_id] = url
        self.resolver.attributes[(logical_id, "Arn")] = arn
        self.resolver.attributes[(logical_id, "QueueName")] = name
        self.resolver.attributes[(logical_id, "QueueUrl")] = url

    def _secret(self, logical_id: str, name: str, properties: dict[str, Any]) -> None:
        _check_properties(
            logical_id,
            _SECRET,
            properties,
            frozenset({"Description", "GenerateSecretString", "SecretString", "Tags"}),
        )
        generate = properties.get("GenerateSecretString")
        if logical_id == ADMIN_KEY_SECRET_ID:
            if generate is not None and "SecretStringTemplate" in generate:
                raise TemplateTranslationError(f"{logical_id} must be a plain string secret (no SecretStringTemplate)")
            value = self._admin_key
        elif "SecretString" in properties:
            value = str(properties["SecretString"])
        elif generate is not None and "SecretStringTemplate" not in generate:
            value = _generated_secret(generate)
        else:
            raise TemplateTranslationError(f"{logical_id}: the local stack only creates plain string secrets")
        request: dict[str, Any] = {"Name": name, "SecretString": value}
        if "Description" in properties:
            request["Description"] = str(properties["Description"])
        if properties.get("Tags"):
            request["Tags"] = [{"Key": tag["Key"], "Value": str(tag["Value"])} for tag in properties["Tags"]]
        try:
            arn = self._secretsmanager.create_secret(**request)["ARN"]
        except ClientError as error:
            if _error_code(error) != "ResourceExistsException":
                raise
            arn = self._secretsmanager.describe_secret(SecretId=name)["ARN"]
            current = self._secretsmanager.get_secret_value(SecretId=name).get("SecretString")
            if logical_id == ADMIN_KEY_SECRET_ID and current != value:
                self._secretsmanager.put_secret_value(SecretId=name, SecretString=value)
        self.resolver.refs[logical_id] = arn
        self.resolver.attributes[(logical_id, "Id")] = arn


def create_local_resources(
    *,
    admin_key: str,
    template: dict[str, Any] | None = None,
    session: boto3.session.Session | None = None,
    prefix: str = "herald-local",
    endpoint_url: str | None = None,
) -> LocalResources:
    """Create (or reuse) the template's table, queues and secrets, and say where they are.

    ``endpoint_url`` points every client at a moto server; without it boto3 uses ``AWS_ENDPOINT_URL``
    (or moto's in-process ``mock_aws``). The admin key secret holds ``admin_key``.
    """
    template = template if template is not None else load_template()
    for logical_id, resource_type in (
        (TABLE_ID, _TABLE),
        (WORK_QUEUE_ID, _QUEUE),
        (DEAD_LETTER_QUEUE_ID, _QUEUE),
        (ADMIN_KEY_SECRET_ID, _SECRET),
    ):
        template_resource(template, logical_id, resource_type)
    builder = _Builder(
        template,
        admin_key=admin_key,
        session=session or boto3.session.Session(),
        endpoint_url=endpoint_url,
        prefix=prefix,
    )
    builder.build_all()
    resolver = builder.resolver

    redrive = resolver.resolve(template_resource(template, WORK_QUEUE_ID)["Properties"].get("RedrivePolicy"))
    if not isinstance(redrive, dict) or "maxReceiveCount" not in redrive:
        raise TemplateResourceNotFoundError(f"{WORK_QUEUE_ID} has no RedrivePolicy.maxReceiveCount")
    return LocalResources(
        table_name=resolver.refs[TABLE_ID],
        queue_url=resolver.refs[WORK_QUEUE_ID],
        dead_letter_queue_url=resolver.refs[DEAD_LETTER_QUEUE_ID],
        admin_key_secret_arn=resolver.refs[ADMIN_KEY_SECRET_ID],
        max_receive_count=int(redrive["maxReceiveCount"]),
        slow_queue_url=resolver.refs.get(SLOW_QUEUE_ID, ""),
        function_environment=functions_environment(template, resolver),
    )
