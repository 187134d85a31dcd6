"""The benchmarks' AWS stand-in (``benchmarks.aws_standin``): calls recorded against moto are answered again,
from the recording, by a server in its own process, any number at once; a call it never recorded is a counted
miss, never an invented answer. moto runs as a server here (``mock_aws`` answers inside botocore itself, before
any request could be sent elsewhere)."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from benchmarks.aws_standin import AwsStandIn
from herald.local.moto_fixes import moto_fixes
from herald.storage.table import insert_statement

TABLE = "standin"


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        # moto's state belongs to the process, not the server: start from none.
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30).close()
        client = boto3.client(
            "dynamodb",
            endpoint_url=endpoint,
            region_name="us-east-1",
            # One attempt: a miss is answered once, and counted once.
            config=Config(max_pool_connections=16, retries={"mode": "standard", "total_max_attempts": 1}),
        )
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client
    finally:
        server.stop()


@pytest.fixture
def standin(dynamodb: Any) -> Iterator[AwsStandIn]:
    made = AwsStandIn([dynamodb], latency=0.2)
    yield made
    made.close()


def _get(client: Any, pk: str) -> dict[str, Any]:
    response: dict[str, Any] = client.get_item(TableName=TABLE, Key={"pk": {"S": pk}})
    return response


def test_a_recorded_call_is_answered_again_by_the_standin_not_the_service(dynamodb: Any, standin: AwsStandIn) -> None:
    # GIVEN a put and a get recorded against moto
    with standin.recording():
        dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "a"}, "v": {"S": "one"}})
        recorded = _get(dynamodb, "a")
    # AND the item deleted from moto since
    dynamodb.delete_item(TableName=TABLE, Key={"pk": {"S": "a"}})
    assert "Item" not in _get(dynamodb, "a")
    # WHEN the get is made again through the stand-in
    with standin.answering():
        again = _get(dynamodb, "a")
    # THEN botocore parsed moto's recorded answer: the item moto no longer holds
    assert again["Item"] == recorded["Item"] == {"pk": {"S": "a"}, "v": {"S": "one"}}
    assert standin.stats() == {"recorded": 2, "answered": 1, "unused": 1, "misses": [], "peak_in_flight": 1}
    # AND outside the block, calls reach moto again
    assert "Item" not in _get(dynamodb, "a")


def test_a_call_never_recorded_is_a_miss_not_an_invented_answer(dynamodb: Any, standin: AwsStandIn) -> None:
    # GIVEN one get recorded
    with standin.recording():
        _get(dynamodb, "a")
    # WHEN the stand-in is asked for another key, and for the recorded one twice
    with standin.answering():
        with pytest.raises(ClientError) as other:
            _get(dynamodb, "b")
        _get(dynamodb, "a")
        with pytest.raises(ClientError) as twice:
            _get(dynamodb, "a")
    # THEN both unrecorded calls fail with the stand-in's error, and are counted as misses
    assert other.value.response["Error"]["Code"] == twice.value.response["Error"]["Code"] == "StandInMiss"
    stats = standin.stats()
    assert stats["answered"] == 1
    assert [miss[0] for miss in stats["misses"]] == ["DynamoDB_20120810.GetItem"] * 2
    assert '"b"' in stats["misses"][0][1][0]


def test_the_standin_holds_many_calls_at_once(dynamodb: Any, standin: AwsStandIn) -> None:
    # GIVEN eight gets recorded
    keys = [f"k{n}" for n in range(8)]
    with standin.recording():
        for key in keys:
            _get(dynamodb, key)
    # WHEN they are made again from eight threads that start together (each answer takes the stand-in 200 ms)
    start = threading.Barrier(len(keys))

    def get(key: str) -> dict[str, Any]:
        start.wait()
        return _get(dynamodb, key)

    with standin.answering(), ThreadPoolExecutor(len(keys)) as pool:
        answers = list(pool.map(get, keys))
    # THEN each was answered, and the stand-in held several at once (a server answering one at a time holds one)
    assert all("Item" not in answer for answer in answers)
    stats = standin.stats()
    assert stats["answered"] == len(keys)
    assert stats["peak_in_flight"] >= 2


def test_a_batch_of_inserts_is_answered_statement_by_statement(dynamodb: Any, standin: AwsStandIn) -> None:
    # GIVEN an item, then a batch of three inserts recorded (moto as DynamoDB answers them: the taken key refused)
    def inserts(*pks: str) -> list[dict[str, Any]]:
        return [insert_statement(TABLE, {"pk": pk, "v": 1}) for pk in pks]

    with moto_fixes():
        dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "b"}})
        with standin.recording():
            recorded = dynamodb.batch_execute_statement(Statements=inserts("a", "b", "c"))["Responses"]
    assert [answer.get("Error", {}).get("Code") for answer in recorded] == [None, "DuplicateItem", None]
    # WHEN the same inserts are made again, grouped otherwise (which deliveries share a call depends on timing)
    with standin.answering():
        first = dynamodb.batch_execute_statement(Statements=inserts("c"))["Responses"]
        second = dynamodb.batch_execute_statement(Statements=inserts("b", "a"))["Responses"]
    # THEN each statement gets its own recorded answer, in its place, and every answer was used
    assert first == [recorded[2]]
    assert second == [recorded[1], recorded[0]]
    stats = standin.stats()
    assert (stats["recorded"], stats["answered"], stats["unused"], stats["misses"]) == (3, 2, 0, [])
    # AND a statement never recorded is a miss: the whole call fails, with nothing invented
    with standin.answering(), pytest.raises(ClientError, match="StandInMiss"):
        dynamodb.batch_execute_statement(Statements=inserts("a", "z"))
