"""API keys: prefixed by kind, 256 random bits, shown once, stored as hashes, revocable; the operator's key
comes from Secrets Manager, cached per container and picked up again after a rotation."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ConnectTimeoutError

from herald import ids
from herald.auth import UNREADABLE_RETRY_SECONDS, AdminKeyProvider
from herald.aws import secretsmanager_client
from herald.deadline import OutOfTime
from herald.domain import tenants as tenant_domain
from herald.errors import NotFoundError, ServiceUnavailableError
from herald.local.resources import load_template
from tests.api_support import assert_error
from tests.delivery_support import Harness, step
from tests.support import ADMIN, ADMIN_KEY, Clock

TENANT_KEY = re.compile(r"^hrk_[A-Za-z0-9_-]{43}$")


def test_generated_keys_carry_their_kind_and_32_random_bytes() -> None:
    # WHEN keys of both kinds are generated
    tenant_keys = {ids.new_api_key() for _ in range(200)}
    admin_key = ids.new_admin_key()
    # THEN each names its kind, carries 32 random bytes, and no two are alike
    assert len(tenant_keys) == 200
    for key in tenant_keys:
        assert TENANT_KEY.match(key), key
        assert len(base64.urlsafe_b64decode(key.removeprefix("hrk_") + "=")) == 32
        assert ids.looks_like_tenant_key(key)
    assert admin_key.startswith("hra_")
    assert len(base64.urlsafe_b64decode(admin_key.removeprefix("hra_") + "=")) == 32
    assert not ids.looks_like_tenant_key(admin_key)
    # ... and a secret of the third kind, the signing secret, is recognisable too
    assert ids.new_signing_secret().startswith("whsec_")


def test_the_deployed_admin_key_is_prefixed_and_long() -> None:
    # GIVEN the template
    resources = load_template()["Resources"]
    # THEN the admin key secret is `hra_` + the generated material, which is at least 32 characters
    secret = resources["AdminKeySecret"]["Properties"]
    assert secret["SecretString"] == {"Fn::Sub": "hra_{{resolve:secretsmanager:${AdminKeyMaterial}}}"}
    material = resources["AdminKeyMaterial"]["Properties"]["GenerateSecretString"]
    assert material["PasswordLength"] >= 43
    assert "SecretStringTemplate" not in material
    assert material["ExcludePunctuation"] is True  # the key stays one token in a header


def test_a_new_key_is_shown_once_and_listed_without_its_value(client, tenant) -> None:
    # WHEN the operator issues a second key
    created = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={}, headers=ADMIN)
    assert created.status_code == 201, created.text
    key = created.json()
    # THEN the answer carries the key once, with a recognisable prefix
    assert TENANT_KEY.match(key["key"])
    assert key["prefix"] == key["key"][:10]
    # ... and the listing names the keys without their values
    listed = client.get(f"/v1/tenants/{tenant.id}/api-keys", headers=ADMIN)
    assert listed.status_code == 200
    assert {item["id"] for item in listed.json()["data"]} >= {key["id"]}
    assert key["key"] not in listed.text
    assert tenant.key not in listed.text
    assert "key" not in listed.json()["data"][0]


def test_a_revoked_key_stops_working_at_once(client, tenant) -> None:
    # GIVEN a second key that works
    second = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={}, headers=ADMIN).json()
    headers = {"Authorization": f"Bearer {second['key']}"}
    assert client.get("/v1/subscriptions", headers=headers).status_code == 200
    # WHEN it is revoked
    assert client.delete(f"/v1/tenants/{tenant.id}/api-keys/{second['id']}", headers=ADMIN).status_code == 204
    # THEN it is refused, and the tenant's first key still works
    assert_error(client.get("/v1/subscriptions", headers=headers), 401, "unauthorized")
    assert client.get("/v1/subscriptions", headers=tenant.headers).status_code == 200
    # ... and revoking it again, or a key id of another shape, is a 404
    assert_error(client.delete(f"/v1/tenants/{tenant.id}/api-keys/{second['id']}", headers=ADMIN), 404, "not_found")
    assert_error(client.delete(f"/v1/tenants/{tenant.id}/api-keys/KEY#1", headers=ADMIN), 404, "not_found")


def test_a_key_issued_while_its_tenant_is_deleted_is_refused_not_left_working(
    client, tenant, services, monkeypatch
) -> None:
    # GIVEN a key being issued, and the tenant's whole deletion run between the issue's check of the tenant (its key
    # count) and the key's write, as a DELETE under way at the same moment would
    count_keys = services.store.tenants.count_keys

    def count_then_delete(tenant_id: str, *, up_to: int) -> int:
        counted: int = count_keys(tenant_id, up_to=up_to)
        tenant_domain.delete(services, tenant_id)
        return counted

    monkeypatch.setattr(services.store.tenants, "count_keys", count_then_delete)
    # WHEN the key is written
    issued = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={}, headers=ADMIN)
    # THEN the issue is a 404 (the tenant is gone), and no key of the tenant's works: none was left written
    assert_error(issued, 404, "not_found")
    assert client.get(f"/v1/tenants/{tenant.id}", headers=ADMIN).status_code == 404
    assert client.get("/v1/subscriptions", headers=tenant.headers).status_code == 401
    assert count_keys(tenant.id, up_to=10) == 0


def test_a_key_issued_while_its_tenant_is_deleted_after_its_keys_are_listed_is_refused(
    client, tenant, services, monkeypatch
) -> None:
    # GIVEN a deletion of the tenant under way, and a key issued between the deletion's listing of the tenant's keys
    # (to delete them) and its deletion of the tenant's item
    repository = services.store.tenants
    delete_keys = repository.delete_keys
    refused: list[Exception] = []

    def listed_then_one_issued(tenant_id: str, **kwargs: Any) -> None:
        delete_keys(tenant_id, **kwargs)
        try:
            tenant_domain.issue_key(services, tenant_id, revoke_existing=False)  # what POST .../api-keys does
        except NotFoundError as exc:
            refused.append(exc)

    monkeypatch.setattr(repository, "delete_keys", listed_then_one_issued)
    # WHEN the deletion ends
    assert client.delete(f"/v1/tenants/{tenant.id}", headers=ADMIN).status_code == 204
    # THEN that key was refused (a 404: the tenant is being deleted), and no key of the tenant's works
    assert len(refused) == 1
    assert_error(client.get("/v1/subscriptions", headers=tenant.headers), 401, "unauthorized")
    assert repository.count_keys(tenant.id, up_to=10) == 0


def _dynamodb_unavailable(*args: Any, **kwargs: Any) -> None:
    """A stand-in for a repository call that DynamoDB kept refusing (after botocore's retries)."""
    raise ServiceUnavailableError("DynamoDB did not answer")


def _noted_then_lost(repository: Any) -> Callable[..., None]:
    """``repository.confirm_rotation`` whose note is written and whose answer is then lost."""
    confirm = repository.confirm_rotation

    def noted_then_lost(*args: Any, **kwargs: Any) -> None:
        confirm(*args, **kwargs)
        raise ServiceUnavailableError("DynamoDB did not answer")

    return noted_then_lost


def _rotated_key(rotated: Any, client: Any) -> dict[str, str]:
    """The headers of the new key a rotation answered (201), checked to work."""
    assert rotated.status_code == 201, rotated.text
    new_key = {"Authorization": f"Bearer {rotated.json()['key']}"}
    assert client.get("/v1/subscriptions", headers=new_key).status_code == 200
    return new_key


@pytest.mark.parametrize("taken_back", [True, False], ids=["mark-taken-back", "mark-left"])
def test_a_deletion_that_failed_lets_the_tenant_be_given_keys_again(
    client, tenant, services, monkeypatch, taken_back: bool
) -> None:
    # GIVEN a deletion of the tenant that failed once its mark was made (its keys' deletion refused: a 503), the
    # mark then taken back, or left there (DynamoDB refused that too)
    repository = services.store.tenants
    monkeypatch.setattr(repository, "delete_keys", _dynamodb_unavailable)
    if not taken_back:
        monkeypatch.setattr(repository, "unmark_deleting", _dynamodb_unavailable)
    assert_error(client.delete(f"/v1/tenants/{tenant.id}", headers=ADMIN), 503, "service_unavailable")
    monkeypatch.undo()
    # WHEN a key is issued at once, and again a minute on
    at_once = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={}, headers=ADMIN)
    minute_on = datetime.now(UTC) + timedelta(seconds=61)
    monkeypatch.setattr(tenant_domain, "utcnow", lambda: minute_on)
    later = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={}, headers=ADMIN)
    # THEN the tenant and its key are as they were; the key issued at once is answered if the mark was taken back,
    # and a 404 if not (the tenant being deleted, for all this request knows); the later one is answered
    assert client.get(f"/v1/tenants/{tenant.id}", headers=ADMIN).status_code == 200
    assert client.get("/v1/subscriptions", headers=tenant.headers).status_code == 200
    if taken_back:
        assert at_once.status_code == 201, at_once.text
    else:
        assert_error(at_once, 404, "not_found")
    assert later.status_code == 201, later.text


def test_a_rotation_whose_second_revocation_cannot_be_queued_revokes_nothing(
    client, tenant, services, monkeypatch
) -> None:
    # GIVEN a queue that refuses the rotation's second revocation
    def unavailable(*args: Any, **kwargs: Any) -> None:
        raise ServiceUnavailableError("SQS did not answer")

    monkeypatch.setattr(services.queue, "send", unavailable)
    # WHEN a new key is issued with revoke_existing
    rotated = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={"revoke_existing": True}, headers=ADMIN)
    monkeypatch.undo()
    # THEN it is a 503, and the tenant keeps its key, alone: not locked out with a new key nobody was shown
    assert_error(rotated, 503, "service_unavailable")
    assert client.get("/v1/subscriptions", headers=tenant.headers).status_code == 200
    assert services.store.tenants.count_keys(tenant.id, up_to=10) == 1


@pytest.mark.parametrize(
    ("fails", "keys_left"),
    [("the send", 1), ("the note", 1), ("the note's answer", 1), ("the send and the new key's delete", 2)],
)
def test_a_rotation_answered_503_revokes_nothing_whatever_it_left_behind(
    client, tenant, harness: Harness, clock: Clock, monkeypatch, fails: str, keys_left: int
) -> None:
    # GIVEN a rotation whose revocation is queued, and then: the queue's answer lost (a 503 all the same); or its note
    # as done refused by DynamoDB, or written and its answer lost (it is removed again); or the queue's answer lost and
    # the delete of the new key, never to be shown, refused too (the request's time spent on the send's retries
    # refuses it so)
    queue, repository = harness.services.queue, harness.services.store.tenants
    send = queue.send

    def sent_then_lost(*args: Any, **kwargs: Any) -> None:
        send(*args, **kwargs)
        raise ServiceUnavailableError("the work queue could not be reached")

    if fails == "the note":
        monkeypatch.setattr(repository, "confirm_rotation", _dynamodb_unavailable)
    elif fails == "the note's answer":
        monkeypatch.setattr(repository, "confirm_rotation", _noted_then_lost(repository))
    else:
        monkeypatch.setattr(queue, "send", sent_then_lost)
    if fails == "the send and the new key's delete":
        monkeypatch.setattr(repository, "delete_key_with_hash", _dynamodb_unavailable)
    # WHEN a new key is issued with revoke_existing, and the queued revocation runs a minute on
    rotated = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={"revoke_existing": True}, headers=ADMIN)
    monkeypatch.undo()
    assert_error(rotated, 503, "service_unavailable")
    step(harness, clock, 61)
    # THEN the tenant keeps its key: not locked out with only a key nobody was shown (which is deleted, or left unused
    # where its delete failed)
    assert client.get("/v1/subscriptions", headers=tenant.headers).status_code == 200
    assert repository.count_keys(tenant.id, up_to=10) == keys_left


def test_a_rotation_whose_note_is_in_doubt_goes_on_and_answers_the_new_key(
    client, tenant, harness: Harness, clock: Clock, monkeypatch
) -> None:
    # GIVEN a rotation whose note as done is written but its answer lost, and whose removal DynamoDB refuses: the note
    # may be there, and then the queued revocation runs
    repository = harness.services.store.tenants
    monkeypatch.setattr(repository, "confirm_rotation", _noted_then_lost(repository))
    monkeypatch.setattr(repository, "forget_rotation", _dynamodb_unavailable)
    # WHEN a new key is issued with revoke_existing
    rotated = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={"revoke_existing": True}, headers=ADMIN)
    monkeypatch.undo()
    # THEN the rotation went on: the new key is answered, and works, the old one is revoked, and a minute on, once the
    # queued revocation ran, the new key still works
    new_key = _rotated_key(rotated, client)
    assert_error(client.get("/v1/subscriptions", headers=tenant.headers), 401, "unauthorized")
    step(harness, clock, 61)
    assert client.get("/v1/subscriptions", headers=new_key).status_code == 200


def test_a_rotation_whose_first_revocation_fails_answers_the_new_key_and_revokes_the_old_within_a_minute(
    client, tenant, harness: Harness, clock: Clock, monkeypatch
) -> None:
    # GIVEN the rotation's revocation of the older keys refused by DynamoDB
    repository = harness.services.store.tenants
    monkeypatch.setattr(repository, "delete_keys", _dynamodb_unavailable)
    # WHEN a new key is issued with revoke_existing
    rotated = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={"revoke_existing": True}, headers=ADMIN)
    monkeypatch.undo()
    # THEN the new key is answered, and works
    new_key = _rotated_key(rotated, client)
    # AND the old key is revoked by the revocation queued with it, a minute on
    step(harness, clock, 61)
    assert_error(client.get("/v1/subscriptions", headers=tenant.headers), 401, "unauthorized")
    assert client.get("/v1/subscriptions", headers=new_key).status_code == 200


def test_revoking_every_other_key_while_one_is_revoked_meanwhile_answers_the_new_key(
    client, tenant, services, monkeypatch
) -> None:
    # GIVEN a tenant with three keys, one of which another request revokes just after they are listed for a new
    # key that revokes the others
    second = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={}, headers=ADMIN).json()
    third = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={}, headers=ADMIN).json()
    repository = services.store.tenants
    listed = repository._key_items

    revoked: list[str] = []

    def listed_then_one_revoked(tenant_id: str) -> Any:
        yield from listed(tenant_id)
        if not revoked:  # once: the revoke lists the keys too
            revoked.append(second["id"])
            tenant_domain.revoke_key(services, tenant.id, second["id"])  # what DELETE .../api-keys/{id} does

    monkeypatch.setattr(repository, "_key_items", listed_then_one_revoked)
    # WHEN the new key is issued with revoke_existing
    created = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={"revoke_existing": True}, headers=ADMIN)
    monkeypatch.undo()
    # THEN it is answered, and it alone works: every other key is revoked, the third included
    _rotated_key(created, client)
    new = created.json()
    for old in (tenant.key, second["key"], third["key"]):
        assert_error(client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {old}"}), 401, "unauthorized")
    listing = client.get(f"/v1/tenants/{tenant.id}/api-keys", headers=ADMIN).json()["data"]
    assert [item["id"] for item in listing] == [new["id"]]


def test_two_keys_issued_at_once_with_revoke_existing_leave_the_later_one_working(
    client, tenant, services, monkeypatch
) -> None:
    # GIVEN a second issue with revoke_existing (another operator, a rotation job) made while the first is between
    # storing its new key and listing the others to revoke
    repository = services.store.tenants
    listed = repository._key_items
    other: list[tuple[Any, str]] = []
    started: list[bool] = []

    def listed_after_another_issue(tenant_id: str) -> Any:
        if not started:  # once: the other issue lists the keys too
            started.append(True)
            other.append(tenant_domain.issue_key(services, tenant_id, revoke_existing=True))
        yield from listed(tenant_id)

    monkeypatch.setattr(repository, "_key_items", listed_after_another_issue)
    # WHEN the first is answered
    created = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={"revoke_existing": True}, headers=ADMIN)
    monkeypatch.undo()
    assert created.status_code == 201, created.text
    first = created.json()
    (second_record, second_key) = other[0]
    # THEN the later key works, the earlier one and the tenant's first key do not: the tenant is never left without
    # a key, as it was when each revoked every key but its own
    assert second_record.id > first["id"]
    works = {"Authorization": f"Bearer {second_key}"}
    assert client.get("/v1/subscriptions", headers=works).status_code == 200
    for old in (tenant.key, first["key"]):
        assert_error(client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {old}"}), 401, "unauthorized")
    listing = client.get(f"/v1/tenants/{tenant.id}/api-keys", headers=ADMIN).json()["data"]
    assert [item["id"] for item in listing] == [second_record.id]


def test_a_key_issued_with_revoke_existing_in_the_same_millisecond_as_another_revokes_it(
    client, make_tenant, monkeypatch
) -> None:
    # GIVEN tenants each issued a key, and then one with revoke_existing, both in the same millisecond of the
    # process's clock (ids order by their millisecond, and within it by what follows)
    frozen = [1_800_000_000.123]
    monkeypatch.setattr(ids, "_last_value", ids._last_value)  # ids made later in this process, on the real clock
    monkeypatch.setattr(ids, "time", SimpleNamespace(time=lambda: frozen[0]))
    pairs = []
    for n in range(12):
        tenant = make_tenant(f"Same millisecond {n}")
        frozen[0] += 1
        old = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={}, headers=ADMIN)
        new = client.post(f"/v1/tenants/{tenant.id}/api-keys", json={"revoke_existing": True}, headers=ADMIN)
        assert (old.status_code, new.status_code) == (201, 201), (old.text, new.text)
        pairs.append((old.json(), new.json()))
    monkeypatch.undo()
    # THEN every key issued before the new one is revoked, and the new one works
    for old, new in pairs:
        assert old["id"] < new["id"]
        assert_error(
            client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {old['key']}"}), 401, "unauthorized"
        )
        assert client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {new['key']}"}).status_code == 200


def test_ids_made_in_one_millisecond_or_while_the_clock_steps_back_sort_in_the_order_they_were_made(
    monkeypatch,
) -> None:
    # GIVEN a clock that stands still, then steps back a second
    moments = iter([1_800_000_000.5] * 500 + [1_799_999_999.5] * 500)
    monkeypatch.setattr(ids, "_last_value", ids._last_value)  # ids made later in this process, on the real clock
    monkeypatch.setattr(ids, "time", SimpleNamespace(time=lambda: next(moments)))
    # WHEN ids are made meanwhile
    made = [ids.new_id(ids.API_KEY) for _ in range(1000)]
    # THEN they sort in the order they were made, none alike, each an id of its kind
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert all(ids.is_id(made_id, ids.API_KEY) for made_id in made)


def test_a_token_of_no_known_shape_is_refused_without_a_lookup(client, tenant, services, monkeypatch) -> None:
    # GIVEN a count of the API key lookups
    lookups: list[str] = []
    real = services.store.tenants.get_key

    def counting(key_hash: str) -> Any:
        lookups.append(key_hash)
        return real(key_hash)

    monkeypatch.setattr(services.store.tenants, "get_key", counting)
    # WHEN tokens that are not tenant keys are presented
    for token in ("whsec_" + "a" * 44, "hra_" + "b" * 43, tenant.key.upper(), tenant.key + "x", "x" * 47):
        assert_error(client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {token}"}), 401)
    # THEN none reached the table; a key of the right shape does
    assert lookups == []
    assert client.get("/v1/subscriptions", headers=tenant.headers).status_code == 200
    assert lookups == [ids.hash_api_key(tenant.key)]


# --- the admin key from Secrets Manager ---------------------------------------------------------------------


@pytest.fixture
def rotation(services, resources, aws):
    """The app's admin key provider on a controllable clock, and a count of the secret reads."""
    clock = Clock(1000.0)
    secrets = aws.client("secretsmanager")
    reads: list[str] = []
    secrets.meta.events.register(
        "provide-client-params.secrets-manager.GetSecretValue", lambda params, **_: reads.append(params["SecretId"])
    )
    services.admin_keys = AdminKeyProvider(services.settings, client=secrets, clock=clock)
    return clock, secrets, reads


def test_a_rotated_admin_key_is_picked_up_without_a_redeploy(client, services, resources, rotation) -> None:
    clock, secrets, reads = rotation
    # GIVEN the admin key works, so the provider has cached it
    assert client.get("/v1/tenants", headers=ADMIN).status_code == 200
    assert len(reads) == 1
    # WHEN the secret is rotated to a new key
    new_key = ids.new_admin_key()
    secrets.put_secret_value(SecretId=resources.admin_key_secret_arn, SecretString=new_key)
    new = {"Authorization": f"Bearer {new_key}"}
    # THEN the new key works once the refresh floor has passed (well before the cache expires) ...
    clock.advance(services.settings.admin_key_refresh_seconds)
    assert clock.now - 1000.0 < services.settings.admin_key_cache_seconds
    assert client.get("/v1/tenants", headers=new).status_code == 200
    assert len(reads) == 2
    # ... and the old key stops working
    assert_error(client.get("/v1/tenants", headers=ADMIN), 401, "unauthorized")


def test_a_flood_of_wrong_keys_reads_the_secret_once_per_floor(client, services, rotation) -> None:
    clock, _, reads = rotation
    assert client.get("/v1/tenants", headers=ADMIN).status_code == 200
    # WHEN many wrong keys arrive within the refresh floor
    for index in range(50):
        response = client.get("/v1/tenants", headers={"Authorization": f"Bearer hra_wrong{index}"})
        assert_error(response, 401, "unauthorized")
        clock.advance(0.1)
    # THEN the secret was not read again ...
    assert len(reads) == 1
    # ... and once per floor after that
    clock.advance(services.settings.admin_key_refresh_seconds)
    for index in range(50):
        assert client.get("/v1/tenants", headers={"Authorization": f"Bearer hra_x{index}"}).status_code == 401
    assert len(reads) == 2
    # ... while tenant-shaped keys never make it read the secret
    clock.advance(services.settings.admin_key_refresh_seconds)
    assert client.get("/v1/tenants", headers={"Authorization": f"Bearer hrk_{'a' * 43}"}).status_code == 401
    assert len(reads) == 2


def test_a_tenant_call_never_reads_the_admin_key(client, services, tenant, rotation) -> None:
    _, _, reads = rotation
    # GIVEN a fresh provider that has not read the admin key yet (a cold container)
    # WHEN a tenant calls, with a valid key and with a revoked-looking one
    assert client.get("/v1/subscriptions", headers=tenant.headers).status_code == 200
    assert_error(client.get("/v1/subscriptions", headers={"Authorization": f"Bearer hrk_{'z' * 43}"}), 401)
    # THEN the secret was never read: tenant requests do not wait on Secrets Manager
    assert reads == []
    # AND the operator's first call reads it once
    assert client.get("/v1/tenants", headers=ADMIN).status_code == 200
    assert len(reads) == 1


def _read_once_then_gone(client: Any, secrets: Any, resources: Any) -> None:
    """The operator's call reads the admin key secret (and caches it); then the secret can no longer be read."""
    assert client.get("/v1/tenants", headers=ADMIN).status_code == 200
    secrets.delete_secret(SecretId=resources.admin_key_secret_arn, ForceDeleteWithoutRecovery=True)


def test_an_unreadable_secret_on_refresh_keeps_the_cached_key(client, services, resources, rotation) -> None:
    clock, secrets, reads = rotation
    # GIVEN the secret can no longer be read
    _read_once_then_gone(client, secrets, resources)
    clock.advance(services.settings.admin_key_refresh_seconds)
    # WHEN a wrong key prompts a re-read
    response = client.get("/v1/tenants", headers={"Authorization": "Bearer hra_not-the-key"})
    # THEN the caller gets a 401 (not a 503), and the cached key still works
    assert_error(response, 401, "unauthorized")
    assert len(reads) == 2
    assert client.get("/v1/tenants", headers=ADMIN).status_code == 200
    # ... and the failed read is not retried before the floor again
    assert client.get("/v1/tenants", headers={"Authorization": "Bearer hra_other"}).status_code == 401
    assert len(reads) == 2


def test_once_the_cached_key_expired_an_unreadable_secret_is_read_once_a_second_however_many_calls(
    client, services, resources, rotation
) -> None:
    clock, secrets, reads = rotation
    # GIVEN the secret can no longer be read (Secrets Manager down, say), and the cached key expired
    _read_once_then_gone(client, secrets, resources)
    clock.advance(services.settings.admin_key_cache_seconds)
    # WHEN 50 operator calls and 50 wrong keys arrive within a second
    answers = [client.get("/v1/tenants", headers=ADMIN).status_code for _ in range(50)]
    answers += [
        client.get("/v1/tenants", headers={"Authorization": f"Bearer hra_wrong{n}"}).status_code for n in range(50)
    ]
    # THEN each is a 503, and the secret was tried once more, not once a call
    assert set(answers) == {503}
    assert len(reads) == 2
    # AND a second on, it is tried again
    clock.advance(UNREADABLE_RETRY_SECONDS)
    assert_error(client.get("/v1/tenants", headers=ADMIN), 503, "service_unavailable")
    assert len(reads) == 3


class _SecretsManager:
    """A Secrets Manager client whose reads of the secret fail as ``failure`` says, each taking ``seconds`` of
    ``clock``; the times of the reads in ``reads``."""

    def __init__(self, clock: Clock, failure: Callable[[], Exception], seconds: float) -> None:
        self.clock, self.failure, self.seconds = clock, failure, seconds
        self.reads: list[float] = []

    def get_secret_value(self, **_: Any) -> Any:
        self.reads.append(self.clock.now)
        self.clock.advance(self.seconds)
        raise self.failure()


def test_a_read_of_the_secret_that_fails_slowly_holds_the_next_back_from_when_it_ended(services) -> None:
    # GIVEN a Secrets Manager that times out, each failed read taking 2 s (botocore's tries)
    clock = Clock(1000.0)
    secrets = _SecretsManager(clock, lambda: ConnectTimeoutError(endpoint_url="https://secretsmanager.example"), 2.0)
    provider = AdminKeyProvider(services.settings, client=secrets, clock=clock)  # type: ignore[arg-type]
    # WHEN the key is asked for five times, 0.1 s apart after the first failure
    for _ in range(5):
        with pytest.raises(ServiceUnavailableError):
            provider.get()
        clock.advance(0.1)
    # THEN the secret was read once: the others fell within a second of that read's end
    assert secrets.reads == [1000.0]
    # AND past that second it is read again
    clock.advance(UNREADABLE_RETRY_SECONDS)
    with pytest.raises(ServiceUnavailableError):
        provider.get()
    assert len(secrets.reads) == 2


def test_a_read_of_the_secret_the_requests_deadline_kept_from_being_made_holds_nothing_back(services) -> None:
    # GIVEN a request whose time is up before the secret's read could be made (herald.deadline's hook refused it)
    clock = Clock(1000.0)
    secrets = _SecretsManager(clock, OutOfTime, 0.0)
    provider = AdminKeyProvider(services.settings, client=secrets, clock=clock)  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailableError):
        provider.get()
    # WHEN the next request asks for the key at once
    with pytest.raises(ServiceUnavailableError):
        provider.get()
    # THEN it tried the secret too: Secrets Manager did not fail, so nothing holds its reads back
    assert len(secrets.reads) == 2


def test_a_read_secrets_manager_failed_before_the_deadline_refused_its_retry_holds_the_next_back(services, aws) -> None:
    # GIVEN a Secrets Manager failing every attempt (500), and a request whose time is up after the first attempt (its
    # retry refused as herald.deadline refuses one: OutOfTime, raised before the attempt is sent)
    clock = Clock(1000.0)
    client = secretsmanager_client(aws, faults="secretsmanager:5xx@send=1.0")
    attempts: list[int] = []

    def out_of_time_after_the_first(**_: Any) -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) > 1:
            raise OutOfTime

    client.meta.events.register_first("before-send.secrets-manager.GetSecretValue", out_of_time_after_the_first)
    provider = AdminKeyProvider(services.settings, client=client, clock=clock)
    with pytest.raises(ServiceUnavailableError):
        provider.get()
    assert attempts == [1, 2]
    # WHEN the next request asks for the key at once
    with pytest.raises(ServiceUnavailableError):
        provider.get()
    # THEN it made no read: Secrets Manager had failed the first one
    assert attempts == [1, 2]


def test_a_cached_key_whose_secret_cannot_be_read_expires_however_many_wrong_keys_arrive(
    client, services, resources, rotation
) -> None:
    clock, secrets, reads = rotation
    # GIVEN the operator cut the function off from the secret (say the key leaked)
    _read_once_then_gone(client, secrets, resources)
    # WHEN wrong keys keep prompting re-reads, each past the refresh floor, while the cached key is still current
    floor, cache = services.settings.admin_key_refresh_seconds, services.settings.admin_key_cache_seconds
    probes = 0
    while (probes + 1) * floor < cache:
        clock.advance(floor)
        probes += 1
        assert_error(client.get("/v1/tenants", headers={"Authorization": "Bearer hra_probe"}), 401, "unauthorized")
    assert probes >= 2
    # THEN each prompted a read that failed, and once the cache's time since the key's own read is over, the key is
    # no longer taken: with the secret unreadable, a 503
    assert len(reads) == 1 + probes
    clock.advance(cache - probes * floor)
    assert_error(client.get("/v1/tenants", headers=ADMIN), 503)


def test_the_cache_still_expires(client, services, resources, rotation) -> None:
    clock, secrets, reads = rotation
    assert client.get("/v1/tenants", headers=ADMIN).status_code == 200
    secrets.put_secret_value(SecretId=resources.admin_key_secret_arn, SecretString=ids.new_admin_key())
    # WHEN the cache expires and the old key is presented
    clock.advance(services.settings.admin_key_cache_seconds)
    # THEN the secret was read again and the old key is refused
    assert_error(client.get("/v1/tenants", headers=ADMIN), 401, "unauthorized")
    assert len(reads) == 2


def test_the_admin_key_value_is_used_as_it_is(services) -> None:
    # The value in the secret is the key itself (prefixed in a deployment, any string in a local run)
    assert services.admin_keys.get() == ADMIN_KEY


def test_a_tenant_shaped_admin_key_is_refused_at_startup() -> None:
    # GIVEN an operator who configures an admin key that looks like a tenant key
    # WHEN the settings are read
    # THEN they are refused with a clear message (such a key would always be taken for a tenant key)
    from pydantic import ValidationError

    from herald.ids import new_api_key
    from herald.settings import Settings

    with pytest.raises(ValidationError, match="shape of a tenant key"):
        Settings(admin_key=new_api_key())
    # ... as is one no caller could present: longer than any credential looked at, or with spaces at an end (a
    # presented key never has them), or spaces only
    with pytest.raises(ValidationError, match="513 characters long"):
        Settings(admin_key="hra_" + "a" * 509)
    with pytest.raises(ValidationError, match="spaces at an end"):
        Settings(admin_key=" hra_abc ")
    with pytest.raises(ValidationError, match="it is empty"):
        Settings(admin_key="   ")


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        (f"hrk_{'a' * 43}", "shape of a tenant key"),
        ("hra_" + "a" * 509, "513 characters long"),
        ("hra_first\nhra_second", "printable ASCII"),
    ],
)
def test_an_admin_key_secret_no_caller_could_present_is_a_503_that_says_why(
    client, resources, rotation, caplog, written, problem
) -> None:
    _, secrets, reads = rotation
    # GIVEN an admin key secret written by hand with a value no Authorization header could match
    secrets.put_secret_value(SecretId=resources.admin_key_secret_arn, SecretString=written)
    # WHEN the operator calls (a cold container: the secret is read now)
    with caplog.at_level(logging.ERROR, logger="herald.auth"):
        response = client.get("/v1/tenants", headers=ADMIN)
    # THEN it is a 503 (the deployment is misconfigured, not the caller's key wrong), and the log says why, without
    # the value
    assert_error(response, 503, "service_unavailable")
    assert len(reads) == 1
    logged = [record.getMessage() for record in caplog.records if record.name == "herald.auth"]
    assert len(logged) == 1, logged
    assert problem in logged[0], logged
    assert written not in caplog.text
    # ... and once a usable key is written, it works
    secrets.put_secret_value(SecretId=resources.admin_key_secret_arn, SecretString=ADMIN_KEY)
    assert client.get("/v1/tenants", headers=ADMIN).status_code == 200


def test_an_empty_iterator_on_the_keys_listing_is_the_first_page(client, tenant) -> None:
    # WHEN the keys are listed with an empty iterator, as every other listing accepts
    listed = client.get(f"/v1/tenants/{tenant.id}/api-keys", params={"iterator": ""}, headers=ADMIN)
    # THEN it is the first page, not a 422
    assert listed.status_code == 200, listed.text
    assert [key["prefix"] for key in listed.json()["data"]] == [tenant.key[:10]]


@pytest.mark.parametrize("failed", ["first", "second"])
def test_a_deletion_that_failed_takes_back_its_own_mark_not_another_deletions(tenant, services, failed: str) -> None:
    # GIVEN two deletions of the tenant under way at once, begun in the same second, one of which fails and takes
    # its mark back
    repository = services.store.tenants
    now = datetime.now(UTC).timestamp()
    marks = [repository.mark_deleting(tenant.id, now), repository.mark_deleting(tenant.id, now + 0.3)]
    repository.unmark_deleting(tenant.id, marks[0 if failed == "first" else 1])
    # WHEN a key is issued while the other is under way
    key, secret = tenant_domain._new_key(tenant.id)
    # THEN it is refused: the other deletion's mark is still there
    with pytest.raises(NotFoundError):
        repository.add_key(key, ids.hash_api_key(secret), now=now + 0.5)
    # AND once that one fails too, keys are issued again
    repository.unmark_deleting(tenant.id, marks[1 if failed == "first" else 0])
    repository.add_key(key, ids.hash_api_key(secret), now=now + 0.6)
    assert repository.count_keys(tenant.id, up_to=10) == 2
