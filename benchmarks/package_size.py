"""Unzipped size of each function with its layer, from the ``sam build`` output, against Lambda's
250 MB limit and against the bare web stack (FastAPI, Mangum, pydantic, httpx) built the same way for
the same platform (arm64, precompiled)."""

from __future__ import annotations

from typing import Any

from benchmarks.lambda_build import bare_stack, build_output, tree_size
from benchmarks.results import Figure

#: Lambda's limit on a function's unzipped code plus all its layers: 250 MB, i.e. 262,144,000 bytes.
MIB = 1024 * 1024
LAMBDA_UNZIPPED_LIMIT_MIB = 262_144_000 / MIB
ARM64 = "--platform manylinux2014_aarch64 --only-binary=:all: --python-version 3.13 --implementation cp"


def run(*, out: Any = print) -> list[Figure]:
    build = build_output()
    layer = tree_size(build / "HeraldLayer")
    bare = tree_size(bare_stack(pip_platform=ARM64, name="bare-arm64"))
    figures = []
    for function, name in (("ApiFunction", "package_size_api"), ("DeliveryFunction", "package_size_delivery")):
        code = tree_size(build / function)
        total = (code + layer) / MIB
        out(
            f"  {function}: {total:.1f} MiB unzipped ({code / 1024:.1f} KiB code + {layer / MIB:.1f} MiB layer); "
            f"bare FastAPI+Mangum+pydantic+httpx: {bare / MIB:.1f} MiB; "
            f"Lambda limit {LAMBDA_UNZIPPED_LIMIT_MIB:.0f} MiB"
        )
        figures.append(
            Figure(
                name=name,
                value=total,
                unit="MiB",
                baseline=bare / MIB,
                baseline_label="bare FastAPI+Mangum+pydantic+httpx, arm64",
                target=f"<= {LAMBDA_UNZIPPED_LIMIT_MIB:.0f} MiB (Lambda limit)",
                met=total <= LAMBDA_UNZIPPED_LIMIT_MIB,
                low=1.0,  # the package holds the bare set: smaller is a broken measurement
                high=LAMBDA_UNZIPPED_LIMIT_MIB / (bare / MIB),
                details={
                    "function_code_bytes": code,
                    "layer_bytes": layer,
                    "limit_share": total / LAMBDA_UNZIPPED_LIMIT_MIB,
                },
            )
        )
    return figures
