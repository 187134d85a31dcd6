"""The filter evaluator's building blocks: array-aware path lookups and per-value tests, as closures.

:mod:`.filters` compiles a filter into a tree of these; each closure takes ``(event_type, data)`` and returns a
bool, never raising for any JSON ``data`` (see the semantics there).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

#: ``(event_type, data) -> matches``
type Predicate = Callable[[str, Mapping[str, Any]], bool]
type ValueTest = Callable[[Any], bool]
type Json = Any

ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}

MISSING = object()


def is_index(part: str) -> bool:
    """Whether a path's part names a list's item: ASCII digits only (``str.isdigit`` also takes ``²``, which
    ``int`` refuses)."""
    return part.isascii() and part.isdigit()


def _collect(data: Any, parts: tuple[str, ...]) -> list[Any]:
    """Every value at ``parts`` under ``data``, looking into arrays the MongoDB way; [] when missing."""
    current = [data]
    for part in parts:
        found: list[Any] = []
        for value in current:
            if isinstance(value, dict):
                if part in value:
                    found.append(value[part])
            elif isinstance(value, list):
                if is_index(part) and int(part) < len(value):
                    found.append(value[int(part)])
                found.extend(item[part] for item in value if isinstance(item, dict) and part in item)
        current = found
    return current


def getter(parts: tuple[str, ...]) -> Callable[[Any], list[Any]]:
    """A lookup of ``parts``: a plain walk through objects, the array-aware one only once it meets an array."""
    if len(parts) == 1:
        (key,) = parts

        def one(data: Any) -> list[Any]:
            value = data.get(key, MISSING)
            return [] if value is MISSING else [value]

        return one

    def walk(data: Any) -> list[Any]:
        value = data
        for index, part in enumerate(parts):
            if isinstance(value, dict):
                value = value.get(part, MISSING)
                if value is MISSING:
                    return []
            elif isinstance(value, list):
                return _collect(value, parts[index:])
            else:
                return []
        return [value]

    return walk


def is_number(value: Any) -> bool:
    return value.__class__ is int or value.__class__ is float


def equals(operand: Json) -> ValueTest:
    if operand is None:
        return lambda value: value is None
    if isinstance(operand, bool):
        return lambda value: value is operand
    if isinstance(operand, str):
        return lambda value: value.__class__ is str and value == operand
    return lambda value: is_number(value) and value == operand


def member(operands: list[Json]) -> ValueTest:
    plain = frozenset(item for item in operands if item is not None and not isinstance(item, bool))
    flags = frozenset(item for item in operands if item is None or isinstance(item, bool))

    def test(value: Any) -> bool:
        if value is None or value.__class__ is bool:
            return value in flags
        if value.__class__ is dict or value.__class__ is list:
            return False
        return value in plain

    return test


def ordered(name: str, operand: Json) -> ValueTest:
    compare = ORDER[name]
    if isinstance(operand, str):
        return lambda value: value.__class__ is str and compare(value, operand)
    # int and float compare exactly in Python (no conversion, so no overflow for huge integers)
    return lambda value: is_number(value) and compare(value, operand)


def on_values(get: Callable[[Any], list[Any]], test: ValueTest, *, when_missing: bool) -> Predicate:
    """A field condition: ``test`` on any value at the path or any element of an array there."""

    def predicate(_: str, data: Mapping[str, Any]) -> bool:
        values = get(data)
        if not values:
            return when_missing
        for value in values:
            if test(value):
                return True
            if value.__class__ is list and any(test(item) for item in value):
                return True
        return False

    return predicate


def type_in(names: frozenset[str]) -> Predicate:
    return lambda event_type, _: event_type in names


def negate(predicate: Predicate) -> Predicate:
    return lambda event_type, data: not predicate(event_type, data)


def all_of(predicates: list[Predicate]) -> Predicate:
    if not predicates:
        return lambda _, __: True
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        first, second = predicates
        return lambda event_type, data: first(event_type, data) and second(event_type, data)
    items = tuple(predicates)
    return lambda event_type, data: all(predicate(event_type, data) for predicate in items)


def any_of(predicates: list[Predicate]) -> Predicate:
    items = tuple(predicates)
    return lambda event_type, data: any(predicate(event_type, data) for predicate in items)
