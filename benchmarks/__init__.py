"""Herald's benchmarks (``make bench``): speed and memory, each reported as a ratio against a baseline
measured in the same run, because the machine that runs them is shared and noisy.

Modules: ``delivery`` (one invocation with a batch of deliveries to a slow receiver), ``fanout`` (one
event to many subscriptions), ``cold_import`` (the API function's import with and without bytecode),
``api`` (warm requests through the Mangum handler), ``memory`` (peak memory of a delivery batch).
``core``, ``receiver`` and ``moto_server`` are what they share (moto is patched by herald.local.moto_fixes).
This package imports nothing heavy: the memory benchmark's worker process imports it.
"""

from benchmarks.results import Ratio, Result, summary_table

__all__ = ["Ratio", "Result", "summary_table"]
