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
"""

from __future__ import annotations

import json
import os
import re
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import yaml  # type: ignore[import-untyped,unused-ignore]
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

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
    "EventSourceSettings",
    "LocalResources",
    "LocalResourcesError",
    "TemplateResourceNotFoundError",
    "TemplateTranslationError",
    "create_local_resources",
    "default_template_path",
    "delivery_event_source",
    "delivery_event_sources",
    "function_properties",
    "load_template",
]

#: Environment variable naming another template file (default: template.yaml at the repository root).
TEMPLATE_PATH_ENV = "HERALD_TEMPLATE_PATH"

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

_SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")


class LocalResourcesError(Exception):
    """Base class of the local resource errors."""


class TemplateResourceNotFoundError(LocalResourcesError):
    """The template lacks a resource (or parameter) the local stack needs."""


class TemplateTranslationError(LocalResourcesError):
    """The template uses a construct the local stack cannot translate into API calls."""


# ---------------------------------------------------------------------------------------------- template


class CloudFormationLoader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
    """A safe YAML loader that reads CloudFormation short-form intrinsics as their long form.

    ``!Ref X`` becomes ``{"Ref": "X"}``, ``!GetAtt A.B`` becomes ``{"Fn::GetAtt": ["A", "B"]}``,
    ``!Sub``/``!If``/``!Join``/... become ``{"Fn::Sub": ...}`` and so on. As in CloudFormation, unquoted
    dates stay strings.
    """


def _construct_intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _construct_intrinsic)
CloudFormationLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def default_template_path() -> Path:
    """``$HERALD_TEMPLATE_PATH`` if set, else template.yaml at the repository root."""
    override = os.environ.get(TEMPLATE_PATH_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[4] / "template.yaml"


def load_template(path: Path | None = None) -> dict[str, Any]:
    """Read a SAM/CloudFormation template (default: :func:`default_template_path`)."""
    source = path or default_template_path()
    with source.open(encoding="utf-8") as stream:
        template = yaml.load(stream, Loader=CloudFormationLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(template, dict) or not isinstance(template.get("Resources"), dict):
        raise TemplateResourceNotFoundError(f"{source} is not a CloudFormation template (no Resources)")
    return template


def _resource(template: dict[str, Any], logical_id: str, resource_type: str | None = None) -> dict[str, Any]:
    resource = template["Resources"].get(logical_id)
    if not isinstance(resource, dict):
        raise TemplateResourceNotFoundError(f"template.yaml has no resource {logical_id!r}")
    if resource_type is not None and resource.get("Type") != resource_type:
        raise TemplateResourceNotFoundError(f"{logical_id} is a {resource.get('Type')}, expected {resource_type}")
    return resource


def _merge_globals(global_value: Any, local_value: Any) -> Any:
    """SAM's Globals rule: maps merge, lists concatenate (globals first), anything else is overridden."""
    if isinstance(global_value, dict) and isinstance(local_value, dict):
        merged = dict(global_value)
        for key, value in local_value.items():
            merged[key] = _merge_globals(global_value[key], value) if key in global_value else value
        return merged
    if isinstance(global_value, list) and isinstance(local_value, list):
        return [*global_value, *local_value]
    return local_value


def function_properties(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    """The properties of an ``AWS::Serverless::Function`` with ``Globals.Function`` applied, as SAM does."""
    resource = _resource(template, logical_id, "AWS::Serverless::Function")
    global_properties = template.get("Globals", {}).get("Function", {})
    merged: dict[str, Any] = _merge_globals(global_properties, resource.get("Properties", {}))
    return merged


# ---------------------------------------------------------------------------------------------- intrinsics


class _Resolver:
    """Resolves intrinsics against parameter defaults and the resources created so far."""

    _NO_VALUE = object()

    def __init__(
        self,
        template: dict[str, Any],
        *,
        pseudo: dict[str, str] | None = None,
        account_id: Callable[[], str] | None = None,
    ) -> None:
        self._parameters: dict[str, Any] = template.get("Parameters", {}) or {}
        self._conditions: dict[str, Any] = template.get("Conditions", {}) or {}
        self._pseudo = pseudo or {}
        self._account_id = account_id
        self.refs: dict[str, str] = {}
        self.attributes: dict[tuple[str, str], str] = {}

    def parameter(self, name: str) -> Any:
        spec = self._parameters.get(name)
        if not isinstance(spec, dict) or "Default" not in spec:
            raise TemplateTranslationError(f"parameter {name!r} has no Default to run locally with")
        default = spec["Default"]
        kind = str(spec.get("Type", "String"))
        if kind == "Number":
            number = float(default)
            return int(number) if number.is_integer() else number
        if kind.startswith("List<") or kind == "CommaDelimitedList":
            return [item.strip() for item in str(default).split(",")]
        return default

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return self._NO_VALUE
        if name == "AWS::AccountId" and self._account_id is not None:
            return self._account_id()
        if name in self._pseudo:
            return self._pseudo[name]
        if name in self._parameters:
            return self.parameter(name)
        if name in self.refs:
            return self.refs[name]
        raise TemplateTranslationError(f"cannot resolve !Ref {name} locally")

    def get_att(self, logical_id: str, attribute: str) -> str:
        try:
            return self.attributes[(logical_id, attribute)]
        except KeyError:
            raise TemplateTranslationError(f"cannot resolve !GetAtt {logical_id}.{attribute} locally") from None

    def _sub_variable(self, name: str, variables: dict[str, Any]) -> str:
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name in variables:
            return str(self.resolve(variables[name]))
        if "." in name and not name.startswith("AWS::"):
            logical_id, attribute = name.split(".", 1)
            return self.get_att(logical_id, attribute)
        return str(self.ref(name))

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = (self.resolve(item) for item in value)
            return [item for item in items if item is not self._NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key in ("Ref", "Condition") or key.startswith("Fn::"):
                return self._intrinsic(key, argument)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not self._NO_VALUE}

    def _intrinsic(self, key: str, argument: Any) -> Any:
        if key == "Ref":
            return self.ref(str(argument))
        if key == "Fn::GetAtt":
            logical_id, attribute = argument if isinstance(argument, list) else str(argument).split(".", 1)
            return self.get_att(str(logical_id), str(attribute))
        if key == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else argument
            return _SUB_VARIABLE.sub(lambda match: self._sub_variable(match.group(1), variables), text)
        if key == "Fn::Join":
            delimiter, items = argument
            return str(delimiter).join(str(item) for item in self.resolve(items))
        if key == "Fn::If":
            name, when_true, when_false = argument
            return self.resolve(when_true if self.condition(str(name)) else when_false)
        if key in _CONDITION_FUNCTIONS:
            return self._evaluate({key: argument})
        raise TemplateTranslationError(f"{key} is not supported by the local stack")

    def condition(self, name: str) -> bool:
        """A named condition of the template, evaluated with the parameters' defaults."""
        if name not in self._conditions:
            raise TemplateTranslationError(f"condition {name!r} is not defined")
        return self._evaluate(self._conditions[name])

    def _evaluate(self, expression: Any) -> bool:
        if not isinstance(expression, dict) or len(expression) != 1:
            raise TemplateTranslationError(f"not a condition: {expression!r}")
        ((key, argument),) = expression.items()
        if key == "Condition":
            return self.condition(str(argument))
        if key == "Fn::Equals":
            left, right = (self.resolve(item) for item in argument)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not self._evaluate(argument[0])
        if key == "Fn::And":
            return all(self._evaluate(item) for item in argument)
        if key == "Fn::Or":
            return any(self._evaluate(item) for item in argument)
        raise TemplateTranslationError(f"{key} is not a condition function")


_CONDITION_FUNCTIONS = frozenset({"Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or"})


def _references(value: Any) -> Iterator[str]:
    """Logical ids (of resources or parameters) a value refers to."""
    if isinstance(value, list):
        for item in value:
            yield from _references(item)
    elif isinstance(value, dict):
        for key, argument in value.items():
            if key == "Ref":
                yield str(argument)
            elif key == "Fn::GetAtt":
                yield str(argument[0] if isinstance(argument, list) else str(argument).split(".", 1)[0])
            elif key == "Fn::Sub":
                text = argument if isinstance(argument, str) else argument[0]
                for match in _SUB_VARIABLE.finditer(text):
                    yield match.group(1).split(".", 1)[0]
                if isinstance(argument, list):
                    yield from _references(argument[1:])
            else:
                yield from _references(argument)


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


@dataclass(frozen=True)
class EventSourceSettings:
    """How Lambda would feed the delivery function from one of its queues (the local poller mimics it)."""

    batch_size: int
    maximum_batching_window_seconds: int
    function_timeout_seconds: int
    report_batch_item_failures: bool
    #: The template's logical id of the queue this event source reads.
    queue_id: str = WORK_QUEUE_ID
    #: ``ScalingConfig.MaximumConcurrency``: most invocations at once (None: no cap of its own).
    maximum_concurrency: int | None = None


def delivery_event_sources(template: dict[str, Any] | None = None) -> list[EventSourceSettings]:
    """Every SQS event of the delivery function (the work queue's, then the others in template order), with
    Globals and AWS defaults applied: the local stack and the tests poll each queue with its own settings."""
    template = template if template is not None else load_template()
    resolver = _Resolver(template)
    properties = function_properties(template, DELIVERY_FUNCTION_ID)
    timeout = int(resolver.resolve(properties.get("Timeout", LAMBDA_DEFAULT_TIMEOUT_SECONDS)))
    sources: list[EventSourceSettings] = []
    for event in (properties.get("Events") or {}).values():
        if not isinstance(event, dict) or event.get("Type") != "SQS":
            continue
        spec = event.get("Properties", {})
        queues = [ref for ref in _references(spec.get("Queue")) if ref in template.get("Resources", {})]
        if len(queues) != 1:
            raise TemplateResourceNotFoundError(
                f"an SQS event of {DELIVERY_FUNCTION_ID} names no queue of the template"
            )
        concurrency = (spec.get("ScalingConfig") or {}).get("MaximumConcurrency")
        sources.append(
            EventSourceSettings(
                batch_size=int(resolver.resolve(spec.get("BatchSize", SQS_EVENT_DEFAULT_BATCH_SIZE))),
                maximum_batching_window_seconds=int(resolver.resolve(spec.get("MaximumBatchingWindowInSeconds", 0))),
                function_timeout_seconds=timeout,
                report_batch_item_failures="ReportBatchItemFailures"
                in resolver.resolve(spec.get("FunctionResponseTypes", [])),
                queue_id=queues[0],
                maximum_concurrency=None if concurrency is None else int(resolver.resolve(concurrency)),
            )
        )
    sources.sort(key=lambda source: source.queue_id != WORK_QUEUE_ID)
    if not sources or sources[0].queue_id != WORK_QUEUE_ID or len({s.queue_id for s in sources}) != len(sources):
        raise TemplateResourceNotFoundError(
            f"{DELIVERY_FUNCTION_ID} needs exactly one SQS event on {WORK_QUEUE_ID} (and at most one per other queue)"
        )
    return sources


def delivery_event_source(template: dict[str, Any] | None = None) -> EventSourceSettings:
    """The delivery function's SQS event on the work queue (``delivery_event_sources``' first)."""
    return delivery_event_sources(template)[0]


# ---------------------------------------------------------------------------------------------- translation


def _check_properties(
    logical_id: str,
    resource_type: str,
    properties: dict[str, Any],
    handled: frozenset[str],
) -> None:
    unknown = set(properties) - handled - _IGNORED_PROPERTIES[resource_type]
    if unknown:
        raise TemplateTranslationError(
            f"{logical_id} ({resource_type}): the local stack does not translate {', '.join(sorted(unknown))}"
        )


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
        self.resolver = _Resolver(
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
        for dependency in set(_references(raw_properties)):
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
        _resource(template, logical_id, resource_type)
    builder = _Builder(
        template,
        admin_key=admin_key,
        session=session or boto3.session.Session(),
        endpoint_url=endpoint_url,
        prefix=prefix,
    )
    builder.build_all()
    resolver = builder.resolver

    redrive = resolver.resolve(_resource(template, WORK_QUEUE_ID)["Properties"].get("RedrivePolicy"))
    if not isinstance(redrive, dict) or "maxReceiveCount" not in redrive:
        raise TemplateResourceNotFoundError(f"{WORK_QUEUE_ID} has no RedrivePolicy.maxReceiveCount")
    return LocalResources(
        table_name=resolver.refs[TABLE_ID],
        queue_url=resolver.refs[WORK_QUEUE_ID],
        dead_letter_queue_url=resolver.refs[DEAD_LETTER_QUEUE_ID],
        admin_key_secret_arn=resolver.refs[ADMIN_KEY_SECRET_ID],
        max_receive_count=int(redrive["maxReceiveCount"]),
        slow_queue_url=resolver.refs.get(SLOW_QUEUE_ID, ""),
    )
