"""DeliveryFunction entry point: consumes the work queue (see ``herald.worker``)."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from herald.worker import lambda_handler

#: The parent of Herald's loggers: structured JSON logs with the invocation's request id.
logger = Logger(service="herald")


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return lambda_handler(event, context)


__all__ = ["handler"]
