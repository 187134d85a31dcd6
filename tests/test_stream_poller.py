"""The stream event source mapping, emulated (``herald.local.stream_poller``) on moto's stream: what it hands
over, in which batches, and what a failing handler gets, as Lambda does it for a DynamoDB stream."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import pytest

from herald.local.event_sources import delivery_stream_source
from herald.local.poller import SqsPoller
from herald.local.stream_poller import StreamPoller


class Handler:
    """A stand-in for the function: records each batch it is handed, failing the first ``failures`` times."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[str]] = []
        self.failures = failures

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.batches.append([record["dynamodb"]["Keys"]["pk"]["S"] for record in event["Records"]])
        assert context.get_remaining_time_in_millis() > 0
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the function failed")
        return {}


@pytest.fixture
def table(services) -> Any:
    return services.store.table


def _poller(aws, table, handler: Handler, **changes: Any) -> StreamPoller:
    arn = table.client.describe_table(TableName=table.name)["Table"]["LatestStreamArn"]
    settings = dataclasses.replace(delivery_stream_source(), **changes)
    return StreamPoller(aws.client("dynamodbstreams"), arn, handler, settings)


def _put(table, pk: str, *, marked: bool) -> None:
    item: dict[str, Any] = {"pk": {"S": pk}, "sk": {"S": "#DELIVERY"}}
    if marked:
        item["stats_from_stream"] = {"BOOL": True}
    table.client.put_item(TableName=table.name, Item=item)


def test_the_template_filter_passes_marked_new_items_only_however_many_others_come_first(aws, table) -> None:
    # GIVEN more unmarked writes than one read of the stream returns (1,000), then a marked one, and a rewrite of
    # the marked item (a MODIFY)
    handler = Handler()
    poller = _poller(aws, table, handler)
    for n in range(1001):
        _put(table, f"X#{n}", marked=False)
    _put(table, "M#1", marked=True)
    _put(table, "M#1", marked=True)
    # WHEN the stream is handed over
    handed = poller.drain()
    # THEN only the new marked item reached the function, once
    assert (handed, handler.batches) == (1, [["M#1"]])
    assert poller.filtered_out == 1002
    assert poller.drain() == 0


def test_batches_hold_at_most_the_batch_size(aws, table) -> None:
    handler = Handler()
    poller = _poller(aws, table, handler, batch_size=3)
    for n in range(7):
        _put(table, f"M#{n}", marked=True)
    assert poller.drain() == 7
    assert [len(batch) for batch in handler.batches] == [3, 3, 1]
    assert [pk for batch in handler.batches for pk in batch] == [f"M#{n}" for n in range(7)]


@pytest.mark.parametrize(("failures", "invocations"), [(2, 3), (5, 3)])
def test_a_failed_batch_is_handed_over_again_up_to_the_retries_then_skipped(
    aws, table, failures: int, invocations: int
) -> None:
    # GIVEN the template's retries (two), and a function failing the first ``failures`` times
    assert delivery_stream_source().maximum_retry_attempts == 2
    handler = Handler(failures)
    poller = _poller(aws, table, handler)
    _put(table, "M#1", marked=True)
    # WHEN the stream is handed over
    poller.drain()
    # THEN the same batch was handed over until it passed or the retries ran out; then the stream moves on
    assert handler.batches == [["M#1"]] * invocations
    assert poller.invocations == invocations
    assert handler.failures == max(failures - invocations, 0)
    handler.failures = 0
    _put(table, "M#2", marked=True)
    assert poller.drain() == 1
    assert handler.batches[-1] == ["M#2"]


def test_latest_starts_where_the_mapping_was_created(aws, table) -> None:
    # GIVEN a marked write before the mapping exists, with LATEST, and one after
    _put(table, "M#before", marked=True)
    handler = Handler()
    poller = _poller(aws, table, handler, starting_position="LATEST")
    _put(table, "M#after", marked=True)
    # THEN only the later one is handed over
    assert poller.drain() == 1
    assert handler.batches == [["M#after"]]


def test_an_invocation_past_its_timeout_is_said_as_an_error(aws, table, caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a stream function that answers after its (short) timeout, and a work-queue function that does the same
    handed: list[int] = []

    def late(event: dict[str, Any], context: Any) -> dict[str, Any]:
        handed.append(len(event["Records"]))
        time.sleep(0.3)
        return {}

    arn = table.client.describe_table(TableName=table.name)["Table"]["LatestStreamArn"]
    settings = dataclasses.replace(delivery_stream_source(), maximum_batching_window_seconds=0)
    streams = StreamPoller(aws.client("dynamodbstreams"), arn, late, settings, function_timeout_seconds=0.1)
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="late")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m")
    queue = SqsPoller(sqs, url, late, function_timeout_seconds=0.1)
    _put(table, "M#1", marked=True)
    # WHEN each is handed its batch
    with caplog.at_level(logging.ERROR, logger="herald"):
        streams.drain()
        queue.poll_once()
    # THEN each time is said as an error (Lambda would have stopped the function; the emulation lets it end, so
    # that a machine slowed by other work fails no test that checks something else)
    assert handed == [1, 1]
    late_lines = [r.getMessage() for r in caplog.records if "past its" in r.getMessage()]
    assert len(late_lines) == 2, late_lines
    assert all("Lambda stops it there and its whole batch fails" in line for line in late_lines)
