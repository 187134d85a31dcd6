"""A function's init phase: its modules loaded with the cyclic garbage collector held off, and its pydantic models
built when first used.

Importing a function's code (Herald, pydantic, Powertools, httpx, boto3) builds some hundreds of thousands of
objects that live as long as the process, and the collector, run every few hundred allocations, scans the
young ones again and again while they are made: about a tenth of the delivery function's init. Held off, then
frozen (``gc.freeze``: moved to the permanent generation, which later collections skip), they are never
scanned; the collector runs as usual for what the invocations make. What import itself leaves as cyclic
garbage is not reclaimed then, the pattern the ``gc`` module documents for a process that loads once and
serves long. That process is Lambda's (``AWS_LAMBDA_FUNCTION_NAME`` set, as the runtime does): a process that
loads a handler among other work (a test, a benchmark, the local stack) is not frozen, so what it made before
stays collectable.

A pydantic model builds its validator and serializer when its class is defined, unless its configuration defers
that to its first use (``defer_build``, pydantic's documented setting). The API's start defines some hundreds of
models its first request never uses: FastAPI's own OpenAPI document models, the schemas of the routers that
request does not reach, the records and messages other routes read. ``models_built_on_first_use``, called before any
of them is defined, has every model defined afterwards defer: a model is then built once, when a request first
validates or serializes it (or ``/openapi.json`` first describes it). The test suite runs the same way
(``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator


@contextlib.contextmanager
def collector_held_off(*, after_start: bool = False) -> Iterator[None]:
    """Run the block (a handler module's imports and set-up) with the cyclic garbage collector off. Under Lambda,
    if the block succeeded, freeze what exists then. In every case, turn the collector back on after the block if
    it was on before.

    ``after_start``: code loaded after the start, on the first request that needs it. Under Lambda, a full
    collection runs first (whether the collector is on or not, and whether the block then succeeds or not), so
    that the freeze keeps none of the cyclic garbage the requests before it left; the start's objects are frozen,
    so it scans only what came since."""
    under_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
    if after_start and under_lambda:
        gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        if under_lambda:
            gc.freeze()
    finally:
        if enabled:
            gc.enable()


def models_built_on_first_use() -> None:
    """Have every pydantic model defined from now on (by Herald or a library: FastAPI, pydantic-settings, Powertools)
    build its validator and serializer on its first use, not as its class is defined: ``defer_build`` on
    ``BaseModel``'s configuration, which each model class inherits when it is defined. A model defined before keeps
    what it had. A model's own configuration still wins (none of Herald's sets ``defer_build``)."""
    import warnings

    from pydantic import BaseModel
    from pydantic.warnings import UnsupportedFieldAttributeWarning

    BaseModel.model_config["defer_build"] = True
    # FastAPI describes a request body (``/openapi.json``) with the body's model inside a field aliased ``body``.
    # When that model was built before (a request validated it first), pydantic warns that the alias has no effect
    # there: true, and the same when models are built as defined, where it stays silent. The document is the same
    # either way (``tests/test_api_mangum.py``).
    warnings.filterwarnings(
        "ignore", message="The 'alias' attribute with value 'body'", category=UnsupportedFieldAttributeWarning
    )


__all__ = ["collector_held_off", "models_built_on_first_use"]
