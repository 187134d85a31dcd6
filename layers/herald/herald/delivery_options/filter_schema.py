"""A filter checked against the subscribed event types' JSON Schemas, when a subscription is created or changed.

:func:`check_filter` compiles the filter (shape, bounds, contradictions: :mod:`.filters`), then refuses, all in one
``InvalidFilterError`` whose ``details`` say where:

- a path that none of the subscribed types' schemas can have (``filter_unknown_path``); a path that some of them
  have is fine, a condition on it simply sees a missing field in the others;
- an operand of a type that none of those schemas allow at that path (``filter_type_mismatch``): ``"1000"`` for
  an integer, ``true`` for a string. ``null`` is always accepted (``$eq: null`` matches a missing field), integers
  and floats are both numbers, an array path accepts operands of its elements' type (MongoDB's array matching);
- an ``$eq``/``$in`` operand outside a field's ``enum``/``const``, and a ``$type`` that is not subscribed: they can
  never match (``filter_contradiction``, ``filter_unknown_event_type``);
- an ``$exists`` on a path every subscribed type always holds (``filter_contradiction``): the catalog delivers each
  declared field, null when not given, so it always holds or never matches;
- bounds on one field that no value meets (``$gt: 5, $lt: 3``), where no subscribed type's path can hold an array
  (on an array path each bound is met by any element: ``filter_contradiction``);
- a filter whose ``$type`` conditions alone rule out every subscribed type (``filter_contradiction`` at the
  filter itself): field conditions count as "may match", ``$and``, ``$or`` and ``$not`` combine the three values.

A subscribed type the catalog no longer lists (``retired``) has no schema: see :func:`check_filter`.

The schemas are those pydantic writes (``EventType.schema`` in :mod:`herald.catalog`): ``properties``,
``additionalProperties``, ``items``, local ``$ref`` to ``$defs``, ``anyOf``/``oneOf``/``allOf`` (read as "any of
these"). A schema without ``type`` accepts anything. Paths are checked against the union of the subscribed types,
not narrowed by a ``$type`` condition beside them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from herald.delivery_options.filter_eval import is_index
from herald.delivery_options.filters import (
    CompiledFilter,
    Condition,
    InvalidFilterError,
    Json,
    Loc,
    compile_filter,
    never_matches,
)

if TYPE_CHECKING:
    from herald.catalog import EventCatalog

type Schema = Mapping[str, Any]

_MAX_REF_DEPTH = 32
_TYPED_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin")


def event_schemas(catalog: EventCatalog, event_types: Iterable[str]) -> dict[str, Schema]:
    """The payload schema of each subscribed type (every type of the catalog for ``*``), by name."""
    names = set(event_types)
    chosen = catalog.names() if "*" in names else sorted(name for name in names if name in catalog)
    return {name: entry.schema for name in chosen if (entry := catalog.get(name)) is not None}


def _branches(schema: Schema, root: Schema, depth: int = 0) -> list[Schema]:
    """The concrete alternatives of ``schema``: local ``$ref`` followed, ``anyOf``/``oneOf``/``allOf`` unfolded."""
    if depth > _MAX_REF_DEPTH:
        return [{}]
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target: Any = root
        if ref.startswith("#/"):
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return _branches(target if isinstance(target, Mapping) else {}, root, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list):
            return [branch for option in options for branch in _branches(option, root, depth + 1)]
    return [schema]


def _types(schema: Schema) -> set[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {str(item) for item in declared}
    if "properties" in schema:
        return {"object"}
    if "items" in schema:
        return {"array"}
    return {"any"}


def _step(schema: Schema, root: Schema, part: str) -> list[Schema]:
    """The schemas a value one path segment further can have (none if it cannot exist)."""
    found: list[Schema] = []
    for branch in _branches(schema, root):
        types = _types(branch)
        if "any" in types:
            found.append({})
        if "object" in types:
            properties = branch.get("properties", {})
            extra = branch.get("additionalProperties", True)
            if part in properties:
                found.append(properties[part])
            elif isinstance(extra, Mapping):
                found.append(extra)
            elif extra is not False:
                found.append({})
        if "array" in types:
            items = branch.get("items", {})
            items = items if isinstance(items, Mapping) else {}
            found += [items] if is_index(part) else _step(items, root, part)
    return found


def _leaves(schema: Schema, path: tuple[str, ...]) -> list[Schema]:
    current: list[Schema] = [schema]
    for part in path:
        current = [found for node in current for found in _step(node, schema, part)]
    return [branch for node in current for branch in _branches(node, schema)]


def _always_present(schema: Schema, path: tuple[str, ...]) -> bool:
    """Whether every event of the schema's type holds ``path``, maybe as null: each step a field that every object it
    may be declares, through no array, no null and no undeclared key. The catalog delivers each field of a type's
    model, null when the publisher left it out (``EventType.validate_json``)."""
    current: list[Schema] = [schema]
    for part in path:
        branches = [branch for node in current for branch in _branches(node, schema)]
        if not branches or any(
            _types(branch) != {"object"} or part not in branch.get("properties", {}) for branch in branches
        ):
            return False
        current = [branch["properties"][part] for branch in branches]
    return True


def _exists_decided(condition: Condition) -> str:
    """Why an ``$exists`` on a path every subscribed type always holds is refused: it decides nothing."""
    dotted = ".".join(condition.path)
    given = f"{dotted!r} is in every event of the subscribed types (null, or its default, when not given)"
    if condition.operand is False:
        return never_matches(
            f"{given}: $exists: false never matches (match a value not given with null)", negated=condition.negated
        )
    held = "; under $not it never matches" if condition.negated else ": leave it out"
    return f'{given}: $exists: true always holds{held} (a value that is given is {{"$ne": null}})'


def _may_hold_several(schema: Schema, path: tuple[str, ...]) -> bool:
    """Whether ``path`` may meet an array (a schema without a type may be one) at its end, or on its way to a part
    that names a field of its items: a condition on it then tests several values, each operator met by any of them.
    An index (``items.0``) picks one item."""
    current: list[Schema] = [schema]
    for part in (*path, None):
        branches = [branch for node in current for branch in _branches(node, schema)]
        several = part is None or not is_index(part)
        if several and any(_types(branch) & {"array", "any"} for branch in branches):
            return True
        if part is not None:
            current = [found for node in current for found in _step(node, schema, part)]
    return False


def _value_kinds(leaves: list[Schema], root: Schema) -> tuple[set[str], list[Any] | None]:
    """The JSON kinds a condition can meet at the leaves (array elements included), and the values an ``enum`` or
    ``const`` limits them to (None when unlimited)."""
    kinds: set[str] = set()
    allowed: list[Any] | None = []
    for leaf in leaves:
        if "array" in _types(leaf):
            items = leaf.get("items", {})
            inner = _branches(items, root) if isinstance(items, Mapping) else [{}]
            kinds |= {kind for branch in inner for kind in _types(branch)}
            allowed = None
        kinds |= _types(leaf)
        values = [leaf["const"]] if "const" in leaf else leaf.get("enum")
        if allowed is not None and isinstance(values, list):
            allowed += values
        else:
            allowed = None
    return kinds, allowed


def _fits(operand: Json, kinds: set[str]) -> bool:
    if operand is None or "any" in kinds:
        return True
    if isinstance(operand, bool):
        return "boolean" in kinds
    if isinstance(operand, int | float):
        return bool(kinds & {"number", "integer"})
    if isinstance(operand, str):
        return "string" in kinds
    return False


def _condition_problems(condition: Condition, schemas: Mapping[str, Schema]) -> list[dict[str, Any]]:
    dotted = ".".join(condition.path)
    found = {name: _leaves(schema, condition.path) for name, schema in schemas.items()}
    having = [name for name, leaves in found.items() if leaves]
    if not having:
        message = f"no subscribed event type ({', '.join(schemas)}) has a field {dotted!r}"
        return [{"loc": list(condition.loc), "msg": message, "type": "filter_unknown_path"}]
    if condition.operator == "$exists" and all(_always_present(schema, condition.path) for schema in schemas.values()):
        return [{"loc": list(condition.loc), "msg": _exists_decided(condition), "type": "filter_contradiction"}]
    if condition.operator not in _TYPED_OPERATORS:
        return []
    kinds: set[str] = set()
    allowed: list[Any] | None = []
    for name in having:
        more, values = _value_kinds(found[name], schemas[name])
        kinds |= more
        allowed = None if allowed is None or values is None else allowed + values
    listed = condition.operator in ("$in", "$nin")
    operands = list(enumerate(condition.operand)) if listed else [(None, condition.operand)]
    problems = []
    for index, operand in operands:
        loc = [*condition.loc, index] if index is not None else list(condition.loc)
        if not _fits(operand, kinds):
            message = f"{dotted!r} holds {' or '.join(sorted(kinds))}, never {type(operand).__name__} {operand!r}"
            problems.append({"loc": loc, "msg": message, "type": "filter_type_mismatch"})
    never = allowed is not None and not any(operand is None or operand in allowed for _, operand in operands)
    if never and condition.operator in ("$eq", "$in") and not problems:
        message = never_matches(
            f"{dotted!r} is one of {allowed!r}: this condition never matches", negated=condition.negated
        )
        problems.append({"loc": list(condition.loc), "msg": message, "type": "filter_contradiction"})
    return problems


def check_filter(
    raw: Json,
    schemas: Mapping[str, Schema],
    *,
    loc: Loc = ("body", "filter"),
    retired: Collection[str] = (),
    stored: bool = False,
) -> CompiledFilter:
    """``raw`` compiled, once it fits the subscribed types' payload ``schemas`` (from :func:`event_schemas`);
    ``InvalidFilterError`` listing every problem otherwise.

    ``retired``: subscribed types the catalog no longer lists (retired by a deploy since), which have no schema. They
    stay subscribed, so a ``$type`` may name them; no new event of theirs is published, so a filter that leaves none
    of the listed types is refused as one that leaves no type. Conditions are checked against the listed types alone,
    but for a ``stored`` filter (one set before, checked again because the event types change): the conditions of an
    object whose ``$type`` conditions leave none of the listed types and some retired one (``{"$type":
    "order.shipped", "carrier": "DHL"}`` in an ``$or``) were checked when that type was listed, can only be met by its
    events (a redelivery of a stored one, or new ones should it come back), and stand. A new filter's conditions on a
    retired type cannot be checked, so they are refused: they would decide those events unchecked."""
    compiled = compile_filter(raw, loc=loc)
    problems: list[dict[str, Any]] = []
    for at, name in compiled.event_types:
        if name not in schemas and name not in retired:
            message = f"{name!r} is not one of the subscribed event types ({', '.join([*schemas, *retired])})"
            problems.append({"loc": list(at), "msg": message, "type": "filter_unknown_event_type"})
    checked: list[dict[str, Any]] = []
    for condition in compiled.conditions:
        checked += _condition_problems(condition, schemas)
    for empty in compiled.empty_ranges:
        having = [name for name, schema in schemas.items() if _leaves(schema, empty.path)]
        if having and not any(_may_hold_several(schemas[name], empty.path) for name in having):
            checked.append({"loc": list(empty.loc), "msg": empty.message, "type": "filter_contradiction"})
    if retired:
        elsewhere = _left_to_retired(raw, tuple(loc), list(schemas), retired)
        checked = _with_retired(checked, () if stored else compiled.conditions, elsewhere, retired)
    problems += checked
    if not problems and schemas and all(_verdict(raw, name) is False for name in schemas):
        message = f"the filter's $type conditions leave none of the subscribed event types ({', '.join(schemas)})"
        if retired:
            whose = "its" if len(retired) == 1 else "their"
            message += f"; {_retired_note(retired)}: none of {whose} events will be published again"
        problems.append({"loc": list(loc), "msg": message, "type": "filter_contradiction"})
    if problems:
        raise InvalidFilterError("; ".join(problem["msg"] for problem in problems), details=problems)
    return compiled


def _with_retired(
    problems: list[dict[str, Any]],
    new: Iterable[Condition],
    elsewhere: list[tuple[Loc, list[str]]],
    retired: Collection[str],
) -> list[dict[str, Any]]:
    """The conditions' ``problems`` (against the listed types) once the subscription's ``retired`` types are taken
    into account (``check_filter``): each says they were not checked against; those of a branch left to retired types
    (``elsewhere``, from ``_left_to_retired``) go; and each ``new`` condition there is a problem of its own (it cannot
    be checked)."""
    for problem in problems:
        problem["msg"] += f" ({_retired_note(retired)}, and is not checked against)"
    kept = [problem for problem in problems if not any(_within(problem["loc"], at) for at, _ in elsewhere)]
    for condition in new:
        left = next((names for at, names in elsewhere if _within(list(condition.loc), at)), None)
        if left is not None:
            kept.append(_unchecked_condition(condition, left))
    return kept


def _unchecked_condition(condition: Condition, retired: Collection[str]) -> dict[str, Any]:
    """A new filter's condition that only retired types' events can meet: there is no schema to check it against."""
    message = (
        f"{'.'.join(condition.path)!r}: only events of {', '.join(sorted(retired))} can meet this condition, and "
        f"{_retired_note(retired)}: a new condition on them cannot be checked"
    )
    return {"loc": list(condition.loc), "msg": message, "type": "filter_unchecked"}


def _retired_note(retired: Collection[str]) -> str:
    names = ", ".join(sorted(retired))
    return f"{names} {'is' if len(retired) == 1 else 'are'} no longer in the event catalog"


def _left_to_retired(raw: Json, at: Loc, listed: list[str], retired: Collection[str]) -> list[tuple[Loc, list[str]]]:
    """Where ``raw`` has an object whose ``$type`` conditions leave none of the ``listed`` types, and some ``retired``
    ones: only their events can meet what it holds. The outermost such objects, by location, each with those types."""
    if not isinstance(raw, Mapping):
        return []
    left = sorted(name for name in retired if _verdict(raw, name) is not False)
    if left and all(_verdict(raw, name) is False for name in listed):
        return [(at, left)]
    found: list[tuple[Loc, list[str]]] = []
    for key, value in raw.items():
        if key in ("$and", "$or") and isinstance(value, list):
            for index, part in enumerate(value):
                found += _left_to_retired(part, (*at, key, index), listed, retired)
        elif key == "$not":
            found += _left_to_retired(value, (*at, key), listed, retired)
    return found


def _within(problem_at: list[Any], at: Loc) -> bool:
    return tuple(problem_at[: len(at)]) == tuple(at)


# --- what the $type conditions decide alone ----------------------------------------------------------------------

#: A verdict in three values: True or False when the ``$type`` conditions decide it, None when the field
#: conditions may go either way.
type Verdict = bool | None


def _verdict(raw: Mapping[str, Json], event_type: str) -> Verdict:
    """Whether ``raw`` (a compiled filter) matches an event of ``event_type`` whatever its data."""
    return _all([_entry_verdict(key, value, event_type) for key, value in raw.items()])


def _entry_verdict(key: str, value: Json, event_type: str) -> Verdict:
    if key in ("$and", "$or"):
        parts = [_verdict(part, event_type) for part in value]
        return _all(parts) if key == "$and" else _any(parts)
    if key == "$not":
        inner = _verdict(value, event_type)
        return None if inner is None else not inner
    if key == "$type":
        operators = value if isinstance(value, dict) else {"$eq": value}
        return _all([_type_test(name, operand, event_type) for name, operand in operators.items()])
    return None  # a field condition


def _type_test(name: str, operand: Json, event_type: str) -> bool:
    names = operand if isinstance(operand, list) else [operand]  # $in, $nin; $eq, $ne
    found = event_type in names
    return found if name in ("$eq", "$in") else not found


def _all(verdicts: list[Verdict]) -> Verdict:
    if False in verdicts:
        return False
    return True if all(verdicts) else None


def _any(verdicts: list[Verdict]) -> Verdict:
    if True in verdicts:
        return True
    return False if all(verdict is False for verdict in verdicts) else None
