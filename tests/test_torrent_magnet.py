"""Magnet links: round trips with awkward names, the forms users paste, and libtorrent's reading of ours."""

from __future__ import annotations

import base64

import libtorrent as lt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kadnode.torrent.magnet import MAX_PEERS, Magnet, MagnetError, magnet_link, parse_target
from kadnode.types import Addr

H = bytes(range(20))
HEX = H.hex()
B32 = base64.b32encode(H).decode()

ODD_NAMES = [
    "plain",
    "two words",
    "a+b",
    "100% & more = fun#1?",
    "ça/va\\bien",
    "日本語 ファイル.iso",
    "emoji 🎉",
    "",
    " leading and trailing ",
    "semi;colon,comma'quote\"",
    "%20 literally",
    "line\nbreak",
]

names = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
loopback_peers = st.lists(
    st.tuples(st.integers(1, 254).map(lambda x: f"127.0.0.{x}"), st.integers(1, 65535)), max_size=4, unique=True
)


@pytest.mark.parametrize("name", ODD_NAMES)
def test_round_trip_with_odd_names(name: str) -> None:
    peers: list[Addr] = [("127.0.0.2", 6881), ("127.0.0.3", 1)]
    link = magnet_link(H, name, peers)
    assert link.startswith(f"magnet:?xt=urn:btih:{HEX}&dn=")
    assert " " not in link and "+" not in link and "\n" not in link
    assert parse_target(link) == Magnet(H, name, tuple(peers))


@given(info_hash=st.binary(min_size=20, max_size=20), name=st.none() | names, peers=loopback_peers)
def test_round_trip_property(info_hash: bytes, name: str | None, peers: list[Addr]) -> None:
    assert parse_target(magnet_link(info_hash, name, peers)) == Magnet(info_hash, name, tuple(peers))


@pytest.mark.parametrize("name", [n for n in ODD_NAMES if n])
def test_libtorrent_reads_our_links(name: str) -> None:
    params = lt.parse_magnet_uri(magnet_link(H, name, [("127.0.0.2", 6881)]))
    assert str(params.info_hashes.v1) == HEX
    assert params.name == name
    assert [(ip, port) for ip, port in params.peers] == [("127.0.0.2", 6881)]


def test_magnet_link_needs_a_20_byte_hash() -> None:
    for bad in (b"", H[:19], H + b"x"):
        with pytest.raises(ValueError):
            magnet_link(bad)
    assert magnet_link(H) == f"magnet:?xt=urn:btih:{HEX}"


@pytest.mark.parametrize(
    "text",
    [
        HEX,
        HEX.upper(),
        B32,
        B32.lower(),
        f"  {HEX}\n",
        f"magnet:?xt=urn:btih:{HEX}",
        f"MAGNET:?xt=URN:BTIH:{HEX.upper()}",
        f"magnet:?xt=urn:btih:{B32.lower()}",
        f"magnet:?tr=http%3A%2F%2F127.0.0.1%2Fa&xt=urn:btih:{HEX}&foo=bar",
        f"magnet:?xt=urn:btmh:1220{'ab' * 32}&xt=urn:btih:{HEX}",
        f"magnet:?xt=urn:btih:{HEX}#fragment",
    ],
)
def test_accepted_forms(text: str) -> None:
    assert parse_target(text).info_hash == H


def test_display_name_decoding() -> None:
    assert parse_target(f"magnet:?xt=urn:btih:{HEX}&dn=a+b%2Bc%20d").name == "a b+c d"
    assert parse_target(f"magnet:?xt=urn:btih:{HEX}&dn=").name == ""
    assert parse_target(f"magnet:?xt=urn:btih:{HEX}").name is None
    assert parse_target(f"magnet:?dn=first&xt=urn:btih:{HEX}&dn=second").name == "first"
    assert parse_target(HEX).name is None


def test_first_btih_wins() -> None:
    other = "ff" * 20
    assert parse_target(f"magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{other}").info_hash == H


def test_peers_keep_good_ipv4_and_skip_the_rest() -> None:
    bad = [
        "127.0.0.9",
        "127.0.0.9:",
        "127.0.0.9:0",
        "127.0.0.9:65536",
        "127.0.0.9:+80",
        "127.0.0.9:８０",
        "127.0.0.9:-1",
        "127.0.0.09:80",
        "127.0.0:80",
        "localhost:80",
        "[::1]:80",
        "::1:80",
        "",
    ]
    good = ["127.0.0.2:6881", "127.0.0.3:1", "127.0.0.2:6881", "127.0.0.4:65535"]
    link = f"magnet:?xt=urn:btih:{HEX}&" + "&".join(f"x.pe={p}" for p in bad + good)
    assert parse_target(link).peers == (("127.0.0.2", 6881), ("127.0.0.3", 1), ("127.0.0.4", 65535))


def test_peer_list_is_bounded() -> None:
    link = f"magnet:?xt=urn:btih:{HEX}&" + "&".join(f"x.pe=127.0.{i // 250}.{i % 250 + 1}:80" for i in range(1000))
    assert len(parse_target(link).peers) == MAX_PEERS


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "bad_target"),
        ("hello", "bad_target"),
        (HEX[:-1], "bad_target"),
        (HEX + "0", "bad_target"),
        ("g" * 40, "bad_target"),
        (B32[:-1], "bad_target"),
        ("1" * 32, "bad_target"),
        ("magnet:", "bad_magnet"),
        (f"magnet:xt=urn:btih:{HEX}", "bad_magnet"),
        ("magnet:?dn=x", "no_info_hash"),
        (f"magnet:?xt=urn:btmh:1220{'ab' * 32}", "no_info_hash"),
        (f"magnet:?xt={HEX}", "no_info_hash"),
        ("magnet:?xt=urn:btih:1234", "bad_info_hash"),
        (f"magnet:?xt=urn:btih:{HEX}00", "bad_info_hash"),
        (f"magnet:?xt=urn:btih:{B32[:-1]}8", "bad_info_hash"),
    ],
)
def test_refusals(text: str, reason: str) -> None:
    with pytest.raises(MagnetError) as err:
        parse_target(text)
    assert err.value.reason == reason


@given(st.text(max_size=200))
def test_arbitrary_text_only_raises_magnet_error(text: str) -> None:
    for candidate in (text, "magnet:?" + text, f"magnet:?xt=urn:btih:{HEX}&" + text):
        try:
            magnet = parse_target(candidate)
        except MagnetError:
            continue
        assert len(magnet.info_hash) == 20
        assert all(0 < port < 65536 for _, port in magnet.peers)
