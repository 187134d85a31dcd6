"""template.yaml, the layer's Makefile and requirements.txt: the invariants the design depends on."""

# Over 400 lines on purpose: one module per area of behaviour, whose tests share its fixtures and helpers and read
# in order as that area's specification.

from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from herald.local.resources import function_properties, load_template
from herald.local.template import Resolver
from herald.messages import MAX_DELIVERIES_PER_MESSAGE
from herald.metrics import CORE, Metric
from herald.sender import MAX_CONNECTIONS
from herald.settings import Settings
from herald.worker.fanout import CLAIM_IDLE_SECONDS
from herald.worker.jobs import LISTER_IDLE_SECONDS
from herald.worker.pacing import START_MARGIN_SECONDS
from tests.process_guard import run_group

if TYPE_CHECKING:
    pass

REPO_ROOT = Path(__file__).resolve().parents[1]
LAYER_DIR = REPO_ROOT / "layers" / "herald"
LAYER_MAKEFILE = LAYER_DIR / "Makefile"
FOURTEEN_DAYS = 14 * 24 * 3600
FUNCTIONS = ("ApiFunction", "DeliveryFunction")
#: The metrics' dimension in a deployment: the stack's name (``HERALD_METRICS_SERVICE``).
STACK_NAME = {"Ref": "AWS::StackName"}
#: Shipped by the Lambda python runtime, so never bundled in the layer.
RUNTIME_PROVIDED = {"boto3"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(REPO_ROOT / "template.yaml")


def _properties(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    properties: dict[str, Any] = template["Resources"][logical_id]["Properties"]
    return properties


def _requirements(lines: list[str]) -> dict[str, Requirement]:
    requirements = [Requirement(line) for line in lines]
    return {canonicalize_name(requirement.name): requirement for requirement in requirements}


def _make(target: str, artifacts_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ARTIFACTS_DIR": str(artifacts_dir)}
    # make runs pip and the compiler: the whole group is stopped with it, before the test's own timeout.
    return run_group(
        ["make", "--no-print-directory", "-f", str(LAYER_MAKEFILE), target, f"PYTHON={sys.executable}"],
        cwd=artifacts_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )


# ---------------------------------------------------------------------------------------------- dependencies


def test_layer_requirements_are_pyproject_dependencies_minus_runtime_provided() -> None:
    # GIVEN the project's runtime dependencies and the layer's requirements
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = _requirements(pyproject["project"]["dependencies"])
    lines = (LAYER_DIR / "requirements.txt").read_text(encoding="utf-8").splitlines()
    layer = _requirements([line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()])

    # THEN the layer lists the same packages with the same specifiers, minus what the runtime ships
    assert set(declared) >= RUNTIME_PROVIDED
    assert set(layer) == set(declared) - RUNTIME_PROVIDED
    for name, requirement in layer.items():
        assert requirement.specifier == declared[name].specifier, name
        assert requirement.extras == declared[name].extras, name
        assert requirement.marker == declared[name].marker, name


# ---------------------------------------------------------------------------------------------- queues


def test_work_queue_visibility_timeout_is_at_least_six_delivery_timeouts(template: dict[str, Any]) -> None:
    timeout = function_properties(template, "DeliveryFunction")["Timeout"]
    assert _properties(template, "WorkQueue")["VisibilityTimeout"] >= 6 * timeout


def test_a_fanout_claim_is_idle_before_a_redriven_message_can_come_back(template: dict[str, Any]) -> None:
    # A message comes back from the dead-letter queue at least a visibility timeout after its last receive, when it
    # last claimed its place in the fan-out: its redrive, with a new id, must find that claim idle
    assert _properties(template, "WorkQueue")["VisibilityTimeout"] > CLAIM_IDLE_SECONDS
    # ... and a recovery's first message its job's listing
    assert _properties(template, "WorkQueue")["VisibilityTimeout"] > LISTER_IDLE_SECONDS


@pytest.mark.parametrize("queue", ["WorkQueue", "DeadLetterQueue"])
def test_queues_keep_messages_fourteen_days(template: dict[str, Any], queue: str) -> None:
    assert _properties(template, queue)["MessageRetentionPeriod"] == FOURTEEN_DAYS


@pytest.mark.parametrize("queue", ["WorkQueue", "SlowQueue", "DeadLetterQueue"])
def test_queues_set_maximum_message_size_and_encryption(template: dict[str, Any], queue: str) -> None:
    properties = _properties(template, queue)
    # (the work queues 256 KiB, as before SQS's default rose to 1 MiB; the dead-letter queue SQS's maximum)
    assert properties["MaximumMessageSize"] == (1_048_576 if queue == "DeadLetterQueue" else 262_144)
    assert properties["SqsManagedSseEnabled"] is True


def test_the_dead_letter_queue_holds_any_work_message_with_the_attributes_it_is_set_aside_with(
    template: dict[str, Any],
) -> None:
    from herald.queue import ERROR_ATTRIBUTE, MAX_REASON_CHARS, REDRIVES_ATTRIBUTE, redrives_attribute

    # GIVEN the largest message the work queues take, and what Queue.dead_letter adds to it: its reason and its
    # redrive count, as message attributes, whose name, data type and value SQS counts in the message's size (a
    # reason's characters UTF-8 encoded: four bytes at most each)
    largest = max(_properties(template, queue)["MaximumMessageSize"] for queue in ("WorkQueue", "SlowQueue"))
    reason = len(ERROR_ATTRIBUTE) + len("String") + 4 * MAX_REASON_CHARS
    count = redrives_attribute(Settings.model_fields["dead_letter_max_redrives"].default + 1_000_000)
    redrives = len(REDRIVES_ATTRIBUTE) + len(count["DataType"]) + len(count["StringValue"])
    # THEN the dead-letter queue takes the message with both (SQS refuses a message beyond its queue's size), within
    # SQS's own limit
    dead_letters = _properties(template, "DeadLetterQueue")["MaximumMessageSize"]
    assert largest + reason + redrives <= dead_letters <= 1_048_576


def test_work_queue_redrives_to_dead_letter_queue(template: dict[str, Any]) -> None:
    redrive = _properties(template, "WorkQueue")["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    parameter = template["Parameters"][redrive["maxReceiveCount"]["Ref"]]
    assert parameter["Type"] == "Number"
    assert parameter["MinValue"] >= 5
    # SQS accepts a maxReceiveCount of 1 to 1000: a larger value is refused when the stack is deployed, not later
    assert parameter["MaxValue"] == 1000
    assert parameter["MinValue"] <= parameter["Default"] <= parameter["MaxValue"]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_functions_read_the_redrive_max_receive_count(template: dict[str, Any], function: str) -> None:
    # GIVEN the parameter the work queue's RedrivePolicy uses
    redrive_count = _properties(template, "WorkQueue")["RedrivePolicy"]["maxReceiveCount"]
    # THEN each function's environment (Globals applied) refers to the same parameter
    variables = function_properties(template, function)["Environment"]["Variables"]
    assert variables["HERALD_MAX_RECEIVE_COUNT"] == redrive_count
    assert set(redrive_count) == {"Ref"}
    assert redrive_count["Ref"] in template["Parameters"]


def test_delivery_function_reports_batch_item_failures_from_the_work_queue(template: dict[str, Any]) -> None:
    events = function_properties(template, "DeliveryFunction")["Events"]
    sqs_events = {
        event["Properties"]["Queue"]["Fn::GetAtt"][0]: event["Properties"]
        for event in events.values()
        if event["Type"] == "SQS"
    }
    # GIVEN the work queue's event source and the slow lane's, and nothing else
    assert set(sqs_events) == {"WorkQueue", "SlowQueue"}
    for queue, event in sqs_events.items():
        assert event["Queue"] == {"Fn::GetAtt": [queue, "Arn"]}
        assert "ReportBatchItemFailures" in event["FunctionResponseTypes"]
    # AND Lambda's rule holds whichever batching the operator picks: a batch size above 10 needs a batching
    # window of at least 1 s; for latency (the default) the work queue hands each message over at once, for
    # throughput it gathers 100 messages (up to 1,000 deliveries) for up to a second; the slow lane, whose messages
    # are single deliveries, always gathers batches of 100
    batching = {}
    for choice in template["Parameters"]["DeliveryBatching"]["AllowedValues"]:
        chosen = copy.deepcopy(template)
        chosen["Parameters"]["DeliveryBatching"]["Default"] = choice
        resolver = Resolver(chosen)
        for queue, event in sqs_events.items():
            size, window = (resolver.resolve(event[key]) for key in ("BatchSize", "MaximumBatchingWindowInSeconds"))
            assert 1 <= size <= 10 or window >= 1
            batching[choice, queue] = (size, window)
    assert template["Parameters"]["DeliveryBatching"]["Default"] == "latency"
    # AND an invocation's attempts fit the function's time even when they outnumber the HTTP client's connections
    # (each waits for one before its timeout starts): they go in waves of MAX_CONNECTIONS, up to ten deliveries a
    # message on the work queue, whose scheduled attempts are handed to the slow lane once unanswered for
    # slow_lane_after_seconds, one a message on the slow lane, whose attempts have the whole timeout (at its
    # largest); a connection may also wait out a rate limit's local wait first. The last wave starts with the
    # timeout and the margin to record it still ahead (an attempt with no connection by then is put off)
    function_timeout = function_properties(template, "DeliveryFunction")["Timeout"]
    attempt_timeout = template["Parameters"]["DeliveryTimeoutSeconds"]["MaxValue"]
    hand_over = Settings.model_fields["slow_lane_after_seconds"].default
    rate_wait = Settings.model_fields["rate_limit_local_wait_seconds"].default
    for (_, queue), (size, _) in batching.items():
        per_message, wave = (MAX_DELIVERIES_PER_MESSAGE, hand_over) if queue == "WorkQueue" else (1, attempt_timeout)
        waves = math.ceil(size * per_message / MAX_CONNECTIONS)
        assert (waves - 1) * (wave + rate_wait) + attempt_timeout + START_MARGIN_SECONDS <= function_timeout
    assert batching == {
        ("latency", "WorkQueue"): (10, 0),
        ("throughput", "WorkQueue"): (100, 1),
        ("latency", "SlowQueue"): (100, 1),
        ("throughput", "SlowQueue"): (100, 1),
    }
    # THEN each has a concurrency of its own: the slow lane never takes the work queue's invocations
    work, slow = sqs_events["WorkQueue"]["ScalingConfig"], sqs_events["SlowQueue"]["ScalingConfig"]
    assert work["MaximumConcurrency"] == {"Ref": "DeliveryMaximumConcurrency"}
    assert slow["MaximumConcurrency"] == {"Ref": "SlowLaneMaximumConcurrency"}
    parameter = template["Parameters"]["SlowLaneMaximumConcurrency"]
    assert 2 <= parameter["MinValue"] <= parameter["Default"] <= parameter["MaxValue"] <= 1000


def test_the_slow_lane_queue_is_a_work_queue_like_the_first(template: dict[str, Any]) -> None:
    # GIVEN the slow lane's queue and the work queue
    work, slow = _properties(template, "WorkQueue"), _properties(template, "SlowQueue")
    # THEN it hides a message as long, keeps it as long, and dead-letters it the same way
    for name in ("VisibilityTimeout", "MessageRetentionPeriod", "MaximumMessageSize", "RedrivePolicy"):
        assert slow[name] == work[name], name
    # AND the delivery function sends to it (forwarding, holding) and knows where it is
    variables = function_properties(template, "DeliveryFunction")["Environment"]["Variables"]
    assert variables["HERALD_SLOW_QUEUE_URL"] == {"Ref": "SlowQueue"}
    statements = [
        statement
        for policy in _properties(template, "DeliveryFunctionRole")["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
        if isinstance(statement, dict) and "sqs:SendMessage" in statement.get("Action", [])
    ]
    assert any({"Fn::GetAtt": ["SlowQueue", "Arn"]} in statement["Resource"] for statement in statements)


# ---------------------------------------------------------------------------------------------- API


def test_http_api_uses_payload_2_on_the_default_stage_for_every_route(template: dict[str, Any]) -> None:
    assert template["Resources"]["HttpApi"]["Type"] == "AWS::Serverless::HttpApi"
    assert _properties(template, "HttpApi").get("StageName", "$default") == "$default"

    events = function_properties(template, "ApiFunction")["Events"]
    http_events = [event["Properties"] for event in events.values() if event["Type"] == "HttpApi"]
    assert http_events
    routes = set()
    for event in http_events:
        assert event["ApiId"] == {"Ref": "HttpApi"}
        assert event["PayloadFormatVersion"] == "2.0"
        routes.add((event.get("Method", "ANY").upper(), event.get("Path", "$default")))
    # Either the $default route or "/" plus "/{proxy+}" for any method.
    assert ("ANY", "$default") in routes or {("ANY", "/"), ("ANY", "/{proxy+}")} <= routes


def test_api_function_fits_the_api_gateway_timeout(template: dict[str, Any]) -> None:
    assert function_properties(template, "ApiFunction")["Timeout"] <= 29


# -------------------------------------------------------------------------------- IAM (roles: test_template_iam)


def test_only_the_api_function_reads_the_admin_key(template: dict[str, Any]) -> None:
    api = function_properties(template, "ApiFunction")["Environment"]["Variables"]
    delivery = function_properties(template, "DeliveryFunction")["Environment"]["Variables"]
    assert api["HERALD_ADMIN_KEY_SECRET_ARN"] == {"Ref": "AdminKeySecret"}
    assert "HERALD_ADMIN_KEY_SECRET_ARN" not in delivery


def test_admin_key_secret_is_a_plain_string(template: dict[str, Any]) -> None:
    # The secret's value is the key itself (prefixed, so a leaked key is recognisable), built from a
    # generated secret: Secrets Manager cannot generate a value with a fixed prefix.
    assert _properties(template, "AdminKeySecret")["SecretString"] == {
        "Fn::Sub": "hra_{{resolve:secretsmanager:${AdminKeyMaterial}}}"
    }
    generate = _properties(template, "AdminKeyMaterial")["GenerateSecretString"]
    assert "SecretStringTemplate" not in generate
    assert generate["PasswordLength"] >= 32


# ---------------------------------------------------------------------------------------------- data


def test_table_keeps_customer_data(template: dict[str, Any]) -> None:
    table = template["Resources"]["Table"]
    assert table["DeletionPolicy"] == "Retain"
    assert table["UpdateReplacePolicy"] == "Retain"
    properties = table["Properties"]
    assert properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


# ---------------------------------------------------------------------------------------------- layer


def test_layer_is_built_by_its_makefile_for_arm64(template: dict[str, Any]) -> None:
    layer = template["Resources"]["HeraldLayer"]
    assert layer["Properties"]["ContentUri"] == "layers/herald"
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert layer["Metadata"]["BuildArchitecture"] == "arm64"
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert template["Globals"]["Function"]["Architectures"] == ["arm64"]
    assert template["Globals"]["Function"]["Runtime"] in layer["Properties"]["CompatibleRuntimes"]
    assert template["Globals"]["Function"]["Layers"] == [{"Ref": "HeraldLayer"}]
    makefile = LAYER_MAKEFILE.read_text(encoding="utf-8")
    assert "\nbuild-HeraldLayer:" in makefile
    assert "--platform manylinux2014_aarch64 --only-binary=:all: --python-version 3.13 --implementation cp" in makefile


def test_layer_makefile_ships_herald_without_herald_local(tmp_path: Path) -> None:
    # GIVEN the source tree has herald.local and (possibly) stale bytecode
    assert (LAYER_DIR / "herald" / "local" / "__init__.py").is_file()

    # WHEN the layer's copy step runs
    result = _make("layer-herald", tmp_path)

    # THEN herald is shipped, without herald.local and without bytecode from the developer's machine
    assert result.returncode == 0, result.stderr
    shipped = tmp_path / "python" / "herald"
    assert (shipped / "__init__.py").is_file()
    assert (shipped / "settings.py").is_file()
    assert not (shipped / "local").exists()
    assert not list(shipped.rglob("__pycache__"))


def test_layer_makefile_removes_what_the_runtime_provides(tmp_path: Path) -> None:
    site = tmp_path / "python"
    for name in ("boto3", "botocore", "s3transfer", "boto3-1.0.dist-info", "bin", "pydantic"):
        (site / name).mkdir(parents=True)

    result = _make("layer-prune", tmp_path)

    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in site.iterdir()) == ["pydantic"]


def test_layer_makefile_precompiles_unchecked_hash_bytecode(tmp_path: Path) -> None:
    # GIVEN a layer with herald copied in
    assert _make("layer-herald", tmp_path).returncode == 0

    # WHEN bytecode is compiled
    result = _make("layer-bytecode", tmp_path)

    # THEN every module has a cpython-313 .pyc whose flags say "hash-based, unchecked" (PEP 552: 0b01)
    assert result.returncode == 0, result.stderr
    shipped = tmp_path / "python" / "herald"
    sources = list(shipped.rglob("*.py"))
    assert sources
    for source in sources:
        compiled = source.parent / "__pycache__" / f"{source.stem}.cpython-313.pyc"
        header = compiled.read_bytes()[:8]
        assert int.from_bytes(header[4:8], "little") == 0b01, compiled


# ---------------------------------------------------------------------------------------------- alarms and logs

ALARM_TOPIC_ACTION = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def _alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }


def _math_metrics(alarm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A metric-math alarm's queries by id."""
    return {query["Id"]: query for query in alarm["Metrics"]}


def _metric_stats(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics an alarm reads (its own, or each of its metric-math queries'), each with its namespace and name."""
    if "Metrics" not in alarm:
        return [alarm]
    return [query["MetricStat"]["Metric"] for query in alarm["Metrics"] if "MetricStat" in query]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_function_logs_to_its_own_log_group_with_retention(template: dict[str, Any], function: str) -> None:
    # GIVEN the log groups of the template
    resources = template["Resources"]
    groups = {key: value["Properties"] for key, value in resources.items() if value["Type"] == "AWS::Logs::LogGroup"}
    # THEN the function names its own group (so the group is created first, never by Lambda on an early call)
    logical_id = function_properties(template, function)["LoggingConfig"]["LogGroup"]["Ref"]
    assert groups[logical_id]["RetentionInDays"] == {"Ref": "LogRetentionInDays"}
    assert groups[logical_id]["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{AWS::StackName}}-{function}"}
    # ... and every log group of the stack (the API's access logs too) has a retention
    assert all(group["RetentionInDays"] == {"Ref": "LogRetentionInDays"} for group in groups.values())


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_each_function_has_errors_and_throttles_alarms(template: dict[str, Any], function: str, metric: str) -> None:
    matching = [
        alarm
        for alarm in _alarms(template).values()
        if alarm.get("Namespace") == "AWS/Lambda"
        and alarm.get("MetricName") == metric
        and alarm.get("Dimensions") == [{"Name": "FunctionName", "Value": {"Ref": function}}]
    ]
    assert len(matching) == 1, f"{function}: no single {metric} alarm"
    (alarm,) = matching
    # any crash, timeout or throttle in 5 minutes
    assert alarm["Statistic"] == "Sum"
    assert alarm["Threshold"] == 0
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"


def test_dead_letter_queue_alarm_fires_on_any_message(template: dict[str, Any]) -> None:
    alarm = _alarms(template)["DeadLetterQueueAlarm"]
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}]
    assert alarm["Threshold"] == 0
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"


@pytest.mark.parametrize(
    ("logical_id", "queue"), [("WorkQueueInFlightAlarm", "WorkQueue"), ("SlowLaneInFlightAlarm", "SlowQueue")]
)
def test_each_work_queue_has_an_in_flight_alarm_well_under_sqs_cap(
    template: dict[str, Any], logical_id: str, queue: str
) -> None:
    # GIVEN the in-flight alarm of the work queue, or of the slow lane's (whose batches are 100 messages)
    alarm = _alarms(template)[logical_id]
    # THEN it watches the queue's hidden (in-flight) messages, at their peak in each minute
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesNotVisible")
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]
    assert (alarm["Statistic"], alarm["ComparisonOperator"]) == ("Maximum", "GreaterThanOrEqualToThreshold")
    # ... against the operator's threshold, which cannot be set at SQS's cap of ~120,000 (too late to act)
    assert alarm["Threshold"] == {"Ref": "WorkQueueInFlightAlarmThreshold"}
    parameter = template["Parameters"]["WorkQueueInFlightAlarmThreshold"]
    assert parameter["Default"] <= parameter["MaxValue"] <= 100_000


@pytest.mark.parametrize(
    ("logical_id", "queue"), [("WorkQueueAgeAlarm", "WorkQueue"), ("SlowQueueAgeAlarm", "SlowQueue")]
)
def test_queue_age_alarms_judge_the_oldest_message_only_while_messages_wait(
    template: dict[str, Any], logical_id: str, queue: str
) -> None:
    # GIVEN the age alarm of the work queue, or of the slow lane's (metric math)
    alarm = _alarms(template)[logical_id]
    queries = _math_metrics(alarm)
    work_queue = [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]

    # THEN it reads the age of the oldest message and the visible (waiting) count of its queue
    age = queries["age"]["MetricStat"]
    assert age["Metric"] == {
        "Namespace": "AWS/SQS",
        "MetricName": "ApproximateAgeOfOldestMessage",
        "Dimensions": work_queue,
    }
    assert age["Stat"] == "Maximum"
    waiting = queries["waiting"]["MetricStat"]
    assert waiting["Metric"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert waiting["Metric"]["Dimensions"] == work_queue
    assert waiting["Stat"] == "Minimum"
    # ... the age counts only when messages waited the whole period (a hidden retry alone never sets it off)
    returned = [query for query in alarm["Metrics"] if query.get("ReturnData", True)]
    assert [query["Expression"] for query in returned] == ["IF(waiting > 0, age, 0)"]
    # ... against a threshold the operator sets, far above the retry schedule's first two waits (5 s + 5 min)
    parameter = template["Parameters"][alarm["Threshold"]["Ref"]]
    assert parameter["Type"] == "Number"
    schedule = [int(step) for step in template["Parameters"]["RetrySchedule"]["Default"].split(",")]
    assert parameter["Default"] > schedule[1] + schedule[2]
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"


def test_the_delivery_function_logs_successful_attempts_as_the_operator_chooses(template: dict[str, Any]) -> None:
    # GIVEN the LogSuccessfulAttempts parameter
    parameter = template["Parameters"]["LogSuccessfulAttempts"]
    # THEN it is a choice of true or false, true by default as the setting's own default (a line for every attempt)
    assert parameter["AllowedValues"] == ["true", "false"]
    assert parameter["Default"] == "true"
    assert Settings.model_fields["log_successful_attempts"].default is True
    # AND the delivery function reads it (HERALD_LOG_SUCCESSFUL_ATTEMPTS), at the log level that drops DEBUG lines
    variables = function_properties(template, "DeliveryFunction")["Environment"]["Variables"]
    assert variables["HERALD_LOG_SUCCESSFUL_ATTEMPTS"] == {"Ref": "LogSuccessfulAttempts"}
    assert variables["POWERTOOLS_LOG_LEVEL"] == "INFO"


def test_the_functions_write_the_core_metrics_and_the_detailed_ones_as_the_operator_chooses(
    template: dict[str, Any],
) -> None:
    # GIVEN the DetailedMetrics parameter
    parameter = template["Parameters"]["DetailedMetrics"]
    # THEN it is a choice of true or false, false by default as the setting's own default (the core metrics only)
    assert parameter["AllowedValues"] == ["true", "false"]
    assert parameter["Default"] == "false"
    assert Settings.model_fields["detailed_metrics"].default is False
    # AND the functions read it (HERALD_DETAILED_METRICS)
    for function in FUNCTIONS:
        variables = function_properties(template, function)["Environment"]["Variables"]
        assert variables["HERALD_DETAILED_METRICS"] == {"Ref": "DetailedMetrics"}
    # AND every metric of the functions' namespace an alarm reads is a core one: written by default
    read = [
        stat["MetricName"]
        for alarm in _alarms(template).values()
        for stat in _metric_stats(alarm)
        if stat["Namespace"] == {"Ref": "MetricsNamespace"}
    ]
    assert {Metric.SUCCEEDED, Metric.FAILED, Metric.SWEEP_LAG} <= set(read)
    assert set(read) <= CORE


def test_delivery_failure_rate_alarm_reads_the_delivery_functions_metrics(template: dict[str, Any]) -> None:
    from herald.metrics import Metric
    from herald.settings import Settings

    # GIVEN the failure-rate alarm (metric math on the EMF metrics)
    alarm = _alarms(template)["DeliveryFailureRateAlarm"]
    queries = _math_metrics(alarm)

    # THEN it reads DeliveryFailed and DeliverySucceeded in the functions' namespace, with the EMF dimension
    for query_id, metric in (("failed", Metric.FAILED), ("succeeded", Metric.SUCCEEDED)):
        stat = queries[query_id]["MetricStat"]
        assert stat["Metric"] == {
            "Namespace": {"Ref": "MetricsNamespace"},
            "MetricName": metric.value,
            "Dimensions": [{"Name": "service", "Value": STACK_NAME}],
        }
        assert stat["Stat"] == "Sum"
    for function in FUNCTIONS:
        variables = function_properties(template, function)["Environment"]["Variables"]
        # ... which each function writes: its stack's own (stacks sharing an account and namespace never mix)
        assert variables["HERALD_METRICS_SERVICE"] == STACK_NAME
        assert variables["HERALD_METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}
    assert template["Parameters"]["MetricsNamespace"]["Default"] == Settings.model_fields["metrics_namespace"].default
    # ... and alarms on failed / (failed + succeeded), in percent, above a minimum volume
    (returned,) = [query for query in alarm["Metrics"] if query.get("ReturnData", True)]
    expression = " ".join(returned["Expression"]["Fn::Sub"].split())
    assert "100 * FILL(failed, 0) / (FILL(failed, 0) + FILL(succeeded, 0))" in expression
    assert "${DeliveryFailureRateMinAttempts}" in expression
    assert alarm["Threshold"] == {"Ref": "DeliveryFailureRateAlarmPercent"}
    assert template["Parameters"]["DeliveryFailureRateAlarmPercent"]["MaxValue"] == 100


def test_table_throttle_alarm_counts_the_throttled_reads_and_writes_of_the_table_and_each_index(
    template: dict[str, Any],
) -> None:
    # GIVEN the table's throttle alarm (metric math) and the table's indexes
    alarm = _alarms(template)["TableThrottleAlarm"]
    queries = _math_metrics(alarm)
    table = template["Resources"]["Table"]["Properties"]
    indexes = [index["IndexName"] for index in table["GlobalSecondaryIndexes"]]
    assert indexes

    # THEN it reads ReadThrottleEvents and WriteThrottleEvents, summed per 5 minutes, of the table and of each of
    # its indexes (the table's own dimension leaves the indexes' events out)
    watched = set()
    for query in queries.values():
        if "MetricStat" not in query:
            continue
        assert query["ReturnData"] is False
        stat = query["MetricStat"]
        assert (stat["Metric"]["Namespace"], stat["Stat"], stat["Period"]) == ("AWS/DynamoDB", "Sum", 300)
        dimensions = {item["Name"]: item["Value"] for item in stat["Metric"]["Dimensions"]}
        assert dimensions.pop("TableName") == {"Ref": "Table"}
        watched.add((stat["Metric"]["MetricName"], dimensions.pop("GlobalSecondaryIndexName", None)))
        assert not dimensions
    expected = {(f"{kind}ThrottleEvents", index) for kind in ("Read", "Write") for index in [None, *indexes]}
    assert watched == expected
    # ... and alarms on their sum (each filled with 0: a metric with no data point is no throttle), above a
    # threshold the operator sets, in two 5-minute periods of three
    (returned,) = [query for query in alarm["Metrics"] if query.get("ReturnData", True)]
    stat_ids = {query_id for query_id, query in queries.items() if "MetricStat" in query}
    assert sorted(returned["Expression"].split(" + ")) == sorted(f"FILL({query_id}, 0)" for query_id in stat_ids)
    assert alarm["Threshold"] == {"Ref": "TableThrottleAlarmEvents"}
    assert template["Parameters"]["TableThrottleAlarmEvents"]["Type"] == "Number"
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (3, 2)
    # ... within CloudWatch's limit of 10 metrics in a metric-math alarm
    assert len(alarm["Metrics"]) <= 10


SWEEP_INTERVAL_SECONDS = 60


def test_schedule_sweep_lag_alarm_reads_the_lag_every_sweep_writes(template: dict[str, Any]) -> None:
    # GIVEN the sweep's lag alarm
    alarm = _alarms(template)["ScheduleSweepLagAlarm"]
    # THEN it reads the metric the sweep writes (EMF, in the stack's namespace, with Herald's one dimension)
    assert alarm["MetricName"] == Metric.SWEEP_LAG.value
    assert alarm["Namespace"] == {"Ref": "MetricsNamespace"}
    assert alarm["Dimensions"] == [{"Name": "service", "Value": STACK_NAME}]
    # ... and goes off when every sweep of two 5-minute periods was further behind than the operator's threshold,
    # which leaves the sweeps' own minute and lookahead well behind
    assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (
        "Minimum",
        300,
        2,
        2,
    )
    assert alarm["Threshold"] == {"Ref": "ScheduleSweepLagAlarmSeconds"}
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    parameter = template["Parameters"]["ScheduleSweepLagAlarmSeconds"]
    assert parameter["Type"] == "Number"
    assert parameter["MinValue"] >= SWEEP_INTERVAL_SECONDS  # more than one sweep's minute, however set
    # AND no lag written for two periods (no sweep ran: the schedule is not invoking the function) is an alarm too
    assert alarm["TreatMissingData"] == "breaching"


def test_the_sweep_schedule_takes_a_name_of_its_own_so_stacks_can_share_an_account(template: dict[str, Any]) -> None:
    # GIVEN the delivery function's schedule
    events = template["Resources"]["DeliveryFunction"]["Properties"]["Events"]
    (sweep,) = [event for event in events.values() if event["Type"] == "ScheduleV2"]
    # THEN SAM leaves its name to CloudFormation (a unique one): named by its logical id, as SAM does otherwise, it
    # would be the same in every stack, and schedule names are unique per account, region and group
    assert sweep["Properties"]["OmitName"] is True
    assert "Name" not in sweep["Properties"]


def test_every_alarm_notifies_the_optional_topic(template: dict[str, Any]) -> None:
    alarms = _alarms(template)
    assert set(alarms) >= {
        "DeadLetterQueueAlarm",
        "WorkQueueAgeAlarm",
        "DeliveryFailureRateAlarm",
        "ApiFunctionErrorsAlarm",
        "ApiFunctionThrottlesAlarm",
        "DeliveryFunctionErrorsAlarm",
        "DeliveryFunctionThrottlesAlarm",
        "TableThrottleAlarm",
        "ScheduleSweepLagAlarm",
        "SlowQueueAgeAlarm",
        "WorkQueueInFlightAlarm",
        "SlowLaneInFlightAlarm",
    }
    assert template["Conditions"]["HasAlarmTopic"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}
    for logical_id, alarm in alarms.items():
        assert alarm["AlarmActions"] == ALARM_TOPIC_ACTION, logical_id
        assert alarm["OKActions"] == ALARM_TOPIC_ACTION, logical_id
        # no data (an idle stack) is not an alarm, but for the sweep's lag, which every sweep writes, idle or not
        missing = "breaching" if logical_id == "ScheduleSweepLagAlarm" else "notBreaching"
        assert alarm["TreatMissingData"] == missing, logical_id


def test_layer_makefile_does_not_ship_the_cli(tmp_path: Path) -> None:
    # GIVEN the source tree has the operator's CLI
    assert (LAYER_DIR / "herald" / "cli" / "__init__.py").is_file()
    # WHEN the layer's copy step runs
    result = _make("layer-herald", tmp_path)
    # THEN the functions' code is there, the CLI is not
    assert result.returncode == 0, result.stderr
    shipped = tmp_path / "python" / "herald"
    assert (shipped / "worker" / "runtime.py").is_file()
    assert not (shipped / "cli").exists()


# ---------------------------------------------------------------------------------------------- samconfig


def _samconfig() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "samconfig.toml").read_text(encoding="utf-8"))


def _sam_options(command: str) -> set[str]:
    """The options `sam <command>` takes, as samconfig.toml keys (its click parameters)."""
    import importlib

    module = "validate.validate" if command == "validate" else f"{command}.command"
    cli = importlib.import_module(f"samcli.commands.{module}").cli
    return {str(param.name) for param in cli.params if param.name}


@pytest.mark.parametrize("environment", ["default", "ci"])
def test_samconfig_environments_use_only_options_sam_knows(environment: str) -> None:
    config = _samconfig()[environment]
    assert set(config) <= {"global", "build", "validate", "deploy"}
    every = _sam_options("build") | _sam_options("validate") | _sam_options("deploy")
    for command, section in config.items():
        options = every if command == "global" else _sam_options(command)
        assert set(section["parameters"]) <= options, (environment, command)


def test_the_ci_environment_deploys_without_a_prompt(template: dict[str, Any]) -> None:
    config = _samconfig()
    ci = config["ci"]["global"]["parameters"] | config["ci"]["deploy"]["parameters"]
    # a region of its own, no change set to confirm, no failure when nothing changed, nothing guided
    assert ci["region"]
    assert ci["confirm_changeset"] is False
    assert ci["fail_on_empty_changeset"] is False
    assert ci["resolve_s3"] is True
    assert "guided" not in ci
    # ... and the person's default still confirms every change set
    assert config["default"]["deploy"]["parameters"]["confirm_changeset"] is True
    # the IAM capability granted is enough: the template's IAM resources have no names of their own
    for environment in ("default", "ci"):
        assert config[environment]["deploy"]["parameters"]["capabilities"] == "CAPABILITY_IAM"
    for logical_id, resource in template["Resources"].items():
        if resource["Type"].startswith("AWS::IAM::"):
            assert not {"RoleName", "ManagedPolicyName", "UserName", "GroupName"} & set(resource["Properties"]), (
                logical_id
            )


@pytest.mark.parametrize(
    ("arn", "allowed"),
    [
        ("", True),
        ("arn:aws:sns:us-east-1:123456789012:herald-alarms", True),
        ("arn:aws-cn:sns:cn-north-1:123456789012:Herald_Alarms", True),
        ("arn:aws:sns:us-east-1:123456789012:herald-alarms.fifo", False),  # a FIFO topic: alarms cannot publish
        ("herald-alarms", False),
        ("arn:aws:sns:us-east-1:herald-alarms", False),
        ("arn:aws:sqs:us-east-1:123456789012:herald-alarms", False),
        ("arn:aws:sns:us-east-1:123456789012:herald alarms", False),
    ],
)
def test_the_alarm_topic_is_an_sns_topic_arn(template: dict[str, Any], arn: str, allowed: bool) -> None:
    # A topic's ARN or nothing: a name alone, or another service's ARN, is refused by CloudFormation before
    # anything is made (CloudWatch would only refuse it while the alarms are made, and the stack roll back)
    pattern = template["Parameters"]["AlarmTopicArn"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, arn)) is allowed


@pytest.mark.parametrize(
    ("arn", "allowed"),
    [
        ("", True),
        ("arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab", True),
        ("arn:aws:kms:us-east-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab", True),
        ("arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab", True),
        ("arn:aws:kms:us-east-1:123456789012:alias/herald", False),
        ("1234abcd-12ab-34cd-56ef-1234567890ab", False),
    ],
)
def test_the_table_kms_key_is_a_key_arn_single_or_multi_region(
    template: dict[str, Any], arn: str, allowed: bool
) -> None:
    # A key ARN, of a single-Region key or of a multi-Region one (its id starts with mrk-), as DynamoDB takes it; an
    # alias or a bare key id is refused by CloudFormation before anything is made
    pattern = template["Parameters"]["TableKmsKeyArn"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, arn)) is allowed
