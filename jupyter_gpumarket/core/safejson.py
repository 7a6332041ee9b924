"""The one JSON parser for bytes from a peer: size first, then nesting depth, then ``json``.

``json.loads`` recurses once per ``[`` / ``{``: a few kilobytes of brackets from a stranger raise
RecursionError (or worse, exhaust the C stack of a thread with a small one). So every message
from a renter, a provider, a chain or a stranger is parsed here, in this order:

1. its size against the caller's limit (no work proportional to an oversized message);
2. strict UTF-8 (the protocol's only encoding: ``json.loads(bytes)`` would also guess UTF-16/32);
3. a linear pre-scan of the nesting depth that skips string literals (regular expressions, so
   it runs at C speed on multi-megabyte manifests);
4. ``json.loads`` without the non-standard constants ``NaN`` / ``Infinity``.

Every failure is a :class:`ProtocolError` that names the limit or the problem.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from jupyter_gpumarket.exceptions import ProtocolError

__all__ = ["DEFAULT_MAX_DEPTH", "loads", "nesting_depth"]

DEFAULT_MAX_DEPTH = 32  # the deepest message of the protocol nests 5 levels

# A JSON string literal, unrolled so that a long string costs no backtracking state per char.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = str.maketrans({"[": "\x01", "{": "\x01", "]": "\x02", "}": "\x02"})


def nesting_depth(text: str) -> int:
    """How deep ``[`` / ``{`` nest in ``text``, outside string literals.

    For valid JSON it is exactly the depth of the parsed value (a scalar is 0). For anything
    else it is never less than the depth ``json`` would reach before failing, so it bounds the
    parser's recursion.
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if not brackets:
        return 0
    steps = (1 if c == "\x01" else -1 for c in brackets.translate(_STEP))
    return max(0, max(accumulate(steps)))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(
    data: str | bytes | bytearray | memoryview,
    what: str,
    *,
    max_bytes: int,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Parse ``data`` (a message called ``what`` in errors) within these limits."""
    size = len(data) if not isinstance(data, memoryview) else data.nbytes
    if size > max_bytes:  # a str of n chars is at least n bytes: no need to encode it first
        raise ProtocolError(f"{what} of {size} bytes is too large: the limit is {max_bytes} bytes")
    if isinstance(data, str):
        text = data
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise ProtocolError(
                f"{what} of {size} bytes is too large: the limit is {max_bytes} bytes"
            )
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(
                f"{what} is not valid JSON: not UTF-8 at byte {exc.start}"
            ) from None
    depth = nesting_depth(text)
    if depth > max_depth:
        raise ProtocolError(f"{what} nests {depth} levels deep: the limit is {max_depth}")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from None
