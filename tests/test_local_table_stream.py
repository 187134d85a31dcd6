"""The local stack's table stream (moto, with ``herald.local.moto_fixes``) shows what was written and nothing a
cancelled transaction wrote, as DynamoDB Streams does: the stats the worker counts from the stream depend on it."""

from __future__ import annotations

import json
import threading
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from herald.local.moto_fixes import moto_fixes
from herald.local.resources import create_local_resources
from herald.local.stream_poller import lambda_record
from tests.support import ADMIN_KEY


def _table_and_stream() -> tuple[str, Any, Any, str]:
    """The local stack's table (in the embedded AWS), its DynamoDB and Streams clients, and an iterator of its
    stream from now on."""
    session = boto3.session.Session(region_name="us-east-1")
    table = create_local_resources(admin_key=ADMIN_KEY, session=session).table_name
    dynamodb, streams = session.client("dynamodb"), session.client("dynamodbstreams")
    arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="LATEST")["ShardIterator"]
    return table, dynamodb, streams, iterator


@pytest.mark.parametrize("deepcopy_transactions", [False, True], ids=["snapshots", "deep copies"])
def test_a_cancelled_transaction_leaves_nothing_in_the_stream(deepcopy_transactions: bool) -> None:
    with mock_aws(), moto_fixes(deepcopy_transactions=deepcopy_transactions):
        table, dynamodb, streams, iterator = _table_and_stream()
        # GIVEN a transaction that puts an item, then fails a condition on another: cancelled
        with pytest.raises(ClientError, match="TransactionCanceledException"):
            dynamodb.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": table, "Item": _item("cancelled")}},
                    {
                        "ConditionCheck": {
                            "TableName": table,
                            "Key": _item("absent"),
                            "ConditionExpression": "attribute_exists(pk)",
                        }
                    },
                ]
            )
        assert "Item" not in dynamodb.get_item(TableName=table, Key=_item("cancelled"))
        # WHEN an item is put afterwards
        dynamodb.put_item(TableName=table, Item=_item("written"))
        # THEN the stream, read from before the transaction, shows that put alone
        records = streams.get_records(ShardIterator=iterator)["Records"]
        assert [(r["eventName"], r["dynamodb"]["Keys"]["pk"]["S"]) for r in records] == [("INSERT", "written")]


def _item(name: str) -> dict[str, Any]:
    return {"pk": {"S": name}, "sk": {"S": "#"}}


def test_a_records_binary_attributes_reach_the_function_in_base64_as_lambda_writes_them() -> None:
    # GIVEN a record as GetRecords gives it through boto3 (binary attributes as bytes)
    record = {
        "eventName": "MODIFY",
        "dynamodb": {
            "Keys": {"pk": {"S": "EVENT#e"}},
            "NewImage": {"pk": {"S": "EVENT#e"}, "b": {"B": b"\x00\x01\xff"}, "bs": {"BS": [b"\x01", b"\x02"]}},
        },
    }
    # WHEN it is handed to the function
    handed = lambda_record(record, "arn:aws:dynamodb:us-east-1:1:table/t/stream/s", "us-east-1")
    # THEN it is JSON, each binary in base64, the rest as it was
    image = handed["dynamodb"]["NewImage"]
    assert (image["b"], image["bs"], image["pk"]) == ({"B": "AAH/"}, {"BS": ["AQ==", "Ag=="]}, {"S": "EVENT#e"})
    assert json.loads(json.dumps(handed)) == handed


def test_a_stream_read_during_a_cancelled_transaction_sees_neither_it_nor_loses_what_follows() -> None:
    with mock_aws(), moto_fixes():
        table, dynamodb, streams, iterator = _table_and_stream()
        read: list[str] = []
        done = threading.Event()

        def reader() -> None:
            # The stream's event source: GetRecords over and over, following the iterator.
            position = iterator
            while True:
                last = done.is_set()
                answer = streams.get_records(ShardIterator=position)
                read.extend(record["dynamodb"]["Keys"]["pk"]["S"] for record in answer["Records"])
                position = answer["NextShardIterator"]
                if last:
                    return

        thread = threading.Thread(target=reader)
        thread.start()
        written = []
        try:
            # GIVEN rounds of a transaction of many puts cancelled by its last action, each followed by a put,
            # while the stream is read all along
            for round_ in range(20):
                actions: list[Any] = [
                    {"Put": {"TableName": table, "Item": _item(f"cancelled-{round_}-{n}")}} for n in range(60)
                ]
                actions.append(
                    {
                        "ConditionCheck": {
                            "TableName": table,
                            "Key": _item("absent"),
                            "ConditionExpression": "attribute_exists(pk)",
                        }
                    }
                )
                with pytest.raises(ClientError, match="TransactionCanceledException"):
                    dynamodb.transact_write_items(TransactItems=actions)
                dynamodb.put_item(TableName=table, Item=_item(f"written-{round_}"))
                written.append(f"written-{round_}")
        finally:
            # WHEN the reader reads once more after the last put
            done.set()
            thread.join()
        # THEN it read every put, once and in order, and no put of a cancelled transaction
        assert read == written
