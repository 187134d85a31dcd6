"""Payload filters: a MongoDB-style JSON condition on an event's ``data`` and type, compiled once into closures.

A subscription with a filter receives only the events that match it, e.g.
``{"amount_cents": {"$gte": 1000}, "currency": {"$in": ["EUR", "USD"]}}``.

Grammar (a *filter* is a JSON object; its entries must all hold):

- ``"path": literal`` is ``"path": {"$eq": literal}``; ``"path": {op: operand, ...}`` applies each operator.
  Paths are dotted, relative to ``data``: ``customer.country``, ``items.sku``, ``items.0.sku``.
- Field operators: ``$eq $ne $gt $gte $lt $lte`` (scalar operand), ``$in $nin`` (array of scalars),
  ``$exists`` (boolean), ``$not`` (an object of field operators).
- Logical operators: ``$and``, ``$or`` (non-empty arrays of filters), ``$not`` (a filter; MongoDB has it only
  at field level).
- ``$type``: the event type, a string or an object of ``$eq $ne $in $nin``; useful with ``$or`` to give each
  subscribed type its own condition.

Semantics follow MongoDB's query operators where that is sensible:

- Arrays: a condition on a path holding an array matches if any element matches (``{"tags": "vip"}``
  matches ``["new", "vip"]``); a path through an array of objects looks into each (``items.sku``); a numeric
  segment indexes (``items.0.sku``).
- Missing fields and ``null``: ``$eq: null`` matches a missing field or a null; ``$ne`` and ``$nin`` match a
  missing field; ordering comparisons and ``$in`` without null never match a missing one.
- Types: ``$gt``/``$gte``/``$lt``/``$lte`` compare numbers with numbers and strings with strings (by code point,
  so ISO 8601 timestamps in one format compare in time order); any other pair does not match. ``true`` is not
  ``1``. Nothing raises at evaluation, whatever the event holds.

Differences from MongoDB: operands are scalars (no whole-object or whole-array equality), no ``$nor``,
``$regex``, ``$elemMatch``, ``$size`` or ``$type``-as-BSON-type; ``$and``/``$or`` must not be empty.

Bounds, so a filter can never make fan-out slow or routing items large (every routing item, one per subscription
and event type, carries the filter's stored form, and fan-out reads them all): at most :data:`MAX_FILTER_BYTES`
as compact JSON, :data:`MAX_DEPTH` levels of nesting, :data:`MAX_CONDITIONS` operators and
:data:`MAX_IN` operands per ``$in``/``$nin``. ``$in`` is a frozenset lookup, so its cost does not grow with its
length; the bound is about the stored size (a 10,000-element ``$in`` of short strings is ~80 KB in every routing
item of the subscription, and it is refused).

The evaluator's closures are in :mod:`.filter_eval`. Checked when set: the shape, the operators, the
bounds and self-contradictions found cheaply (``$in: []``, an empty range such as ``$gt: 5, $lt: 3``,
``$exists: false`` with a condition that needs the field) here; paths and operand types against the subscribed
event types' JSON Schemas in :mod:`herald.delivery_options.filter_schema`.
Every problem is an ``InvalidFilterError`` whose ``details`` carry ``loc`` (the path of keys and indexes to the
offending part, after ``("body", "filter")``), ``msg`` and a ``type``.

Stored form: :meth:`CompiledFilter.to_stored` is canonical compact JSON; :func:`filter_from_stored` rebuilds the
evaluator from it (about 20 µs for a typical filter) behind a small LRU cache keyed by that JSON, so fan-out
evaluates routing items with no extra read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from herald.delivery_options.filter_eval import (
    MISSING,
    ORDER,
    Predicate,
    all_of,
    any_of,
    equals,
    getter,
    is_number,
    member,
    negate,
    on_values,
    ordered,
    type_in,
)
from herald.errors import InvalidInputError

MAX_FILTER_BYTES = 4096
MAX_DEPTH = 12
MAX_CONDITIONS = 64
MAX_IN = 256
MAX_PATH_LENGTH = 256
MAX_PATH_SEGMENTS = 16

type Json = Any
type Loc = tuple[str | int, ...]

FIELD_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$not")
LOGICAL_OPERATORS = ("$and", "$or", "$not", "$type")
_SCALARS = (str, int, float, bool, type(None))


class InvalidFilterError(InvalidInputError):
    """A filter that is malformed, too large, contradicts itself or cannot apply to the subscribed event types."""

    code = "invalid_filter"


@dataclass(frozen=True)
class Condition:
    """One field operator, as the schema check needs it: where it is, on which path, with what operand."""

    loc: Loc
    path: tuple[str, ...]
    operator: str
    operand: Json
    #: Under an odd number of ``$not``: a condition that never matches makes its filter match every event.
    negated: bool = False


def never_matches(message: str, *, negated: bool) -> str:
    """``message``, saying why a condition that never matches is refused under a ``$not`` too: negated, it is a
    condition that always holds, which changes nothing the filter matches (whatever surrounds it, an ``$or``, other
    conditions, it is dead weight either way)."""
    return f"{message}; under $not it always holds: leave it out" if negated else message


@dataclass(frozen=True)
class EmptyRange:
    """Bounds on one field that no single value meets (``$gt: 5, $lt: 3``): a contradiction where the path holds one
    value, not where it goes through an array (each operator is met by any element: ``[1, 10]`` meets both). The
    schema check decides (``filter_schema.check_filter``)."""

    loc: Loc
    path: tuple[str, ...]
    message: str


@dataclass(frozen=True, eq=False)
class CompiledFilter:
    """A checked filter: evaluate with :meth:`matches`; store :meth:`to_stored`."""

    stored: str
    predicate: Predicate = field(repr=False)
    conditions: tuple[Condition, ...] = field(repr=False)
    event_types: tuple[tuple[Loc, str], ...] = field(repr=False)
    empty_ranges: tuple[EmptyRange, ...] = field(default=(), repr=False)

    def matches(self, event_type: str, data: Mapping[str, Any]) -> bool:
        """Whether an event of ``event_type`` with payload ``data`` passes; never raises for any JSON data."""
        return self.predicate(event_type, data)

    def to_stored(self) -> str:
        return self.stored


def _problem(loc: Loc, message: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": message, "type": kind}


def _fail(loc: Loc, message: str, kind: str) -> InvalidFilterError:
    return InvalidFilterError(message, details=[_problem(loc, message, kind)])


def _check_bounds(raw: Json, loc: Loc) -> str:
    """The canonical JSON of ``raw`` once its depth and size are within bounds (depth first, iteratively: a
    deeply nested value must not exhaust the stack)."""
    stack: list[tuple[Json, int]] = [(raw, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > MAX_DEPTH:
                raise _fail(loc, f"the filter nests deeper than {MAX_DEPTH} levels", "filter_too_deep")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(node, float) and not math.isfinite(node):
            raise _fail(loc, "the filter holds NaN or Infinity, which JSON cannot carry", "filter_invalid")
        elif not isinstance(node, _SCALARS):
            raise _fail(loc, "the filter must be JSON", "filter_invalid")
    stored = json.dumps(raw, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    size = len(stored.encode())
    if size > MAX_FILTER_BYTES:
        message = f"the filter is {size} bytes as JSON; at most {MAX_FILTER_BYTES}"
        raise _fail(loc, message, "filter_too_large")
    return stored


# --- Compiling -----------------------------------------------------------------------------------------


def _is_scalar(value: Json) -> bool:
    return value is None or isinstance(value, str | int | float)


def _kind(value: Json) -> str:
    return "null" if value is None else "boolean" if isinstance(value, bool) else type(value).__name__


class _Compiler:
    """One pass over a bounded filter: closures out, conditions recorded for the schema check."""

    def __init__(self) -> None:
        self.count = 0
        self.conditions: list[Condition] = []
        self.event_types: list[tuple[Loc, str]] = []
        self.empty_ranges: list[EmptyRange] = []
        #: How many ``$not`` the condition being compiled is under.
        self.negations = 0

    @property
    def negated(self) -> bool:
        return self.negations % 2 == 1

    def _negate(self, compile_it: Callable[[], Predicate]) -> Predicate:
        """The negation of what ``compile_it`` compiles, compiled as under one more ``$not``."""
        self.negations += 1
        try:
            return negate(compile_it())
        finally:
            self.negations -= 1

    def _counted(self, loc: Loc) -> None:
        self.count += 1
        if self.count > MAX_CONDITIONS:
            raise _fail(loc, f"the filter has more than {MAX_CONDITIONS} conditions", "filter_too_many_conditions")

    def filter(self, raw: Json, loc: Loc) -> Predicate:
        if not isinstance(raw, dict):
            raise _fail(loc, f"a filter is a JSON object, not {_kind(raw)}", "filter_invalid")
        return all_of([self._entry(key, value, (*loc, key)) for key, value in raw.items()])

    def _entry(self, key: str, value: Json, loc: Loc) -> Predicate:
        if key in ("$and", "$or"):
            self._counted(loc)
            if not isinstance(value, list) or not value:
                raise _fail(loc, f"{key} takes a non-empty array of filters", "filter_invalid")
            parts = [self.filter(item, (*loc, index)) for index, item in enumerate(value)]
            return all_of(parts) if key == "$and" else any_of(parts)
        if key == "$not":
            self._counted(loc)
            if value == {}:  # the empty filter matches every event: its negation none
                raise _fail(loc, "$not takes a non-empty filter: $not of {} never matches", "filter_invalid")
            return self._negate(lambda: self.filter(value, loc))
        if key == "$type":
            return self._event_type(value, loc)
        if key.startswith("$"):
            known = ", ".join(LOGICAL_OPERATORS)
            raise _fail(
                loc, f"unknown operator {key!r} here; a filter's keys are paths or {known}", "filter_unknown_operator"
            )
        return self._field(_path(key, loc), value, loc)

    def _event_type(self, value: Json, loc: Loc) -> Predicate:
        operators = value if isinstance(value, dict) else {"$eq": value}
        tests: list[Predicate] = []
        for name, operand in operators.items():
            at = loc if operators is not value else (*loc, name)
            self._counted(at)
            names = operand if name in ("$in", "$nin") else [operand]
            if name not in ("$eq", "$ne", "$in", "$nin") or not isinstance(names, list):
                raise _fail(at, "$type takes an event type name or an object of $eq, $ne, $in, $nin", "filter_invalid")
            if not names or not all(isinstance(item, str) for item in names):
                raise _fail(at, "$type compares with event type names (non-empty strings)", "filter_invalid")
            self.event_types += [
                ((*at, index) if name in ("$in", "$nin") else at, item) for index, item in enumerate(names)
            ]
            test = type_in(frozenset(names))
            tests.append(negate(test) if name in ("$ne", "$nin") else test)
        return all_of(tests)

    def _field(self, path: tuple[str, ...], value: Json, loc: Loc) -> Predicate:
        if isinstance(value, dict) and any(key.startswith("$") for key in value):
            if not all(key.startswith("$") for key in value):
                raise _fail(loc, "an object of operators cannot also hold field names", "filter_invalid")
            _check_exists(value, loc, negated=self.negated)
            if (empty := _empty_range(value)) is not None:
                self.empty_ranges.append(EmptyRange(loc, path, never_matches(empty, negated=self.negated)))
            return all_of([self._operator(path, key, operand, (*loc, key)) for key, operand in value.items()])
        return self._operator(path, "$eq", value, loc)

    def _operator(self, path: tuple[str, ...], name: str, operand: Json, loc: Loc) -> Predicate:
        self._counted(loc)
        get = getter(path)
        if name == "$not":
            if not isinstance(operand, dict) or not operand or not all(key.startswith("$") for key in operand):
                raise _fail(
                    loc, '$not on a field takes an object of operators, e.g. {"$not": {"$gt": 5}}', "filter_invalid"
                )
            return self._negate(lambda: self._field(path, operand, loc))
        self.conditions.append(Condition(loc, path, name, operand, negated=self.negated))
        if name == "$exists":
            if not isinstance(operand, bool):
                raise _fail(loc, "$exists takes true or false", "filter_invalid")
            return lambda _, data: bool(get(data)) is operand
        if name in ("$in", "$nin"):
            return self.membership(get, name, operand, loc)
        if not _is_scalar(operand):
            raise _fail(
                loc, f"{name} compares with a string, number, boolean or null, not {_kind(operand)}", "filter_invalid"
            )
        if name in ("$eq", "$ne"):
            test = on_values(get, equals(operand), when_missing=operand is None)
            return test if name == "$eq" else negate(test)
        if name in ORDER:
            if operand is None or isinstance(operand, bool):
                raise _fail(loc, f"{name} compares with a number or a string, not {_kind(operand)}", "filter_invalid")
            return on_values(get, ordered(name, operand), when_missing=False)
        known = ", ".join(FIELD_OPERATORS)
        raise _fail(loc, f"unknown operator {name!r}; field operators are {known}", "filter_unknown_operator")

    def membership(self, get: Callable[[Any], list[Any]], name: str, operand: Json, loc: Loc) -> Predicate:
        if not isinstance(operand, list) or not all(_is_scalar(item) for item in operand):
            raise _fail(loc, f"{name} takes an array of strings, numbers, booleans or nulls", "filter_invalid")
        if len(operand) > MAX_IN:
            message = f"{name} has {len(operand)} values; at most {MAX_IN}"
            raise _fail(loc, message, "filter_in_too_long")
        if name == "$in" and not operand:
            message = never_matches("$in with no values never matches", negated=self.negated)
            raise _fail(loc, message, "filter_contradiction")
        test = on_values(get, member(operand), when_missing=None in operand)
        return test if name == "$in" else negate(test)


def _path(key: str, loc: Loc) -> tuple[str, ...]:
    parts = tuple(key.split("."))
    if len(key) > MAX_PATH_LENGTH or len(parts) > MAX_PATH_SEGMENTS or not all(parts):
        message = f"a path is up to {MAX_PATH_SEGMENTS} non-empty dot-separated names, {MAX_PATH_LENGTH} characters"
        raise _fail(loc, message, "filter_invalid")
    return parts


def _check_exists(operators: dict[str, Json], loc: Loc, *, negated: bool) -> None:
    """Refuse what cannot match on one field: ``$exists: false`` beside a condition that needs a value (anything but
    ``$eq: null`` or an ``$in`` holding null)."""
    if operators.get("$exists") is False:
        for key in ("$eq", "$gt", "$gte", "$lt", "$lte", "$in"):
            operand = operators.get(key, MISSING)
            allows_missing = operand is None or (isinstance(operand, list) and None in operand)
            if operand is not MISSING and not allows_missing:
                message = f"$exists: false and {key} on the same field never match together"
                raise _fail(loc, never_matches(message, negated=negated), "filter_contradiction")


def _empty_range(operators: dict[str, Json]) -> str | None:
    """Why no single value meets the bounds of one field's operators (``EmptyRange``), if none does."""
    low = [(key, operators[key]) for key in ("$gt", "$gte") if key in operators]
    high = [(key, operators[key]) for key in ("$lt", "$lte") if key in operators]
    for low_key, low_value in low:
        for high_key, high_value in high:
            same_kind = (isinstance(low_value, str) and isinstance(high_value, str)) or (
                is_number(low_value) and is_number(high_value)
            )
            if not same_kind:
                continue
            empty = low_value > high_value or (low_value == high_value and (low_key == "$gt" or high_key == "$lt"))
            if empty:
                return f"{low_key} {low_value!r} and {high_key} {high_value!r} leave no value that can match"
    return None


def compile_filter(raw: Json, *, loc: Loc = ("body", "filter")) -> CompiledFilter:
    """Check ``raw``'s shape, bounds and obvious contradictions and compile it; ``InvalidFilterError`` otherwise.
    Paths, operand types and empty ranges are not checked against any schema here (``filter_schema.check_filter``:
    an empty range is a contradiction only on a path that holds one value)."""
    stored = _check_bounds(raw, loc)
    compiler = _Compiler()
    predicate = compiler.filter(raw, loc)
    return CompiledFilter(
        stored,
        predicate,
        tuple(compiler.conditions),
        tuple(compiler.event_types),
        tuple(compiler.empty_ranges),
    )


@lru_cache(maxsize=512)
def filter_from_stored(stored: str) -> CompiledFilter:
    """The evaluator of a stored filter (:meth:`CompiledFilter.to_stored`), cached by its JSON: fan-out calls this
    for every routing item and pays the compile once per distinct filter and container."""
    return compile_filter(json.loads(stored), loc=())
