"""bencode: canonical decoding, every rejection reason, limits that hold against hostile input."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kadnode.wire.bencode import MAX_INT_DIGITS, BencodeError, Raw, _decode_flat, _decode_general, bdecode, bencode

# --- valid input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"i0e", 0),
        (b"i42e", 42),
        (b"i-42e", -42),
        (b"i9223372036854775807e", 2**63 - 1),
        (b"i-9223372036854775808e", -(2**63)),
        (b"0:", b""),
        (b"4:spam", b"spam"),
        (b"10:0123456789", b"0123456789"),
        (b"20:abcdefghij0123456789", b"abcdefghij0123456789"),
        (b"100:" + b"x" * 100, b"x" * 100),
        (b"le", []),
        (b"de", {}),
        (b"l4:spami42ee", [b"spam", 42]),
        (b"d3:bar4:spam3:fooi42ee", {b"bar": b"spam", b"foo": 42}),
        (
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
            {b"a": {b"id": b"abcdefghij0123456789"}, b"q": b"ping", b"t": b"aa", b"y": b"q"},
        ),
        (b"lllleeee", [[[[]]]]),
        (b"d0:i1e1:ai2ee", {b"": 1, b"a": 2}),
        (b"d1:a0:1:b0:e", {b"a": b"", b"b": b""}),
        (b"4:i1e:", b"i1e:"),
    ],
)
def test_decodes(data: bytes, value: Any) -> None:
    assert bdecode(data) == value
    assert bencode(value) == data


def test_accepts_bytearray_and_memoryview() -> None:
    assert bdecode(bytearray(b"4:spam")) == b"spam"
    assert bdecode(memoryview(b"li1ee")) == [1]


def test_rejects_non_bytes_input_as_type_error() -> None:
    with pytest.raises(TypeError):
        bdecode("4:spam")  # type: ignore[arg-type]


def test_decoded_strings_are_bytes_not_views() -> None:
    value = bdecode(bytearray(b"l3:abce"))
    assert isinstance(value, list)
    assert type(value[0]) is bytes


# --- every rejection reason --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"i1ei2e", "trailing_bytes"),
        (b"4:spamx", "trailing_bytes"),
        (b"dee", "trailing_bytes"),
        (b"le\n", "trailing_bytes"),
        (b"i03e", "leading_zero"),
        (b"i00e", "leading_zero"),
        (b"i-03e", "leading_zero"),
        (b"03:abc", "leading_zero"),
        (b"00:", "leading_zero"),
        (b"0", "truncated"),
        (b"0x:", "bad_length"),
        (b"l01:ae", "leading_zero"),
        (b"i-0e", "negative_zero"),
        (b"i-e", "bad_int"),
        (b"ie", "empty_int"),
        (b"i+1e", "bad_int"),
        (b"i 1e", "bad_int"),
        (b"i1 e", "bad_int"),
        (b"i1_000e", "bad_int"),
        (b"i1.5e", "bad_int"),
        (b"i--1e", "bad_int"),
        (b"i12", "truncated"),
        (b"i", "truncated"),
        (b"i" + b"9" * (MAX_INT_DIGITS + 1) + b"e", "int_too_large"),
        (b"i-" + b"9" * (MAX_INT_DIGITS + 1) + b"e", "int_too_large"),
        (b"i" + b"9" * 5000 + b"e", "int_too_large"),
        (b"i" + b"x" * 100, "bad_int"),
        (b"1x:a", "bad_length"),
        (b"12x:abcdefghijkl", "bad_length"),
        (b"1 :a", "bad_length"),
        (b"1_0:abcdefghij", "bad_length"),
        (b"5:spam", "length_past_end"),
        (b"3:", "length_past_end"),
        (b"25:abcdefghij0123456789", "length_past_end"),
        (b"99999999999:x", "length_past_end"),
        (b"9" * 5000 + b":x", "length_past_end"),
        (b"12", "truncated"),
        (b"5", "truncated"),
        (b"l", "truncated"),
        (b"d1:a", "truncated"),
        (b"li1e", "truncated"),
        (b"d3:foo1:a3:bar1:be", "unsorted_keys"),
        (b"d1:b0:1:a0:e", "unsorted_keys"),
        (b"d2:ab0:1:a0:e", "unsorted_keys"),
        (b"d1:a0:1:a0:e", "duplicate_key"),
        (b"di1e1:ae", "bad_key"),
        (b"dle1:ae", "bad_key"),
        (b"dde1:ae", "bad_key"),
        (b"d1:ai1ei2e1:be", "bad_key"),
        (b"d1:ae", "missing_value"),
        (b"d1:a1:b1:ce", "missing_value"),
        (b"e", "unexpected_end"),
        (b"x", "bad_type"),
        (b"li1ex", "bad_type"),
        (b"d1:a-e", "bad_type"),
        (b"n", "bad_type"),
        (b"-1:a", "bad_type"),
    ],
)
def test_rejects(data: bytes, reason: str) -> None:
    with pytest.raises(BencodeError) as info:
        bdecode(data)
    assert info.value.reason == reason


def test_error_is_a_value_error_with_reason_in_message() -> None:
    with pytest.raises(ValueError, match="trailing_bytes"):
        bdecode(b"i1ei1e")


def test_depth_limit_boundary() -> None:
    assert bdecode(b"l" * 10 + b"e" * 10) is not None
    with pytest.raises(BencodeError) as info:
        bdecode(b"l" * 11 + b"e" * 11)
    assert info.value.reason == "too_deep"
    assert bdecode(b"l" * 11 + b"e" * 11, max_depth=11) is not None
    with pytest.raises(BencodeError) as info:
        bdecode(b"d1:ad1:ad1:aleeee", max_depth=3)
    assert info.value.reason == "too_deep"
    assert bdecode(b"i1e", max_depth=0) == 1
    with pytest.raises(BencodeError):
        bdecode(b"le", max_depth=0)


def test_item_limit_boundary() -> None:
    # The list itself is one item.
    ok = b"l" + b"i1e" * 499 + b"e"
    assert bdecode(ok) == [1] * 499
    with pytest.raises(BencodeError) as info:
        bdecode(b"l" + b"i1e" * 500 + b"e")
    assert info.value.reason == "too_many_items"
    # Keys count as items too: 1 dict + 2 * 250 key/values = 501.
    keys = sorted(b"%03d" % i for i in range(250))
    data = b"d" + b"".join(b"3:" + k + b"i0e" for k in keys) + b"e"
    with pytest.raises(BencodeError) as info:
        bdecode(data)
    assert info.value.reason == "too_many_items"
    assert len(bdecode(data, max_items=501)) == 250  # type: ignore[arg-type]
    with pytest.raises(BencodeError) as info:
        bdecode(b"l" + b"le" * 10 + b"e", max_items=10)
    assert info.value.reason == "too_many_items"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"l" * 100_000, "too_deep"),
        (b"d1:a" * 100_000, "too_deep"),
        (b"99999999999:x", "length_past_end"),
        (b"999999999999999999999999999999:x", "length_past_end"),
        (b"i1e" * 700_000, "trailing_bytes"),
        (b"l" + b"i1e" * 700_000 + b"e", "too_many_items"),
        (b"l" + b"0:" * 1_000_000 + b"e", "too_many_items"),
        (b"2000000:" + b"x" * 1_000_000, "length_past_end"),
        (b"i" + b"1" * 2_000_000 + b"e", "int_too_large"),
        (b"1" * 2_000_000, "length_past_end"),
    ],
)
def test_hostile_input_fails_fast(data: bytes, reason: str) -> None:
    start = time.perf_counter()
    with pytest.raises(BencodeError) as info:
        bdecode(data)
    assert info.value.reason == reason
    assert time.perf_counter() - start < 0.5


# --- encoder ----------------------------------------------------------------------------------------


def test_encoder_sorts_keys_as_bytes() -> None:
    value = OrderedDict([(b"zz", 1), (b"a", 2), (b"\xff", 3), (b"A", 4), (b"", 5)])
    assert bencode(value) == b"d0:i5e1:Ai4e1:ai2e2:zzi1e1:\xffi3ee"


def test_encoder_accepts_str_tuple_and_str_keys() -> None:
    assert bencode("héllo") == b"6:h\xc3\xa9llo"
    assert bencode((1, b"x", [])) == b"li1e1:xlee"
    assert bencode({"b": 1, b"a": "x"}) == b"d1:a1:x1:bi1ee"
    assert bencode(bytearray(b"ab")) == b"2:ab"
    assert bencode(10**30) == b"i" + b"1" + b"0" * 30 + b"e"


@pytest.mark.parametrize(
    "value", [True, False, None, 1.5, {1: b"x"}, {(b"a",): 1}, [None], {b"a": {b"b": 2.0}}, {1, 2}, object()]
)
def test_encoder_rejects_unsupported_types(value: Any) -> None:
    with pytest.raises(TypeError):
        bencode(value)


def test_encoder_rejects_key_given_as_bytes_and_str() -> None:
    with pytest.raises(ValueError, match="twice"):
        bencode({b"a": 1, "a": 2})


def test_raw_is_written_verbatim() -> None:
    assert bencode(Raw(b"i1e")) == b"i1e"
    assert bencode({b"v": Raw(b"d1:ai1ee"), b"a": Raw(b"le")}) == b"d1:ale1:vd1:ai1eee"
    assert bencode([Raw(b"4:spam"), b"4:spam"]) == b"l4:spam6:4:spame"  # bytes are strings, Raw is not
    assert bencode(Raw(b"")) == b""  # unchecked by design: the caller vouches for the bytes
    assert not isinstance(Raw(b"i1e"), bytes)  # a Raw never passes for a plain string


def test_raw_keeps_a_value_exact_through_a_round_trip() -> None:
    value = b"d1:ai-7e1:bl0:i0eee"
    message = bdecode(bencode({b"r": {b"v": Raw(value)}}))
    assert isinstance(message, dict) and isinstance(message[b"r"], dict)
    assert bencode(message[b"r"][b"v"]) == value


# --- properties -------------------------------------------------------------------------------------

_ints = st.integers(min_value=-(10**MAX_INT_DIGITS) + 1, max_value=10**MAX_INT_DIGITS - 1)
_values = st.recursive(
    _ints | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.binary(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@given(_values)
def test_round_trip(value: Any) -> None:
    data = bencode(value)
    decoded = bdecode(data, max_depth=max(_depth(value), 1), max_items=10_000)
    assert decoded == value
    assert bencode(decoded) == data


@given(_values, _values)
def test_raw_encodes_like_the_value_it_holds(outer: Any, inner: Any) -> None:
    assert bencode([outer, Raw(bencode(inner))]) == bencode([outer, inner])
    assert bencode({b"k": Raw(bencode(inner)), b"o": outer}) == bencode({b"k": inner, b"o": outer})


@given(st.binary(max_size=200))
def test_random_bytes_decode_or_bencode_error(data: bytes) -> None:
    try:
        value = bdecode(data)
    except BencodeError as exc:
        assert exc.reason and exc.reason.replace("_", "").isalpha()
    else:
        assert bencode(value) == data  # canonical: whatever is accepted re-encodes exactly


# A byte alphabet that makes structurally interesting garbage likely.
_bencode_ish = st.lists(st.sampled_from(list(b"ilde0123456789:-ax")), max_size=60).map(bytes)


@given(_bencode_ish)
def test_bencode_ish_bytes_decode_or_bencode_error(data: bytes) -> None:
    try:
        value = bdecode(data)
    except BencodeError:
        return
    assert bencode(value) == data


@settings(max_examples=300)
@given(_values, st.data())
def test_mutated_values_decode_or_bencode_error(value: Any, data: st.DataObject) -> None:
    raw = bytearray(bencode(value))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        i = data.draw(st.integers(0, len(raw)))
        if op == "flip" and i < len(raw):
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "insert":
            raw.insert(i, data.draw(st.integers(0, 255)))
        elif op == "delete" and i < len(raw):
            del raw[i]
        elif op == "truncate":
            del raw[i:]
    try:
        decoded = bdecode(bytes(raw))
    except BencodeError:
        return
    assert bencode(decoded) == bytes(raw)


# --- the fast path for KRPC shapes ------------------------------------------------------------------

_flat_scalars = _ints | st.binary(max_size=120)
_flat_inner = st.dictionaries(
    st.binary(max_size=12), _flat_scalars | st.lists(_flat_scalars, max_size=6), max_size=6
)
_krpc_shaped = st.dictionaries(
    st.binary(max_size=12), _flat_scalars | _flat_inner | st.lists(_flat_scalars, max_size=4), max_size=6
)


@given(_krpc_shaped)
def test_fast_path_returns_what_the_general_decoder_does(value: dict[bytes, Any]) -> None:
    data = bencode(value)
    fast = _decode_flat(data, len(data), 500)
    general = _decode_general(data, len(data), 10, 500)
    assert general == value
    assert fast is None or fast == general  # None: left to the general decoder (e.g. an empty key)


@settings(max_examples=300)
@given(_krpc_shaped, st.data())
def test_fast_path_accepts_nothing_the_general_decoder_refuses(value: dict[bytes, Any], data: st.DataObject) -> None:
    raw = bytearray(bencode(value))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, max(0, len(raw) - 1)))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "insert":
            raw.insert(i, data.draw(st.sampled_from(list(b"ilde0123456789:-"))))
        elif raw and op == "delete":
            del raw[i]
        elif raw:
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
    mutated = bytes(raw)
    if not mutated:
        return
    fast = _decode_flat(mutated, len(mutated), 500)
    try:
        general = _decode_general(mutated, len(mutated), 10, 500)
    except BencodeError:
        assert fast is None
    else:
        assert fast is None or fast == general


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"d1:bi1e1:ai2ee", "unsorted_keys"),
        (b"d1:ai1e1:ai2ee", "duplicate_key"),
        (b"d1:ai01ee", "leading_zero"),
        (b"d1:a03:abce", "leading_zero"),
        (b"d1:ai-0ee", "negative_zero"),
        (b"d1:a5:abce", "length_past_end"),
        (b"d1:ad1:bi1e", "truncated"),
        (b"d1:ai1eex", "trailing_bytes"),
        (b"d1:ad1:b1:c1:dee", "missing_value"),
        (b"di1ei2ee", "bad_key"),
    ],
)
def test_krpc_shaped_rejections_keep_their_reason(data: bytes, reason: str) -> None:
    assert _decode_flat(data, len(data), 500) is None
    with pytest.raises(BencodeError) as info:
        bdecode(data)
    assert info.value.reason == reason


def test_fast_path_respects_the_limits() -> None:
    nested = b"d1:ad1:bl1:ceee"  # three levels: the most the fast path handles
    assert bdecode(nested) == {b"a": {b"b": [b"c"]}}
    with pytest.raises(BencodeError) as info:
        bdecode(nested, max_depth=2)
    assert info.value.reason == "too_deep"
    assert bdecode(nested, max_items=6) == {b"a": {b"b": [b"c"]}}  # dict, key, dict, key, list, string
    with pytest.raises(BencodeError) as info:
        bdecode(nested, max_items=5)
    assert info.value.reason == "too_many_items"
    deeper = b"d1:ad1:bd1:ci1eeee"  # a dict at the third level: left to the general decoder
    assert _decode_flat(deeper, len(deeper), 500) is None
    assert bdecode(deeper) == {b"a": {b"b": {b"c": 1}}}
