"""What the functions' cold starts leave out: the modules a successful delivery never uses, and the garbage
collector's scans of what the handlers' imports build.

Each module is loaded the first time it is needed instead (an operational event, a subscription disabled, a
fault spec to read), so a failure there still behaves as before; these tests only keep them off the common path.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from herald.startup import collector_held_off

REPO = Path(__file__).resolve().parents[1]
DELIVERY_CODE = REPO / "functions" / "delivery"

#: Loaded only when an operational event is published or a subscription is disabled (``herald.domain``): the
#: event catalog builds its models and validates its examples as it is imported.
NOT_AT_INIT = ("herald.catalog", "herald.domain.publishing", "herald.domain.subscriptions")
#: Powertools' batch types import its parser's models (two dozen pydantic models) when pydantic is imported
#: before them; the delivery handler imports the batch utility first.
POWERTOOLS_PARSER = "aws_lambda_powertools.utilities.parser"


def loaded_modules(script: str, **env: str) -> set[str]:
    """The modules a fresh interpreter holds after ``script``, run with the delivery function's code on its path."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("HERALD_")}
    result = subprocess.run(
        [sys.executable, "-c", f"{script}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        cwd=DELIVERY_CODE,
        env={**environment, **env, "PYTHONPATH": str(DELIVERY_CODE)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_the_delivery_handler_does_not_load_the_event_catalog_at_init() -> None:
    # GIVEN a fresh interpreter, WHEN it imports the delivery handler (Lambda's init phase)
    loaded = loaded_modules("import herald_delivery_handler")
    # THEN the catalog and the domain rules that need it are not loaded, nor Powertools' parser models
    assert "herald.worker" in loaded
    assert {name for name in NOT_AT_INIT if name in loaded} == set()
    assert {name for name in loaded if name.startswith(POWERTOOLS_PARSER)} == set()


@pytest.mark.parametrize(("spec", "imported"), [("", False), ("seed=7", True)])
def test_the_fault_injector_is_imported_only_for_a_fault_spec(spec: str, imported: bool) -> None:
    # GIVEN HERALD_FAULTS empty (a deployment) or set, WHEN the settings are read
    loaded = loaded_modules("from herald.settings import get_settings\nget_settings()", HERALD_FAULTS=spec)
    # THEN the fault injector is imported only to read a spec
    assert ("herald.faults" in loaded) is imported


def test_a_wrong_fault_spec_is_still_refused() -> None:
    # GIVEN a spec that cannot be read, WHEN the settings are read, THEN they are refused, naming the part
    with pytest.raises(subprocess.CalledProcessError) as refused:
        loaded_modules("from herald.settings import get_settings\nget_settings()", HERALD_FAULTS="nope:throttle=2")
    assert "nope:throttle=2" in refused.value.stderr


@pytest.mark.parametrize("function", ["api", "delivery"])
@pytest.mark.parametrize("under_lambda", [True, False], ids=["under-lambda", "elsewhere"])
def test_the_garbage_collector_runs_once_a_handler_is_loaded(function: str, under_lambda: bool) -> None:
    # GIVEN a fresh interpreter with the function's code on its path (the collector on, as Python starts), run by
    # Lambda's runtime (which names the function) or by another process (a test, a benchmark, the local stack)
    code = REPO / "functions" / function
    script = f"import gc, herald_{function}_handler; print(gc.isenabled(), gc.get_freeze_count() > 0)"
    env = {key: value for key, value in os.environ.items() if key != "AWS_LAMBDA_FUNCTION_NAME"}
    if under_lambda:
        env["AWS_LAMBDA_FUNCTION_NAME"] = f"herald-{function}"
    # WHEN it imports the handler module (its imports ran with the collector held off)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=code,
        env={**env, "PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    # THEN the collector is on again for the invocations; under Lambda what the imports built is frozen, not
    # scanned, and elsewhere nothing is frozen: what the process made before stays collectable
    assert result.stdout.split() == ["True", str(under_lambda)]


@pytest.mark.parametrize("enabled", [True, False])
def test_holding_the_collector_off_leaves_it_as_it_was(enabled: bool) -> None:
    # GIVEN the collector on or off
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        seen: list[bool] = []

        def held_off_then_failing() -> None:
            with collector_held_off():
                seen.append(gc.isenabled())
                raise RuntimeError

        # WHEN a block runs with it held off, and raises
        with pytest.raises(RuntimeError):
            held_off_then_failing()
        # THEN it was off inside, and is back as it was
        assert seen == [False]
        assert gc.isenabled() is enabled
    finally:
        gc.unfreeze()
        (gc.enable if was else gc.disable)()


@pytest.mark.parametrize(
    ("function", "after_start", "collects"),
    [(None, True, False), ("ApiFunction", False, False), ("ApiFunction", True, True)],
)
def test_a_full_collection_comes_first_only_for_code_loaded_after_the_start_under_lambda(
    monkeypatch: pytest.MonkeyPatch, function: str | None, after_start: bool, collects: bool
) -> None:
    # GIVEN a process named as Lambda names a function's, or not
    if function is None:
        monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    else:
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", function)
    generations: list[int] = []

    def noting(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            generations.append(info["generation"])

    gc.callbacks.append(noting)
    try:
        # WHEN a block runs with the collector held off
        with collector_held_off(after_start=after_start):
            held = list(generations)
    finally:
        gc.callbacks.remove(noting)
        gc.unfreeze()
    # THEN a full collection ran before it only for code loaded after the start, under Lambda, and none inside it
    assert (held == [2]) is collects
    assert generations == held
