"""Liveness: no authentication, no AWS calls."""

from __future__ import annotations

from fastapi import APIRouter

from herald import __version__

router = APIRouter()


@router.get("/health", include_in_schema=False)
async def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}
