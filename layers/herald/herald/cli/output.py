"""Plain-text tables for people, the API's JSON for scripts (``--json``)."""

from __future__ import annotations

import errno
import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

#: Longest cell shown in a listing's column of free text; longer values end with an ellipsis (``--json`` has them
#: whole). A value to copy (see ``copyable``) and every value of a record (``record``) are shown whole.
MAX_CELL_WIDTH = 48
ELLIPSIS = "…"
EMPTY = "-"

#: Fields whose values are copied to be used (``herald events show <id>``, a portal link, an API key): never cut.
COPYABLE_NAMES = frozenset({"id", "url", "path", "key", "token", "secret", "prefix"})
COPYABLE_SUFFIXES = ("_id", "_url", "_key", "_token", "_secret")


def copyable(column: str) -> bool:
    """Whether a column (dotted for a nested field) holds values to copy: an id, a URL, a key, a token, a secret."""
    name = column.rsplit(".", 1)[-1]
    return name in COPYABLE_NAMES or name.endswith(COPYABLE_SUFFIXES)


def cell(value: Any, width: int | None = MAX_CELL_WIDTH) -> str:
    """One value as table text: ``-`` for nothing, lists joined by commas, objects as compact JSON; cut to
    ``width`` with an ellipsis, or whole with ``None``."""
    if value is None or value == "":
        text = EMPTY
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list):
        text = ",".join(cell(item, width=None) for item in value) or EMPTY
    elif isinstance(value, dict):
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False) if value else EMPTY
    else:
        text = str(value)
    text = printable(" ".join(text.split()))  # one line per row, whatever the value holds
    if width is not None and len(text) > width:
        text = text[: max(width - 1, 0)] + ELLIPSIS
    return text


#: C0 and C1 control characters and DEL: a terminal obeys them (ESC starts colours, titles, cursor moves).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with each control character shown as an escape (``\\x1b``) instead of sent to the terminal: values
    come from tenants and their subscribers."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def detail_lines(details: Any, indent: str) -> list[str]:
    """Each detail of an API error as a line: where (its dotted ``loc``) and what (its ``msg``), printable."""
    lines = []
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, Mapping):
            where = ".".join(str(part) for part in detail.get("loc", []))
            lines.append(f"{indent}{printable(where or '-')}: {printable(str(detail.get('msg', '')))}")
    return lines


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, cut: bool = True) -> str:
    """An aligned table with an upper-case header; columns are keys of the rows (dotted for nested ones). With
    ``cut``, long free text is cut to ``MAX_CELL_WIDTH`` so that a listing stays readable; a copyable column
    (ids, URLs, keys) never is."""
    header = [column.upper() for column in columns]
    limits = [MAX_CELL_WIDTH if cut and not copyable(column) else None for column in columns]
    body = [[cell(lookup(row, column), limit) for column, limit in zip(columns, limits, strict=True)] for row in rows]
    widths = [max([len(title), *(len(line[index]) for line in body)]) for index, title in enumerate(header)]
    lines = [header, *body]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def record(item: Mapping[str, Any], fields: Sequence[str] | None = None) -> str:
    """One object as a two-column FIELD / VALUE table; nested objects are flattened to dotted names. Values are
    shown whole: each is alone on its line, last, and may be one to copy (a portal link, an API key)."""
    flat = dict(flatten(item))
    names = [name for name in fields if name in flat] if fields else list(flat)
    return table([{"field": name, "value": flat[name]} for name in names], ["field", "value"], cut=False)


def flatten(item: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    """Top-level fields, with the fields of a nested object one level down as ``parent.child``."""
    for key, value in item.items():
        if isinstance(value, Mapping) and value:
            for inner, inner_value in value.items():
                yield f"{key}.{inner}", inner_value
        else:
            yield key, value


def lookup(row: Mapping[str, Any], column: str) -> Any:
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def columns_of(rows: Sequence[Mapping[str, Any]], preferred: Sequence[str]) -> list[str]:
    """The preferred columns the rows have; if they have none of them, every scalar key of the first row."""
    present = [column for column in preferred if any(lookup(row, column) is not None for row in rows)]
    if present or not rows:
        return present or list(preferred)
    return [key for key, value in rows[0].items() if not isinstance(value, Mapping | list)]


#: What ``json.dumps`` leaves as it is and a terminal may act on: DEL and the C1 controls (U+009B starts an
#: escape sequence on some terminals). It escapes the C0 controls itself.
_JSON_UNESCAPED_CONTROL = re.compile("[\x7f-\x9f]")


def write_json(out: TextIO, value: Any) -> None:
    """``value`` as indented JSON, non-ASCII text as it is, but no control character sent as it is: those that
    ``json.dumps`` leaves (DEL, C1) are written as ``\\u`` escapes, the same JSON value; so is a character the
    output's encoding lacks (``東`` on a cp1252 console), where ``backslashreplace`` would write ``\\U0001f600``
    for one past U+FFFF, which is no JSON."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    text = _JSON_UNESCAPED_CONTROL.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
    write_whole(out, _json_encodable(text, getattr(out, "encoding", None)) + "\n")


def write_whole(out: TextIO, text: str) -> None:
    """Write ``text`` to ``out`` whole, or raise ``BrokenPipeError``. A pipe whose reader leaves during a large write
    (``| head -1``) takes part of it, and the write returns short: the text layer does not check, so the rest would
    be dropped and the command end 0 as if all of its output had gone out. Here the rest is written again, and that
    write finds the pipe broken."""
    # Under the text layer: a buffered writer, or the file itself (``python -u``, ``PYTHONUNBUFFERED``).
    binary = getattr(out, "buffer", None)
    if not isinstance(binary, io.BufferedIOBase | io.RawIOBase):  # no file under it (a StringIO): nothing to cut short
        out.write(text)
        return
    out.flush()
    if os.linesep != "\n":  # what the text layer does on Windows (its newline=None), bypassed here
        text = text.replace("\n", os.linesep)
    left = memoryview(text.encode(out.encoding, out.errors or "strict"))
    while left:
        written = binary.write(left)
        if written is None:  # a non-blocking file that is full: what the text layer would have raised too
            raise BlockingIOError(errno.EAGAIN, "the output takes nothing more for now")
        if written == 0:
            raise BrokenPipeError(errno.EPIPE, "the output took none of what was left to write")
        left = left[written:]
    binary.flush()


#: What ``json.dumps`` writes as it is and an encoding may lack: anything past ASCII.
_NON_ASCII = re.compile("[^\x00-\x7f]")


def _json_encodable(text: str, encoding: str | None) -> str:
    """JSON text with each character ``encoding`` cannot write as ``json.dumps`` escapes it (``\\u6771``, a
    surrogate pair past U+FFFF): the same JSON value. Such characters are only ever inside strings."""
    if not encoding:  # a stream of text alone (io.StringIO) writes any
        return text
    try:
        text.encode(encoding)
    except LookupError:  # an encoding Python does not know: the stream's own errors handler decides
        return text
    except UnicodeEncodeError:
        return _NON_ASCII.sub(lambda match: _json_char(match.group(), encoding), text)
    return text


def _json_char(char: str, encoding: str) -> str:
    try:
        char.encode(encoding)
    except UnicodeEncodeError:
        return json.dumps(char)[1:-1]
    return char
