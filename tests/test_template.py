"""template.yaml, the layer's Makefile and requirements.txt: the invariants the design depends on."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from herald.local.resources import function_properties, load_template

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]
LAYER_DIR = REPO_ROOT / "layers" / "herald"
LAYER_MAKEFILE = LAYER_DIR / "Makefile"
FOURTEEN_DAYS = 14 * 24 * 3600
FUNCTIONS = ("ApiFunction", "DeliveryFunction")
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


def _policy_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            documents = [policy for policy in properties.get("Policies", []) if isinstance(policy, dict)]
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents = [properties["PolicyDocument"]]
        elif resource["Type"] == "AWS::IAM::Role":
            documents = [policy["PolicyDocument"] for policy in properties.get("Policies", [])]
        else:
            continue
        for document in documents:
            for statement in document.get("Statement", []):
                yield logical_id, statement


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _make(target: str, artifacts_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ARTIFACTS_DIR": str(artifacts_dir)}
    return subprocess.run(
        ["make", "--no-print-directory", "-f", str(LAYER_MAKEFILE), target, f"PYTHON={sys.executable}"],
        cwd=artifacts_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
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


@pytest.mark.parametrize("queue", ["WorkQueue", "DeadLetterQueue"])
def test_queues_keep_messages_fourteen_days(template: dict[str, Any], queue: str) -> None:
    assert _properties(template, queue)["MessageRetentionPeriod"] == FOURTEEN_DAYS


@pytest.mark.parametrize("queue", ["WorkQueue", "DeadLetterQueue"])
def test_queues_set_maximum_message_size_and_encryption(template: dict[str, Any], queue: str) -> None:
    properties = _properties(template, queue)
    assert properties["MaximumMessageSize"] == 262144
    assert properties["SqsManagedSseEnabled"] is True


def test_work_queue_redrives_to_dead_letter_queue(template: dict[str, Any]) -> None:
    redrive = _properties(template, "WorkQueue")["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    parameter = template["Parameters"][redrive["maxReceiveCount"]["Ref"]]
    assert parameter["Type"] == "Number"
    assert parameter["MinValue"] >= 5
    assert parameter["Default"] >= parameter["MinValue"]


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
    sqs_events = [event["Properties"] for event in events.values() if event["Type"] == "SQS"]
    assert len(sqs_events) == 1
    (event,) = sqs_events
    assert event["Queue"] == {"Fn::GetAtt": ["WorkQueue", "Arn"]}
    assert "ReportBatchItemFailures" in event["FunctionResponseTypes"]
    assert event["BatchSize"] == 100
    assert event["MaximumBatchingWindowInSeconds"] >= 1  # batches above 10 need a batching window


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


# ---------------------------------------------------------------------------------------------- IAM


def test_no_policy_grants_dynamodb_scan(template: dict[str, Any]) -> None:
    statements = list(_policy_statements(template))
    assert statements
    for logical_id, statement in statements:
        for action in _as_list(statement.get("Action", [])):
            # IAM action names are case-insensitive; "dynamodb:*" and "*" grant Scan too.
            assert not fnmatchcase("dynamodb:scan", action.lower()), f"{logical_id} grants {action}"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_functions_use_explicit_statements_without_wildcard_actions(template: dict[str, Any], function: str) -> None:
    policies = function_properties(template, function)["Policies"]
    assert policies
    for policy in policies:
        assert isinstance(policy, dict), f"{function}: {policy!r} is not an explicit policy document"
        for statement in policy["Statement"]:
            assert all("*" not in action for action in _as_list(statement["Action"]))
            resources = _as_list(statement.get("Resource", []))
            assert resources
            assert "*" not in resources


def test_only_the_api_function_reads_the_admin_key(template: dict[str, Any]) -> None:
    api = function_properties(template, "ApiFunction")["Environment"]["Variables"]
    delivery = function_properties(template, "DeliveryFunction")["Environment"]["Variables"]
    assert api["HERALD_ADMIN_KEY_SECRET_ARN"] == {"Ref": "AdminKeySecret"}
    assert "HERALD_ADMIN_KEY_SECRET_ARN" not in delivery


def test_admin_key_secret_is_a_plain_string(template: dict[str, Any]) -> None:
    generate = _properties(template, "AdminKeySecret")["GenerateSecretString"]
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
