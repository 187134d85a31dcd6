"""The fault injector (herald.faults): its errors are AWS's own, botocore retries them as it would, and
Herald's retries of partial batches and transaction conflicts carry the work through.

Everything runs against moto in-process: an injected error never reaches it (what was refused is not
written), a ``lost`` call does (written, and the caller told it timed out).
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError
from fastapi.testclient import TestClient
from pydantic import ValidationError

from herald import faults
from herald.aws import dynamodb_client, secretsmanager_client, sqs_client
from herald.errors import ServiceUnavailableError
from herald.faults import FaultSpecError, install, parse_spec
from herald.queue import RESEND_PAUSE_SECONDS
from herald.services import Services
from herald.settings import Settings
from herald.storage.table import Table, malformed_request
from tests.delivery_support import bulk_subscriptions
from tests.support import ADMIN, INVOICE, TenantInfo, readme_fault_examples

TABLE = "faults-test"


def _table(client: Any) -> None:
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def _item(client: Any, pk: str) -> dict[str, Any] | None:
    with faults.suspended():
        found: dict[str, Any] | None = client.get_item(TableName=TABLE, Key={"pk": {"S": pk}}).get("Item")
    return found


def _one_attempt_client(session: boto3.session.Session, service: str) -> Any:
    """A client that makes one retry at most: botocore's backoff sleeps stay short."""
    config = Config(retries={"mode": "standard", "max_attempts": 1})
    return session.client(service, config=config)  # type: ignore[call-overload]


# --- off by default, and the spec ----------------------------------------------------------------------------


def test_no_fault_and_no_hook_unless_a_spec_says_so(aws: boto3.session.Session) -> None:
    # GIVEN the settings as a deployment has them
    assert Settings().faults == ""
    # THEN the clients Herald makes carry no injector
    for make in (dynamodb_client, sqs_client, secretsmanager_client):
        assert faults.injector_of(make(aws)) is None
    # AND with a spec they do
    assert faults.injector_of(dynamodb_client(aws, faults="dynamodb:throttle=0.1")) is not None


@pytest.mark.parametrize(
    "spec",
    [
        "dynamodb:explode=0.1",  # no such fault
        "kinesis:throttle=0.1",  # no such service
        "dynamodb:throttle=1.5",  # not a probability
        "dynamodb:throttle=calls:5-2",  # not a range
        "dynamodb:latency=0.1",  # latency without its size
        "dynamodb:throttle+5ms=0.1",  # a size on a fault that takes none
        "seed=x",
        "throttle",
    ],
)
def test_a_spec_that_cannot_be_read_is_refused_with_the_part_named(spec: str) -> None:
    with pytest.raises(FaultSpecError, match=r"throttle|explode|kinesis|seed|latency"):
        parse_spec(spec)
    with pytest.raises(ValidationError, match="faults"):
        Settings(faults=spec)


def test_a_spec_reads_rules_stages_schedules_and_the_seed() -> None:
    spec = parse_spec(
        "dynamodb:throttle=0.05; sqs.SendMessageBatch:partial=0.02, secretsmanager:5xx@call=calls:1-20 "
        "*:latency+30ms=secs:0-2.5 sqs.Send*:lost=1 dynamodb.UpdateItem:lost@send=0.5 seed=7"
    )
    assert spec.seed == 7
    assert [(rule.service, rule.operation, rule.fault, rule.stage) for rule in spec.rules] == [
        ("dynamodb", "*", "throttle", "send"),
        ("sqs", "SendMessageBatch", "partial", "call"),
        ("secretsmanager", "*", "5xx", "call"),
        ("*", "*", "latency", "send"),
        ("sqs", "Send*", "lost", "call"),
        ("dynamodb", "UpdateItem", "lost", "send"),
    ]
    assert spec.rules[2].calls == (1, 20)
    assert spec.rules[3].seconds == (0.0, 2.5)
    assert spec.rules[3].latency_ms == 30


# --- errors as AWS gives them ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "fault", "codes", "status"),
    [
        ("dynamodb", "throttle", {"ProvisionedThroughputExceededException", "ThrottlingException"}, 400),
        ("dynamodb", "5xx", {"InternalServerError"}, 500),
        ("sqs", "throttle", {"RequestThrottled"}, 400),
        ("sqs", "5xx", {"InternalFailure"}, 500),
        ("secretsmanager", "throttle", {"ThrottlingException"}, 400),
        ("secretsmanager", "5xx", {"InternalServiceError"}, 500),
    ],
)
def test_an_error_after_retries_is_raised_as_botocore_raises_aws_errors(
    aws: boto3.session.Session, service: str, fault: str, codes: set[str], status: int
) -> None:
    # GIVEN a client whose every call draws the fault, after botocore's retries
    makers: dict[str, Any] = {"dynamodb": dynamodb_client, "sqs": sqs_client, "secretsmanager": secretsmanager_client}
    client: Any = makers[service](aws, faults=f"{service}:{fault}@call=1")
    call = {
        "dynamodb": lambda: client.describe_table(TableName="any"),
        "sqs": lambda: client.list_queues(),  # noqa: PLW0108 - the client is one of three services
        "secretsmanager": lambda: client.get_secret_value(SecretId="any"),
    }[service]
    # WHEN it is called
    with pytest.raises(ClientError) as raised:
        call()
    # THEN the error has AWS's code and status, raised as botocore raises that code, with no retry made
    error: Any = raised.value.response
    assert error["Error"]["Code"] in codes
    assert error["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error["ResponseMetadata"]["RetryAttempts"] == 0
    assert error["ResponseMetadata"]["RequestId"]
    # (the modeled exception class for a modeled code, a plain ClientError for AWS's common errors)
    assert type(raised.value) is client.exceptions.from_code(
        error["Error"].get("QueryErrorCode", error["Error"]["Code"])
    )
    if service == "sqs":  # the JSON protocol carries the query-compatible code AWS sends in x-amzn-query-error
        assert error["Error"]["QueryErrorCode"] == error["Error"]["Code"]


def test_a_throttle_per_attempt_is_retried_by_botocore_and_the_write_happens_once(aws: boto3.session.Session) -> None:
    # GIVEN Herald's DynamoDB client whose first two PutItem attempts are throttled
    client = dynamodb_client(aws, faults="dynamodb.PutItem:throttle=calls:1-2")
    _table(client)
    # WHEN an item is put
    response = client.put_item(TableName=TABLE, Item={"pk": {"S": "a"}})
    # THEN botocore retried twice and the item is there
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    assert _item(client, "a") is not None
    injector = faults.injector_of(client)
    assert injector is not None
    assert injector.count("throttle", stage="send") == 2


def test_throttles_on_every_attempt_reach_the_caller_and_nothing_is_written(aws: boto3.session.Session) -> None:
    # GIVEN a client (one retry at most) whose every PutItem attempt is throttled
    client = _one_attempt_client(aws, "dynamodb")
    _table(client)
    install(client, "dynamodb.PutItem:throttle=1")
    # WHEN an item is put, THEN the caller gets the throttling error once botocore gave up
    with pytest.raises(ClientError) as raised:
        client.put_item(TableName=TABLE, Item={"pk": {"S": "b"}})
    assert raised.value.response["Error"]["Code"] in {"ProvisionedThroughputExceededException", "ThrottlingException"}
    assert raised.value.response["ResponseMetadata"].get("MaxAttemptsReached") is True
    assert raised.value.response["ResponseMetadata"]["RetryAttempts"] == 1
    # AND the refused write never reached the table
    assert _item(client, "b") is None


def test_a_timeout_is_botocore_s_own_and_retried(aws: boto3.session.Session) -> None:
    client = sqs_client(aws, faults="sqs.SendMessage:timeout=calls:1")
    url = client.create_queue(QueueName="timeouts")["QueueUrl"]
    assert client.send_message(QueueUrl=url, MessageBody="x")["ResponseMetadata"]["RetryAttempts"] == 1
    # AND at call level it reaches the caller as botocore's ReadTimeoutError, with nothing sent
    install(client, "sqs.SendMessage:timeout@call=1")
    with pytest.raises(ReadTimeoutError):
        client.send_message(QueueUrl=url, MessageBody="y")
    assert _bodies(client, url) == ["x"]


def test_a_lost_answer_is_a_timeout_for_a_call_that_was_carried_out(aws: boto3.session.Session) -> None:
    client = sqs_client(aws, faults="sqs.SendMessage:lost=1")
    url = client.create_queue(QueueName="lost")["QueueUrl"]
    with pytest.raises(ReadTimeoutError):
        client.send_message(QueueUrl=url, MessageBody="sent anyway")
    assert _bodies(client, url) == ["sent anyway"]


def test_a_lost_answer_at_send_level_is_sent_again_by_botocore(aws: boto3.session.Session) -> None:
    # GIVEN a client that loses the answer of every UpdateItem attempt (one a call at most)
    client = dynamodb_client(aws, faults="dynamodb.UpdateItem:lost@send=1")
    with faults.suspended():
        _table(client)

    def add() -> Any:
        return client.update_item(
            TableName=TABLE,
            Key={"pk": {"S": "n"}},
            UpdateExpression="ADD n :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="UPDATED_NEW",
        )

    # WHEN a counter is added to, twice
    first, second = add(), add()
    # THEN each call was carried out twice (its answer lost, botocore sent it again) and answered by the resend
    assert first["ResponseMetadata"]["RetryAttempts"] == 1
    assert (first["Attributes"], second["Attributes"]) == ({"n": {"N": "2"}}, {"n": {"N": "4"}})
    assert _item(client, "n") == {"pk": {"S": "n"}, "n": {"N": "4"}}
    injector = faults.injector_of(client)
    assert injector is not None
    assert [(hit.operation, hit.fault, hit.stage, hit.keys) for hit in injector.injected] == [
        ("UpdateItem", "lost", "send", ("n",)),
    ] * 2
    # AND other calls keep their answers
    assert client.get_item(TableName=TABLE, Key={"pk": {"S": "n"}})["ResponseMetadata"]["RetryAttempts"] == 0
    # AND an answer the injector gave in the service's place (a throttle: never carried out) is not the one lost
    both = dynamodb_client(aws, faults="dynamodb.UpdateItem:throttle=calls:1, dynamodb.UpdateItem:lost@send=1")
    answer = both.update_item(
        TableName=TABLE,
        Key={"pk": {"S": "m"}},
        UpdateExpression="ADD n :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
        ReturnValues="UPDATED_NEW",
    )
    assert (answer["ResponseMetadata"]["RetryAttempts"], answer["Attributes"]) == (2, {"n": {"N": "2"}})


def test_conflicts_are_dynamodb_s_transaction_errors(aws: boto3.session.Session) -> None:
    client = dynamodb_client(aws, faults="dynamodb:conflict@call=1")
    with faults.suspended():
        _table(client)
    with pytest.raises(ClientError) as raised:
        client.transact_write_items(TransactItems=[{"Put": {"TableName": TABLE, "Item": {"pk": {"S": "t"}}}}])
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert [reason["Code"] for reason in raised.value.response["CancellationReasons"]] == ["TransactionConflict"]
    with pytest.raises(client.exceptions.TransactionConflictException):
        client.update_item(
            TableName=TABLE,
            Key={"pk": {"S": "u"}},
            UpdateExpression="SET a = :a",
            ExpressionAttributeValues={":a": {"N": "1"}},
        )
    # AND reads never conflict
    assert client.get_item(TableName=TABLE, Key={"pk": {"S": "t"}}).get("Item") is None
    assert _item(client, "u") is None


def test_invalid_writes_are_dynamodb_s_refusals_of_a_malformed_item_and_are_not_retried(
    aws: boto3.session.Session,
) -> None:
    # GIVEN a client whose every write DynamoDB refuses as malformed for its item (an item over 400 KB)
    client = dynamodb_client(aws, faults="dynamodb:invalid=1")
    with faults.suspended():
        _table(client)
    # THEN a transaction is cancelled with a ValidationError reason, a single write refused with ValidationException,
    # neither retried by botocore, and Herald's table reads both as malformed
    with pytest.raises(ClientError) as raised:
        client.transact_write_items(TransactItems=[{"Put": {"TableName": TABLE, "Item": {"pk": {"S": "t"}}}}])
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert [reason["Code"] for reason in raised.value.response["CancellationReasons"]] == ["ValidationError"]
    assert raised.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    with pytest.raises(ClientError) as single:
        client.put_item(TableName=TABLE, Item={"pk": {"S": "u"}})
    assert single.value.response["Error"]["Code"] == "ValidationException"
    assert single.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    table = Table(TABLE, client=client)
    for write in (
        lambda: table.transact([{"Put": {"TableName": TABLE, "Item": {"pk": {"S": "t"}}}}]),
        lambda: table.call("put_item", Item={"pk": {"S": "u"}}),
    ):
        with pytest.raises(ServiceUnavailableError) as unavailable:
            write()
        assert malformed_request(unavailable.value)
    # AND reads are never refused so
    assert client.get_item(TableName=TABLE, Key={"pk": {"S": "t"}}).get("Item") is None


def test_a_fault_notes_the_attribute_names_of_each_item_its_call_writes_whole(aws: boto3.session.Session) -> None:
    # GIVEN a client whose every call fails after botocore's retries, and one whose batch writes fail in part
    client = dynamodb_client(aws, faults="dynamodb:throttle@call=1")
    batch = dynamodb_client(aws, faults="dynamodb.BatchWriteItem:partial=1")
    with faults.suspended():
        _table(batch)
    calls = [
        lambda: client.put_item(TableName=TABLE, Item={"pk": {"S": "a"}, "lease": {"S": "x"}}),
        lambda: client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "b"}, "n": {"N": "1"}}}},
                {"ConditionCheck": {"TableName": TABLE, "Key": {"pk": {"S": "c"}}, "ConditionExpression": "n = n"}},
            ]
        ),
        lambda: client.update_item(TableName=TABLE, Key={"pk": {"S": "d"}}, UpdateExpression="REMOVE lease"),
        lambda: client.get_item(TableName=TABLE, Key={"pk": {"S": "e"}}),
    ]
    # WHEN each call is made, and a batch of four puts
    for call in calls:
        with pytest.raises(ClientError):
            call()
    puts: list[Any] = [{"PutRequest": {"Item": {"pk": {"S": f"p{n}"}, f"a{n}": {"S": "x"}}}} for n in range(4)]
    batch.batch_write_item(RequestItems={TABLE: puts})
    # THEN each fault names, beside the keys, the items its call wrote whole by their attribute names (updates and
    # reads none), a partial batch those of the entries it dropped
    injector, batch_injector = faults.injector_of(client), faults.injector_of(batch)
    assert injector is not None
    assert batch_injector is not None
    assert [(hit.operation, hit.keys, hit.written) for hit in injector.injected] == [
        ("PutItem", ("a",), (frozenset({"pk", "lease"}),)),
        ("TransactWriteItems", ("b", "c"), (frozenset({"pk", "n"}),)),
        ("UpdateItem", ("d",), ()),
        ("GetItem", ("e",), ()),
    ]
    (dropped,) = batch_injector.injected
    assert dropped.keys
    assert dropped.written == tuple(frozenset({"pk", f"a{key[1:]}"}) for key in dropped.keys)


def test_latency_waits_before_each_attempt(aws: boto3.session.Session) -> None:
    waited: list[float] = []
    client = _one_attempt_client(aws, "sqs")
    install(client, "sqs.ListQueues:latency+250ms=1", sleep=waited.append)
    client.list_queues()
    client.list_queues()
    assert waited == [0.25, 0.25]


def test_the_same_seed_gives_the_same_faults_and_suspended_gives_none(aws: boto3.session.Session) -> None:
    def draws(seed: int) -> list[bool]:
        client = _one_attempt_client(aws, "sqs")
        install(client, f"sqs.ListQueues:throttle@call=0.3 seed={seed}")
        outcomes = []
        for _ in range(40):
            try:
                client.list_queues()
                outcomes.append(False)
            except ClientError:
                outcomes.append(True)
        return outcomes

    first = draws(7)
    assert first == draws(7)
    assert first != draws(8)
    assert 0 < sum(first) < 40
    client = sqs_client(aws, faults="sqs:throttle@call=1")
    with faults.suspended():
        client.list_queues()


# --- partial batches, and Herald's retries of them --------------------------------------------------------------


def _bodies(client: Any, url: str) -> list[str]:
    bodies: list[str] = []
    with faults.suspended():
        while messages := client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            bodies += [message["Body"] for message in messages]
    return sorted(bodies)


def test_a_partial_send_message_batch_sends_only_what_it_reports_sent(aws: boto3.session.Session) -> None:
    client = sqs_client(aws, faults="sqs.SendMessageBatch:partial=1")
    url = client.create_queue(QueueName="partial")["QueueUrl"]
    response = client.send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": f"m{n}"} for n in range(10)]
    )
    failed = {entry["Id"] for entry in response["Failed"]}
    sent = {entry["Id"] for entry in response["Successful"]}
    assert failed
    assert sent
    assert failed.isdisjoint(sent)
    assert len(failed | sent) == 10
    assert all(entry["SenderFault"] is False and entry["Code"] for entry in response["Failed"])
    assert _bodies(client, url) == sorted(f"m{n}" for n in sent)


@pytest.mark.faults("sqs.SendMessageBatch:partial=calls:1-2")
def test_the_work_queue_sends_again_what_a_batch_failed_after_a_pause(
    services: Services, aws: boto3.session.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from herald.messages import FanoutMessage

    pauses: list[float] = []
    monkeypatch.setattr("herald.queue._pause", pauses.append)
    messages = [FanoutMessage(event_id=f"evt_{n}", tenant_id="tnt_1") for n in range(10)]
    # WHEN SQS refuses some entries of the first call and of the second: THEN the third sends the rest, each
    # resend after a pause, twice as long the second time
    assert services.queue.send_batch(messages) == 3
    assert pauses == [RESEND_PAUSE_SECONDS, 2 * RESEND_PAUSE_SECONDS]
    bodies = _bodies(aws.client("sqs"), services.settings.queue_url)
    assert len(bodies) == 10
    assert all(f"evt_{n}" in "".join(bodies) for n in range(10))


@pytest.mark.faults("sqs.SendMessageBatch:partial=calls:1-3")
def test_entries_refused_three_times_stop_a_sending_that_raises_and_not_one_that_answers_each(
    services: Services, aws: boto3.session.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from herald.errors import ServiceUnavailableError
    from herald.messages import FanoutMessage

    monkeypatch.setattr("herald.queue._pause", lambda seconds: None)
    messages = [FanoutMessage(event_id=f"evt_{n}", tenant_id="tnt_1") for n in range(11)]
    # WHEN SQS refuses entries of the first call, and of both resends: THEN send_batch raises, and sends nothing
    # after them (the eleventh message, the work's continuation where a job sends one, stays unsent)
    with pytest.raises(ServiceUnavailableError, match="refused"):
        services.queue.send_batch(messages)
    bodies = _bodies(aws.client("sqs"), services.settings.queue_url)
    assert 0 < len(bodies) < 10
    assert not any('"evt_10"' in body for body in bodies)
    # WHEN the same happens to send_each (its rule's calls used, refusals of its first three calls again)
    faults.install(services.queue.client, "sqs.SendMessageBatch:partial=calls:1-3")
    sent = services.queue.send_each([(message, 0) for message in messages])
    # THEN it goes on past them: the eleventh is sent, and each answer says what went
    bodies = _bodies(aws.client("sqs"), services.settings.queue_url)
    assert sent[10] is True
    assert 0 < sent.count(False) < 10
    assert sorted(f"evt_{n}" for n, went in enumerate(sent) if went) == sorted(
        next(f"evt_{n}" for n in range(11) if f'"evt_{n}"' in body) for body in bodies
    )


@pytest.mark.parametrize(
    ("second", "unknown"),
    [
        ("sqs.SendMessageBatch:throttle@call=calls:2", False),
        ("sqs.SendMessageBatch:5xx@call=calls:2", True),
        ("sqs.SendMessageBatch:lost@call=calls:2", True),
        ("sqs.SendMessageBatch:lost@send=calls:2, sqs.SendMessageBatch:5xx@send=calls:3-6", True),
    ],
    ids=["refused", "failed", "answer-lost", "failed-after-a-lost-answer"],
)
def test_entries_taken_before_a_resend_failed_are_reported_sent_and_a_lost_answer_uncertain(
    services: Services, aws: boto3.session.Session, monkeypatch: pytest.MonkeyPatch, second: str, unknown: bool
) -> None:
    from herald.messages import FanoutMessage

    monkeypatch.setattr("herald.queue._pause", lambda seconds: None)
    messages = [FanoutMessage(event_id=f"evt_{n}", tenant_id="tnt_1") for n in range(10)]
    # GIVEN SQS takes part of a batch, and the resend of the rest fails after botocore's retries: SQS refuses it (a
    # throttle: nothing of it was taken), or answers a 5xx (it may have carried the call out), or the answer is lost
    # (SQS took it, unknown to the caller), or botocore sent it again after losing the answer and got errors until
    # it gave up (taken too)
    faults.install(services.queue.client, f"sqs.SendMessageBatch:partial=calls:1, {second}")
    # WHEN the messages are sent, each answered on its own
    outcomes = services.queue.send_each([(message, 0) for message in messages])
    # THEN each message SQS took at the first call is reported sent, the rest not sent, or not known when SQS may
    # have taken them
    bodies = _bodies(aws.client("sqs"), services.settings.queue_url)
    first = sorted(n for n in range(10) if any(f'"evt_{n}"' in body for body in bodies))
    taken = sorted(n for n, outcome in enumerate(outcomes) if outcome is True)
    rest = [outcome for outcome in outcomes if outcome is not True]
    assert 0 < len(taken) < 10
    assert rest == [None if unknown else False] * (10 - len(taken))
    if unknown and "5xx@call" not in second:
        assert set(taken) < set(first)  # the call that failed carried the rest out
        assert len(first) == 10
    else:
        assert taken == first
    # AND the same faults again count those taken first as sent again (a batch publish answers each event by them)
    faults.install(services.queue.client, f"sqs.SendMessageBatch:partial=calls:1, {second}")
    sent = services.queue.send_each([(message, 0) for message in messages])
    assert 0 < sent.count(True) < 10


@pytest.mark.faults("dynamodb.BatchWriteItem:partial=calls:1-2")
def test_unprocessed_items_of_a_batch_write_are_written_again(services: Services, tenant: TenantInfo) -> None:
    subs = bulk_subscriptions(services.store, tenant.id, "http://127.0.0.1:9/h", 10)
    injector = faults.injector_of(services.store.client)
    assert injector is not None
    assert injector.count("partial") == 2
    with faults.suspended():
        assert all(services.store.subscriptions.get(tenant.id, sub.id) is not None for sub in subs)


def test_a_subscription_is_created_through_a_transaction_conflict(
    client: TestClient, services: Services, tenant: TenantInfo
) -> None:
    # GIVEN DynamoDB cancels the next transaction for a conflict with a concurrent one (moto never does)
    injector = install(services.store.client, "dynamodb.TransactWriteItems:conflict@call=calls:1")
    # WHEN the tenant creates a subscription
    created = client.post(
        "/v1/subscriptions", json={"url": "http://127.0.0.1:9/h", "event_types": ["*"]}, headers=tenant.headers
    )
    # THEN Herald tried again and it exists, counted once on its tenant
    assert created.status_code == 201, created.text
    assert injector is not None
    assert injector.count("conflict") == 1
    with faults.suspended():
        assert services.store.subscriptions.count(tenant.id) == 1


def test_an_event_count_refused_while_a_transaction_holds_its_item_is_made_again(
    client: TestClient, services: Services, tenant: TenantInfo
) -> None:
    # GIVEN an event, and DynamoDB refusing the next two single-item writes with a transaction under way on the item
    # (dead-letter discards counting deliveries on the same event; moto never does)
    published = client.post(
        "/v1/events", json={"type": "invoice.paid", "data": INVOICE, "tenant_id": tenant.id}, headers=ADMIN
    )
    assert published.status_code == 202, published.text
    event_id = published.json()["id"]
    stored = services.store.events.get(event_id)
    assert stored is not None
    injector = install(services.store.client, "dynamodb.UpdateItem:conflict@call=calls:1-2")
    # WHEN a worker counts a delivery on it
    services.store.events.count(event_id, expires_at=stored.expires_at, succeeded=1)
    # THEN the update was made again until it went through, and counted once
    assert injector is not None
    assert injector.count("conflict") == 2
    with faults.suspended():
        counted = services.store.events.get_with_counts(event_id)
    assert counted is not None
    assert counted.succeeded == 1


def test_the_local_stack_turns_it_on_from_the_setting(
    monkeypatch: pytest.MonkeyPatch, aws: boto3.session.Session
) -> None:
    from herald.local.stack import faults_notice
    from herald.settings import get_settings

    # GIVEN HERALD_FAULTS in the environment, as `make run` gets it
    monkeypatch.setenv("HERALD_FAULTS", faults.CHAOS_MIX)
    get_settings.cache_clear()
    # WHEN the services are built the way the local stack builds them (from the environment)
    services = Services.create()
    # THEN each of Herald's clients carries the injector, and make run says which rules are on
    for client in (services.store.client, services.queue.client):
        assert faults.injector_of(client) is not None
    notice = faults_notice(faults.CHAOS_MIX)
    assert notice.startswith("FAULT INJECTION ON (HERALD_FAULTS): 8 rules")
    assert "dynamodb.* lost@send" in notice
    assert "sqs.SendMessageBatch partial@call" in notice
    with pytest.raises(FaultSpecError):
        faults_notice("dynamodb:explode=1")


def test_the_readmes_examples_are_rules_make_run_turns_on() -> None:
    from herald.local.stack import faults_notice

    # GIVEN the README's examples of HERALD_FAULTS for `make run`
    examples = readme_fault_examples()
    assert len(examples) == 2
    # THEN each is a spec the local stack turns on, with one rule for each of its parts: their calls and fault
    for example in examples:
        parts = [part for part in example.split(", ") if not part.startswith("seed=")]
        listed = faults_notice(example).split(" rules: ", 1)[1].split("; ")
        for part, rule in zip(parts, listed, strict=True):
            target, fault = part.split("=", 1)[0].split(":")
            calls, made = rule.split(" ")
            assert calls == (target if "." in target else f"{target}.*")
            assert made == fault if "@" in fault else made.startswith(f"{fault}@")
    assert "sqs.* lost@send" in faults_notice(examples[1])
