"""Herald's REST API (FastAPI): tenants, subscriptions, events, deliveries and the webhook docs."""

from __future__ import annotations

from herald.api.app import create_app

__all__ = ["create_app"]
