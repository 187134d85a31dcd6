"""The local stack's SQS (moto, with ``herald.local.moto_fixes``) hands a message to one of the consumers
receiving at once, as SQS does but for its rare duplicates, and a long poll waits without holding up the
queue's other calls. The local stack's pollers and the tests that run two workers at once depend on it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError


def _queue(aws: boto3.session.Session) -> tuple[Any, str]:
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="consumers", Attributes={"VisibilityTimeout": "360"})["QueueUrl"]
    return sqs, url


def _moto_queue(name: str) -> Any:
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    return sqs_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].queues[name]


def _send(sqs: Any, url: str, bodies: range) -> None:
    for start in range(bodies.start, bodies.stop, 10):
        entries = [{"Id": str(n), "MessageBody": str(n)} for n in range(start, min(start + 10, bodies.stop))]
        assert not sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")


def test_consumers_receiving_at_once_never_take_the_same_message(aws: boto3.session.Session) -> None:
    sqs = aws.client("sqs")
    for round_number in range(20):
        # GIVEN 100 messages in a queue
        url = sqs.create_queue(QueueName=f"consumers-{round_number}", Attributes={"VisibilityTimeout": "360"})[
            "QueueUrl"
        ]
        _send(sqs, url, range(100))
        received: Counter[str] = Counter()
        lock = threading.Lock()

        def drain(url: str = url, received: Counter[str] = received, lock: threading.Lock = lock) -> None:
            consumer = aws.client("sqs")
            while messages := consumer.receive_message(QueueUrl=url, MaxNumberOfMessages=1).get("Messages", []):
                with lock:
                    received.update(message["Body"] for message in messages)

        # WHEN four consumers drain it at the same time, one message a call, all after the first visible one
        with ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(drain) for _ in range(4)]:
                future.result(timeout=300)
        # THEN each message was received once
        assert received == Counter({str(n): 1 for n in range(100)}), f"round {round_number}"


def test_a_long_poll_does_not_hold_up_a_send(aws: boto3.session.Session) -> None:
    # GIVEN a consumer waiting up to 20 s for a message of an empty queue
    sqs, url = _queue(aws)
    consumer = aws.client("sqs")
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(consumer.receive_message, QueueUrl=url, WaitTimeSeconds=20)
        # (moto's queue wakes a waiting poll through its condition: wait until the poll waits on it)
        messages_arrived = _moto_queue("consumers")._messages_lock
        while not messages_arrived._waiters and not waiting.done():
            time.sleep(0.01)
        assert not waiting.done()
        # WHEN a message is sent while it waits
        sqs.send_message(QueueUrl=url, MessageBody="hello")
        # THEN the send did not wait for the poll to end: the poll receives it
        messages = waiting.result(timeout=60).get("Messages", [])
    assert [message["Body"] for message in messages] == ["hello"]


def test_a_message_sent_long_ago_is_made_visible_again_and_hidden_up_to_12_hours_from_its_receive(
    aws: boto3.session.Session,
) -> None:
    # GIVEN a message sent 13 hours ago (a dead letter kept that long), received now
    sqs, url = _queue(aws)
    sqs.send_message(QueueUrl=url, MessageBody="old")
    message = next(iter(_moto_queue("consumers")._messages))
    message.sent_timestamp -= 13 * 3600 * 1000
    handle = sqs.receive_message(QueueUrl=url)["Messages"][0]["ReceiptHandle"]
    # WHEN it is made visible again, THEN SQS takes it (the 12 hours count from the receive, not the send)
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    # AND received again, it can be hidden for up to 12 hours from that receive, not beyond
    handle = sqs.receive_message(QueueUrl=url)["Messages"][0]["ReceiptHandle"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=12 * 3600 - 60)
    message.received_ms -= 3600 * 1000  # received an hour ago
    with pytest.raises(ClientError, match="beyond the limit"):
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=12 * 3600 - 60)
