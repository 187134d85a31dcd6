"""herald.local.resources: the local stack's table, queues and secret are the ones template.yaml describes."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from herald.local.event_sources import EventSourceSettings, delivery_event_source, delivery_event_sources
from herald.local.resources import (
    TEMPLATE_PATH_ENV,
    LocalResources,
    TemplateTranslationError,
    create_local_resources,
    default_template_path,
    load_template,
)
from herald.local.template import Resolver
from herald.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "local-admin-key-0123456789abcdefghijklmnopqrstuv"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region, and no endpoint or template override leaking in from the shell."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", TEMPLATE_PATH_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def aws(aws_env: None) -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(REPO_ROOT / "template.yaml")


@pytest.fixture
def resources(aws: None, template: dict[str, Any]) -> LocalResources:
    return create_local_resources(admin_key=ADMIN_KEY, template=template)


def _properties(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    properties: dict[str, Any] = template["Resources"][logical_id]["Properties"]
    return properties


def _queue_attributes(url: str) -> dict[str, str]:
    attributes = boto3.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return {str(name): value for name, value in attributes.items()}


# ---------------------------------------------------------------------------------------------- table


def test_table_matches_the_template(resources: LocalResources, template: dict[str, Any]) -> None:
    # GIVEN the template's table WHEN the local resources exist
    expected = _properties(template, "Table")
    table = boto3.client("dynamodb").describe_table(TableName=resources.table_name)["Table"]

    # THEN keys, attributes, indexes, billing and encryption are the template's
    assert table["KeySchema"] == expected["KeySchema"]
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(expected["AttributeDefinitions"], key=str)
    indexes = {index["IndexName"]: index for index in table["GlobalSecondaryIndexes"]}
    assert set(indexes) == {index["IndexName"] for index in expected["GlobalSecondaryIndexes"]} == {"gsi1", "gsi2"}
    for index in expected["GlobalSecondaryIndexes"]:
        assert indexes[index["IndexName"]]["KeySchema"] == index["KeySchema"]
        assert indexes[index["IndexName"]]["Projection"] == index["Projection"] == {"ProjectionType": "ALL"}
    assert table["BillingModeSummary"]["BillingMode"] == expected["BillingMode"] == "PAY_PER_REQUEST"
    # ... and, with no TableKmsKeyArn, encryption with the AWS owned key (DynamoDB reports no SSE description)
    assert template["Parameters"]["TableKmsKeyArn"]["Default"] == ""
    assert "SSEDescription" not in table


def test_table_is_encrypted_with_the_customer_managed_key_given_as_parameter(
    aws: None, template: dict[str, Any]
) -> None:
    # GIVEN a customer-managed KMS key, passed as the TableKmsKeyArn parameter
    key_arn = boto3.client("kms").create_key(Description="herald table")["KeyMetadata"]["Arn"]
    with_key = copy.deepcopy(template)
    with_key["Parameters"]["TableKmsKeyArn"]["Default"] = key_arn

    # WHEN the stack's resources are created
    created = create_local_resources(admin_key=ADMIN_KEY, template=with_key)

    # THEN the table is encrypted with that key
    table = boto3.client("dynamodb").describe_table(TableName=created.table_name)["Table"]
    assert table["SSEDescription"]["Status"] == "ENABLED"
    assert table["SSEDescription"]["SSEType"] == "KMS"
    assert table["SSEDescription"]["KMSMasterKeyArn"] == key_arn


def test_table_has_the_templates_ttl_and_point_in_time_recovery(
    resources: LocalResources, template: dict[str, Any]
) -> None:
    expected = _properties(template, "Table")
    client = boto3.client("dynamodb")

    ttl = client.describe_time_to_live(TableName=resources.table_name)["TimeToLiveDescription"]
    backups = client.describe_continuous_backups(TableName=resources.table_name)["ContinuousBackupsDescription"]

    assert ttl["AttributeName"] == expected["TimeToLiveSpecification"]["AttributeName"] == "expires_at"
    assert ttl["TimeToLiveStatus"] == "ENABLED"
    assert expected["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"


# ---------------------------------------------------------------------------------------------- queues


@pytest.mark.parametrize("queue", ["WorkQueue", "SlowQueue", "DeadLetterQueue"])
def test_queue_attributes_match_the_template(resources: LocalResources, template: dict[str, Any], queue: str) -> None:
    urls = {"SlowQueue": resources.slow_queue_url, "DeadLetterQueue": resources.dead_letter_queue_url}
    url = urls.get(queue, resources.queue_url)
    expected = _properties(template, queue)

    attributes = _queue_attributes(url)

    assert int(attributes["MessageRetentionPeriod"]) == expected["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert int(attributes["MaximumMessageSize"]) == expected["MaximumMessageSize"]
    assert attributes["SqsManagedSseEnabled"] == "true"
    assert url.endswith(f"herald-local-{queue}")


def test_work_queue_visibility_timeout_covers_six_delivery_timeouts(
    resources: LocalResources, template: dict[str, Any]
) -> None:
    attributes = _queue_attributes(resources.queue_url)

    visibility = int(attributes["VisibilityTimeout"])
    assert visibility == _properties(template, "WorkQueue")["VisibilityTimeout"]
    assert visibility >= 6 * delivery_event_source(template).function_timeout_seconds
    assert visibility >= 6 * 60


def test_work_queue_redrives_to_the_dead_letter_queue(resources: LocalResources, template: dict[str, Any]) -> None:
    # GIVEN the parameter default behind the template's maxReceiveCount
    parameter = _properties(template, "WorkQueue")["RedrivePolicy"]["maxReceiveCount"]["Ref"]
    default = template["Parameters"][parameter]["Default"]

    # WHEN the queues exist
    redrive = json.loads(_queue_attributes(resources.queue_url)["RedrivePolicy"])
    dead_letter_arn = _queue_attributes(resources.dead_letter_queue_url)["QueueArn"]

    # THEN the work queue moves messages to the real DLQ after the parameter's count
    assert redrive["deadLetterTargetArn"] == dead_letter_arn
    assert int(redrive["maxReceiveCount"]) == default == resources.max_receive_count
    assert resources.max_receive_count >= 5


def test_a_changed_template_changes_the_local_queue(aws: None, template: dict[str, Any]) -> None:
    # GIVEN a template whose work queue and parameter differ from the committed one
    changed = copy.deepcopy(template)
    changed["Resources"]["WorkQueue"]["Properties"]["VisibilityTimeout"] = 777
    changed["Parameters"]["MaxReceiveCount"]["Default"] = 7

    # WHEN the local resources are created from it
    resources = create_local_resources(admin_key=ADMIN_KEY, template=changed)

    # THEN the local queue follows the template, not a hard-coded copy of it
    attributes = _queue_attributes(resources.queue_url)
    assert attributes["VisibilityTimeout"] == "777"
    assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] in (7, "7")
    assert resources.max_receive_count == 7


# ---------------------------------------------------------------------------------------------- secret, settings


def test_admin_key_secret_holds_the_admin_key(resources: LocalResources) -> None:
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=resources.admin_key_secret_arn)
    assert secret["SecretString"] == ADMIN_KEY


def test_environment_configures_herald_settings(resources: LocalResources, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the environment the local stack hands to the application
    environment = resources.environment()
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    # WHEN Herald reads its settings THEN they point at the local resources
    settings = Settings()
    assert set(environment) == {
        "HERALD_TABLE_NAME",
        "HERALD_QUEUE_URL",
        "HERALD_DEAD_LETTER_QUEUE_URL",
        "HERALD_ADMIN_KEY_SECRET_ARN",
        "HERALD_MAX_RECEIVE_COUNT",
        "HERALD_SLOW_QUEUE_URL",
    }
    assert settings.table_name == resources.table_name
    assert settings.queue_url == resources.queue_url
    assert settings.dead_letter_queue_url == resources.dead_letter_queue_url
    assert settings.admin_key_secret_arn == resources.admin_key_secret_arn
    assert settings.max_receive_count == resources.max_receive_count
    assert settings.slow_queue_url == resources.slow_queue_url


# ---------------------------------------------------------------------------------------------- idempotency


def test_creating_twice_reuses_the_resources(resources: LocalResources, template: dict[str, Any]) -> None:
    # WHEN the local resources are created a second time against the same AWS
    again = create_local_resources(admin_key=ADMIN_KEY, template=template)

    # THEN nothing is duplicated and the same resources come back
    assert again == resources
    assert boto3.client("dynamodb").list_tables()["TableNames"] == [resources.table_name]
    assert sorted(boto3.client("sqs").list_queues()["QueueUrls"]) == sorted(
        [resources.queue_url, resources.slow_queue_url, resources.dead_letter_queue_url]
    )
    # the admin key and the material it is generated from
    assert len(boto3.client("secretsmanager").list_secrets()["SecretList"]) == 2


def test_creating_again_with_another_admin_key_updates_the_secret(
    resources: LocalResources, template: dict[str, Any]
) -> None:
    again = create_local_resources(admin_key="another-key", template=template)

    secret = boto3.client("secretsmanager").get_secret_value(SecretId=again.admin_key_secret_arn)
    assert again.admin_key_secret_arn == resources.admin_key_secret_arn
    assert secret["SecretString"] == "another-key"


def test_prefix_names_the_resources(aws: None, template: dict[str, Any]) -> None:
    resources = create_local_resources(admin_key=ADMIN_KEY, template=template, prefix="t1")

    assert resources.table_name == "t1-Table"
    assert resources.queue_url.endswith("/t1-WorkQueue")
    assert resources.dead_letter_queue_url.endswith("/t1-DeadLetterQueue")
    assert ":secret:t1-AdminKeySecret" in resources.admin_key_secret_arn


def test_untranslatable_property_is_refused(aws: None, template: dict[str, Any]) -> None:
    changed = copy.deepcopy(template)
    changed["Resources"]["Table"]["Properties"]["SomethingNew"] = True

    with pytest.raises(TemplateTranslationError, match="SomethingNew"):
        create_local_resources(admin_key=ADMIN_KEY, template=changed)


@pytest.mark.parametrize(
    ("event", "change", "named"),
    [
        ("Work", {"FilterCriteria": {"Filters": [{"Pattern": "{}"}]}}, "FilterCriteria"),
        ("Work", {"Enabled": False}, "Enabled"),
        ("Work", {"ScalingConfig": {"MaximumConcurrency": 5, "Other": 1}}, "ScalingConfig.Other"),
        ("SlowWork", {"MaximumRecordAgeInSeconds": 60}, "MaximumRecordAgeInSeconds"),
        ("Stats", {"BisectBatchOnFunctionError": True}, "BisectBatchOnFunctionError"),
        ("Stats", {"ParallelizationFactor": 2}, "ParallelizationFactor"),
        ("Sweep", {"State": "DISABLED"}, "State"),
        ("Sweep", {"RetryPolicy": {"MaximumRetryAttempts": 0}}, "RetryPolicy"),
    ],
)
def test_an_event_source_property_the_local_stack_does_not_emulate_is_refused(
    template: dict[str, Any], event: str, change: dict[str, Any], named: str
) -> None:
    from herald.local.event_sources import delivery_schedule, delivery_stream_source

    # GIVEN the template's delivery function with a property on one of its events the local stack would leave out
    changed = copy.deepcopy(template)
    changed["Resources"]["DeliveryFunction"]["Properties"]["Events"][event]["Properties"].update(change)
    read = {"Work": delivery_event_sources, "SlowWork": delivery_event_sources}.get(
        event, delivery_stream_source if event == "Stats" else delivery_schedule
    )
    # WHEN the local stack reads the event's settings: THEN it refuses, naming the event and the property
    with pytest.raises(TemplateTranslationError, match=rf"event {event} \(.*\): .*{named}"):
        read(changed)
    # AND without it (and with what has no local meaning, a schedule's name say), the event is read
    delivery_event_sources(template)
    named_schedule = copy.deepcopy(template)
    named_schedule["Resources"]["DeliveryFunction"]["Properties"]["Events"]["Sweep"]["Properties"]["Name"] = "sweep"
    assert delivery_schedule(named_schedule) == delivery_schedule(template)
    assert delivery_stream_source(template).patterns


# ---------------------------------------------------------------------------------------------- event source


def test_delivery_event_source_reads_the_template(template: dict[str, Any]) -> None:
    function = _properties(template, "DeliveryFunction")
    events = {
        event["Properties"]["Queue"]["Fn::GetAtt"][0]: event["Properties"]
        for event in function["Events"].values()
        if event["Type"] == "SQS"
    }
    parameters = template["Parameters"]
    resolver = Resolver(template)

    sources = delivery_event_sources(template)

    # THEN each SQS event of the function is read with its own queue and settings, the work queue's first
    assert [source.queue_id for source in sources] == ["WorkQueue", "SlowQueue"]
    for source in sources:
        event = events[source.queue_id]
        concurrency = parameters[event["ScalingConfig"]["MaximumConcurrency"]["Ref"]]["Default"]
        assert source == EventSourceSettings(
            batch_size=resolver.resolve(event["BatchSize"]),
            maximum_batching_window_seconds=resolver.resolve(event["MaximumBatchingWindowInSeconds"]),
            function_timeout_seconds=function["Timeout"],
            report_batch_item_failures="ReportBatchItemFailures" in event["FunctionResponseTypes"],
            queue_id=source.queue_id,
            maximum_concurrency=concurrency,
        )
    assert delivery_event_source(template) == sources[0] == EventSourceSettings(10, 0, 60, True, "WorkQueue", 20)
    # AND the operator's other choice of batching is what the local stack then emulates
    throughput = copy.deepcopy(template)
    throughput["Parameters"]["DeliveryBatching"]["Default"] = "throughput"
    assert delivery_event_source(throughput) == EventSourceSettings(100, 1, 60, True, "WorkQueue", 20)
    assert sources[1] == EventSourceSettings(100, 1, 60, True, "SlowQueue", 5)


@pytest.mark.parametrize(
    ("count", "expected"), [(3, {"WorkQueue": 3, "SlowQueue": 3}), (8, {"WorkQueue": 8, "SlowQueue": 5})]
)
def test_the_local_stack_polls_every_event_source_of_the_template(
    resources: LocalResources, monkeypatch: pytest.MonkeyPatch, count: int, expected: dict[str, int]
) -> None:
    from herald.local.stack import event_source_pollers
    from herald.services import Services
    from herald.worker import settle_all

    # GIVEN the local stack's services on the template's resources
    for name, value in resources.environment().items():
        monkeypatch.setenv(name, value)
    services = Services.create(Settings())
    sources = {source.queue_id: source for source in delivery_event_sources()}
    # WHEN it starts its pollers with at most `count` invocations per event source
    pollers = event_source_pollers(resources, services, count)
    try:
        # THEN each queue's event source gets min(count, its MaximumConcurrency) pollers, each with its own
        # worker, reading that queue with that source's batch size, window and function timeout
        assert {queue: sum(1 for s, _, _ in pollers if s.queue_id == queue) for queue in sources} == expected
        assert len({id(worker) for _, worker, _ in pollers}) == len(pollers)
        for source, worker, poller in pollers:
            assert poller.queue_url == resources.queue_url_of(source.queue_id)
            assert poller.handler == worker.handle
            assert (poller.batch_size, poller.window, poller.timeout) == (
                sources[source.queue_id].batch_size,
                sources[source.queue_id].maximum_batching_window_seconds,
                sources[source.queue_id].function_timeout_seconds,
            )
    finally:
        settle_all(worker for _, worker, _ in pollers)


def test_delivery_timeout_falls_back_to_globals_then_to_the_lambda_default(template: dict[str, Any]) -> None:
    changed = copy.deepcopy(template)
    del changed["Resources"]["DeliveryFunction"]["Properties"]["Timeout"]
    changed["Globals"]["Function"]["Timeout"] = 42
    assert delivery_event_source(changed).function_timeout_seconds == 42

    del changed["Globals"]["Function"]["Timeout"]
    assert delivery_event_source(changed).function_timeout_seconds == 3


def test_the_schedule_invokes_the_function_with_its_timeout_in_the_context(template: dict[str, Any]) -> None:
    import threading

    from herald.local.event_sources import delivery_schedule, run_schedule

    # GIVEN the delivery function's schedule as the template gives it, every second for the test, with a timeout
    # of 42 s
    changed = copy.deepcopy(template)
    changed["Resources"]["DeliveryFunction"]["Properties"]["Timeout"] = 42
    schedule = delivery_schedule(changed)
    assert schedule.function_timeout_seconds == 42
    stop = threading.Event()
    seen: list[tuple[dict[str, Any], Any, int]] = []

    def handler(event: dict[str, Any], context: Any) -> None:
        # the time left is read as the invocation starts: read after the thread ends, it would count the wait for it
        seen.append((event, context, context.get_remaining_time_in_millis()))
        stop.set()

    # WHEN it runs once
    thread = threading.Thread(
        target=run_schedule, args=(stop, dataclasses.replace(schedule, interval_seconds=0), handler)
    )
    thread.start()
    thread.join(timeout=60)
    # THEN the function got the schedule's input and a context that leaves it its timeout, as Lambda's does (the
    # sweep works until shortly before it)
    assert not thread.is_alive()
    ((event, context, remaining_ms),) = seen
    assert event == schedule.input
    assert 40_000 < remaining_ms <= 42_000
    assert context.aws_request_id


# ---------------------------------------------------------------------------------------------- loader


def test_loader_reads_short_form_intrinsics(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        "Resources:\n"
        "  R:\n"
        "    Type: Custom\n"
        "    Properties:\n"
        "      A: !Ref P\n"
        "      B: !GetAtt Q.Arn\n"
        "      C: !Sub ${Q.Arn}/index/*\n"
        "      D: !If [Cond, !Ref AWS::NoValue, x]\n"
        "      E: !Join ['-', [a, !Ref P]]\n"
        "      F: !GetAtt [Q, QueueName]\n"
        "      G: 2012-10-17\n",
        encoding="utf-8",
    )

    properties = load_template(path)["Resources"]["R"]["Properties"]

    assert properties == {
        "A": {"Ref": "P"},
        "B": {"Fn::GetAtt": ["Q", "Arn"]},
        "C": {"Fn::Sub": "${Q.Arn}/index/*"},
        "D": {"Fn::If": ["Cond", {"Ref": "AWS::NoValue"}, "x"]},
        "E": {"Fn::Join": ["-", ["a", {"Ref": "P"}]]},
        "F": {"Fn::GetAtt": ["Q", "QueueName"]},
        "G": "2012-10-17",
    }


def test_template_path_defaults_to_the_repository_and_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TEMPLATE_PATH_ENV, raising=False)
    assert default_template_path() == REPO_ROOT / "template.yaml"
    assert "HeraldLayer" in load_template()["Resources"]

    other = tmp_path / "other.yaml"
    other.write_text("Resources:\n  Only:\n    Type: Custom\n", encoding="utf-8")
    monkeypatch.setenv(TEMPLATE_PATH_ENV, str(other))
    assert load_template()["Resources"] == {"Only": {"Type": "Custom"}}
