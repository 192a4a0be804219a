"""JSON encoding with errors that name the offending value's path and type."""

from __future__ import annotations

import json
import math
from typing import Any

from pgqrs.errors import SerializationError

_encode = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=True
).encode


def dumps(value: Any, what: str = "payload") -> str:
    """Serialize ``value`` to compact JSON text, or raise :class:`SerializationError`."""
    try:
        text = _encode(value)
        if not text.isascii():  # O(1) in CPython: only non-ASCII text pays for the check
            # A lone surrogate ("\ud800") passes json but is not UTF-8: refuse it here, with
            # its path, rather than as a UnicodeEncodeError from the native call.
            text.encode("utf-8")
        return text
    except (TypeError, ValueError, RecursionError) as e:
        try:
            path, type_name, reason = _find_bad(value, "$", set())
        except RecursionError:
            # Deeper than the interpreter can walk (the engine refuses far less: 100 levels).
            path, type_name = "$", type(value).__name__
            reason = "nested deeper than Python's recursion limit (flatten it)"
        raise SerializationError(
            f"{what} is not JSON-serializable: {reason} at {path}; "
            "convert it to dict/list/str/int/float/bool/None first",
            field=what,
            path=path,
            type_name=type_name,
        ) from e


def dumps_array(values: list[Any], what: str = "payloads") -> str:
    """Serialize a list to one JSON array text in a single encoder call (much cheaper than
    one call per element). If that fails, encode element by element so that the error names
    the offending element's path, e.g. ``payloads[3].when``."""
    try:
        text = _encode(values)
        if not text.isascii():
            text.encode("utf-8")
        return text
    except (TypeError, ValueError, RecursionError):
        # The failing element raises here, with its path; should every element encode on its
        # own (one level less deep), their texts make the array.
        return "[" + ",".join(dumps(v, f"{what}[{i}]") for i, v in enumerate(values)) + "]"


def _find_bad(value: Any, path: str, seen: set[int]) -> tuple[str, str, str]:
    """Locate the first value json cannot encode (depth-first)."""
    if isinstance(value, str):
        if not _utf8(value):
            return path, "str", "a string with a lone surrogate (not valid UTF-8)"
        return path, "str", "unknown"
    if value is None or isinstance(value, (bool, int)):
        return path, type(value).__name__, "unknown"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return path, "float", f"{value!r} is not valid JSON"
        return path, "float", "unknown"
    if isinstance(value, (list, tuple, dict)):
        if id(value) in seen:
            return path, type(value).__name__, "circular reference"
        seen = seen | {id(value)}
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _find_bad(item, f"{path}[{i}]", seen)
            if found[2] != "unknown":
                return found
        return path, type(value).__name__, "unknown"
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                return f"{path}[{k!r}]", type(k).__name__, f"dict key of type {type(k).__name__}"
            if isinstance(k, str) and not _utf8(k):
                return f"{path}[{k!r}]", "str", "a dict key with a lone surrogate (not valid UTF-8)"
            found = _find_bad(item, f"{path}.{k}", seen)
            if found[2] != "unknown":
                return found
        return path, "dict", "unknown"
    return path, type(value).__name__, f"object of type {type(value).__name__}"


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


loads = json.loads
