"""Node IDs, CRC32C and BEP 42 (including the BEP's own test vectors)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kadnode.core.nodeid import (
    ID_BITS,
    ID_SPACE,
    bep42_acceptable,
    bep42_exempt,
    bep42_node_id,
    bep42_prefix,
    bep42_valid,
    crc32c,
    random_id,
    random_id_in_range,
)

# BEP 42 test vectors: IP, rand (the ID's last byte; r = rand & 7), example node ID.
BEP42_VECTORS = [
    ("124.31.75.21", 1, "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401"),
    ("21.75.31.124", 86, "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256"),
    ("65.23.51.170", 22, "a5d43220bc8f112a3d426c84764f8c2a1150e616"),
    ("84.124.73.14", 65, "1b0321dd1bb1fe518101ceef99462b947a01ff41"),
    ("43.213.53.83", 90, "e56f6cbf5b7c4be0237986d5243b87aa6d51305a"),
]
TOP21 = ID_BITS - 21

ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))


def test_crc32c_known_answers() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
    assert crc32c(b"\xff" * 32) == 0x62A8AB43  # RFC 3720 B.4: 32 bytes of 0xff


def test_random_id_in_range_bounds() -> None:
    rng = random.Random(1)
    assert all(0 <= random_id(rng) < ID_SPACE for _ in range(100))
    assert {random_id_in_range(5, 7, rng) for _ in range(100)} == {5, 6}
    with pytest.raises(ValueError):
        random_id_in_range(7, 7, rng)
    with pytest.raises(ValueError):
        random_id_in_range(0, ID_SPACE + 1, rng)


@pytest.mark.parametrize(("ip", "rand", "node_hex"), BEP42_VECTORS)
def test_bep42_vectors_generate(ip: str, rand: int, node_hex: str) -> None:
    expected = int(node_hex, 16)
    # The prefix function alone reproduces the vector's first 21 bits.
    assert bep42_prefix(ip, rand) >> 11 == expected >> TOP21
    generated = bep42_node_id(ip, random.Random(rand), rand=rand)
    assert generated >> TOP21 == expected >> TOP21
    assert generated & 0xFF == rand
    assert bep42_valid(generated, ip)


@pytest.mark.parametrize(("ip", "rand", "node_hex"), BEP42_VECTORS)
def test_bep42_vectors_validate(ip: str, rand: int, node_hex: str) -> None:
    node_id = int(node_hex, 16)
    assert bep42_valid(node_id, ip)
    assert bep42_acceptable(node_id, ip)
    assert not bep42_exempt(ip)
    for bit in range(TOP21, ID_BITS):  # any flipped prefix bit breaks it
        assert not bep42_valid(node_id ^ (1 << bit), ip)
    for bit in range(3, TOP21):  # the random middle and the last byte's high bits do not matter
        assert bep42_valid(node_id ^ (1 << bit), ip)
    # A different r (low 3 bits) needs a different prefix; none of these vectors collide.
    assert sum(bep42_valid((node_id & ~7) | r, ip) for r in range(8)) == 1


def test_bep42_vectors_are_not_valid_for_other_ips() -> None:
    for ip, _, node_hex in BEP42_VECTORS:
        others = [other for other, _, _ in BEP42_VECTORS if other != ip]
        assert not any(bep42_valid(int(node_hex, 16), other) for other in others)


@given(ip=ipv4, seed=st.integers(0, 2**32))
def test_bep42_generated_ids_validate(ip: str, seed: int) -> None:
    node_id = bep42_node_id(ip, random.Random(seed))
    assert 0 <= node_id < ID_SPACE
    assert bep42_valid(node_id, ip)


def test_bep42_masked_bits_do_not_matter() -> None:
    # Mask 0x030f3fff: the top 6 bits of the first octet and top 4 of the second are ignored.
    assert bep42_prefix("124.31.75.21", 3) == bep42_prefix("0.15.75.21", 3)
    assert bep42_prefix("124.31.75.21", 3) != bep42_prefix("124.31.75.22", 3)


@pytest.mark.parametrize(
    ("ip", "exempt"),
    [
        ("10.0.0.1", True),
        ("10.255.255.255", True),
        ("172.16.0.1", True),
        ("172.31.255.255", True),
        ("172.32.0.1", False),
        ("172.15.255.255", False),
        ("192.168.1.1", True),
        ("192.169.0.1", False),
        ("169.254.3.4", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("128.0.0.1", False),
        ("8.8.8.8", False),
    ],
)
def test_bep42_exempt_ranges(ip: str, exempt: bool) -> None:
    assert bep42_exempt(ip) is exempt
    assert bep42_acceptable(12345, ip) is exempt  # 12345 is not a valid ID for any of these


def test_bad_ip_strings_raise() -> None:
    for bad in ("1.2.3", "256.1.1.1", "::1", "1.2.3.4.5", ""):
        with pytest.raises(ValueError):
            bep42_exempt(bad)
