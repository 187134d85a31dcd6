"""``python -m herald.cli``: the same as the ``herald`` command."""

from __future__ import annotations

import sys

from herald.cli.main import main

sys.exit(main())
