"""Body transforms: checked when set against the catalog's examples, applied per delivery as the bytes to sign,
and hostile expressions over a 256 KiB event stopped by a bound (never by time: no timing is asserted)."""

from __future__ import annotations

import functools
import json
import tracemalloc
from typing import Any

import jmespath
import pytest

from herald.catalog import catalog
from herald.delivery_options.transforms import (
    MAX_BODY_BYTES,
    MAX_EXPRESSION_LENGTH,
    CompiledTransform,
    InvalidTransformError,
    TransformError,
    check_transform,
    compile_transform,
    dry_run,
    example_envelopes,
    transform_from_stored,
)
from herald.domain import subscriptions as domain_subscriptions

ENVELOPES = example_envelopes(catalog, ["invoice.paid", "order.shipped"])
INVOICE = ENVELOPES["invoice.paid"]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("{id: data.invoice_id, cents: data.amount_cents, kind: type}", {"id": "in_1001", "cents": 4900}),
        ("[type, data.currency]", ["invoice.paid", "EUR"]),
        ("data", INVOICE["data"]),
        ("{event: @}", {"event": INVOICE}),
        ("merge(data, {source: 'herald'})", {**INVOICE["data"], "source": "herald"}),
        ("{c: to_string(data.amount_cents), j: join('-', [data.currency, type])}", {"c": "4900"}),
    ],
)
def test_a_transform_gives_the_body_sent(expression: str, expected: Any) -> None:
    # GIVEN a transform accepted for invoice.paid
    compiled = check_transform(expression, {"invoice.paid": INVOICE})
    # WHEN applied to an event, as the sender does with the body Herald would have sent
    body = compiled.apply_to_body(json.dumps(INVOICE))
    # THEN the body is the expression's JSON result (compact), what jmespath itself gives
    sent = json.loads(body)
    assert sent == jmespath.search(expression, INVOICE)
    if isinstance(expected, dict):
        assert expected.items() <= sent.items()
    else:
        assert sent == expected
    assert body == json.dumps(sent, separators=(",", ":"), ensure_ascii=False).encode()


def test_dry_run_shows_each_types_example() -> None:
    compiled = compile_transform("{kind: type, first: data.items[0].sku || data.invoice_id}")
    assert dry_run(compiled, ENVELOPES) == {
        "invoice.paid": {"kind": "invoice.paid", "first": "in_1001"},
        "order.shipped": {"kind": "order.shipped", "first": "mug-blue"},
    }


@pytest.mark.parametrize(
    ("expression", "kinds"),
    [
        ("data.", ["transform_syntax"]),
        ("{a: }", ["transform_syntax"]),
        ("   ", ["transform_syntax"]),
        ("x" * (MAX_EXPRESSION_LENGTH + 1), ["transform_too_large"]),
        ("{" + ",".join(f"k{i}: data.a{i}" for i in range(60)) + "}", ["transform_too_large"]),
        ("|".join(["[@,@]"] * 25), ["transform_too_large"]),
        ("eval(data)", ["transform_unknown_function"]),
        # wrong result on the examples: each type named
        ("data.amount_cents", ["transform_result_not_object", "transform_result_not_object"]),
        ("type", ["transform_result_not_object", "transform_result_not_object"]),
        ("data.items", ["transform_result_not_object"]),
        ("sort(data)", ["transform_failed", "transform_failed"]),
        ("abs(data.order_id)", ["transform_failed", "transform_failed"]),
        # an object, but with a number JSON cannot carry: every delivery would fail
        ("{x: to_number('NaN')}", ["transform_failed", "transform_failed"]),
        ("{x: to_number('-Infinity')}", ["transform_failed", "transform_failed"]),
        # an expression reference is a value to JMESPath, and no JSON
        ("{r: &data}", ["transform_failed", "transform_failed"]),
        ("[not_null(&data)]", ["transform_failed", "transform_failed"]),
        ("|".join(["[@,@]"] * 12), ["transform_result_too_large", "transform_result_too_large"]),
    ],
)
def test_bad_transforms_are_refused_when_set(expression: str, kinds: list[str]) -> None:
    with pytest.raises(InvalidTransformError) as caught:
        check_transform(expression, ENVELOPES)
    assert caught.value.code == "invalid_transform"
    details = caught.value.details or []
    assert [detail["type"] for detail in details] == kinds
    assert all(detail["loc"] == ["body", "transform"] for detail in details)


def test_refusals_on_examples_name_the_type() -> None:
    with pytest.raises(InvalidTransformError) as caught:
        check_transform("data.items", ENVELOPES)
    assert "invoice.paid" in caught.value.message
    assert "order.shipped" not in caught.value.message


@pytest.mark.parametrize(
    ("expression", "data", "reason"),
    [
        ("data.items", {"items": None}, "not_object"),
        ("data.items[0]", {"items": ["a"]}, "not_object"),
        ("sort(data.items)", {"items": [1, "a"]}, "failed"),
        ("[to_number(data.n)]", {"n": "NaN"}, "failed"),
        ("[data.a < data.b]", {"a": "x", "b": 1}, "failed"),
        # accepted when set (the examples take the other branch), an expression reference on this event
        ("data.big && {r: &data} || data", {"big": True}, "failed"),
    ],
)
def test_a_transform_failing_on_a_real_event_is_a_transform_error(
    expression: str, data: dict[str, Any], reason: str
) -> None:
    compiled = compile_transform(expression)
    with pytest.raises(TransformError) as caught:
        compiled.apply({"type": "x.y", "timestamp": "2026-01-01T00:00:00Z", "data": data})
    assert caught.value.error_kind == "transform"
    assert caught.value.reason == reason


def test_contains_still_finds_a_value_in_an_array_or_a_string() -> None:
    body = compile_transform("[contains(data.tags, 'vip'), contains(data.note, 'urgent'), contains(data.tags, 'x')]")
    envelope = {"type": "x.y", "timestamp": "2026-01-01T00:00:00Z", "data": {"tags": ["new", "vip"], "note": "urgent!"}}
    assert json.loads(body.apply(envelope)) == [True, True, False]


def test_a_transform_that_quotes_or_gives_a_lone_surrogate_fails_with_a_message_utf8_can_carry() -> None:
    # GIVEN transforms whose JSON literal is a lone surrogate: one failing with a message that quotes it, one giving it
    envelope = {"type": "x.y", "timestamp": "2026-01-01T00:00:00Z", "data": {}}
    for expression, says in (
        ('[abs(`"\\ud800"`)]', "invalid type"),
        ('{text: `"\\ud800"`}', "lone surrogate"),
    ):
        # WHEN applied to an event, THEN it fails, with a message that says why and encodes as UTF-8
        with pytest.raises(TransformError) as caught:
            compile_transform(expression).apply(envelope)
        assert caught.value.reason == "failed"
        assert says in caught.value.message
        caught.value.message.encode("utf-8")


def _large_event() -> dict[str, Any]:
    """An event of about 256 KiB: 1,900 items of ~100 bytes, a 40 KB string, 3,000 short strings."""
    items = [{"sku": f"sku-{index:05d}", "quantity": index, "note": "x" * 60} for index in range(1900)]
    data = {"items": items, "big": "y" * 40_000, "words": [f"w{index}" for index in range(3000)]}
    return {"type": "order.shipped", "timestamp": "2026-01-01T12:00:00Z", "data": data}


def _replicated(stages: int) -> str:
    return "(" + "|".join(["[@,@]"] * stages) + ")"


#: A string of 256 KB: 512 characters of a literal, 512 references to it, joined.
_LONG_STRING = '`"' + "x" * 512 + "\"` | [@,@,@,@,@,@,@,@] | [@,@,@,@,@,@,@,@][] | [@,@,@,@,@,@,@,@][] | join('', @)"

HOSTILE = [
    ("|".join(["[@,@]"] * 10), "too_large"),  # 2^10 references to the whole event
    ("[to_string(" + "|".join(["[@,@]"] * 8) + ")]", "too_large"),
    ("data.items" + "| [@,@][]" * 14, "too_costly"),  # a real list doubled 14 times
    ("[join(data.big, data.words)]", "too_large"),  # quadratic: 3,000 x 40 KB
    ("[" + ",".join(["@"] * 30) + "][*].[" + ",".join(["to_string(@)"] * 20) + "]", "too_costly"),
    ("data.items[?" + _replicated(6) + " == " + _replicated(6) + "]", "too_costly"),
    ("{" + ",".join(f"k{i}: data" for i in range(40)) + "}", "too_large"),
    ("map(&map(&to_string(@), [@,@,@,@,@,@,@,@]), data.items)", "too_large"),
    ("map(&map(&[@,@], [@,@,@,@]), data.items)", "too_large"),
    # two copies of a value that shares its parts 4^14 times, compared whole by contains() (a == without a step)
    ("map(&(" + "|".join(["[@,@,@,@]"] * 14) + "), [data, data]) | [contains([@[0]], @[1])]", "too_large"),
    # a function given the same long list (or object) for each of 4^6 copies of the event: each call walks it
    *(
        ("[data,data,data,data][] | " + " | ".join(["[@,@,@,@][]"] * 5) + f" | [*].{call}", "too_costly")
        for call in (
            "length(sort(words))",
            "[reverse(words)][0][0]",
            "max(words)",
            "min(words)",
            "length(not_null(items))",
        )
    ),
    # thousands of references to one string of 256 KB (joined from a literal: no event data needed), each given to a
    # function that walks it: reversed into a new string each (gigabytes), or scanned
    *(
        (
            _LONG_STRING
            + " | [@,@,@,@,@,@,@,@] | [@,@,@,@,@,@,@,@][] | [@,@,@,@,@,@,@,@][] | [@,@][]"
            + f" | [*].{call}",
            "too_costly",
        )
        for call in ("reverse(@)", "length(reverse(@))", "starts_with(@, 'y')", "contains(@, 'y')", "ends_with(@, @)")
    ),
    # a list of 8^5 empty strings, and 7^4 references to it, each joined: nothing built, but each join type-checks
    # every entry (seconds of work if the entries are not charged)
    (
        '[@] | map(&`""`, @) | '
        + " | ".join(["[@,@,@,@,@,@,@,@][]"] * 5)
        + " | "
        + " | ".join(["[@,@,@,@,@,@,@]"] * 4)
        + " | "
        + "[*]" * 4
        + ".join('', @)",
        "too_costly",
    ),
]


@pytest.mark.parametrize(("expression", "reason"), HOSTILE)
def test_hostile_transforms_over_a_large_event_stop_at_a_bound(expression: str, reason: str) -> None:
    # GIVEN an expression built to be slow or to blow up, small enough to pass the syntax and size checks
    compiled = compile_transform(expression)
    # WHEN applied to a 256 KiB event
    with pytest.raises(TransformError) as caught:
        compiled.apply(_large_event())
    # THEN a bound stops it, with a reason the attempt log can record
    assert caught.value.reason == reason


def _refused_with_its_peak(compiled: CompiledTransform) -> tuple[TransformError, int]:
    """What ``compiled`` refuses on an invoice other than the catalog's example, and the peak of the memory it took."""
    other = {**INVOICE, "data": {**INVOICE["data"], "invoice_id": "in_other"}}
    tracemalloc.start()
    try:
        with pytest.raises(TransformError) as caught:
            compiled.apply(other)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return caught.value, peak


def test_a_transform_that_copies_a_long_string_for_each_of_its_references_stops_before_it_takes_memory() -> None:
    # GIVEN a transform that gives a small body on the catalog's example (so it is accepted when set), and otherwise
    # reverses each of 4,096 references to a string of 256 KB into a new string (a gigabyte)
    bomb = _LONG_STRING + " | [@,@,@,@,@,@,@,@] | [@,@,@,@,@,@,@,@][] | [@,@,@,@,@,@,@,@][] | [@,@,@,@,@,@,@,@][]"
    expression = f"data.invoice_id == '{INVOICE['data']['invoice_id']}' && {{ok: type}} || ({bomb} | [*].reverse(@))"
    compiled = check_transform(expression, {"invoice.paid": INVOICE})
    # WHEN it is applied to another invoice
    caught, peak = _refused_with_its_peak(compiled)
    # THEN its step budget stops it after a few copies: a few megabytes, not the function's memory
    assert caught.reason == "too_costly"
    assert peak < 16 * MAX_BODY_BYTES


def test_a_transform_that_flattens_many_references_to_one_list_stops_before_it_builds_the_list() -> None:
    # GIVEN a transform that gives nothing to flatten on the catalog's example (so it is accepted when set), and
    # otherwise makes 6^5 references to a list of 6^5 references to the event, then flattens them into 6^10 entries:
    # each stage costs a few steps, the last flatten's list gigabytes
    stages = " | ".join(["[" + ",".join(["@"] * 6) + "][]"] * 5)
    expression = f"[@][?data.invoice_id != '{INVOICE['data']['invoice_id']}'] | {stages} | [@] | {stages} | []"
    compiled = check_transform(expression, {"invoice.paid": INVOICE})
    # WHEN it is applied to another invoice
    caught, peak = _refused_with_its_peak(compiled)
    # THEN its step budget stops it before the merged list is built: a few megabytes, not the function's memory
    assert caught.reason == "too_costly"
    assert peak < 16 * MAX_BODY_BYTES


#: A number of 4,300 digits (the most Python reads from text), built from a literal of 430.
_BIG_NUMBER = '`"' + "9" * 430 + "\"` | to_number(join('', [@,@,@,@,@,@,@,@,@,@]))"


@pytest.mark.parametrize("wrap", ["{}", "{{a: to_string({})}}"])
def test_many_references_to_a_huge_number_stop_before_they_are_written_out(wrap: str) -> None:
    # GIVEN a transform accepted when set, that otherwise makes 2^16 references to a number of 4,300 digits (a few
    # steps: a number was estimated at 5 bytes, and written out it is 280 MB)
    bomb = wrap.format(_BIG_NUMBER + " | [@,@,@,@,@,@,@,@]" * 5 + " | [@,@]")
    expression = f"data.invoice_id == '{INVOICE['data']['invoice_id']}' && {{ok: type}} || ({bomb})"
    compiled = check_transform(expression, {"invoice.paid": INVOICE})
    # WHEN it is applied to another invoice
    caught, peak = _refused_with_its_peak(compiled)
    # THEN its size is known before it is written: too large, a few megabytes at most
    assert caught.reason == "too_large"
    assert peak < 16 * MAX_BODY_BYTES


#: A string of 3 MB: 512 KB of control characters, each written out as six by to_string.
_ESCAPED = (
    "'" + "\x01" * 500 + "' | [@,@,@,@,@,@,@,@] | [@,@,@,@,@,@,@,@][] | [@,@,@,@,@,@,@,@][] | [@,@][] | join('', @)"
    " | to_string([@])"
)


@pytest.mark.parametrize("compare", ["sort(@)[:0]", "[max(@)][:0]"])
def test_sorting_many_references_to_a_long_string_is_charged_for_its_length(compare: str) -> None:
    # GIVEN a transform that sorts (or orders by key, or takes the largest of) 4^5 x 4 references to a string of 3 MB,
    # seven times: each comparison walks the whole string
    expression = "{n: " + _ESCAPED + " | [@,@,@,@]" + " | [@,@,@,@][]" * 5 + f" | [@,@,@,@,@,@,@] | [*].{compare}}}"
    compiled = compile_transform(expression)
    # WHEN it is applied
    with pytest.raises(TransformError) as caught:
        compiled.apply(_large_event())
    # THEN the step budget stops it at its first comparison of the whole list (it ran seven, for seconds, before)
    assert caught.value.reason == "too_costly"


def test_ordering_by_a_long_string_key_is_charged_for_the_key() -> None:
    # GIVEN a transform that orders 4^5 references to a string of 3 MB by that string (once: its entries and key
    # visits are a few thousand steps, its comparisons gigabytes)
    expression = "{n: " + _ESCAPED + " | [@,@,@,@]" + " | [@,@,@,@][]" * 4 + " | sort_by(@, &@)[:0]}"
    # WHEN it is applied, THEN its keys' length stops it
    with pytest.raises(TransformError) as caught:
        compile_transform(expression).apply(_large_event())
    assert caught.value.reason == "too_costly"


@pytest.mark.parametrize(
    ("values", "copies"),
    [
        ([12345678901] * 20_500, 2),
        ([[True] * 20] * 5_100, 1),  # each inner list the same one: walked once when sized
        ([[None] * 20] * 5_100, 1),
        ([[False] * 20] * 4_200, 1),
        ([{"a": 1}] * 64_000, 1),
    ],
    ids=["numbers", "true", "null", "false", "objects"],
)
def test_values_are_never_sized_larger_than_they_are_written(values: list[Any], copies: int) -> None:
    # A body just under the limit is sent: each value's estimate is at most its length as JSON
    event = {**INVOICE, "data": {"v": values, "n": [-1, 0, 9, 10, -(10**30), 2**64]}}
    body = compile_transform("[" + "data.v, " * copies + "data.n]").apply(event)
    assert MAX_BODY_BYTES * 0.9 < len(body) < MAX_BODY_BYTES
    assert json.loads(body)[-1] == event["data"]["n"]


def test_a_huge_value_given_to_a_function_of_another_type_is_refused_without_being_written_out() -> None:
    # GIVEN a transform accepted when set, that otherwise gives abs() a list sharing a 700-character string 2^16 times
    # (JMESPath's type error writes the value out whole in its message: 45 MB, before any cut)
    shared = '`"' + "x" * 700 + '"`' + " | [@,@]" * 16
    expression = f"data.invoice_id == '{INVOICE['data']['invoice_id']}' && {{ok: type}} || abs({shared})"
    compiled = check_transform(expression, {"invoice.paid": INVOICE})
    # WHEN it is applied to another invoice
    caught, peak = _refused_with_its_peak(compiled)
    # THEN it fails saying what was wrong, from the types alone
    assert caught.reason == "failed"
    assert "abs()" in caught.message
    assert "array" in caught.message
    assert peak < 16 * MAX_BODY_BYTES


@pytest.mark.parametrize(
    "expression",
    [
        "@",
        "data.items[*].to_string(@)",
        "sort_by(data.items, &to_string(@))",
        "{kind: type, items: data.items[*].{s: sku, q: quantity}}",
    ],
)
def test_heavy_but_honest_transforms_of_a_large_event_still_work(expression: str) -> None:
    event = _large_event()
    body = check_transform(expression, {"order.shipped": event}).apply(event)
    assert json.loads(body) == jmespath.search(expression, event)
    assert len(body) <= MAX_BODY_BYTES


def test_stored_expressions_are_compiled_once() -> None:
    expression = "{id: data.invoice_id}"
    assert transform_from_stored(expression) is transform_from_stored(expression)
    assert transform_from_stored(expression).to_stored() == expression
    assert example_envelopes(catalog, ["*"]).keys() == set(catalog.names())


@pytest.mark.parametrize("depth", [64, 65, 300])
def test_a_transform_whose_result_nests_too_deep_for_an_answer_is_refused_when_set(
    client: Any, tenant: Any, receiver: Any, depth: int
) -> None:
    # WHEN a subscription is made with a transform whose result is a JSON literal nested `depth` arrays deep (one node
    # of the expression, within its 1,024 characters)
    literal = "`" + "[" * depth + "]" * depth + "`"
    made = client.post(
        "/v1/subscriptions",
        json={"url": receiver.url, "event_types": ["invoice.paid"], "transform": literal},
        headers=tenant.headers,
    )
    if depth <= 64:
        # THEN up to 64 levels it is taken, and its dry run answers what it gives
        assert made.status_code == 201, made.text
        dry = client.post(f"/v1/subscriptions/{made.json()['id']}/transform/dry-run", headers=tenant.headers)
        assert dry.status_code == 200, dry.text
        return
    # THEN deeper, it is a 422 saying so, never a subscription whose dry run no answer can carry
    assert made.status_code == 422, made.text
    assert made.json()["error"]["details"][0]["type"] == "transform_result_too_large"
    assert "nests more than 64 levels" in made.json()["error"]["message"]


def test_a_stored_transform_deeper_than_a_new_one_may_be_stays_usable(
    client: Any, tenant: Any, receiver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a subscription whose transform nests 100 levels deep, stored before new transforms were bound to 64
    # (emulated: the bound raised while it is set)
    literal = "`" + "[" * 100 + "]" * 100 + "`"
    with monkeypatch.context() as patch:
        unbound = functools.partial(domain_subscriptions.checked_transform, max_depth=1000)
        patch.setattr(domain_subscriptions, "checked_transform", unbound)
        made = client.post(
            "/v1/subscriptions",
            json={"url": receiver.url, "event_types": ["invoice.paid"], "transform": literal},
            headers=tenant.headers,
        )
    assert made.status_code == 201, made.text
    path = f"/v1/subscriptions/{made.json()['id']}"
    # WHEN its own dry run is asked for, and its event types change (its transform checked again)
    dry = client.post(f"{path}/transform/dry-run", headers=tenant.headers)
    retyped = client.patch(path, json={"event_types": ["invoice.paid", "order.shipped"]}, headers=tenant.headers)
    # THEN both work: the transform it keeps is bound only by what an answer can carry
    assert dry.status_code == 200, dry.text
    assert retyped.status_code == 200, retyped.text
    # AND the same expression given anew is refused as a new transform
    again = client.post(f"{path}/transform/dry-run", json={"transform": literal}, headers=tenant.headers)
    assert again.status_code == 422, again.text
    assert again.json()["error"]["details"][0]["type"] == "transform_result_too_large"
