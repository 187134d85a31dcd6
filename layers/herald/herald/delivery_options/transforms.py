"""Body transforms: a JMESPath expression that turns the envelope ``{type, timestamp, data}`` into the body sent.

A subscription with ``transform: "{id: data.invoice_id, cents: data.amount_cents, kind: type}"`` receives
``{"id": "in_1001", "cents": 4900, "kind": "invoice.paid"}``, signed as sent. JMESPath is the query language of
AWS's SDKs and CLI (the ``jmespath`` package, which boto3 depends on); every JMESPath 1.0 feature works.

Checked when set (:func:`check_transform`, ``InvalidTransformError`` with located ``details`` for a 422): the
syntax (``transform_syntax``, with the character position), the functions named (``transform_unknown_function``),
the size of the expression (``transform_too_large``), and its result on each subscribed type's catalog example as
it is delivered (:func:`example_envelopes`), which must be a JSON object or array (``transform_result_not_object``)
and must not fail (``transform_failed``), exhaust the budget (``transform_too_costly``) or build too much
(``transform_result_too_large``). :func:`dry_run` returns those results, for a route that shows them.

At delivery (:meth:`CompiledTransform.apply`): the body's bytes, or a :class:`TransformError` whose
``error_kind`` is ``"transform"`` and whose ``reason`` says why; the attempt log records it and the delivery
fails without retries, since the same expression on the same event fails the same way.

Bounds against hostile expressions. JMESPath has no timeout, and its cost is not bounded by the expression's
size alone: ``[@, @] | [@, @] | ...`` doubles the result at each stage by sharing references (a few dozen
characters describe gigabytes once serialised), ``[@, @][] | [@, @][] | ...`` doubles a real list at each stage,
nested ``to_string`` doubles the escaping at each level, and ``join`` with a large separator over a long array is
quadratic. So:

- the expression is at most :data:`MAX_EXPRESSION_LENGTH` characters and :data:`MAX_AST_NODES` syntax nodes,
  :data:`MAX_AST_DEPTH` deep;
- evaluation runs under a step budget (:data:`MAX_STEPS`): every node visited (so every element a projection
  or ``map``/``sort_by`` touches) costs one, every element a flatten or slice produces costs one;
- every function pays a step per entry of each array or object it is given, and a step per 64 characters of each
  string (``reverse`` copies it, ``contains``, ``starts_with`` and the like scan it);
- ``to_string`` and ``join`` check the size of what they would build before building it and pay a step per
  64 characters built; the result's size is estimated before it is serialised, each distinct part walked once
  (a step per entry) and shared parts added per reference; over :data:`MAX_BODY_BYTES` is ``too_large``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import jmespath
from jmespath import exceptions as jmespath_errors
from jmespath.functions import Functions, signature
from jmespath.visitor import Options, TreeInterpreter

from herald.errors import InvalidInputError

if TYPE_CHECKING:
    from herald.catalog import EventCatalog

MAX_EXPRESSION_LENGTH = 1024
MAX_AST_NODES = 128
MAX_AST_DEPTH = 24
MAX_STEPS = 100_000
MAX_BODY_BYTES = 512 * 1024
#: The deepest a new transform's result on a catalog example may nest (arrays and objects within each other): a JSON
#: literal of the expression nests at one node, and an answer's encoder (pydantic's, the dry run's) stops at 255.
MAX_RESULT_DEPTH = 64
#: The deepest a stored transform's result may nest when it is run again on the examples (a dry run of its own, the
#: test event, new event types): one stored before ``MAX_RESULT_DEPTH`` kept delivering, and stays usable up to what
#: the dry run's answer can carry (255 levels, less its own two).
MAX_ANSWER_DEPTH = 250
#: The timestamp of the examples a transform is checked and dry-run against (as in the catalog's docs).
EXAMPLE_TIMESTAMP = "2026-01-01T12:00:00Z"

type Loc = tuple[str | int, ...]


class InvalidTransformError(InvalidInputError):
    """A transform that does not parse, is too large, or does not give a JSON object or array on an example."""

    code = "invalid_transform"


class TransformError(Exception):
    """A transform failed on a real event; the delivery fails with ``error_kind`` ``transform``, not retried."""

    error_kind = "transform"

    def __init__(self, reason: str, message: str) -> None:
        # A message may quote a value of the event or of the transform, and a JSON literal of the transform can be
        # a lone surrogate (`"\ud800"`), which UTF-8 cannot carry: it is written escaped, so the message can be
        # answered by the API and stored in the attempt log.
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(message)
        #: ``too_costly``, ``too_large``, ``not_object`` or ``failed``.
        self.reason = reason
        self.message = message


class _OverBudget(Exception):
    """Internal: the evaluation used its step budget or would build too large a value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


#: Building a string costs one step per this many characters (``to_string``, ``join``).
_CHARS_PER_STEP = 64
#: The functions charged otherwise: those that visit each entry of their array with an expression (each visit is a
#: step already; they check no entry's type), and those charged for what they build or compare (below). ``join`` is
#: not one: its array's entries are type-checked one by one before it builds anything, so thousands of references to a
#: long list of empty strings (nothing to build, nothing charged for it) would each be walked for free.
_CHARGED_OTHERWISE = frozenset({"map", "min_by", "max_by", "to_string", "contains"})
#: The functions that compare the strings of their array with one another, each comparison walking both (a sort of
#: thousands of references to one string of megabytes compares it whole each time, with no shortcut for the same
#: object): charged for their strings' lengths as well, a step per ``_CHARS_PER_STEP`` characters.
_COMPARING = frozenset({"sort", "max", "min"})


class _BoundedFunctions(Functions):
    """JMESPath's functions, each charged for the entries it is given, with the two that can build more than their
    input bounded and charged (``join`` for what it builds on top), and the one that compares whole values
    (``contains``) charged as a comparison is."""

    def __init__(self, interpreter: _BoundedInterpreter) -> None:
        self.interpreter = interpreter

    def call_function(self, function_name: str, resolved_args: Iterable[Any]) -> Any:
        # Every other function walks its array and object arguments (their types are checked entry by entry before the
        # call, and ``sort``, ``max``, ``sum``, ``keys``, ``merge``... go through them): a step per entry (a sort's
        # comparisons run in C, a few times faster than the interpreter's steps). A projection handing the same long
        # list to a function for each of thousands of copies would otherwise do the work of thousands of lists for a
        # few thousand steps.
        # A string argument is walked (``reverse`` copies it, ``starts_with``, ``ends_with`` and ``to_number`` scan it):
        # a step per ``_CHARS_PER_STEP`` characters, as a string built costs. Free, thousands of references to one long
        # string (a projection's copies share it) would each be reversed into a new one: seconds of work, gigabytes.
        if function_name in _CHARGED_OTHERWISE:
            return super().call_function(function_name, resolved_args)
        resolved_args = list(resolved_args)
        for arg in resolved_args:
            if isinstance(arg, list | dict):
                self.interpreter.spend(len(arg))
                if function_name in _COMPARING and isinstance(arg, list):
                    compared = sum(len(entry) for entry in arg if isinstance(entry, str))
                    self.interpreter.spend(compared // _CHARS_PER_STEP)
            elif isinstance(arg, str):
                self.interpreter.spend(len(arg) // _CHARS_PER_STEP)
        return super().call_function(function_name, resolved_args)

    def _create_key_func(self, expref: Any, allowed_types: Any, function_name: str) -> Any:
        # ``sort_by``, ``min_by``, ``max_by``: a key that is a string is compared whole, charged as its entries are.
        keyfunc = super()._create_key_func(expref, allowed_types, function_name)  # type: ignore[misc]

        def charged(value: Any) -> Any:
            key = keyfunc(value)
            if isinstance(key, str):
                self.interpreter.spend(len(key) // _CHARS_PER_STEP)
            return key

        return charged

    @signature({"types": []})
    def _func_to_string(self, arg: Any) -> str:
        if isinstance(arg, str):
            return arg
        self.interpreter.size_of(arg)
        text = json.dumps(arg, separators=(",", ":"), ensure_ascii=False)
        self.interpreter.spend(len(text) // _CHARS_PER_STEP)
        return text

    @signature({"types": ["array", "string"]}, {"types": []})
    def _func_contains(self, subject: list[Any] | str, search: Any) -> bool:
        # Looking for a value in an array compares it with each entry, and a comparison walks both values: charged
        # what they weigh as JSON, shared parts per reference (``visit_comparator``). Two copies of a value that
        # shares its parts many times over would otherwise be compared part by part, for as long as their JSON is.
        # Looking for a string in a string scans it: charged as a string walked is.
        self.interpreter.spend(
            (self.interpreter.size_of(subject) + self.interpreter.size_of(search)) // _CHARS_PER_STEP
        )
        return search in subject

    @signature({"types": ["string"]}, {"types": ["array-string"]})
    def _func_join(self, separator: str, array: list[str]) -> str:
        size = sum(len(item) for item in array) + len(separator) * max(len(array) - 1, 0)
        if size > MAX_BODY_BYTES:
            raise _OverBudget("too_large", f"join() would build {size} characters")
        self.interpreter.spend(size // _CHARS_PER_STEP)
        return separator.join(array)


def _scalar_size(value: Any) -> int:
    """A lower estimate of a string's, a number's, a boolean's or null's length as JSON."""
    if isinstance(value, str):
        return len(value) + 2
    if value is None or value is True:
        return 4  # null, true
    if value is False:
        return 5
    if isinstance(value, int):
        # Its digits, counted from its bits (never more than it has: an integer of b bits has at least
        # (b - 1) x log10(2) + 1), and its sign: a number of 4,300 digits (``to_number`` takes one, an event may
        # carry one) referenced thousands of times is thousands of 4,300-byte texts.
        bits = value.bit_length()
        return (bits - 1) * 30103 // 100_000 + 1 + (value < 0) if bits else 1
    return len(repr(value))  # a float: at most 24 characters


class _BoundedInterpreter(TreeInterpreter):
    """JMESPath's interpreter with a step budget and a size estimate (see the module docstring)."""

    def __init__(self, steps: int) -> None:
        super().__init__(Options(custom_functions=_BoundedFunctions(self)))
        self.steps_left = steps
        # id -> (the container, its estimated size): holding the container keeps its id from being reused.
        self._sizes: dict[int, tuple[object, int]] = {}

    def spend(self, steps: int) -> None:
        self.steps_left -= steps
        if self.steps_left < 0:
            raise _OverBudget("too_costly", f"the transform needs more than {MAX_STEPS} evaluation steps")

    def size_of(self, value: Any) -> int:
        """A lower estimate of ``value``'s JSON size. Each distinct container is walked once per evaluation (a
        step per entry) and shared parts are added per reference, so a value that shares one part a billion
        times costs no more to measure than the part; ``_OverBudget`` once a part is over ``MAX_BODY_BYTES``."""
        if not isinstance(value, dict | list):
            return _scalar_size(value)
        known = self._sizes.get(id(value))
        if known is not None:
            return known[1]
        self.spend(len(value))
        commas = max(len(value) - 1, 0)
        if isinstance(value, dict):
            size = 2 + commas + sum(len(key) + 3 + self.size_of(item) for key, item in value.items())
        else:
            size = 2 + commas + sum(self.size_of(item) for item in value)
        if size > MAX_BODY_BYTES:
            raise _OverBudget("too_large", f"the transform builds more than {MAX_BODY_BYTES} bytes")
        self._sizes[id(value)] = (value, size)
        return size

    def visit(self, node: Any, *args: Any, **kwargs: Any) -> Any:
        self.spend(1)
        return super().visit(node, *args, **kwargs)

    def visit_comparator(self, node: Any, value: Any) -> Any:
        # Comparing two values walks them: charge what they would weigh as JSON, shared parts per reference.
        left = self.visit(node["children"][0], value)
        right = self.visit(node["children"][1], value)
        self.spend((self.size_of(left) + self.size_of(right)) // _CHARS_PER_STEP)
        # JMESPath's own comparison semantics, on the values already computed.
        operands: list[Any] = [{"type": "literal", "value": operand, "children": []} for operand in (left, right)]
        return super().visit_comparator({"type": "comparator", "value": node["value"], "children": operands}, value)

    def visit_flatten(self, node: Any, value: Any) -> Any:
        # Charged before the merged list is built: a list of k references to one list of m entries cost about k + m
        # steps to make, and flattens into k x m entries.
        base = self.visit(node["children"][0], value)
        if not isinstance(base, list):
            return None
        self.spend(sum(len(element) if isinstance(element, list) else 1 for element in base))
        merged: list[Any] = []
        for element in base:
            if isinstance(element, list):
                merged.extend(element)
            else:
                merged.append(element)
        return merged

    def visit_slice(self, node: Any, value: Any) -> Any:
        result = super().visit_slice(node, value)
        self.spend(len(result) if isinstance(result, list) else 0)
        return result


@dataclass(frozen=True, eq=False)
class CompiledTransform:
    """A parsed, size-checked transform: :meth:`apply` it per delivery; store :attr:`expression`."""

    expression: str
    ast: Mapping[str, Any] = field(repr=False)

    def to_stored(self) -> str:
        return self.expression

    def result(self, envelope: Mapping[str, Any]) -> dict[str, Any] | list[Any]:
        """The transformed envelope as a value, or ``TransformError``."""
        interpreter = _BoundedInterpreter(MAX_STEPS)
        try:
            value = interpreter.visit(self.ast, envelope)
            interpreter.size_of(value)
        except _OverBudget as exc:
            raise TransformError(exc.reason, str(exc)) from None
        except RecursionError:
            raise TransformError("too_costly", "the transform nests too deeply") from None
        except jmespath_errors.JMESPathTypeError as exc:
            # A function given the wrong type by this event. Never as JMESPath words it: its message holds the value
            # itself, written out whole (a value sharing its parts a million times: gigabytes) before any cut.
            raise TransformError(
                "failed",
                f"In function {exc.function_name}(), invalid type for value: expected one of "
                f"{', '.join(map(str, exc.expected_types))}, received {exc.actual_type!r}"[:300],
            ) from None
        except (jmespath_errors.JMESPathError, TypeError, ValueError, OverflowError) as exc:
            # e.g. "a" < 1 (jmespath lets Python raise TypeError): messages that name types, not values
            raise TransformError("failed", str(exc)[:300]) from None
        if not isinstance(value, dict | list):
            kind = "null" if value is None else type(value).__name__
            raise TransformError("not_object", f"the transform gave {kind}, not a JSON object or array")
        return value

    def apply(self, envelope: Mapping[str, Any]) -> bytes:
        """The body to sign and send, or ``TransformError``."""
        return encode(self.result(envelope))

    def apply_to_body(self, body: bytes | str) -> bytes:
        """:meth:`apply` to an envelope given as the JSON Herald would have sent."""
        return self.apply(json.loads(body))


def _invalid(loc: Loc, message: str, kind: str) -> InvalidTransformError:
    return InvalidTransformError(message, details=[{"loc": list(loc), "msg": message, "type": kind}])


def _check_ast(ast: Mapping[str, Any], loc: Loc) -> None:
    nodes = 0
    stack: list[tuple[Any, int]] = [(ast, 1)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_AST_NODES or depth > MAX_AST_DEPTH:
            message = f"the transform is too complex: at most {MAX_AST_NODES} parts, {MAX_AST_DEPTH} levels deep"
            raise _invalid(loc, message, "transform_too_large")
        if node["type"] == "function_expression" and node["value"] not in _BoundedFunctions.FUNCTION_TABLE:
            raise _invalid(loc, f"unknown function {node['value']}()", "transform_unknown_function")
        stack.extend((child, depth + 1) for child in node.get("children", ()) if isinstance(child, dict))


def compile_transform(expression: str, *, loc: Loc = ("body", "transform")) -> CompiledTransform:
    """``expression`` parsed and size-checked, or ``InvalidTransformError`` (not yet run on any example)."""
    if not expression.strip() or len(expression) > MAX_EXPRESSION_LENGTH:
        message = f"a transform is a JMESPath expression of 1 to {MAX_EXPRESSION_LENGTH} characters"
        raise _invalid(loc, message, "transform_too_large" if expression.strip() else "transform_syntax")
    try:
        parsed = jmespath.compile(expression)
    except jmespath_errors.ParseError as exc:
        position = exc.lex_position
        message = f"not a JMESPath expression: {exc.msg} at character {position}"
        raise _invalid(loc, message, "transform_syntax") from None
    except RecursionError:
        raise _invalid(loc, "the transform nests too deeply", "transform_too_large") from None
    _check_ast(parsed.parsed, loc)
    return CompiledTransform(expression, parsed.parsed)


@lru_cache(maxsize=256)
def transform_from_stored(expression: str) -> CompiledTransform:
    """The compiled transform of a stored expression, cached: the sender calls this per delivery."""
    return compile_transform(expression, loc=())


def example_envelopes(catalog: EventCatalog, event_types: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The envelope of each subscribed type's catalog example (every type for ``*``), by type name, as a delivery
    carries it: its data is the example as published (``EventType.delivered_example``: optional fields left out
    delivered as null or their default, date-times rewritten), which a transform is applied to at delivery."""
    names = set(event_types)
    chosen = catalog.names() if "*" in names else sorted(name for name in names if name in catalog)
    return {
        name: {"type": name, "timestamp": EXAMPLE_TIMESTAMP, "data": entry.delivered_example}
        for name in chosen
        if (entry := catalog.get(name)) is not None
    }


def encode(value: dict[str, Any] | list[Any]) -> bytes:
    """A transform's result as the body sent, or ``TransformError``: JSON (no NaN or Infinity, which a transform
    can make, e.g. ``to_number('NaN')``, and no expression reference, e.g. ``{r: &data}``), at most
    ``MAX_BODY_BYTES``."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise TransformError("failed", "the transform gave NaN or Infinity, which JSON cannot carry") from None
    except TypeError:  # JMESPath's expression references (`&data`) are values too, and no JSON
        message = "the transform gave an expression reference (`&...`) where a value belongs, which JSON cannot carry"
        raise TransformError("failed", message) from None
    try:
        body = text.encode()
    except UnicodeEncodeError:
        message = 'the transform gave a lone surrogate (e.g. a JSON literal `"\\ud800"`), which UTF-8 cannot carry'
        raise TransformError("failed", message) from None
    if len(body) > MAX_BODY_BYTES:
        raise TransformError("too_large", f"the transformed body is {len(body)} bytes; at most {MAX_BODY_BYTES}")
    return body


_CHECK_KINDS = {
    "not_object": "transform_result_not_object",
    "too_costly": "transform_too_costly",
    "too_large": "transform_result_too_large",
}


def dry_run(
    compiled: CompiledTransform,
    envelopes: Mapping[str, Mapping[str, Any]],
    *,
    loc: Loc = ("body", "transform"),
    max_depth: int = MAX_ANSWER_DEPTH,
) -> dict[str, dict[str, Any] | list[Any]]:
    """The transformed example of each event type; ``InvalidTransformError`` naming each type it fails on (a result
    nested more than ``max_depth`` levels deep among its problems)."""
    results: dict[str, dict[str, Any] | list[Any]] = {}
    problems: list[dict[str, Any]] = []
    for name, envelope in envelopes.items():
        try:
            results[name] = compiled.result(envelope)
            encode(results[name])  # as a delivery sends it: a result JSON cannot carry fails every delivery
            if _deeper_than(results[name], max_depth):
                raise TransformError("too_large", f"the result nests more than {max_depth} levels deep")
        except TransformError as exc:
            kind = _CHECK_KINDS.get(exc.reason, "transform_failed")
            problems.append({"loc": list(loc), "msg": f"on the {name} example: {exc.message}", "type": kind})
    if problems:
        raise InvalidTransformError("; ".join(problem["msg"] for problem in problems), details=problems)
    return results


def _deeper_than(value: object, limit: int) -> bool:
    """Whether ``value`` nests arrays and objects more than ``limit`` levels deep (walked without recursion)."""
    level: list[tuple[object, int]] = [(value, 1)]
    while level:
        node, depth = level.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                level.append((child, depth + 1))
    return False


def check_transform(
    expression: str,
    envelopes: Mapping[str, Mapping[str, Any]],
    *,
    loc: Loc = ("body", "transform"),
    max_depth: int = MAX_RESULT_DEPTH,
) -> CompiledTransform:
    """``expression`` compiled, once it gives a JSON object or array on every example in ``envelopes`` (from
    :func:`example_envelopes`), nested at most ``max_depth`` deep (a new transform's bound by default);
    ``InvalidTransformError`` otherwise."""
    compiled = compile_transform(expression, loc=loc)
    dry_run(compiled, envelopes, loc=loc, max_depth=max_depth)
    return compiled
