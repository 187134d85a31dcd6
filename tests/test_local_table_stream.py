"""The local stack's table stream (moto, with ``herald.local.moto_fixes``) shows what was written and nothing a
cancelled transaction wrote, as DynamoDB Streams does: the stats the worker counts from the stream depend on it."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from herald.local.moto_fixes import moto_fixes
from herald.local.resources import create_local_resources
from tests.support import ADMIN_KEY


@pytest.mark.parametrize("deepcopy_transactions", [False, True], ids=["snapshots", "deep copies"])
def test_a_cancelled_transaction_leaves_nothing_in_the_stream(deepcopy_transactions: bool) -> None:
    with mock_aws(), moto_fixes(deepcopy_transactions=deepcopy_transactions):
        session = boto3.session.Session(region_name="us-east-1")
        table = create_local_resources(admin_key=ADMIN_KEY, session=session).table_name
        dynamodb, streams = session.client("dynamodb"), session.client("dynamodbstreams")
        arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="LATEST")["ShardIterator"]
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
