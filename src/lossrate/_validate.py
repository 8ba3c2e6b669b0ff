"""One validation layer for every file lossrate reads: priors, fit JSONs, trajectory header
metadata, configs, checkpoints.

Each check takes the value, where it came from (``source``: the file) and the field's path
(``field``: ``params.rho_ref.centre``), and either returns the value in the type lossrate uses
or raises a :class:`~lossrate._errors.DataError` naming the file, the field, the value and the
fix. JSON is parsed with bounded size, nesting depth and number length, and without NaN or
infinities, so a malformed or hostile file ends as a ``DataError`` (never a RecursionError,
an OverflowError or a silently wrong number).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ._errors import DataError

__all__ = [
    "MAX_DEPTH",
    "MAX_JSON_BYTES",
    "boolean",
    "choice",
    "fail",
    "integer",
    "mapping",
    "number",
    "parse_json",
    "read_json",
    "scalars",
    "sequence",
    "text",
    "unknown_keys",
]

#: deepest nesting of lists and objects accepted in a JSON file lossrate reads
MAX_DEPTH = 32
#: largest JSON file (or metadata line) lossrate reads, in bytes
MAX_JSON_BYTES = 64 * 2**20
#: most items (values, keys) in one JSON document
_MAX_ITEMS = 5_000_000
#: longest number literal accepted (a float needs 17 significant digits)
_MAX_DIGITS = 40


def _show(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _kind(value: Any) -> str:
    names = {
        bool: "true/false",
        str: "a string",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
    }
    return "null" if value is None else names.get(type(value), f"a {type(value).__name__}")


def fail(source: str, field: str, value: Any, need: str, fix: str) -> DataError:
    """The error of one field: ``{source}: {field} is {value}; {need}. {fix}``."""
    where = f"{source}: field {field!r}" if field else source
    return DataError(f"{where} is {_show(value)}; {need}. {fix}".strip())


# ------------------------------------------------------------------ JSON
def _bad_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _parse_float(literal: str) -> float:
    if len(literal) > _MAX_DIGITS:
        raise ValueError(f"the number {literal[:20]}... has {len(literal)} characters")
    x = float(literal)
    if not math.isfinite(x):
        raise ValueError(f"{literal} is out of the range of a float")
    return x


def _parse_int(literal: str) -> int:
    if len(literal) > _MAX_DIGITS:
        raise ValueError(f"the number {literal[:20]}... has {len(literal)} digits")
    return int(literal)


def _depth_before_parse(text: str, max_depth: int) -> int:
    """Nesting depth of ``text`` (brackets outside strings), stopping past ``max_depth``."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > max_depth:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json(
    text: str, *, source: str, fix: str, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_JSON_BYTES
) -> Any:
    """``json.loads(text)`` with bounded size, depth and number length, finite numbers only.

    Raises:
        DataError: naming ``source``, what is wrong and ``fix``.
    """
    if len(text) > max_bytes:
        raise DataError(
            f"{source}: the JSON is {len(text):,} characters, more than lossrate reads "
            f"({max_bytes:,}). {fix}".strip()
        )
    if _depth_before_parse(text, max_depth) > max_depth:
        raise DataError(
            f"{source}: the JSON is nested more than {max_depth} levels deep; lossrate's files "
            f"are a few levels deep. {fix}".strip()
        )
    try:
        data = json.loads(
            text,
            parse_constant=_bad_constant,
            parse_float=_parse_float,
            parse_int=_parse_int,
        )
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}). "
            f"{fix}".strip()
        ) from None
    except (ValueError, RecursionError, OverflowError) as exc:
        raise DataError(f"{source}: not usable JSON ({exc}). {fix}".strip()) from None
    _count_items(data, source, fix)
    return data


def _count_items(data: Any, source: str, fix: str) -> None:
    stack, seen = [data], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > _MAX_ITEMS:
            raise DataError(
                f"{source}: the JSON holds more than {_MAX_ITEMS:,} values. {fix}".strip()
            )
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def read_json(path: str | Path, *, what: str, fix: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON in the file ``path`` (a ``what``: "prior", "fit JSON", ...), checked as
    :func:`parse_json` does; a missing, unreadable, too large or non-UTF-8 file is a
    DataError too."""
    p = Path(path)
    source = repr(str(p))
    try:
        if not p.is_file():
            raise DataError(f"{what} {source} does not exist or is not a file; check the path.")
        size = p.stat().st_size
        if size > max_bytes:
            raise DataError(
                f"{what} {source} is {size:,} bytes, more than lossrate reads for a {what} "
                f"({max_bytes:,}). {fix}".strip()
            )
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"{what} {source} cannot be read ({exc.strerror or exc}).") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(
            f"{what} {source} is not UTF-8 text (a binary file?). {fix}".strip()
        ) from None
    return parse_json(text, source=f"{what} {source}", fix=fix, max_bytes=max_bytes)


# ------------------------------------------------------------------ fields
def mapping(
    value: Any, source: str, field: str, fix: str, *, max_items: int = 10_000
) -> Mapping[str, Any]:
    """``value`` if it is a JSON object (a mapping with string keys) of at most ``max_items``."""
    if not isinstance(value, Mapping):
        raise fail(source, field, value, f"it must be an object, not {_kind(value)}", fix)
    if len(value) > max_items:
        raise fail(source, field, f"<{len(value)} keys>", f"at most {max_items} keys are read", fix)
    for key in value:
        if not isinstance(key, str):
            raise fail(source, field, key, "its keys must be strings", fix)
    return value


def sequence(
    value: Any, source: str, field: str, fix: str, *, max_items: int = 100_000
) -> list[Any]:
    """``value`` as a list if it is a JSON array of at most ``max_items``."""
    if not isinstance(value, list | tuple):
        raise fail(source, field, value, f"it must be a list, not {_kind(value)}", fix)
    if len(value) > max_items:
        raise fail(
            source, field, f"<{len(value)} items>", f"at most {max_items} items are read", fix
        )
    return list(value)


def number(
    value: Any,
    source: str,
    field: str,
    fix: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    optional: bool = False,
) -> float | None:
    """``float(value)`` if it is a finite number (not a bool, not a string) within the bounds;
    None when ``optional`` and ``value`` is None."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(source, field, value, f"it must be a number, not {_kind(value)}", fix)
    try:
        x = float(value)
    except OverflowError:
        raise fail(source, field, value, "it is too large for a float", fix) from None
    if not math.isfinite(x):
        raise fail(source, field, value, "it must be a finite number", fix)
    if lo is not None and (x <= lo if lo_open else x < lo):
        raise fail(source, field, value, f"it must be {'>' if lo_open else '>='} {lo:g}", fix)
    if hi is not None and (x >= hi if hi_open else x > hi):
        raise fail(source, field, value, f"it must be {'<' if hi_open else '<='} {hi:g}", fix)
    return x


def integer(
    value: Any,
    source: str,
    field: str,
    fix: str,
    *,
    lo: int | None = None,
    hi: int | None = None,
    optional: bool = False,
) -> int | None:
    """``value`` if it is a whole number (an int, or a float with no fraction) within bounds."""
    if value is None and optional:
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(source, field, value, f"it must be a whole number, not {_kind(value)}", fix)
    if lo is not None and value < lo:
        raise fail(source, field, value, f"it must be >= {lo}", fix)
    if hi is not None and value > hi:
        raise fail(source, field, value, f"it must be <= {hi}", fix)
    return int(value)


def text(
    value: Any, source: str, field: str, fix: str, *, optional: bool = False, max_len: int = 1000
) -> str | None:
    """``value`` if it is a string of at most ``max_len`` characters (None when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise fail(source, field, value, f"it must be a string, not {_kind(value)}", fix)
    if len(value) > max_len:
        raise fail(source, field, value, f"it must be at most {max_len} characters", fix)
    return value


def choice(
    value: Any,
    source: str,
    field: str,
    options: Iterable[str],
    fix: str = "",
    *,
    optional: bool = False,
) -> str | None:
    """``value`` if it is one of ``options`` (listed in the error otherwise)."""
    if value is None and optional:
        return None
    opts = sorted(options)
    if not isinstance(value, str) or value not in opts:
        raise fail(source, field, value, f"it must be one of {', '.join(map(repr, opts))}", fix)
    return value


def boolean(value: Any, source: str, field: str, fix: str) -> bool:
    """``value`` if it is JSON true or false (not "yes", 1 or null)."""
    if not isinstance(value, bool):
        raise fail(source, field, value, "it must be true or false", fix)
    return value


def scalars(
    value: Any, source: str, field: str, fix: str, *, max_items: int = 1000
) -> dict[str, Any]:
    """``value`` if it is an object whose values are strings, numbers, booleans or null (short
    lists of those too): free-form facts such as ``RunMeta.extra``."""
    table = mapping(value, source, field, fix, max_items=max_items)
    for key, v in table.items():
        items = v if isinstance(v, list) else [v]
        if isinstance(v, list) and len(v) > 1000:
            raise fail(source, f"{field}.{key}", f"<{len(v)} items>", "at most 1000 items", fix)
        for item in items:
            if isinstance(item, float) and not math.isfinite(item):
                raise fail(source, f"{field}.{key}", item, "it must be finite", fix)
            if not (item is None or isinstance(item, str | int | float | bool)):
                raise fail(
                    source,
                    f"{field}.{key}",
                    v,
                    "it must be a string, a number, true/false or null",
                    fix,
                )
    return dict(table)


def unknown_keys(
    table: Mapping[str, Any], known: Iterable[str], source: str, field: str, fix: str
) -> None:
    """Refuse keys of ``table`` outside ``known`` (a misspelt key is never ignored)."""
    names = set(known)
    extra = sorted(set(table) - names)
    if extra:
        where = f"{source}: {field!r}" if field else source
        raise DataError(
            f"{where} holds unknown key(s) {extra[:10]}; known keys are {sorted(names)}. {fix}".strip()
        )
