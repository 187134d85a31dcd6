"""A function's init phase: its modules loaded with the cyclic garbage collector held off.

Importing a function's code (Herald, pydantic, Powertools, httpx, boto3) builds some hundreds of thousands of
objects that live as long as the process, and the collector, run every few hundred allocations, scans the
young ones again and again while they are made: about a tenth of the delivery function's init. Held off, then
frozen (``gc.freeze``: moved to the permanent generation, which later collections skip), they are never
scanned; the collector runs as usual for what the invocations make. What import itself leaves as cyclic
garbage is not reclaimed then, the pattern the ``gc`` module documents for a process that loads once and
serves long. That process is Lambda's (``AWS_LAMBDA_FUNCTION_NAME`` set, as the runtime does): a process that
loads a handler among other work (a test, a benchmark, the local stack) is not frozen, so what it made before
stays collectable.
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


__all__ = ["collector_held_off"]
