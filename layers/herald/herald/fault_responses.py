"""The errors AWS answers, byte for byte as its JSON protocols send them, for the fault injector (herald.faults).

DynamoDB (JSON 1.0), SQS (JSON 1.0, query-compatible: the old code in ``x-amzn-query-error``) and
Secrets Manager (JSON 1.1): status, ``__type``, message and headers, so that botocore parses them into the
same exceptions, with the same codes and modeled fields (``CancellationReasons``), as it does AWS's.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from io import BytesIO
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

_DDB = "com.amazonaws.dynamodb.v20120810#"
#: What DynamoDB says of a write whose item is over its 400 KB (a write malformed for its item: ``invalid``).
_TOO_LARGE = "Item size has exceeded the maximum allowed size"


def error_body(
    service: str, operation: str, fault: str, rng: random.Random, actions: int = 1
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the error AWS answers for ``fault`` (JSON protocols, all three); a
    cancelled transaction of ``actions`` actions has one reason per action, one of them the conflict."""
    headers = {"x-amzn-requestid": str(uuid.UUID(int=rng.getrandbits(128)))}
    if service == "dynamodb":
        headers["content-type"] = "application/x-amz-json-1.0"
        status, body = _dynamodb_error(operation, fault, rng, actions)
    elif service == "sqs":
        headers["content-type"] = "application/x-amz-json-1.0"
        if fault == "throttle":
            status, code, kind = 400, "RequestThrottled", "Sender"
            message = "Request is throttled."
        else:
            status, code, kind = 500, "InternalFailure", "Receiver"
            message = "The request processing has failed because of an unknown error, exception or failure."
        headers["x-amzn-query-error"] = f"{code};{kind}"
        body = {"__type": f"com.amazonaws.sqs#{code}", "message": message}
    else:
        headers["content-type"] = "application/x-amz-json-1.1"
        if fault == "throttle":
            status, body = 400, {"__type": "ThrottlingException", "Message": "Rate exceeded"}
        else:
            status, body = 500, {"__type": "InternalServiceError", "Message": "An error occurred on the server side."}
    return status, headers, json.dumps(body).encode()


def _dynamodb_error(operation: str, fault: str, rng: random.Random, actions: int) -> tuple[int, dict[str, Any]]:
    """DynamoDB's answer for ``fault``: either of its two throttling errors, a transaction cancelled for a
    conflict or for an action malformed for its item (or a single write refused for either), or an internal
    error."""
    if fault == "throttle" and rng.random() < 0.5:
        message = "Rate of requests exceeds the allowed throughput."
        return 400, {"__type": "com.amazon.coral.availability#ThrottlingException", "message": message}
    if fault == "throttle":
        message = (
            "Throughput exceeds the current capacity of your table or index. DynamoDB is automatically scaling "
            "your table or index so please try again shortly."
        )
        return 400, {"__type": _DDB + "ProvisionedThroughputExceededException", "message": message}
    if fault in ("conflict", "invalid") and operation == "TransactWriteItems":
        reasons: list[dict[str, str]] = [{"Code": "None"} for _ in range(actions)]
        reasons[rng.randrange(actions)] = (
            {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
            if fault == "conflict"
            else {"Code": "ValidationError", "Message": _TOO_LARGE}
        )
        codes = ", ".join(reason["Code"] for reason in reasons)
        return 400, {
            "__type": _DDB + "TransactionCanceledException",
            "Message": f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]",
            "CancellationReasons": reasons,
        }
    if fault == "conflict":
        message = "Operation was rejected because there is an ongoing transaction for the item."
        return 400, {"__type": _DDB + "TransactionConflictException", "message": message}
    if fault == "invalid":
        return 400, {"__type": "com.amazon.coral.validate#ValidationException", "message": _TOO_LARGE}
    return 500, {"__type": _DDB + "InternalServerError", "message": "Internal server error"}


def response(url: str, status: int, headers: dict[str, str], body: bytes) -> AWSResponse:
    raw: Any = _Raw(body)
    return AWSResponse(url, status, HTTPHeaders.from_dict(headers), raw)


class _Raw(BytesIO):
    """A response body botocore can read or stream, as urllib3's."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        contents = self.read()
        if contents:
            yield contents
