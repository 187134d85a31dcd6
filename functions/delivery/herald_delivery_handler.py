"""DeliveryFunction entry point: consumes the work queue (see ``herald.worker``)."""

from typing import Any

from herald.startup import collector_held_off

with collector_held_off():
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from herald.logs import function_logger, logged
    from herald.worker import lambda_handler

    #: The parent of Herald's loggers: structured JSON logs with the invocation's request id.
    logger = function_logger()


@logged(logger)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return lambda_handler(event, context)


__all__ = ["handler"]
