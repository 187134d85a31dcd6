"""Herald's benchmarks (``make bench``): speed and memory, each reported as a ratio against a baseline
measured in the same run, because the machine that runs them is shared and noisy.

Modules: ``coldstart`` (both functions' cold starts from the ``sam build`` output, and the delivery
function's peak memory), ``delivery`` (one invocation with a batch of deliveries to a slow receiver),
``fanout`` (one event to many subscriptions), ``cost`` (per million delivered webhooks), ``package_size``,
and two extra studies, ``cold_import`` (import with and without bytecode) and ``api`` (warm requests).
``figures`` turns their measurements into the figures of ``benchmarks/results/results.json``; ``lambda_build`` lays the
build output out as Lambda runs it, ``lambda_child`` is the Lambda-like process; ``core``, ``receiver`` and
``moto_server`` are what they share (moto is patched by herald.local.moto_fixes).
This package imports nothing heavy at import time.
"""

from benchmarks.results import Figure, Ratio, Result, figures_table, summary_table

__all__ = ["Figure", "Ratio", "Result", "figures_table", "summary_table"]
