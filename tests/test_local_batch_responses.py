"""The emulated event source mappings read the function's response as Lambda does (the Lambda developer guide:
"Using Lambda with Amazon SQS", success and failure conditions of partial batch responses; "Configuring partial
batch response with DynamoDB and Lambda"): an invalid response fails the whole batch, and without
``ReportBatchItemFailures`` the response is not looked at."""

from __future__ import annotations

import dataclasses
from typing import Any

import boto3
import pytest

from herald.local.event_sources import delivery_event_sources, delivery_stream_source
from herald.local.poller import SqsPoller
from herald.local.stack import event_source_pollers
from herald.local.stream_poller import StreamPoller
from herald.local.template import load_template
from herald.worker import settle_all

pytestmark = pytest.mark.usefixtures("aws")


class Responder:
    """A stand-in for the function: answers each batch with ``answer(ids of the batch)``, and notes the batches."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.batches: list[list[str]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        ids = [record.get("messageId") or record["dynamodb"]["SequenceNumber"] for record in event["Records"]]
        self.batches.append(ids)
        return self.answer(ids)


def _queue_with(aws: boto3.session.Session, count: int) -> tuple[Any, str]:
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="batch-responses", Attributes={"VisibilityTimeout": "360"})["QueueUrl"]
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": str(n)} for n in range(count)])
    return sqs, url


def _left(sqs: Any, url: str) -> int:
    """Messages received and not deleted (hidden for the visibility timeout) or still waiting."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


INVALID: dict[str, Any] = {
    "an empty itemIdentifier": lambda ids: {"batchItemFailures": [{"itemIdentifier": ""}]},
    "a null itemIdentifier": lambda ids: {"batchItemFailures": [{"itemIdentifier": None}]},
    "a bad key name": lambda ids: {"batchItemFailures": [{"messageId": ids[0]}]},
    "an id of no message of the batch": lambda ids: {"batchItemFailures": [{"itemIdentifier": "not-in-the-batch"}]},
    "a valid id next to an invalid one": lambda ids: {
        "batchItemFailures": [{"itemIdentifier": ids[0]}, {"itemIdentifier": ""}]
    },
    "a response that is not an object": lambda ids: [ids[0]],
    "a list that is not a list": lambda ids: {"batchItemFailures": ids[0]},
}


@pytest.mark.parametrize("answer", INVALID.values(), ids=INVALID.keys())
def test_an_invalid_partial_response_fails_the_whole_sqs_batch(aws: boto3.session.Session, answer: Any) -> None:
    # GIVEN three messages and a function that answers with an invalid partial batch response
    sqs, url = _queue_with(aws, 3)
    poller = SqsPoller(sqs, url, Responder(answer), batch_size=10, report_batch_item_failures=True)
    # WHEN the event source hands them over
    result = poller.poll_once()
    # THEN the whole batch failed: nothing is deleted, all come back after the visibility timeout
    assert (result.received, result.deleted, result.failed) == (3, 0, 3)
    assert _left(sqs, url) == 3


SUCCESSES: dict[str, Any] = {
    "a null response": lambda ids: None,
    "an empty response": lambda ids: {},
    "a null list": lambda ids: {"batchItemFailures": None},
    "an empty list": lambda ids: {"batchItemFailures": []},
}


@pytest.mark.parametrize("answer", SUCCESSES.values(), ids=SUCCESSES.keys())
def test_an_empty_partial_response_is_a_complete_success(aws: boto3.session.Session, answer: Any) -> None:
    sqs, url = _queue_with(aws, 3)
    result = SqsPoller(sqs, url, Responder(answer), report_batch_item_failures=True).poll_once()
    assert (result.received, result.deleted, result.failed) == (3, 3, 0)
    assert _left(sqs, url) == 0


def test_a_valid_partial_response_keeps_only_the_reported_messages(aws: boto3.session.Session) -> None:
    sqs, url = _queue_with(aws, 3)
    responder = Responder(lambda ids: {"batchItemFailures": [{"itemIdentifier": ids[1]}]})
    result = SqsPoller(sqs, url, responder, report_batch_item_failures=True).poll_once()
    assert (result.received, result.deleted, result.failed) == (3, 2, 1)
    assert _left(sqs, url) == 1


def test_without_report_batch_item_failures_the_response_is_not_read(aws: boto3.session.Session) -> None:
    # GIVEN an event source without ReportBatchItemFailures, and a function that reports one message failed
    sqs, url = _queue_with(aws, 3)
    responder = Responder(lambda ids: {"batchItemFailures": [{"itemIdentifier": ids[1]}]})
    # WHEN it hands them over
    result = SqsPoller(sqs, url, responder, report_batch_item_failures=False).poll_once()
    # THEN Lambda did not look at the response: the batch succeeded, every message is deleted
    assert (result.received, result.deleted, result.failed) == (3, 3, 0)
    assert _left(sqs, url) == 0


def test_a_response_that_is_not_json_fails_the_invocation(aws: boto3.session.Session) -> None:
    sqs, url = _queue_with(aws, 2)
    result = SqsPoller(sqs, url, Responder(lambda ids: {"batchItemFailures": {object()}})).poll_once()
    assert (result.deleted, result.failed) == (0, 2)


def test_the_local_stack_reads_the_template_setting_of_each_sqs_event_source(resources, services) -> None:
    # GIVEN the template's SQS event sources, one of them turned to no ReportBatchItemFailures
    template = load_template()
    template["Resources"]["DeliveryFunction"]["Properties"]["Events"]["SlowWork"]["Properties"].pop(
        "FunctionResponseTypes"
    )
    expected = {source.queue_id: source.report_batch_item_failures for source in delivery_event_sources(template)}
    assert expected == {"WorkQueue": True, "SlowQueue": False}
    # WHEN the local stack builds its pollers
    pollers = event_source_pollers(resources, services, 1, template=template)
    try:
        # THEN each reads the function's response as its event source says
        assert {source.queue_id: poller.report_batch_item_failures for source, _, poller in pollers} == expected
    finally:
        settle_all(worker for _, worker, _ in pollers)


# ---------------------------------------------------------------------------------------------- the table's stream


def _stream_poller(services: Any, aws: boto3.session.Session, handler: Responder, **changes: Any) -> StreamPoller:
    table = services.store.table
    arn = table.client.describe_table(TableName=table.name)["Table"]["LatestStreamArn"]
    settings = dataclasses.replace(delivery_stream_source(), **changes)
    return StreamPoller(aws.client("dynamodbstreams"), arn, handler, settings)


def _put_marked(services: Any, count: int) -> None:
    table = services.store.table
    for n in range(count):
        item = {"pk": {"S": f"M#{n}"}, "sk": {"S": "#DELIVERY"}, "stats_from_stream": {"BOOL": True}}
        table.client.put_item(TableName=table.name, Item=item)


def test_the_template_stream_source_does_not_report_batch_item_failures() -> None:
    assert delivery_stream_source().report_batch_item_failures is False


def test_a_stream_response_is_not_read_without_report_batch_item_failures(services, aws) -> None:
    # GIVEN the template's stream source (no ReportBatchItemFailures) and a function reporting its first record
    responder = Responder(lambda ids: {"batchItemFailures": [{"itemIdentifier": ids[0]}]})
    poller = _stream_poller(services, aws, responder)
    _put_marked(services, 3)
    # WHEN the stream is handed over THEN the batch succeeded once
    assert poller.drain() == 3
    assert len(responder.batches) == 1


def test_a_stream_partial_response_hands_over_again_from_the_lowest_reported_record(services, aws) -> None:
    # GIVEN ReportBatchItemFailures, and a function reporting the second and third records of its first batch
    calls: list[int] = []

    def answer(ids: list[str]) -> dict[str, Any]:
        calls.append(len(ids))
        if len(calls) == 1:
            return {"batchItemFailures": [{"itemIdentifier": ids[2]}, {"itemIdentifier": ids[1]}]}
        return {"batchItemFailures": []}

    responder = Responder(answer)
    poller = _stream_poller(services, aws, responder, report_batch_item_failures=True)
    _put_marked(services, 4)
    # WHEN the stream is handed over
    poller.drain()
    # THEN the batch came back from the checkpoint, the lowest sequence number reported, and not before it
    first, again = responder.batches
    assert again == first[1:]


@pytest.mark.parametrize(
    "answer",
    [
        lambda ids: {"batchItemFailures": [{"itemIdentifier": ""}]},
        lambda ids: {"batchItemFailures": [{"itemIdentifier": None}]},
        lambda ids: {"batchItemFailures": [{"sequenceNumber": ids[0]}]},
    ],
    ids=["empty", "null", "bad key name"],
)
def test_an_invalid_stream_response_fails_the_whole_batch_until_the_retries_run_out(services, aws, answer: Any) -> None:
    responder = Responder(answer)
    poller = _stream_poller(services, aws, responder, report_batch_item_failures=True, maximum_retry_attempts=2)
    _put_marked(services, 2)
    poller.drain()
    # the whole batch, three times: the first invocation and its two retries
    assert len(responder.batches) == 3
    assert responder.batches[0] == responder.batches[1] == responder.batches[2]
