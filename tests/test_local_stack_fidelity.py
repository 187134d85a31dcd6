"""The local stack as left running for days: its stream's event source keeps no state of moto's growing, reads a
shard four times a second as Lambda does, the sweep keeps EventBridge's fixed rate, and a stack that could deliver
nothing is refused at the command line."""

from __future__ import annotations

import dataclasses
import threading
import time
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.dynamodbstreams.models import dynamodbstreams_backends

from herald.local import event_sources, stack, stream_poller
from herald.local.event_sources import ScheduleSettings, delivery_stream_source, run_schedule
from herald.local.resources import create_local_resources
from herald.local.stream_poller import StreamPoller
from tests.support import ADMIN_KEY

#: A ceiling for conditions on a busy machine, never a pause.
CEILING_SECONDS = 60


class FakeClock:
    """``time.monotonic`` and ``time.sleep`` of a module under test, moved by the sleeps (and by the test)."""

    def __init__(self, now: float | None = None) -> None:
        # By default from the real clock's now: a module timing with the real one sees no invocation outlive itself.
        self.now = time.monotonic() if now is None else now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)

    def module(self) -> SimpleNamespace:
        return SimpleNamespace(monotonic=self.monotonic, sleep=self.sleep, time=time.time)


class CountingStreams:
    """A DynamoDB Streams client that counts its calls."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(**kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(**kwargs)

        return call


def _table(session: boto3.session.Session) -> tuple[str, Any, Any, str]:
    """The local stack's table, its DynamoDB and Streams clients, and its stream's ARN."""
    table = create_local_resources(admin_key=ADMIN_KEY, session=session).table_name
    dynamodb, streams = session.client("dynamodb"), session.client("dynamodbstreams")
    return table, dynamodb, streams, dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]


def _latest(streams: Any, arn: str) -> str:
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    return str(streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="LATEST")["ShardIterator"])


def _put(dynamodb: Any, table: str, pk: str) -> None:
    dynamodb.put_item(TableName=table, Item={"pk": {"S": pk}, "sk": {"S": "#"}})


def _keys(answer: dict[str, Any]) -> list[str]:
    return [record["dynamodb"]["Keys"]["pk"]["S"] for record in answer["Records"]]


# ------------------------------------------------------------------------------------- the stream's iterators


def test_readers_following_the_stream_leave_a_few_shard_iterators_however_long_they_read(aws) -> None:
    table, dynamodb, streams, arn = _table(aws)
    iterators = dynamodbstreams_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].shard_iterators
    # GIVEN two readers of the stream at once (two event sources), each following its own iterators
    positions = [_latest(streams, arn), _latest(streams, arn)]
    read: list[list[str]] = [[], []]
    # WHEN they read it 300 times each, idle and with records written between their reads
    for n in range(300):
        if n % 10 == 0:
            _put(dynamodb, table, f"item-{n}")
        for reader, position in enumerate(positions):
            answer = streams.get_records(ShardIterator=position)
            read[reader].extend(_keys(answer))
            positions[reader] = answer["NextShardIterator"]
    # THEN each saw every record once, and the stream keeps the iterators each is at and the one it last read
    # (moto kept each one it handed out: 602)
    assert read[0] == read[1] == [f"item-{n}" for n in range(0, 300, 10)]
    assert len(iterators) <= 4


def test_a_read_retried_gets_the_same_records_and_an_iterator_once_followed_is_expired(aws) -> None:
    table, dynamodb, streams, arn = _table(aws)
    first = _latest(streams, arn)
    _put(dynamodb, table, "one")
    # GIVEN a read whose answer was lost
    lost = streams.get_records(ShardIterator=first)
    # WHEN it is made again, and the stream is followed from its answer
    retried = streams.get_records(ShardIterator=first)
    _put(dynamodb, table, "two")
    followed = streams.get_records(ShardIterator=retried["NextShardIterator"])
    # THEN the retry got the same records, the stream goes on from its answer
    assert _keys(lost) == _keys(retried) == ["one"]
    assert _keys(followed) == ["two"]
    # AND the iterator followed since is refused as expired, as DynamoDB refuses one past its 15 minutes
    with pytest.raises(ClientError) as refused:
        streams.get_records(ShardIterator=first)
    assert refused.value.response["Error"]["Code"] == "ExpiredIteratorException"
    # AND an iterator handed out and never read is still readable
    assert _keys(streams.get_records(ShardIterator=lost["NextShardIterator"])) == ["two"]


# ------------------------------------------------------------------------------------- the stream's reads


def test_a_batching_window_reads_the_shard_four_times_a_second_and_describes_the_stream_once(
    aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    table, dynamodb, streams, arn = _table(aws)
    clock = FakeClock()
    opened = clock.now
    monkeypatch.setattr(stream_poller, "time", clock.module())
    counting = CountingStreams(streams)
    batches: list[list[str]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        batches.append([record["dynamodb"]["Keys"]["pk"]["S"] for record in event["Records"]])
        return {}

    # GIVEN the stream's event source with a 10 s batching window and every record matching
    settings = dataclasses.replace(
        delivery_stream_source(), maximum_batching_window_seconds=10, batch_size=100, patterns=()
    )
    poller = StreamPoller(counting, arn, handler, settings)  # type: ignore[arg-type]
    assert counting.calls == {"describe_stream": 1, "get_shard_iterator": 1}
    # WHEN one record opens the window, which no further record fills
    _put(dynamodb, table, "alone")
    assert poller.poll_once() == 1
    # THEN the window ran its 10 s and handed the record over
    assert batches == [["alone"]]
    assert clock.now >= opened + 10
    # AND the shard was read four times a second meanwhile (once when opening it, then 40 more at most; every
    # 50 ms, it was 200), and the stream was not described again (it was on every read)
    assert counting.calls["get_records"] <= 42
    assert counting.calls["describe_stream"] == 1


# ------------------------------------------------------------------------------------- the sweep's schedule


class FakeStop(threading.Event):
    """``stop`` of ``run_schedule``, whose waits move the fake clock instead of taking time."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        if not self.is_set():
            self.clock.sleep(timeout or 0.0)
        return self.is_set()


def test_the_sweep_runs_at_a_fixed_rate_and_a_late_one_is_followed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(1000.0)
    monkeypatch.setattr(event_sources, "time", clock.module())
    stop = FakeStop(clock)
    start = clock.now
    # GIVEN sweeps every minute that take 10 s, 70 s (past the next time), 10 s, 130 s (past two), 10 s
    durations = [10, 70, 10, 130, 10, 10]
    started: list[float] = []

    def sweep(event: dict[str, Any], context: Any) -> None:
        started.append(clock.now - start)
        clock.now += durations[len(started) - 1]
        if len(started) == len(durations):
            stop.set()

    # WHEN the schedule runs them, one at a time
    run_schedule(stop, ScheduleSettings(interval_seconds=60, input={"herald": "sweep"}), sweep)
    # THEN each starts on the minute counted from the start, whatever the one before took; one that ran past the
    # next minute is followed at once, the minutes missed meanwhile coming to that one, and the next one is on
    # the minute again (counted from the end of each, it was 60, 130, 260, 330, 520, 590)
    assert started == [60, 120, 190, 240, 370, 420]


def test_a_sweep_past_its_next_time_overlaps_the_next_in_a_worker_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()
    lock = threading.Lock()
    second_started = threading.Event()
    running: list[str] = []
    most_at_once = 0
    handled: list[str] = []

    def handler_named(name: str) -> Any:
        def sweep(event: dict[str, Any], context: Any) -> None:
            nonlocal most_at_once
            with lock:
                running.append(name)
                handled.append(name)
                most_at_once = max(most_at_once, len(running))
                number = len(handled)
            try:
                if number == 1:
                    # The first sweep runs until the next has started (or the ceiling).
                    second_started.wait(CEILING_SECONDS)
                else:
                    second_started.set()
                    if number >= 4:
                        stop.set()
            finally:
                with lock:
                    running.remove(name)

        return sweep

    made: list[str] = []

    def new_handler() -> Any:
        made.append(f"worker-{len(made) + 2}")
        return handler_named(made[-1])

    # GIVEN a schedule due at once, again and again, that may run two sweeps at once
    schedule = ScheduleSettings(interval_seconds=0, input={"herald": "sweep"})
    runner = threading.Thread(
        target=run_schedule,
        args=(stop, schedule, handler_named("worker-1")),
        kwargs={"concurrency": 2, "new_handler": new_handler},
        daemon=True,
    )
    # WHEN the first sweep runs past the next time
    runner.start()
    try:
        runner.join(CEILING_SECONDS)
    finally:
        stop.set()
        second_started.set()
        runner.join(CEILING_SECONDS)
    assert not runner.is_alive()
    # THEN the next started while it ran, in another worker, as EventBridge invokes again on time and Lambda runs
    # it in another container; never more than two at once, in the two workers made
    assert set(handled[:2]) == {"worker-1", "worker-2"}
    assert most_at_once == 2
    assert made == ["worker-2"]
    assert set(handled) == {"worker-1", "worker-2"}


# ------------------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("workers", ["0", "-1", "two"])
def test_a_stack_of_no_workers_is_a_usage_error(
    workers: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def started(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the stack was started")

    monkeypatch.setattr(stack, "listen_on", started)
    monkeypatch.setattr(stack, "start_aws", started)
    # WHEN the stack is asked for fewer than one worker (none would poll the queues: nothing delivered)
    with pytest.raises(SystemExit) as exited:
        stack.main(["--workers", workers, "--port", "0"])
    # THEN it is refused before anything starts, as a usage error
    assert exited.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_start_workers_refuses_no_workers() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        stack.start_workers(0, threading.Event(), None)  # type: ignore[arg-type]
