"""An admin key no caller could present, given as ``HERALD_ADMIN_KEY``, is refused at startup: by `make run`
(``python -m herald.local``) before it starts anything, and by the settings a deployment reads; either says why,
never the value."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from herald.settings import Settings
from tests.local_stack_support import START_SECONDS, stack_environment, start_stack
from tests.process_guard import Processes

#: A value that would be refused, in a shape that keeps it recognisable anywhere it is printed.
SECRET_PART = "SuperSecretValue123456789"

REFUSED = [
    pytest.param(f"hrk_{SECRET_PART}{'a' * 18}", "it has the shape of a tenant key", id="tenant-shaped"),
    pytest.param(f"hra_{SECRET_PART} ", "it has spaces at an end", id="trailing-space"),
    pytest.param(f" hra_{SECRET_PART}", "it has spaces at an end", id="leading-space"),
    pytest.param("   ", "it is empty", id="spaces-only"),
]


@pytest.mark.parametrize(("value", "problem"), REFUSED)
def test_make_run_refuses_an_admin_key_no_caller_could_present_before_it_starts(
    value: str, problem: str, processes: Processes, tmp_path: Path
) -> None:
    # GIVEN `make run`'s program with an admin key that would be written to the secret, shown in the banner, and
    # then answered 401 (a tenant key's shape) or 503 (the secret holds no usable key) on every call
    environment = stack_environment(value, HERALD_LOCAL_PORT="0")
    log = tmp_path / "stack.log"
    # WHEN it starts
    stack = start_stack(processes, log, environment)
    deadline = time.monotonic() + START_SECONDS
    while stack.poll() is None:
        assert "Herald is running locally." not in log.read_text(), "the stack started with the refused key"
        assert time.monotonic() < deadline, f"the stack neither stopped nor started within {START_SECONDS} s"
        time.sleep(0.1)  # the process and its log looked at again, until it has exited
    # THEN it stopped before starting anything, as for a port setting that cannot be used: exit code 2, with a
    # message naming the variable and why, never the value
    text = log.read_text()
    assert stack.returncode == 2, text[-3000:]
    assert f"HERALD_ADMIN_KEY is refused: {problem}" in text, text
    assert "Traceback" not in text, text
    assert "embedded AWS" not in text, text
    if value.strip():
        assert value.strip() not in text
        assert SECRET_PART not in text


@pytest.mark.parametrize(("value", "problem"), REFUSED)
def test_the_settings_refuse_an_admin_key_with_why_never_the_value(
    value: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a deployment's HERALD_ADMIN_KEY that no caller could present
    monkeypatch.setenv("HERALD_ADMIN_KEY", value)
    # WHEN the settings are read
    with pytest.raises(ValidationError) as error:
        Settings()
    # THEN the error (what a failed start prints and logs) says which setting and why, never the value
    for text in (str(error.value), repr(error.value)):
        assert "admin_key" in text
        assert problem in text
        assert "input_value" not in text
        assert SECRET_PART not in text
