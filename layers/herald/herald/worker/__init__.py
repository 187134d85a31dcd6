"""The delivery worker (the DeliveryFunction): fan-out, delivery, retries, recovery, bookkeeping.

Where things are: ``runtime`` (the SQS handler and what the stages share), ``dispatch`` (one delivery:
due, claim, sign and send, record), ``schedule`` (the next attempt, and holding a message until then),
``pacing`` (rate limits), ``bookkeeping`` (event counters, subscription stats and health, operational
events), ``fanout`` (from an event to its delivery messages; tenant purges), ``jobs`` (recovery and
redelivery), ``events`` (events read once per worker), ``streamed`` (the table's stream: successes counted in
their subscriptions' stats).
"""

from __future__ import annotations

from herald.worker.runtime import Worker, lambda_handler, settle_all

__all__ = ["Worker", "lambda_handler", "settle_all"]
