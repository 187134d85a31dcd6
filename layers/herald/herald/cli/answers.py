"""The API's answers checked before a command reads them: one of another shape is ``invalid_response``.

A 2xx answer that is not what Herald's API sends (an empty body, another service at the URL, a broken deployment)
must end the command as any other error does, never in a traceback halfway through it. Each command names the
fields it reads and what each holds (``checked(answer, data=OBJECT)``); a field absent or null may always be (the
command has a default for it) unless it is ``required``. Fields no command reads are not looked at: they are shown
as they are, so that an API newer than the command still answers it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from herald.cli.errors import CliApiError

INVALID_RESPONSE = "invalid_response"
#: The status an answer found here of the wrong shape is reported with: the client took it for a success.
ANSWERED = 200


@dataclass(frozen=True)
class Shape:
    """What a field holds: its name in an error ("an object"), and the test of a value."""

    name: str
    holds: Callable[[Any], bool]


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


OBJECT = Shape("an object", lambda value: isinstance(value, Mapping))
OBJECTS = Shape(
    "a list of objects", lambda value: isinstance(value, list) and all(isinstance(item, Mapping) for item in value)
)
STRINGS = Shape("a list of strings", lambda value: isinstance(value, list) and all(isinstance(i, str) for i in value))
TEXT = Shape("text", lambda value: isinstance(value, str))
COUNT = Shape("a whole number", _count)
FLAG = Shape("true or false", lambda value: isinstance(value, bool))

#: A page of a listing (``schemas.common.Page``): its items, and where the next page starts.
PAGE: dict[str, Shape] = {"data": OBJECTS, "iterator": TEXT, "done": FLAG}
#: A recovery job (``schemas.jobs``), as ``--wait`` and the follow-up command read it.
JOB: dict[str, Shape] = {"id": TEXT, "status": TEXT}


def invalid_response(message: str) -> CliApiError:
    return CliApiError(ANSWERED, INVALID_RESPONSE, message)


def checked(
    answer: Any,
    shape: Mapping[str, Shape] | None = None,
    /,
    *,
    required: Collection[str] = (),
    where: str = "",
    empty: str = "the API's answer is empty",
    **fields: Shape,
) -> Mapping[str, Any]:
    """``answer`` if it is an object whose fields named in ``shape`` (a shape shared by commands, as ``PAGE``)
    and in ``fields`` hold what they should where present and not null, and which has every ``required`` one; else
    ``invalid_response``. ``where`` names a nested object (``data.0``) in the error, and ``empty`` is what an
    answer with no body is told (the client reads one as ``None``)."""
    if answer is None and not where:
        raise invalid_response(empty)
    if not isinstance(answer, Mapping):
        raise invalid_response(f"{_named(where) or 'the answer'} of the API is not an object")
    for name in required:
        if answer.get(name) is None:
            raise invalid_response(f"the API's answer has no {_named(where, name)}")
    for name, holds in {**(shape or {}), **fields}.items():
        value = answer.get(name)
        if value is not None and not holds.holds(value):
            raise invalid_response(f"{_named(where, name)} in the API's answer is not {holds.name}")
    return answer


def _named(*parts: str) -> str:
    """A field's dotted place in an answer, quoted (```data.0.event```)."""
    dotted = ".".join(part for part in parts if part)
    return f"`{dotted}`" if dotted else ""
