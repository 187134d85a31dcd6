"""Cold import of the API function (``functions/api/herald_api_handler.py``: FastAPI app + Mangum),
from sources without bytecode against the same tree precompiled as the layer build does it
(``compileall --invalidation-mode unchecked-hash``).

Each measurement is a fresh interpreter importing the handler module; only the import is timed, in
the child, and the best of the repeats is kept (noise only ever adds time). Two trees, both
temporary copies (the repository's ``__pycache__`` is never touched, and
``PYTHONDONTWRITEBYTECODE=1`` keeps the no-bytecode tree without bytecode):

* ``herald``: the Herald package (without ``herald.local``, as in the layer) and the handler; the
  dependencies come from the virtualenv as installed (with the bytecode pip wrote).
* ``layer``: the same plus every runtime dependency of the layer (``layers/herald/requirements.txt``
  and what they require), run with ``python -S`` so nothing else is importable, and boto3 with its
  dependencies beside it, precompiled in both cases, as the Lambda runtime provides them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.core import API_HANDLER_FILE, ROOT, BenchmarkError
from benchmarks.results import Ratio, Result

HERALD_SOURCE = ROOT / "layers" / "herald" / "herald"
REQUIREMENTS = ROOT / "layers" / "herald" / "requirements.txt"
#: What the Lambda python3.13 runtime already has (the layer build prunes them).
RUNTIME_PROVIDED = ("boto3",)
PROBE = (
    "import json, sys, time\n"
    "started = time.perf_counter()\n"
    "import herald_api_handler\n"
    "elapsed = time.perf_counter() - started\n"
    "import herald\n"
    "print(json.dumps({'seconds': elapsed, 'herald': herald.__file__, 'modules': len(sys.modules)}))\n"
)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(names: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions ``names`` need at run time (extras left out), by canonical name."""
    from packaging.requirements import Requirement

    found: dict[str, metadata.Distribution] = {}
    pending = list(names)
    while pending:
        name = _canonical(pending.pop())
        if name in found:
            continue
        found[name] = metadata.distribution(name)
        for text in found[name].requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return found


def _requirements() -> list[str]:
    from packaging.requirements import Requirement

    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [Requirement(line).name for line in lines if line]


def _copy_distribution(dist: metadata.Distribution, target: Path) -> None:
    """The distribution's files (from its RECORD), without bytecode and without scripts outside it."""
    base = Path(str(dist.locate_file("")))
    for entry in dist.files or []:
        relative = Path(str(entry))
        if relative.parts[0] == ".." or "__pycache__" in relative.parts or relative.suffix == ".pyc":
            continue
        source = base / relative
        if source.is_file():
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def _copy_herald(target: Path) -> None:
    shutil.copytree(HERALD_SOURCE, target / "herald", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "local"))
    shutil.copy2(API_HANDLER_FILE, target / API_HANDLER_FILE.name)


def _compile(tree: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", str(tree)],
        check=True,
    )


def _measure(tree: list[Path], *, isolated: bool, extra: list[str] | None = None) -> tuple[dict[str, Any], str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "HERALD_", "AWS_"))}
    environment.update({"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": os.pathsep.join(str(path) for path in tree)})
    command = [sys.executable, *(["-S"] if isolated else []), *(extra or []), "-c", PROBE]
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, cwd=tree[0], check=False)
    if completed.returncode != 0:
        raise BenchmarkError(f"importing the API handler failed:\n{completed.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    if not str(report["herald"]).startswith(str(tree[0])):
        raise BenchmarkError(f"herald was imported from {report['herald']}, not from the copy in {tree[0]}")
    return report, completed.stderr


def _top_packages(importtime: str, count: int = 6) -> list[tuple[str, float]]:
    """Self import time by top-level package, from ``-X importtime`` output."""
    totals: dict[str, float] = {}
    for line in importtime.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s+(\S+)", line.replace("\x1b", ""))
        if match:
            package = match.group(2).strip().split(".")[0]
            totals[package] = totals.get(package, 0.0) + int(match.group(1)) / 1e6
    return sorted(totals.items(), key=lambda item: -item[1])[:count]


def run(*, repeats: int = 5, out: Any = print) -> Result:
    result = Result("import", "Cold import of the API handler: no bytecode vs precompiled (unchecked-hash)")
    runtime_names = set(_closure(list(RUNTIME_PROVIDED)))
    layer_dists = {name: dist for name, dist in _closure(_requirements()).items() if name not in runtime_names}
    with tempfile.TemporaryDirectory(prefix="herald-bench-import-") as scratch:
        root = Path(scratch)
        trees: dict[str, dict[str, list[Path]]] = {}
        runtime = root / "runtime"
        for dist in _closure(list(RUNTIME_PROVIDED)).values():
            _copy_distribution(dist, runtime)
        _compile(runtime)
        for variant in ("herald", "layer"):
            source = root / variant / "source"
            _copy_herald(source)
            if variant == "layer":
                for dist in layer_dists.values():
                    _copy_distribution(dist, source)
            compiled = root / variant / "compiled"
            shutil.copytree(source, compiled)
            _compile(compiled)
            extra = [runtime] if variant == "layer" else []
            trees[variant] = {"source": [source, *extra], "compiled": [compiled, *extra]}

        times: dict[tuple[str, str], list[float]] = {
            (variant, kind): [] for variant, kinds in trees.items() for kind in kinds
        }
        modules: dict[str, int] = {}
        for _ in range(repeats):
            for variant, kinds in trees.items():
                for kind, tree in kinds.items():
                    report, _ = _measure(tree, isolated=variant == "layer")
                    times[(variant, kind)].append(report["seconds"])
                    modules[variant] = report["modules"]
        _, profile = _measure(trees["layer"]["source"], isolated=True, extra=["-X", "importtime"])

    for variant, label in (("herald", "Herald from source, deps as installed"), ("layer", "layer: Herald + deps")):
        source_s, compiled_s = min(times[(variant, "source")]), min(times[(variant, "compiled")])
        result.measured.update(
            {
                f"{variant}_no_bytecode_s": source_s,
                f"{variant}_precompiled_s": compiled_s,
                f"{variant}_modules_count": modules[variant],
            }
        )
        out(
            f"  {label:38s} no bytecode {source_s * 1000:6.0f} ms, precompiled {compiled_s * 1000:6.0f} ms "
            f"({modules[variant]} modules; best of {repeats})"
        )
        result.ratios.append(
            Ratio(f"import, no bytecode / precompiled ({variant})", source_s, compiled_s, "s", "> 1: precompile")
        )
    top = _top_packages(profile)
    result.notes.append(
        "slowest packages without bytecode (self time): " + ", ".join(f"{name} {s * 1000:.0f} ms" for name, s in top)
    )
    result.notes.append(
        f"layer tree: {len(layer_dists)} distributions copied from the virtualenv ({', '.join(sorted(layer_dists))}); "
        f"runtime-provided: {', '.join(sorted(runtime_names))} (precompiled both times)"
    )
    return result
