"""DeliveryFunction entry point: consumes the work queue (see ``herald.delivery``)."""

from herald.delivery import lambda_handler as handler

__all__ = ["handler"]
