"""The README's Configuration table documents every setting, and only settings that exist."""

from __future__ import annotations

import re
from pathlib import Path

from herald.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def _configuration_rows() -> set[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(HERALD_[A-Z0-9_]+)` \|", section, flags=re.MULTILINE))


def test_every_setting_has_a_row_in_the_configuration_table() -> None:
    # GIVEN the settings Herald reads and the README's Configuration table
    variables = {f"HERALD_{name.upper()}" for name in Settings.model_fields}
    rows = _configuration_rows()
    # THEN each setting is documented, and the table names no variable Herald does not read
    assert variables - rows == set()
    assert rows - variables == set()
