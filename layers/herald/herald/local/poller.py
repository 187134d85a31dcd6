"""The SQS event source mapping, emulated: what Lambda does between the work queue and the
DeliveryFunction, for the local stack and the tests.

It receives up to ``batch_size`` messages (waiting at most the batching window), calls the handler
with the same SQS event Lambda would build, deletes the messages the handler did not report in
``batchItemFailures`` and leaves the others to reappear after their visibility timeout. A handler
that raises fails the whole batch, as on Lambda.

The response is read as Lambda reads it (the Lambda developer guide, "Using Lambda with Amazon SQS",
success and failure conditions of partial batch responses): with ``ReportBatchItemFailures`` on, an empty or
null response or ``batchItemFailures`` list is a complete success, and a response that is not an object, an
``itemIdentifier`` that is null, empty, missing (a bad key name) or not the id of one of the batch's messages
fails the whole batch. With it off, the response is not looked at: the batch succeeds unless the handler
raised. A response that cannot be serialized to JSON fails the invocation either way.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]

#: While a batching window is open, an empty receive is tried again after this long (not in a tight loop).
WINDOW_POLL_SECONDS = 0.05


@dataclass
class LambdaContext:
    """The parts of Lambda's context object Herald uses."""

    function_name: str
    timeout_seconds: float
    started: float
    aws_request_id: str = ""
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.started + self.timeout_seconds - time.time()) * 1000))


def outlived(started: float, timeout: float) -> bool:
    """Whether an invocation that began at ``started`` (``time.monotonic()``) ran past the function's timeout, said
    as an error: Lambda would have stopped it there, and its whole batch would come back (the worker budgets its
    time to end well before). The emulation lets it finish and settles its batch as answered: a function slowed past
    its timeout by a loaded machine must not fail a test that checks something else; the error says it happened."""
    ran = time.monotonic() - started
    if ran <= timeout:
        return False
    logger.error(
        "the function ran %.1f s, past its %.0f s timeout: on AWS, Lambda stops it there and its whole batch fails",
        ran,
        timeout,
    )
    return True


def sqs_event(messages: list[MessageTypeDef], queue_arn: str, region: str = "us-east-1") -> dict[str, Any]:
    """The event Lambda hands to a function for these received messages."""
    records = []
    for message in messages:
        attributes = message.get("Attributes", {})
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {
                    "ApproximateReceiveCount": attributes.get("ApproximateReceiveCount", "1"),
                    "SentTimestamp": attributes.get("SentTimestamp", str(int(time.time() * 1000))),
                    "SenderId": attributes.get("SenderId", "AIDAEXAMPLE"),
                    "ApproximateFirstReceiveTimestamp": attributes.get(
                        "ApproximateFirstReceiveTimestamp", str(int(time.time() * 1000))
                    ),
                },
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": value["DataType"],
                    }
                    for name, value in message.get("MessageAttributes", {}).items()
                },
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        )
    return {"Records": records}


def reported_failures(response: Any, identifiers: set[str]) -> set[str] | None:
    """The identifiers a partial batch response reports as failed, or None if Lambda would take the response
    as a complete failure of the batch. ``identifiers``: those of the batch's items (SQS message ids)."""
    if response is None:
        return set()
    if not isinstance(response, dict):
        return None
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    found: set[str] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in identifiers:
            return None  # null, empty, a bad key name, or no item of this batch
        found.add(identifier)
    return found


def serializable(response: Any) -> bool:
    """Whether the runtime could send this response back to Lambda (it serializes it to JSON)."""
    try:
        json.dumps(response)
    except (TypeError, ValueError):
        return False
    return True


@dataclass
class BatchResult:
    received: int
    deleted: int
    failed: int


class SqsPoller:
    """One poller is one concurrent Lambda invocation at a time; run several for more."""

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        handler: Handler,
        *,
        batch_size: int = 10,
        batching_window_seconds: float = 0,
        function_timeout_seconds: float = 60,
        function_name: str = "DeliveryFunction",
        report_batch_item_failures: bool = True,
    ) -> None:
        self.client = client
        self.queue_url = queue_url
        self.handler = handler
        self.batch_size = batch_size
        self.window = batching_window_seconds
        self.timeout = function_timeout_seconds
        self.function_name = function_name
        #: The event source's ``FunctionResponseTypes`` has ``ReportBatchItemFailures`` (Herald's template does).
        self.report_batch_item_failures = report_batch_item_failures
        self.queue_arn = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]

    def receive_batch(self, wait_seconds: int = 0) -> list[MessageTypeDef]:
        """Up to ``batch_size`` messages: keep receiving until the batch is full or the window closes. The
        window opens with the first message received, as Lambda's: at rest a message waits the whole window."""
        batch: list[MessageTypeDef] = []
        closes = 0.0
        while len(batch) < self.batch_size:
            response = self.client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.batch_size - len(batch)),
                WaitTimeSeconds=wait_seconds if not batch else 0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages = response.get("Messages", [])
            if messages and not batch:
                closes = time.monotonic() + self.window
            batch.extend(messages)
            if not batch or time.monotonic() >= closes:
                break
            if not messages:
                time.sleep(min(WINDOW_POLL_SECONDS, max(0.0, closes - time.monotonic())))
        return batch

    def poll_once(self, wait_seconds: int = 0) -> BatchResult:
        messages = self.receive_batch(wait_seconds)
        if not messages:
            return BatchResult(0, 0, 0)
        return self.invoke(messages)

    def invoke(self, messages: list[MessageTypeDef]) -> BatchResult:
        """Call the handler with these messages and settle them as Lambda would."""
        context = LambdaContext(self.function_name, self.timeout, time.time(), aws_request_id=str(uuid.uuid4()))
        started = time.monotonic()
        try:
            response = self.handler(sqs_event(messages, self.queue_arn), context)
        except Exception:
            logger.exception("the function failed the whole batch; its messages will reappear")
            return BatchResult(len(messages), 0, len(messages))
        outlived(started, self.timeout)
        if not serializable(response):
            logger.error("the function's response is not JSON (the runtime fails the invocation); whole batch failed")
            return BatchResult(len(messages), 0, len(messages))
        failures: set[str] | None = set()
        if self.report_batch_item_failures:
            failures = reported_failures(response, {m["MessageId"] for m in messages})
        if failures is None:
            logger.error("the function's batch response is invalid, which fails the whole batch: %r", response)
            return BatchResult(len(messages), 0, len(messages))
        done = [m for m in messages if m["MessageId"] not in failures]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            self.client.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        return BatchResult(len(messages), len(done), len(failures))

    def run(self, stop: threading.Event, *, wait_seconds: int = 1) -> None:
        """Poll until ``stop`` is set (the local stack runs this in a thread)."""
        while not stop.is_set():
            try:
                self.poll_once(wait_seconds)
            except Exception:
                logger.exception("polling the work queue failed; retrying")
                stop.wait(1)
