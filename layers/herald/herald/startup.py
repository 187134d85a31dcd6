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
that to its first use (``defer_build``, pydantic's documented setting). FastAPI defines some forty models as it is
imported, most of them its OpenAPI document's, which the API's first request does not use:
``models_built_on_first_use``, around FastAPI's import, defers each to its first use (the document's to the first
``/openapi.json``; the bearer credentials' to the first authenticated request).
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


@contextlib.contextmanager
def models_built_on_first_use() -> Iterator[None]:
    """Have the pydantic models defined inside the block (by the libraries it imports) build their validator and
    serializer on their first use, not as their classes are defined: ``defer_build`` on ``BaseModel``'s
    configuration, which each model class inherits when it is defined, for the block only. A model defined after it
    is built as pydantic builds it by default.

    For models used by one thread at a time only: pydantic builds a deferred model without a lock, and two threads
    using it first at once can see it half built. FastAPI's models are such models (the API serves one request at a
    time, on its event loop); Herald's own, which the worker's threads validate at once, are not deferred."""
    from pydantic import BaseModel

    config = BaseModel.model_config
    before = config.get("defer_build")
    config["defer_build"] = True
    try:
        yield
    finally:
        if before is None:
            config.pop("defer_build", None)
        else:
            config["defer_build"] = before


__all__ = ["collector_held_off", "models_built_on_first_use"]
