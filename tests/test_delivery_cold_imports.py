"""What the delivery function's cold start leaves out: the modules a successful delivery never uses.

Each is loaded the first time it is needed instead (an operational event, a subscription disabled, a fault spec
to read), so a failure there still behaves as before; these tests only keep them off the common path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
