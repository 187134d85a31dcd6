"""The CLI checks its arguments before it calls the API, with bounds of its own (``herald.cli.commands``): each is
the bound the API's OpenAPI description gives the same field, so the CLI neither refuses what the API takes nor
sends what the API refuses."""

from __future__ import annotations

import argparse
import re
from typing import Any

import pytest

from herald.api import create_app
from herald.cli import commands


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return create_app().openapi()


def _parameter(openapi: dict[str, Any], method: str, path: str, name: str) -> dict[str, Any]:
    (found,) = [p for p in openapi["paths"][path][method]["parameters"] if p["name"].lower() == name.lower()]
    return _not_null(found["schema"])


def _property(openapi: dict[str, Any], model: str, name: str) -> dict[str, Any]:
    schema = openapi["components"]["schemas"][model]["properties"][name]
    return {"default": schema.get("default"), **_not_null(schema)}


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema of an optional value's present form (``anyOf`` it and null)."""
    (bounded,) = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    return dict(bounded)


def test_a_page_is_at_most_what_every_listing_takes(openapi: dict[str, Any]) -> None:
    listings = [
        (path, operation["parameters"])
        for path, item in openapi["paths"].items()
        for method, operation in item.items()
        if method == "get" and any(p["name"] == "limit" for p in operation.get("parameters", []))
    ]
    assert len(listings) >= 5
    for path, _ in listings:
        assert _parameter(openapi, "get", path, "limit")["maximum"] == commands.MAX_PAGE, path


def test_a_redrive_and_a_discard_take_what_the_api_takes(openapi: dict[str, Any]) -> None:
    redrive = _property(openapi, "RedriveIn", "limit")
    assert (redrive["default"], redrive["maximum"]) == (commands.DEFAULT_REDRIVE_LIMIT, commands.MAX_REDRIVE_LIMIT)
    discard = _property(openapi, "DiscardIn", "limit")
    assert discard["maximum"] == commands.MAX_DISCARD_LIMIT
    assert _property(openapi, "DiscardIn", "message_ids")["maxItems"] == commands.MAX_DISCARD_IDS


def test_an_idempotency_key_is_what_publishing_takes(openapi: dict[str, Any]) -> None:
    header = _parameter(openapi, "post", "/v1/events", "Idempotency-Key")
    pattern = re.compile(header["pattern"])
    # The CLI's check (``--idempotency-key``) and the API's pattern and length agree on every character, and on
    # the longest key.
    for key in [*(f"k{chr(code)}" for code in range(256)), "k" * header["maxLength"], "k" * (header["maxLength"] + 1)]:
        api_takes = bool(pattern.fullmatch(key)) and len(key) <= header["maxLength"]
        assert _cli_takes(key) == api_takes, repr(key)


def _cli_takes(key: str) -> bool:
    try:
        commands.idempotency_key(key)
    except argparse.ArgumentTypeError:
        return False
    return True
