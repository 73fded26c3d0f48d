"""JSON from files we do not trust (safetensors headers, config.json and its siblings).

The standard decoder is fast and safe against memory blow-ups once the caller has capped the input size,
but hostile input still escapes as the wrong exceptions: nesting past the interpreter's recursion limit
raises RecursionError, an integer of more than 4,300 digits raises a bare ValueError, and a merely large
one (or `1e999`) parses fine and raises OverflowError later, when some code calls `float()` or `int()`
on it. `loads` turns each into one `UntrustedJSONError`, and what it returns is bounded: no integer
`float()` cannot take, no nesting past MAX_DEPTH; non-finite numbers (`1e999`, `NaN`, `Infinity`) read
as null, as a strict JSON parser would refuse them and no field we read can use them.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64  # real configs nest 4-5 levels; safetensors headers 3
# tokenizer_config.json's "no limit" model_max_length is 1000000000000000019884624838656 (31 digits);
# anything up to 64 digits still converts to float.
MAX_INT_DIGITS = 64


class UntrustedJSONError(ValueError):
    """The document is not JSON we accept; the message says why in one line."""


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise UntrustedJSONError(f"integer of {len(text.lstrip('-'))} digits (cap {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _parse_constant(name: str) -> None:
    return None


def loads(text: str | bytes) -> Any:
    """Parse `text`. Raises UntrustedJSONError (a ValueError) for anything invalid or out of bounds."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UntrustedJSONError(f"not UTF-8: {exc}") from None
    try:
        data = json.loads(
            text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant
        )
    except UntrustedJSONError:
        raise
    except RecursionError:
        raise UntrustedJSONError(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise UntrustedJSONError(f"not valid JSON ({exc})"[:200]) from None
    _check_depth(data)
    return data


def _check_depth(data: Any) -> None:
    if limit_violation(data, max_depth=MAX_DEPTH):
        raise UntrustedJSONError(f"nested deeper than {MAX_DEPTH} levels")


def limit_violation(
    data: Any, *, max_depth: int, int_range: tuple[int, int] | None = None
) -> tuple[str, int] | None:
    """The first bound parsed JSON breaks, or None: `("depth", level)` for nesting past `max_depth`,
    `("int", value)` for an integer outside `int_range`. Walked iteratively (no recursion to exhaust):
    nesting within what a decoder accepted can still be far deeper than any code walking the result should
    have to handle. The one walker for untrusted files and for registry layers; callers word the error."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            is_int = isinstance(value, int) and not isinstance(value, bool)
            if is_int and int_range and not int_range[0] <= value <= int_range[1]:
                return "int", value
            continue
        if depth > max_depth:
            return "depth", depth
        stack.extend((child, depth + 1) for child in children)
    return None
