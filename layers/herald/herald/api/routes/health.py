"""Liveness: no authentication, no AWS calls."""

from __future__ import annotations

from herald import __version__
from herald.api.routers import api_router

router = api_router()


@router.get("/health", include_in_schema=False)
async def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}
