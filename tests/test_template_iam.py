"""IAM as deployed: the SAM-transformed template (what CloudFormation creates) gives each function a role with
exactly the calls its code makes (tests/aws_calls.py reads them from the source), on Herald's resources only."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from samcli.lib.translate.sam_template_validator import SamTemplateValidator
from samtranslator.yaml_helper import yaml_parse

from tests.api_support import route_modules_routers
from tests.aws_calls import Reach, iam_actions, reachable_calls

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Lambda's event source mapping polls the queue with the function's role (AWS Lambda developer guide,
#: "Execution role permissions" for SQS), the managed AWSLambdaSQSQueueExecutionRole's three actions.
SQS_POLLER_ACTIONS = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
#: ... and reads a DynamoDB stream with it ("Execution role permissions" for DynamoDB Streams), the managed
#: AWSLambdaDynamoDBExecutionRole's four stream actions.
STREAM_POLLER_ACTIONS = {
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
}
#: What Lambda needs to write the function's logs to a log group that already exists.
LOG_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"}
KMS_ACTIONS = {"kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"}


class _NoManagedPolicies:
    """sam's managed policy loader; Herald's template names no managed policy, so it is never asked."""

    def load(self) -> dict[str, str]:
        raise AssertionError("the template refers to an AWS managed policy by name")


def sam_transform(template: dict[str, Any]) -> dict[str, Any]:
    """The template after the AWS::Serverless transform, as `sam validate` runs it (local code URIs replaced)."""
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    validator = SamTemplateValidator(copy.deepcopy(template), _NoManagedPolicies(), region="us-east-1")
    transformed: dict[str, Any] = yaml_parse(validator.get_translated_template_if_valid())
    return transformed


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml_parse((REPO_ROOT / "template.yaml").read_text(encoding="utf-8"))
    return parsed


@pytest.fixture(scope="module")
def transformed(source: dict[str, Any]) -> dict[str, Any]:
    return sam_transform(source)


def _with_conditions(value: Any, conditions: dict[str, bool]) -> Any:
    """``value`` with every ``Fn::If`` decided by ``conditions`` and ``AWS::NoValue`` dropped."""
    if isinstance(value, list):
        items = [_with_conditions(item, conditions) for item in value]
        return [item for item in items if item != {"Ref": "AWS::NoValue"}]
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            name, when_true, when_false = value["Fn::If"]
            return _with_conditions(when_true if conditions[name] else when_false, conditions)
        return {key: _with_conditions(item, conditions) for key, item in value.items()}
    return value


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Lambda::Function"
    }


def _role_of(template: dict[str, Any], function: str) -> tuple[str, dict[str, Any]]:
    role = _functions(template)[function]["Role"]
    assert set(role) == {"Fn::GetAtt"}, f"{function}: role {role} is not a role of the stack"
    logical_id, attribute = role["Fn::GetAtt"]
    assert attribute == "Arn"
    resource = template["Resources"][logical_id]
    assert resource["Type"] == "AWS::IAM::Role"
    return logical_id, resource["Properties"]


def _statements(template: dict[str, Any], function: str, *, kms_key: bool = False) -> list[dict[str, Any]]:
    """Every statement the function's role has: inline, and from policies attached to it elsewhere."""
    role_id, role = _role_of(template, function)
    documents = [policy["PolicyDocument"] for policy in role.get("Policies", [])]
    for resource in template["Resources"].values():
        attached = resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
        if attached and {"Ref": role_id} in resource["Properties"].get("Roles", []):
            documents.append(resource["Properties"]["PolicyDocument"])
    documents = _with_conditions(documents, {"HasTableKmsKey": kms_key})
    return [statement for document in documents for statement in document["Statement"]]


def _granted(statements: list[dict[str, Any]]) -> set[str]:
    assert all(statement["Effect"] == "Allow" for statement in statements)
    return {action for statement in statements for action in _as_list(statement["Action"])}


def _reach(source: dict[str, Any], function: str) -> Reach:
    """The AWS calls reachable from the function's handler (``Handler`` in ``CodeUri``), read from the code."""
    properties = source["Resources"][function]["Properties"]
    module, _, name = str(properties["Handler"]).rpartition(".")
    return reachable_calls(REPO_ROOT / str(properties["CodeUri"]) / f"{module}.py", name)


def _event_sources(template: dict[str, Any], function: str) -> list[Any]:
    return [
        resource["Properties"]["EventSourceArn"]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Lambda::EventSourceMapping"
        and resource["Properties"]["FunctionName"] == {"Ref": function}
    ]


def _polled_queues(template: dict[str, Any], function: str) -> list[Any]:
    """The queues the function's event source mappings poll (``!GetAtt <queue>.Arn``)."""
    return [arn for arn in _event_sources(template, function) if arn["Fn::GetAtt"][1] == "Arn"]


def _read_streams(template: dict[str, Any], function: str) -> list[Any]:
    """The table streams the function's event source mappings read (``!GetAtt <table>.StreamArn``)."""
    return [arn for arn in _event_sources(template, function) if arn["Fn::GetAtt"][1] == "StreamArn"]


FUNCTIONS = ("ApiFunction", "DeliveryFunction")


# ---------------------------------------------------------------------------------------------- roles


def test_every_function_of_the_transformed_template_is_one_of_ours(transformed: dict[str, Any]) -> None:
    assert set(_functions(transformed)) == set(FUNCTIONS)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_has_its_own_role_without_managed_policies(
    transformed: dict[str, Any], source: dict[str, Any], function: str
) -> None:
    # GIVEN the function as CloudFormation sees it
    role_id, role = _role_of(transformed, function)
    # THEN its role is written in template.yaml (not generated by SAM), used by no other function,
    assert source["Resources"][role_id]["Type"] == "AWS::IAM::Role"
    others = [_role_of(transformed, other)[0] for other in FUNCTIONS if other != function]
    assert role_id not in others
    # ... trusted by Lambda only, and carries no managed policy (AWSLambdaSQSQueueExecutionRole: every queue)
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]
    assert not role.get("ManagedPolicyArns")


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("kms_key", [False, True])
def test_no_statement_grants_a_wildcard(transformed: dict[str, Any], function: str, kms_key: bool) -> None:
    for statement in _statements(transformed, function, kms_key=kms_key):
        for action in _as_list(statement["Action"]):
            name = action.partition(":")[2]
            # only KMS's documented families (GenerateDataKey*, ReEncrypt*) end in a wildcard
            assert "*" not in name or action in KMS_ACTIONS, f"{function}: {action}"
        for resource in _as_list(statement["Resource"]):
            if resource == "*":
                # ListStreams alone, which IAM authorises on "*" only (test_the_delivery_function_reads_only_its_...)
                assert _as_list(statement["Action"]) == ["dynamodb:ListStreams"], f"{function}: {statement}"
                continue
            if isinstance(resource, str):
                pytest.fail(f"{function}: hard-coded resource {resource}")
            # a resource of the stack, or the parameter naming the table's key
            assert set(resource) <= {"Ref", "Fn::GetAtt", "Fn::Sub"}, resource


def test_no_role_grants_dynamodb_scan(transformed: dict[str, Any]) -> None:
    for function in FUNCTIONS:
        assert not {action.lower() for action in _granted(_statements(transformed, function))} & {
            "dynamodb:scan",
            "dynamodb:*",
            "*",
        }


# ---------------------------------------------------------------------------------------------- derived from code


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_role_grants_exactly_what_the_functions_code_calls(
    transformed: dict[str, Any], source: dict[str, Any], function: str
) -> None:
    # GIVEN the AWS calls reachable from the function's handler, read from the code
    reach = _reach(source, function)
    needed = set(reach.actions) | LOG_ACTIONS
    if _polled_queues(transformed, function):
        needed |= SQS_POLLER_ACTIONS
    if _read_streams(transformed, function):
        needed |= STREAM_POLLER_ACTIONS
    # WHEN the role is read from the transformed template (default parameters: no KMS key of our own)
    granted = _granted(_statements(transformed, function))
    # THEN it grants every call the code makes, and nothing the code never calls
    assert granted - needed == set(), f"{function} is granted what no code path of it calls"
    missing = {action: reach.where.get(action) for action in needed - granted}
    assert missing == {}, f"{function} calls what its role does not grant"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_indexes_are_only_queried(transformed: dict[str, Any], function: str) -> None:
    statements = _statements(transformed, function)
    on_indexes = [s for s in statements if any("/index/" in str(r) for r in _as_list(s["Resource"]))]
    assert on_indexes
    for statement in on_indexes:
        assert _as_list(statement["Action"]) == ["dynamodb:Query"]
        assert _as_list(statement["Resource"]) == [{"Fn::Sub": "${Table.Arn}/index/*"}]


def test_the_derivation_follows_the_code_wherever_it_lives(tmp_path: Path) -> None:
    # GIVEN handler modules that reach storage code through the package (a method, a nested callback)
    bulk = tmp_path / "bulk_handler.py"
    bulk.write_text(
        "from herald.storage import Store\n\n"
        "def handler(event, context):\n"
        "    def later():\n"
        "        Store('t').subscriptions.import_many([])\n"
        "    return later\n"
    )
    idle = tmp_path / "idle_handler.py"
    idle.write_text("import herald.ids\n\ndef handler(event, context):\n    return {'a': 1}.get('a')\n")
    # THEN the bulk import's BatchWriteItem is found, and a handler calling nothing needs nothing
    assert "dynamodb:BatchWriteItem" in reachable_calls(bulk).actions
    assert reachable_calls(idle).actions == set()
    # ... and the batch and transaction calls map to the actions IAM checks
    assert iam_actions({"sqs:SendMessageBatch", "dynamodb:TransactWriteItems"}) == {"sqs:SendMessage"}


def test_the_derivation_follows_methods_named_like_a_builtins(tmp_path: Path) -> None:
    # GIVEN classes whose methods share a built-in type's method's name (``list.remove``, ``dict.update``),
    # called through an attribute annotated with the class, a variable assigned an instance, a function's result
    module = (
        "import boto3\n\n"
        "class Queue:\n"
        "    def __init__(self):\n"
        "        self.client = boto3.client('sqs')\n"
        "    def remove(self, receipt):\n"
        "        self.client.delete_message(QueueUrl='q', ReceiptHandle=receipt)\n\n"
        "class Jobs:\n"
        "    def update(self, key):\n"
        "        self.client.update_item(TableName='t', Key=key)\n\n"
        "class Old:\n"
        "    def discard(self):\n"
        "        self.client.delete_item(TableName='t', Key={})\n\n"
        "class Holder:\n"
        "    queue: Queue\n\n"
        "def old() -> 'Old':\n"
        "    return Old()\n\n"
    )
    methods = tmp_path / "methods_handler.py"
    methods.write_text(
        module + "def handler(event, context, holder: Holder):\n"
        "    holder.queue.remove(event['receipt'])\n"
        "    jobs = Jobs()\n"
        "    jobs.update({})\n"
        "    old().discard()\n"
    )
    builtins = tmp_path / "builtins_handler.py"
    builtins.write_text(
        module + "def handler(event, context):\n"
        "    seen = set(event)\n"
        "    seen.discard(1)\n"
        "    names = [key for key in event]\n"
        "    names.remove('a')\n"
        "    event.update(a=1)\n"
    )
    # THEN each method is reached, and what it calls is needed
    reach = reachable_calls(methods)
    assert {"__entry__:Queue.remove", "__entry__:Jobs.update", "__entry__:Old.discard"} <= reach.functions
    assert reach.actions == {"sqs:DeleteMessage", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
    # ... but a built-in value's method of that name is not taken for theirs: nothing is needed
    assert reachable_calls(builtins).actions == set()
    # ... and in the package, the store's (the reviewer's reproduction) and a module's function are reached
    store = tmp_path / "store_handler.py"
    store.write_text(
        "from herald.domain import subscriptions\n"
        "from herald.storage import Store\n\n"
        "def handler(event, context):\n"
        "    Store('t').schedule.remove([])\n"
        "    Store('t').jobs.update('j', x=1)\n"
        "    return subscriptions.update\n"
    )
    reach = reachable_calls(store)
    assert {
        "herald.storage.schedule:ScheduleRepository.remove",
        "herald.storage.jobs:JobRepository.update",
        "herald.domain.subscriptions:update",
    } <= reach.functions
    assert {"dynamodb:BatchWriteItem", "dynamodb:UpdateItem"} <= reach.actions


def test_the_derivation_follows_modules_imported_by_name(tmp_path: Path) -> None:
    # GIVEN a handler importing the modules of a package by name, as the API imports its routers on demand
    dynamic = tmp_path / "dynamic_handler.py"
    dynamic.write_text(
        "import importlib\n\n"
        "def handler(event, context):\n"
        "    return importlib.import_module(f\"herald.api.routes.{event['resource']}\").router\n"
    )
    # THEN every module of the package is walked: its routes are reached, and what they call is found
    reach = reachable_calls(dynamic)
    for module in ("events", "subscriptions", "admin"):
        assert any(function.startswith(f"herald.api.routes.{module}:") for function in reach.functions), module
    assert {"dynamodb:Query", "sqs:SendMessage"} <= reach.actions


def test_every_route_of_the_api_is_reached(source: dict[str, Any]) -> None:
    # Routes are registered by decorators, never called by name: the walk must still reach each of them.
    reach = _reach(source, "ApiFunction")
    endpoints = {
        f"{route.endpoint.__module__}:{route.endpoint.__qualname__}"
        for _, _, router in route_modules_routers()
        for route in router.routes
        if isinstance(route, APIRoute)
    }
    assert len(endpoints) >= 20
    assert endpoints <= reach.functions


# ---------------------------------------------------------------------------------------------- resources


def test_the_delivery_function_consumes_only_its_two_queues(transformed: dict[str, Any]) -> None:
    queues = [{"Fn::GetAtt": ["WorkQueue", "Arn"]}, {"Fn::GetAtt": ["SlowQueue", "Arn"]}]
    # GIVEN the event source mappings of the delivery function: the work queue and the slow lane
    key = str
    assert sorted(_polled_queues(transformed, "DeliveryFunction"), key=key) == sorted(queues, key=key)
    assert _polled_queues(transformed, "ApiFunction") == []
    # THEN the poller's actions are granted on those two queues and nowhere else
    for statement in _statements(transformed, "DeliveryFunction"):
        if SQS_POLLER_ACTIONS & set(_as_list(statement["Action"])):
            assert sorted(_as_list(statement["Resource"]), key=key) == sorted(queues, key=key), statement
    # ... and the dead-letter queue only ever gets messages from it
    dead_letter = [
        s
        for s in _statements(transformed, "DeliveryFunction")
        if {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]} in _as_list(s["Resource"])
    ]
    assert [_as_list(s["Action"]) for s in dead_letter] == [["sqs:SendMessage"]]


def test_the_delivery_function_reads_only_its_tables_stream(transformed: dict[str, Any]) -> None:
    # GIVEN the event source mappings reading a stream: the delivery function's, on the table's stream
    assert _read_streams(transformed, "DeliveryFunction") == [{"Fn::GetAtt": ["Table", "StreamArn"]}]
    assert _read_streams(transformed, "ApiFunction") == []
    assert len(_event_sources(transformed, "DeliveryFunction")) == 3  # the two queues and the stream
    # THEN the stream reader's actions are granted on the table's streams and nowhere else, to it alone, but
    # ListStreams, which IAM authorises on "*" only (the Service Authorization Reference lists no resource
    # type for it), alone in its statement
    granted = {
        action: _as_list(statement["Resource"])
        for statement in _statements(transformed, "DeliveryFunction")
        for action in _as_list(statement["Action"])
        if action in STREAM_POLLER_ACTIONS
    }
    assert granted == {
        "dynamodb:DescribeStream": [{"Fn::Sub": "${Table.Arn}/stream/*"}],
        "dynamodb:GetRecords": [{"Fn::Sub": "${Table.Arn}/stream/*"}],
        "dynamodb:GetShardIterator": [{"Fn::Sub": "${Table.Arn}/stream/*"}],
        "dynamodb:ListStreams": ["*"],
    }
    (listing,) = [s for s in _statements(transformed, "DeliveryFunction") if "*" in _as_list(s["Resource"])]
    assert _as_list(listing["Action"]) == ["dynamodb:ListStreams"]
    for statement in _statements(transformed, "ApiFunction"):
        assert not STREAM_POLLER_ACTIONS & set(_as_list(statement["Action"])), statement


def test_the_api_reads_only_the_current_admin_key(transformed: dict[str, Any]) -> None:
    # GIVEN the statements naming a secret
    for function in FUNCTIONS:
        for statement in _statements(transformed, function):
            actions = [action for action in _as_list(statement["Action"]) if action.startswith("secretsmanager:")]
            if not actions:
                continue
            # THEN only the API reads the admin key secret, only its AWSCURRENT version, never the material
            assert function == "ApiFunction"
            assert actions == ["secretsmanager:GetSecretValue"]
            assert _as_list(statement["Resource"]) == [{"Ref": "AdminKeySecret"}]
            assert statement["Condition"] == {"StringEquals": {"secretsmanager:VersionStage": "AWSCURRENT"}}
        assert "AdminKeyMaterial" not in str(_statements(transformed, function))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_customer_managed_table_key_is_usable_through_dynamodb_only(
    transformed: dict[str, Any], function: str
) -> None:
    without = _statements(transformed, function, kms_key=False)
    with_key = _statements(transformed, function, kms_key=True)
    assert not any(action.startswith("kms:") for action in _granted(without))
    added = [statement for statement in with_key if statement not in without]
    assert len(added) == 1
    (statement,) = added
    assert set(statement["Action"]) == KMS_ACTIONS
    assert statement["Resource"] == {"Ref": "TableKmsKeyArn"}
    assert statement["Condition"] == {
        "StringEquals": {"kms:ViaService": {"Fn::Sub": "dynamodb.${AWS::Region}.amazonaws.com"}}
    }


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_writes_to_the_log_group_it_names(transformed: dict[str, Any], function: str) -> None:
    # GIVEN the function's LoggingConfig (the group exists before the function: the function refers to it)
    logging = _functions(transformed)[function]["LoggingConfig"]
    group_ref = logging["LogGroup"]
    assert set(group_ref) == {"Ref"}
    group = transformed["Resources"][group_ref["Ref"]]
    assert group["Type"] == "AWS::Logs::LogGroup"
    # THEN the group keeps logs LogRetentionInDays, its name does not depend on the function (no cycle)
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionInDays"}
    name = str(group["Properties"]["LogGroupName"])
    assert f"${{{function}" not in name
    assert f"'Ref': '{function}'" not in name
    assert "DependsOn" not in group
    # ... and the role may write to that group only
    log_statements = [s for s in _statements(transformed, function) if LOG_ACTIONS & set(_as_list(s["Action"]))]
    assert len(log_statements) == 1
    assert set(log_statements[0]["Action"]) == LOG_ACTIONS
    assert log_statements[0]["Resource"] == {"Fn::GetAtt": [group_ref["Ref"], "Arn"]}
