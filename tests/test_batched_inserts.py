"""A batch's first attempts are written together: PartiQL INSERTs, 25 to a call, each refused if its key is taken.

The table side (``Table.insert_all``) against moto as ``herald.local.moto_fixes`` makes it behave as DynamoDB
(a taken key is ``DuplicateItem``, never an overwrite), faults injected by ``herald.faults``; the worker side
over real HTTP, signatures checked with ``standardwebhooks``.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from herald import faults
from herald.errors import OutcomeUnknownError, ServiceUnavailableError
from herald.faults import install
from herald.messages import DeliveryMessage, WorkMessage, dump_message, pack
from herald.records import Subscription
from herald.storage.table import Table, insert_statement, inserted_item
from tests.delivery_support import (
    Harness,
    attempts,
    bulk_subscriptions,
    delivery_id_of,
    event_counts,
    invoke_bodies,
    publish,
    verify,
)
from tests.support import Received, Receiver, TenantInfo

pytestmark = pytest.mark.e2e


def _table(services: Any) -> Table:
    return Table(services.store.table_name, client=services.store.client)


def _item(n: int, **more: Any) -> dict[str, Any]:
    return {"pk": f"INSERTS#{n}", "sk": "#TEST", "n": n, **more}


# --- the table ------------------------------------------------------------------------------------------


def test_an_insert_writes_its_item_once_and_never_overwrites(services) -> None:
    # GIVEN a table, and an item written by an insert (nested values and all)
    table = _table(services)
    first = _item(1, nested={"list": [1, "two", {"three": 3.5}]}, flag=True)
    assert table.insert_all([first]) == [True]
    # WHEN an insert of another item of the same key comes with a new one
    answers = table.insert_all([_item(1, other="x"), _item(2)])
    # THEN the taken key is refused and the first item stays as it was; the new one is written
    assert answers == [False, True]
    assert table.read({"pk": "INSERTS#1", "sk": "#TEST"}) == first
    assert table.read({"pk": "INSERTS#2", "sk": "#TEST"}) == _item(2)


def test_a_key_taken_by_the_same_item_is_a_write_answered_late(services) -> None:
    # GIVEN an item written by an insert whose answer was lost (botocore sends such a call again, and DynamoDB
    # runs a statement again after an InternalServerError that had written it)
    table = _table(services)
    item = _item(40, nested={"at": 1.25, "list": ["a", 2]})
    assert table.insert_all([item]) == [True]
    # WHEN the same insert is made again, beside another item of a taken key
    answers = table.insert_all([item, _item(40, nested={"at": 9})])
    # THEN the key holding exactly this item is this write (True); the other is refused
    assert answers == [True, False]
    assert table.read({"pk": "INSERTS#40", "sk": "#TEST"}) == item


def test_a_statement_round_trips_its_item(services) -> None:
    # GIVEN an item, as DynamoDB JSON in an insert statement
    statement = insert_statement("the-table", {"pk": "a", "sk": "b", "n": 1, "gone": None, "m": {"x": [1]}})
    # THEN the statement names each attribute once, its values as parameters, and reads back as the item
    assert statement["Statement"] == """INSERT INTO "the-table" VALUE {'pk': ?, 'sk': ?, 'n': ?, 'm': ?}"""
    assert inserted_item(statement) == (
        "the-table",
        {"pk": {"S": "a"}, "sk": {"S": "b"}, "n": {"N": "1"}, "m": {"M": {"x": {"L": [{"N": "1"}]}}}},
    )
    # AND any other statement is not taken for one
    assert inserted_item({"Statement": 'DELETE FROM "t" WHERE pk = ?', "Parameters": [{"S": "a"}]}) is None
    assert inserted_item({"Statement": statement["Statement"], "Parameters": []}) is None


def test_more_than_25_items_take_more_calls_and_dynamodb_refuses_26_statements(services) -> None:
    # GIVEN 60 new items
    table = _table(services)
    calls: list[int] = []
    hook = "before-parameter-build.dynamodb.BatchExecuteStatement"
    services.store.client.meta.events.register(hook, lambda params, **_: calls.append(len(params["Statements"])))
    # WHEN they are inserted
    answers = table.insert_all([_item(n) for n in range(100, 160)])
    # THEN in three calls, all written
    assert calls == [25, 25, 10]
    assert answers == [True] * 60
    # AND a batch of 26 statements is refused whole, as DynamoDB refuses it
    statements = [insert_statement(table.name, _item(n)) for n in range(200, 226)]
    with pytest.raises(ClientError, match="less than or equal to 25"):
        services.store.client.batch_execute_statement(Statements=statements)
    assert table.read({"pk": "INSERTS#200", "sk": "#TEST"}) is None


def test_statements_dynamodb_throttled_are_run_again_in_their_place(services) -> None:
    # GIVEN DynamoDB throttling some statements of the first two batch calls (a partial failure: the call succeeds)
    table = _table(services)
    injector = install(services.store.client, "dynamodb.BatchExecuteStatement:partial=calls:1-2")
    assert injector is not None
    calls: list[list[str]] = []
    services.store.client.meta.events.register(
        "before-parameter-build.dynamodb.BatchExecuteStatement",
        lambda params, **_: calls.append([str(inserted_item(s)[1]["pk"]["S"]) for s in params["Statements"]]),  # type: ignore[index]
    )
    taken = _item(300, written="before")
    assert table.insert_all([taken]) == [True]  # the first faulted call, a batch of one: not partial
    # WHEN ten items are inserted, one of them with a taken key
    answers = table.insert_all([_item(n) for n in range(300, 310)])
    # THEN the throttled ones were run again (and only they), and each answer is that of its own item
    dropped = {label.split("/")[0] for hit in injector.injected for label in hit.keys}
    assert dropped
    assert len(calls) >= 3
    assert set(calls[2]) <= dropped | {"INSERTS#300"}
    assert answers == [False] + [True] * 9
    for n in range(301, 310):
        assert table.read({"pk": f"INSERTS#{n}", "sk": "#TEST"}) == _item(n)


def test_a_failed_call_fails_each_of_its_items(services) -> None:
    # GIVEN DynamoDB throttling a batch call after botocore's retries
    table = _table(services)
    install(services.store.client, "dynamodb.BatchExecuteStatement:throttle@call=calls:1")
    # WHEN items are inserted
    answers = table.insert_all([_item(400), _item(401)])
    # THEN each answer is the failure, and nothing was written
    assert [type(answer) for answer in answers] == [ServiceUnavailableError, ServiceUnavailableError]
    assert table.read({"pk": "INSERTS#400", "sk": "#TEST"}) is None
    # AND the next call writes them
    assert table.insert_all([_item(400), _item(401)]) == [True, True]


def test_a_call_refused_at_its_first_try_is_not_read_back(services) -> None:
    # GIVEN DynamoDB refusing a batch call at its first try (throttled, botocore's retry quota spent), and the read
    # that would tell what a call wrote refused too
    table = _table(services)
    install(
        services.store.client,
        "dynamodb.BatchExecuteStatement:throttle@call=calls:1, dynamodb.BatchGetItem:throttle@call=calls:1",
    )
    # WHEN items are inserted
    answers = table.insert_all([_item(600), _item(601)])
    # THEN each is a plain failure (nothing was written), not of unknown outcome, and no read was made
    assert [type(answer) for answer in answers] == [ServiceUnavailableError, ServiceUnavailableError]
    injector = faults.injector_of(services.store.client)
    assert injector is not None
    assert injector.count("throttle") == 1


def test_a_call_that_failed_after_retries_answers_each_item_unknown_unless_found(services) -> None:
    # GIVEN DynamoDB throttling every try of a batch call (botocore retried it: an earlier try may have timed out after
    # writing), after one item of it was written by an earlier call
    table = _table(services)
    assert table.insert_all([_item(500)]) == [True]
    install(services.store.client, "dynamodb.BatchExecuteStatement:throttle@send=1.0")
    # WHEN that item and another are inserted
    answers = table.insert_all([_item(500), _item(501)])
    # THEN the item found as written is answered written (the read-back), and the other's outcome is unknown: it may
    # have been written, or be written yet
    assert answers[0] is True
    assert type(answers[1]) is OutcomeUnknownError
    injector = faults.injector_of(services.store.client)
    assert injector is not None
    assert injector.count("throttle") > 1  # the call's every try


# --- the worker ---------------------------------------------------------------------------------------------


def _subscriptions(harness: Harness, tenant: TenantInfo, url: str, count: int) -> list[Subscription]:
    """``count`` subscriptions, each to its own path of ``url`` (``?n=<i>``)."""
    store = harness.services.store
    return [sub for n in range(count) for sub in bulk_subscriptions(store, tenant.id, f"{url}?n={n}", 1)]


def _verified(received: list[Received], subs: list[Subscription]) -> list[str]:
    """The paths of ``received``, each checked against its own subscription's secret."""
    secrets = {f"/webhook?n={n}": sub.secrets[0].secret for n, sub in enumerate(subs)}
    for got in received:
        verify(secrets[got.path], got)
    return sorted(got.path for got in received)


def _bodies(harness: Harness, event_id: str, tenant_id: str, sub_ids: list[str], *, packed: bool = False) -> list[str]:
    """The deliveries' messages: one each, or ten to a message as publishing and the fan-out queue them."""
    stored = harness.services.store.events.get(event_id)
    assert stored is not None
    messages: list[WorkMessage] = [DeliveryMessage.of(stored, tenant_id, sub_id) for sub_id in sub_ids]
    return [dump_message(message) for message in (pack(messages) if packed else messages)]


def _first_receives(
    client: Any, harness: Harness, tenant: TenantInfo, url: str, count: int
) -> tuple[list[Subscription], str, list[str]]:
    """``count`` subscriptions of ``url`` (a path each), an event published to them, and the bodies of its
    deliveries' messages; the worker writes only when a call is full or nothing else can come (no time window:
    what a call holds is then the same on any machine), and the table's calls recorded from here."""
    subs = _subscriptions(harness, tenant, url, count)
    event_id = publish(client, tenant.id)
    harness.worker.inserts.window = 3600
    harness.table_calls.clear()
    return subs, event_id, _bodies(harness, event_id, tenant.id, [sub.id for sub in subs])


def _kind(item: dict[str, Any]) -> str:
    """An attempt is kept under its delivery's id, a delivery under its subscription (``storage.keys``)."""
    return "attempt" if item["sk"]["S"].startswith("ATTEMPT#") else "delivery"


def _inserted_per_call(harness: Harness) -> list[list[dict[str, Any]]]:
    return [
        [found[1] for statement in call.params["Statements"] if (found := inserted_item(statement))]
        for call in harness.table_calls.of("BatchExecuteStatement")
    ]


@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": 0}])
@pytest.mark.parametrize("packed", [False, True], ids=["a message each", "ten to a message"])
def test_a_batch_writes_its_first_attempts_25_to_a_call(
    client, tenant: TenantInfo, harness: Harness, receiver: Receiver, packed: bool
) -> None:
    # GIVEN 30 subscriptions to one event, and a worker that writes only when a call is full or nothing else can
    # come (each delivery a message carries counts as one at work)
    subs, event_id, bodies = _first_receives(client, harness, tenant, receiver.url, 30)
    if packed:
        bodies = _bodies(harness, event_id, tenant.id, [sub.id for sub in subs], packed=True)
        assert len(bodies) == 3
    # WHEN one batch holds the 30 deliveries
    result = invoke_bodies(harness, bodies)
    # THEN each was sent once, signed, and the batch wrote them in two calls: 25, then the 5 left
    assert result["batchItemFailures"] == []
    assert _verified(receiver.received, subs) == sorted(f"/webhook?n={n}" for n in range(30))
    inserted = _inserted_per_call(harness)
    assert sorted(len(call) for call in inserted) == [5, 25]  # made side by side: either may be recorded first
    written = sorted(item["sk"]["S"] for call in inserted for item in call)
    assert written == sorted(delivery_id_of(harness.services.store, event_id, sub.id) for sub in subs)
    assert not [call for call in harness.table_calls.of("PutItem") if call.params["Item"]["sk"]["S"] in written]
    # AND each delivery holds its one attempt, and the event counts them all
    harness.drain()  # the stream's stats; the fan-out's own messages find their deliveries settled
    assert len(receiver.received) == 30
    first = subs[0]
    log = attempts(client, tenant, first.id, delivery_id_of(harness.services.store, event_id, first.id))
    assert [(a["attempt_number"], a["status_code"]) for a in log] == [(1, 200)]
    assert event_counts(client, event_id)["succeeded"] == 30


@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": 0}])
def test_a_failed_first_attempt_writes_its_attempt_before_its_delivery(
    client, tenant: TenantInfo, harness: Harness, make_receiver
) -> None:
    # GIVEN three subscribers that answer 500
    failing = make_receiver()
    failing.default = (500, {}, b"down", 0.0)
    subs, event_id, bodies = _first_receives(client, harness, tenant, failing.url, 3)
    # WHEN one batch makes their first attempts
    result = invoke_bodies(harness, bodies)
    # THEN the attempts were written in one call, then the deliveries, pending, in another
    assert result["batchItemFailures"] == []
    inserted = _inserted_per_call(harness)
    assert [[_kind(item) for item in call] for call in inserted] == [["attempt"] * 3, ["delivery"] * 3]
    assert {item["status"]["S"] for item in inserted[1]} == {"pending"}
    for sub in subs:
        log = attempts(client, tenant, sub.id, delivery_id_of(harness.services.store, event_id, sub.id))
        assert [(a["attempt_number"], a["status_code"]) for a in log] == [(1, 500)]


@pytest.mark.parametrize("settings_overrides", [{"direct_fanout_max": 0}])
def test_a_write_that_failed_after_its_send_loses_nothing(
    client, tenant: TenantInfo, harness: Harness, receiver: Receiver
) -> None:
    # GIVEN four deliveries, and DynamoDB throttling the batch's first write after botocore's retries
    subs, event_id, bodies = _first_receives(client, harness, tenant, receiver.url, 4)
    install(harness.services.store.client, "dynamodb.BatchExecuteStatement:throttle@call=calls:1")
    # WHEN one batch sends them and its write fails
    result = invoke_bodies(harness, bodies)
    # THEN every record of that write failed (its message comes back to the queue), though each was sent
    assert len(result["batchItemFailures"]) == 4
    assert _verified(receiver.received, subs) == sorted(f"/webhook?n={n}" for n in range(4))
    # WHEN the deliveries' messages come (the event's fan-out queues them, as SQS would show the failed ones again)
    harness.drain()
    # THEN each delivery was made again (a duplicate, of a send whose record was lost: one webhook-id) and
    # recorded once; nothing is lost
    assert _verified(receiver.received, subs) == sorted([f"/webhook?n={n}" for n in range(4)] * 2)
    assert len({got.headers["webhook-id"] for got in receiver.received}) == 1
    for sub in subs:
        log = attempts(client, tenant, sub.id, delivery_id_of(harness.services.store, event_id, sub.id))
        assert [(a["attempt_number"], a["status_code"]) for a in log] == [(1, 200)]


def test_a_batch_read_of_many_keys_finds_each_item_once(services) -> None:
    # GIVEN 250 items, one of them expired, and keys for them and for 5 items that do not exist
    table = _table(services)
    expired = int(table.clock()) - 1
    assert (
        table.insert_all([_item(n, **({"expires_at": expired} if n == 510 else {})) for n in range(500, 750)])
        == [True] * 250
    )
    calls: list[int] = []
    hook = "before-parameter-build.dynamodb.BatchGetItem"
    services.store.client.meta.events.register(
        hook, lambda params, **_: calls.append(len(next(iter(params["RequestItems"].values()))["Keys"]))
    )
    wanted = [{"pk": f"INSERTS#{n}", "sk": "#TEST"} for n in range(500, 755)]
    # WHEN they are read in one batch read (its calls made side by side)
    found = table.batch_get(wanted, consistent=False)
    # THEN 100 keys went to a call, and each unexpired item came back once
    assert sorted(calls) == [55, 100, 100]
    assert sorted(item["n"] for item in found) == [n for n in range(500, 750) if n != 510]
