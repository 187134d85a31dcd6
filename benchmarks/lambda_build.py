"""The functions as ``sam build`` wrote them, laid out as Lambda runs them, for this machine's CPU.

``make bench`` runs ``make build`` first: ``.aws-sam/build`` holds each function's code and the
HeraldLayer (arm64 wheels, precompiled bytecode). This machine may not be arm64, and arm64 wheels with
compiled code (pydantic_core) do not load here, so the cold-start benchmarks run the layer's
dependencies built for the host by the same recipe (``layers/herald/Makefile``, build-HeraldLayer,
with the host platform's ``PIP_PLATFORM``), and Herald's own package and the handler files taken from
the build output as they are. The Lambda runtime's boto3 comes from a precompiled copy beside them.

Baselines are built the same way (``pip install --target``, the layer's ``compileall`` flags), pinned to
the versions the layer holds. Everything built here is cached under ``.aws-sam/bench`` by a hash of what
it is made from, so a second run builds nothing.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = ROOT / ".aws-sam" / "build"
CACHE_DIR = ROOT / ".aws-sam" / "bench"
LAYER_SOURCE = ROOT / "layers" / "herald"
LAYER_MAKEFILE = LAYER_SOURCE / "Makefile"
#: The exact pins the layer's Makefile installs: the host copy is built again whenever they change.
LOCK = LAYER_SOURCE / "requirements.lock"
#: The same flags as the layer's compile-bytecode step.
COMPILE = ("-m", "compileall", "-q", "-f", "-j", "0", "--invalidation-mode", "unchecked-hash")
#: What the Lambda python3.13 runtime provides (the layer build prunes them).
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer")
#: The bare web stack the package size is compared with.
BARE_STACK = ("fastapi", "mangum", "pydantic", "httpx")


class LambdaBuildError(Exception):
    """The build output is missing, or a tree for the benchmarks could not be built."""


@dataclass(frozen=True)
class LambdaTree:
    """What Lambda puts on ``sys.path``: the function's code (``/var/task``), the layer (``/opt/python``)
    and the runtime's own packages (boto3)."""

    function_dir: Path
    layer_dir: Path
    runtime_dir: Path

    @property
    def python_path(self) -> str:
        return os.pathsep.join(str(path) for path in (self.function_dir, self.layer_dir, self.runtime_dir))


def host_pip_platform() -> str:
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return f"--platform manylinux2014_{arch} --only-binary=:all: --python-version 3.13 --implementation cp"


def _digest(*parts: str | Path) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part.read_bytes() if isinstance(part, Path) else part.encode())
    return sha.hexdigest()[:12]


def _run(command: list[str], **kwargs: object) -> None:
    completed = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if completed.returncode != 0:
        raise LambdaBuildError(f"{' '.join(command[:6])} ... failed:\n{completed.stderr[-3000:]}")


def compile_tree(path: Path) -> None:
    _run([sys.executable, *COMPILE, str(path)])


def pip_target(target: Path, requirements: list[str], *, pip_platform: str | None = None) -> None:
    """``pip install --target`` without compiling (the tree is compiled afterwards, like the layer)."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    if pip_platform:
        command += pip_platform.split()
    _run([*command, "--target", str(target), *requirements])


def _cached(name: str, key: str, build: object) -> Path:
    """``CACHE_DIR/<name>-<key>``, built by ``build(path)`` unless it is there already."""
    path = CACHE_DIR / f"{name}-{key}"
    if (path / ".complete").exists():
        return path
    for stale in CACHE_DIR.glob(f"{name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    scratch = CACHE_DIR / f".{name}-{key}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    build(scratch)  # type: ignore[operator]
    scratch.rename(path)
    (path / ".complete").touch()
    return path


def installed_version(distribution: str, site: Path) -> str:
    """The version of ``distribution`` installed in ``site`` (from its dist-info folder)."""
    prefix = distribution.replace("-", "_").lower() + "-"
    for entry in site.iterdir():
        if entry.name.lower().startswith(prefix) and entry.name.endswith(".dist-info"):
            return entry.name[len(prefix) : -len(".dist-info")]
    raise LambdaBuildError(f"{distribution} is not in {site}")


def build_output() -> Path:
    """``.aws-sam/build``, checked (``make bench`` runs ``make build`` first)."""
    needed = [
        BUILD_DIR / "ApiFunction",
        BUILD_DIR / "DeliveryFunction",
        BUILD_DIR / "HeraldLayer" / "python" / "herald",
    ]
    missing = [str(path.relative_to(ROOT)) for path in needed if not path.exists()]
    if missing:
        raise LambdaBuildError(f"no sam build output ({', '.join(missing)}): run `make build` (make bench does)")
    return BUILD_DIR


def host_layer_dependencies() -> Path:
    """The layer's dependencies for this machine, by layers/herald/Makefile's own build-HeraldLayer recipe."""
    pip_platform = host_pip_platform()

    def build(scratch: Path) -> None:
        _run(
            [
                "make",
                "--no-print-directory",
                "-f",
                str(LAYER_MAKEFILE),
                "build-HeraldLayer",
                f"ARTIFACTS_DIR={scratch}",
                f"PYTHON={sys.executable}",
                f"PIP_PLATFORM={pip_platform}",
            ],
            cwd=LAYER_SOURCE,
        )

    return _cached("layer-host", _digest(LAYER_MAKEFILE, LOCK, pip_platform), build) / "python"


def runtime_packages() -> Path:
    """boto3 as the python3.13 runtime provides it: the virtualenv's version, precompiled."""
    from importlib import metadata

    pins = [f"{name}=={metadata.version(name)}" for name in RUNTIME_PACKAGES]

    def build(scratch: Path) -> None:
        pip_target(scratch, pins)
        compile_tree(scratch)

    return _cached("runtime", _digest(*pins), build)


def lambda_tree(function: str) -> LambdaTree:
    """``function`` (ApiFunction / DeliveryFunction) from the build output, on a host-built layer whose
    Herald package (sources and bytecode) is the build output's own, copied afresh on every run."""
    build = build_output()
    layer = host_layer_dependencies()
    shutil.rmtree(layer / "herald", ignore_errors=True)
    shutil.copytree(build / "HeraldLayer" / "python" / "herald", layer / "herald")
    return LambdaTree(build / function, layer, runtime_packages())


def bare_stack(*, pip_platform: str | None = None, name: str = "bare-host") -> Path:
    """FastAPI, Mangum, pydantic and httpx at the layer's versions, installed and compiled like the layer."""
    site = build_output() / "HeraldLayer" / "python"
    pins = [f"{package}=={installed_version(package, site)}" for package in BARE_STACK]
    platform_flags = pip_platform or host_pip_platform()

    def build(scratch: Path) -> None:
        pip_target(scratch, pins, pip_platform=platform_flags)
        shutil.rmtree(scratch / "bin", ignore_errors=True)
        compile_tree(scratch)

    return _cached(name, _digest(*pins, platform_flags), build)


def baseline_tree(handler_source: str, module: str, *, site: Path) -> LambdaTree:
    """A baseline function: one handler file (``module``.py) on ``site`` (its layer) and the runtime."""
    function_dir = CACHE_DIR / f"function-{module}"
    function_dir.mkdir(parents=True, exist_ok=True)
    (function_dir / f"{module}.py").write_text(handler_source)
    return LambdaTree(function_dir, site, runtime_packages())


def tree_size(path: Path) -> int:
    """Bytes of the files under ``path`` (what the unzipped deployment package holds)."""
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file() and entry.name != ".complete")
