"""The DynamoDB stream event source mapping, emulated: what Lambda does between the table's stream and the
DeliveryFunction, for the local stack and the tests (the stream itself is moto's).

It reads every shard of the stream from the mapping's starting position, keeps the records its filter
criteria match (Lambda filters before it batches, and drops what no pattern matches; the patterns are
matched by moto's EventBridge pattern matcher, the same pattern language), and calls the handler with up to
``batch_size`` of them, gathered for up to the batching window, in the event Lambda would build. A handler
that raises gets the same batch again, up to ``maximum_retry_attempts`` times (-1: until it succeeds), and
the records are then skipped, as Lambda does without an on-failure destination.

The function's response is read as Lambda reads a stream's (the Lambda developer guide, "Configuring partial
batch response with DynamoDB and Lambda"): without ``ReportBatchItemFailures`` it is not looked at (Herald's
template does not turn it on). With it, an empty or null response or ``batchItemFailures`` list is a success; a
null, empty or missing (bad key name) ``itemIdentifier`` fails the whole batch; otherwise the batch is handed
over again from the record with the lowest sequence number reported (the checkpoint), as a failure counted
against the retries. An identifier that is no sequence number of the batch, which that page does not cover,
fails the whole batch here. A response that cannot be serialized to JSON fails the invocation either way.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from moto.events.models import EventPattern

from herald.local.event_sources import delivery_event_source, delivery_stream_source
from herald.local.poller import (
    Handler,
    LambdaContext,
    outlived,
    reported_failures,
    serializable,
)
from herald.local.template import TemplateResourceNotFoundError, load_template

if TYPE_CHECKING:
    from moto.events.utils import EventMessageType
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient

    from herald.local.event_sources import StreamSourceSettings

logger = logging.getLogger(__name__)

#: How often a shard is read, within a batching window as between them: Lambda polls a shard four times a second.
SHARD_READ_SECONDS = 0.25
#: How often the stream is looked at for shards it has gained, besides when a shard is read to its end (its
#: children appear then).
SHARD_DISCOVERY_SECONDS = 60.0


def _as_json(value: Any) -> Any:
    """A parsed attribute value as Lambda's JSON writes it: a binary (``B``, each of ``BS``) in base64."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {key: _as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_json(item) for item in value]
    return value


def lambda_record(record: dict[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """A record as GetRecords gives it (parsed by boto3), as Lambda hands it to a function: JSON (binary attributes
    in base64), with the stream's ARN, and the creation time in epoch seconds."""
    dynamodb = {key: _as_json(value) for key, value in record.get("dynamodb", {}).items()}
    created = record.get("dynamodb", {}).get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        dynamodb["ApproximateCreationDateTime"] = created.timestamp()
    return {
        **record,
        "dynamodb": dynamodb,
        "eventSource": "aws:dynamodb",
        "eventSourceARN": stream_arn,
        "awsRegion": record.get("awsRegion", region),
    }


class StreamPoller:
    """One poller reads the whole stream, one invocation at a time (Lambda: one per shard)."""

    def __init__(
        self,
        client: DynamoDBStreamsClient,
        stream_arn: str,
        handler: Handler,
        settings: StreamSourceSettings,
        *,
        function_timeout_seconds: float = 60,
        function_name: str = "DeliveryFunction",
        region: str = "us-east-1",
    ) -> None:
        self.client = client
        self.stream_arn = stream_arn
        self.handler = handler
        self.settings = settings
        self.timeout = function_timeout_seconds
        self.function_name = function_name
        self.region = region
        self.patterns = [EventPattern.load(pattern) for pattern in settings.patterns]
        #: The next read of each shard (None once a closed shard is read to its end).
        self._iterators: dict[str, str | None] = {}
        #: Matching records read and not handed over yet, by shard (a batch holds one shard's records).
        self._pending: dict[str, list[dict[str, Any]]] = {}
        #: Records the filter dropped and batches handed over, as counts (what a test or benchmark looks at).
        self.filtered_out = 0
        self.invocations = 0
        #: When the stream is to be looked at for new shards next (``time.monotonic``).
        self._discover_at = 0.0
        self._shards(self.settings.starting_position)  # where the mapping starts: when it is created

    def _shards(self, position: str = "TRIM_HORIZON") -> None:
        """Start reading the shards the stream has gained since the last look: those there when the mapping is
        created from its starting position, a shard that appears later (a split) from its beginning, as
        Lambda reads child shards."""
        self._discover_at = time.monotonic() + SHARD_DISCOVERY_SECONDS
        description = self.client.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]
        for shard in description.get("Shards", []):
            shard_id = shard["ShardId"]
            if shard_id not in self._iterators:
                self._iterators[shard_id] = self.client.get_shard_iterator(
                    StreamArn=self.stream_arn,
                    ShardId=shard_id,
                    ShardIteratorType=position,  # type: ignore[arg-type]
                )["ShardIterator"]

    def _matches(self, record: dict[str, Any]) -> bool:
        # moto types its matcher for EventBridge events; it matches any JSON object.
        return not self.patterns or any(
            pattern.matches_event(cast("EventMessageType", record)) for pattern in self.patterns
        )

    def _read(self) -> int:
        """Read everything every shard holds now, page after page; keep the records the filter passes. Returns
        how many were read. The stream is described only to find new shards: once a shard has been read to its
        end, and every ``SHARD_DISCOVERY_SECONDS``."""
        if time.monotonic() >= self._discover_at:
            self._shards()
        read = 0
        for shard_id, start in list(self._iterators.items()):
            iterator = start
            while iterator is not None:
                response = self.client.get_records(ShardIterator=iterator)
                iterator = response.get("NextShardIterator")
                records = response.get("Records", [])
                for record in records:
                    event = lambda_record(dict(record), self.stream_arn, self.region)
                    if self._matches(event):
                        self._pending.setdefault(shard_id, []).append(event)
                    else:
                        self.filtered_out += 1
                read += len(records)
                # Kept page by page: a read that fails next starts after what was taken, with an iterator the
                # stream still knows.
                self._iterators[shard_id] = iterator
                if not records:
                    break
            if start is not None and iterator is None:
                self._discover_at = 0.0  # the shard has just ended: its children are to be read next
        return read

    def poll_once(self, *, window: bool = True) -> int:
        """Hand over one batch of a shard, if the stream holds matching records: gather up to ``batch_size`` for
        up to the batching window (opened by the first matching record; the shards are read four times a second
        meanwhile; ``window=False``: what is there now).
        Returns how many records were handed over."""
        self._read()
        shard_id = next((shard for shard, records in self._pending.items() if records), None)
        if shard_id is None:
            return 0
        pending = self._pending[shard_id]
        closes = time.monotonic() + (self.settings.maximum_batching_window_seconds if window else 0)
        while len(pending) < self.settings.batch_size and time.monotonic() < closes:
            time.sleep(min(SHARD_READ_SECONDS, max(0.0, closes - time.monotonic())))
            self._read()
        batch = pending[: self.settings.batch_size]
        del pending[: self.settings.batch_size]
        self._invoke(batch)
        return len(batch)

    def _invoke(self, batch: list[dict[str, Any]]) -> None:
        """Call the handler with one batch, handing it over again as long as it fails and retries are left."""
        retries = self.settings.maximum_retry_attempts
        failures = 0
        while True:
            context = LambdaContext(self.function_name, self.timeout, time.time(), aws_request_id=str(uuid.uuid4()))
            self.invocations += 1
            started = time.monotonic()
            try:
                remaining = self._remaining(self.handler({"Records": batch}, context), batch)
            except Exception:
                logger.exception("the function failed a batch of the stream")
                remaining = batch
            outlived(started, self.timeout)
            if not remaining:
                return
            failures += 1
            if retries >= 0 and failures > retries:
                logger.error("the function failed a batch of the stream %d times; its records are skipped", failures)
                return
            batch = remaining

    def _remaining(self, response: Any, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What of the batch the function's response hands over again: nothing on success, the whole batch on a
        failure, the records from the checkpoint on (the lowest sequence number reported) on a partial one."""
        if not serializable(response):
            logger.error("the function's response is not JSON (the runtime fails the invocation)")
            return batch
        if not self.settings.report_batch_item_failures:
            return []
        numbers = [str(record["dynamodb"]["SequenceNumber"]) for record in batch]
        failed = reported_failures(response, set(numbers))
        if failed is None:
            logger.error("the function's batch response is invalid, which fails the whole batch: %r", response)
            return batch
        if not failed:
            return []
        checkpoint = min(failed, key=int)
        return batch[numbers.index(checkpoint) :]

    def drain(self, max_batches: int = 1000) -> int:
        """Hand over every matching record the stream holds now, without waiting out windows. Returns how many."""
        total = 0
        for _ in range(max_batches):
            handed = self.poll_once(window=False)
            if handed == 0:
                return total
            total += handed
        raise AssertionError("the stream never drained")

    def run(self, stop: threading.Event, *, interval_seconds: float = SHARD_READ_SECONDS) -> None:
        """Poll until ``stop`` is set (the local stack runs this in a thread); Lambda polls a shard four times a
        second."""
        while not stop.is_set():
            try:
                if self.poll_once() == 0:
                    stop.wait(interval_seconds)
            except Exception:
                logger.exception("polling the table's stream failed; retrying")
                stop.wait(1)


def table_stream_poller(
    dynamodb: DynamoDBClient,
    streams: DynamoDBStreamsClient,
    table_name: str,
    handler: Handler,
    *,
    template: dict[str, Any] | None = None,
) -> StreamPoller:
    """The poller of the DeliveryFunction's stream event source (template.yaml, or ``template``) on the table's
    stream."""
    template = template if template is not None else load_template()
    settings = delivery_stream_source(template)
    stream_arn = dynamodb.describe_table(TableName=table_name)["Table"].get("LatestStreamArn")
    if not stream_arn:
        raise TemplateResourceNotFoundError(f"the table {table_name} has no stream")
    timeout = delivery_event_source(template).function_timeout_seconds
    return StreamPoller(streams, stream_arn, handler, settings, function_timeout_seconds=timeout)
