"""Herald: a serverless webhook producer for AWS."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
