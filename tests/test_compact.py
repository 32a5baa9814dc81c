"""Compact peer/node/ID encodings (BEP 5)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kadnode.types import NodeInfo
from kadnode.wire.compact import (
    CompactError,
    decode_nodes,
    decode_peer,
    encode_nodes,
    encode_peer,
    id_from_bytes,
    id_to_bytes,
)


def test_peer_layout() -> None:
    assert encode_peer(("127.0.0.2", 6881)) == b"\x7f\x00\x00\x02\x1a\xe1"
    assert decode_peer(b"\x7f\x00\x00\x02\x1a\xe1") == ("127.0.0.2", 6881)
    assert encode_peer(("0.0.0.0", 0)) == b"\x00" * 6
    assert decode_peer(b"\xff" * 6) == ("255.255.255.255", 65535)


@pytest.mark.parametrize(
    "addr",
    [
        ("127.0.0.1", -1),
        ("127.0.0.1", 65536),
        ("127.0.0.1", True),
        ("127.0.0.1", 80.0),
        ("127.0.0.1", "80"),
        ("::1", 80),
        ("127.1", 80),
        ("127.0.0.256", 80),
        ("localhost", 80),
        ("", 80),
        (b"127.0.0.1", 80),
        (2130706433, 80),
    ],
)
def test_encode_peer_rejects(addr: Any) -> None:
    with pytest.raises(CompactError):
        encode_peer(addr)


@pytest.mark.parametrize("data", [b"", b"\x7f\x00\x00\x01\x1a", b"\x7f\x00\x00\x01\x1a\xe1\x00"])
def test_decode_peer_rejects_wrong_length(data: bytes) -> None:
    with pytest.raises(CompactError):
        decode_peer(data)


def test_node_layout() -> None:
    node = NodeInfo(int.from_bytes(b"abcdefghij0123456789", "big"), ("127.0.0.3", 1))
    raw = encode_nodes([node])
    assert raw == b"abcdefghij0123456789\x7f\x00\x00\x03\x00\x01"
    assert decode_nodes(raw) == [node]
    assert encode_nodes([]) == b""
    assert decode_nodes(b"") == []


@pytest.mark.parametrize("length", [1, 25, 27, 51, 53])
def test_decode_nodes_rejects_partial_entries(length: int) -> None:
    with pytest.raises(CompactError):
        decode_nodes(b"\x01" * length)


def test_encode_nodes_rejects_bad_entries() -> None:
    with pytest.raises(CompactError):
        encode_nodes([NodeInfo(2**160, ("127.0.0.1", 1))])
    with pytest.raises(CompactError):
        encode_nodes([NodeInfo(1, ("127.0.0.1", 70000))])


def test_ids() -> None:
    assert id_to_bytes(0) == b"\x00" * 20
    assert id_to_bytes(2**160 - 1) == b"\xff" * 20
    assert id_to_bytes(1) == b"\x00" * 19 + b"\x01"
    assert id_from_bytes(b"\x80" + b"\x00" * 19) == 2**159


@pytest.mark.parametrize("node_id", [-1, 2**160, True, 1.0, "1"])
def test_id_to_bytes_rejects(node_id: Any) -> None:
    with pytest.raises(CompactError):
        id_to_bytes(node_id)


@pytest.mark.parametrize("data", [b"", b"\x00" * 19, b"\x00" * 21])
def test_id_from_bytes_rejects(data: bytes) -> None:
    with pytest.raises(CompactError):
        id_from_bytes(data)


_ipv4 = st.lists(st.integers(0, 255), min_size=4, max_size=4).map(lambda q: ".".join(map(str, q)))
_addrs = st.tuples(_ipv4, st.integers(0, 65535))
_nodes = st.builds(NodeInfo, st.integers(0, 2**160 - 1), _addrs)


@given(_addrs)
def test_peer_round_trip(addr: tuple[str, int]) -> None:
    raw = encode_peer(addr)
    assert len(raw) == 6
    assert decode_peer(raw) == addr


@given(st.lists(_nodes, max_size=16))
def test_nodes_round_trip(nodes: list[NodeInfo]) -> None:
    raw = encode_nodes(nodes)
    assert len(raw) == 26 * len(nodes)
    assert decode_nodes(raw) == nodes


@given(st.binary(min_size=20, max_size=20))
def test_id_round_trip(raw: bytes) -> None:
    assert id_to_bytes(id_from_bytes(raw)) == raw


@given(st.binary(max_size=120))
def test_decode_nodes_any_bytes(raw: bytes) -> None:
    try:
        nodes = decode_nodes(raw)
    except CompactError:
        assert len(raw) % 26
    else:
        assert encode_nodes(nodes) == raw


def test_decoded_nodes_are_shared() -> None:
    """A node heard of in many replies is one object, not one per reply (memory at 10,000 nodes)."""
    data = encode_nodes([NodeInfo(7, ("127.0.0.7", 6881)), NodeInfo(7, ("127.0.0.7", 6882))])
    first, second = decode_nodes(data), decode_nodes(bytes(data))
    assert first == second == [NodeInfo(7, ("127.0.0.7", 6881)), NodeInfo(7, ("127.0.0.7", 6882))]
    assert first[0] is second[0]
    assert first[0] is not first[1]
