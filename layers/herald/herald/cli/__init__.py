"""``herald``: the operator's command line, a thin client of a deployed (or local) Herald's API.

Installed with the project (``[project.scripts]``); never shipped in the Lambda layer.
"""

from __future__ import annotations

from herald.cli.main import main

__all__ = ["main"]
