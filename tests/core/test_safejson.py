"""core/safejson: the one bounded parser for peer JSON (size, then depth, then json)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_gpumarket.core import control, safejson
from jupyter_gpumarket.core.grant_code import GrantCode
from jupyter_gpumarket.exceptions import ConfigError, ProtocolError

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=40,
)
# text full of the characters the pre-scan cares about, so strings hide brackets and quotes
_tricky = st.text(alphabet='[]{}"\\ ,:0a\n\u00e9\U0001f600', max_size=200)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@given(_values, st.booleans())
def test_prescan_depth_agrees_with_json_on_valid_documents(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert safejson.nesting_depth(text) == _depth(value)
    assert safejson.loads(text.encode(), "doc", max_bytes=10**7, max_depth=99) == value


@given(st.one_of(_tricky, st.text(max_size=200)))
def test_loads_raises_only_the_protocol_error(text: str) -> None:
    for data in (text, text.encode("utf-8", "surrogatepass")):
        with contextlib.suppress(ProtocolError):
            safejson.loads(data, "doc", max_bytes=150, max_depth=3)


@given(st.binary(max_size=300))
def test_loads_of_any_bytes_raises_only_the_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        safejson.loads(data, "doc", max_bytes=200, max_depth=3)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,  # unterminated: json would recurse before noticing
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        '[{"x":' * 30_000,
    ],
)
def test_deep_nesting_is_refused_before_json_recurses(text: str) -> None:
    with pytest.raises(ProtocolError, match="limit is 32"):
        safejson.loads(text, "hello", max_bytes=10**6)


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"a": "[[[[{{{{" * 1000, "b": '\\"[[[['})
    assert safejson.nesting_depth(text) == 1
    assert safejson.loads(text, "doc", max_bytes=10**6, max_depth=1)["b"] == '\\"[[[['


def test_size_is_checked_first_and_named() -> None:
    with pytest.raises(ProtocolError, match="limit is 10 bytes"):
        safejson.loads(b"[" * 11, "hello", max_bytes=10)
    with pytest.raises(ProtocolError, match="limit is 10 bytes"):  # 6 chars, 12 bytes
        safejson.loads("\u00e9" * 6, "hello", max_bytes=10)


@pytest.mark.parametrize("data", [b"NaN", b"[Infinity]", b'{"a":-Infinity}', b"\xff", b"\xfe\xff"])
def test_non_json_constants_and_other_encodings_are_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        safejson.loads(data, "doc", max_bytes=100)


def test_control_messages_go_through_the_bounded_parser() -> None:
    deep = '{"op":"hello","token":"t","x":' + "[" * 50_000 + "]" * 50_000 + "}"
    for parse in (control.parse_first, control.parse_hello, control.parse_welcome):
        with pytest.raises(ProtocolError, match="nests"):
            parse(deep)
    with pytest.raises(ProtocolError, match="nests"):
        control.parse_agent_message(b'{"op":"sync_offer","manifest":' + b"[" * 100_000 + b"}")


def test_a_grant_code_of_deep_json_is_damaged_not_a_crash() -> None:
    import base64

    body = base64.urlsafe_b64encode(b"[" * 3000).decode()
    with pytest.raises(ConfigError, match="damaged"):
        GrantCode.decode("gpmgrant1." + body)
