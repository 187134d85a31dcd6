"""`make build` (sam build) works without Docker and produces the layer Lambda needs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.process_guard import run_group
from tests.test_dependency_lock import locked

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


# sam build runs pip and the compiler in children of its own: its whole group is stopped with it (``run_group``), under
# a test timeout longer than its own.
@pytest.mark.timeout(900)
def test_sam_build_makes_a_precompiled_layer_without_boto3(tmp_path: Path) -> None:
    # GIVEN the virtualenv's interpreter first on PATH (sam rejects pyenv shims)
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SAM_CLI_TELEMETRY": "0",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    build_dir = tmp_path / "build"
    # WHEN sam builds the stack
    result = run_group(
        [
            str(Path(sys.executable).parent / "sam"),
            "build",
            "--build-dir",
            str(build_dir),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # THEN the layer holds the herald package, precompiled, with its dependencies for arm64, and nothing local
    layer = build_dir / "HeraldLayer" / "python"
    assert (layer / "herald" / "api" / "app.py").is_file()
    assert list((layer / "herald" / "worker" / "__pycache__").glob("runtime.cpython-313.pyc"))
    assert not (layer / "herald" / "local").exists()
    assert not (layer / "boto3").exists()
    assert not (layer / "botocore").exists()
    assert any(path.name.endswith("aarch64-linux-gnu.so") for path in (layer / "pydantic_core").iterdir())
    for package in ("fastapi", "mangum", "httpx", "pydantic_settings", "aws_lambda_powertools", "fastapi_offline"):
        assert (layer / package).is_dir(), package
    # ... exactly the versions of requirements.lock, nothing else
    shipped = {
        canonicalize_name(path.name.removesuffix(".dist-info").rsplit("-", 1)[0]): path.name.removesuffix(
            ".dist-info"
        ).rsplit("-", 1)[1]
        for path in layer.glob("*.dist-info")
    }
    assert shipped == {name: pin for name, (pin, _) in locked().items()}
    # ... and each function is its thin entry module
    assert (build_dir / "ApiFunction" / "herald_api_handler.py").is_file()
    assert (build_dir / "DeliveryFunction" / "herald_delivery_handler.py").is_file()
