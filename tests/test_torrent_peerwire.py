"""kadnode.torrent.peerwire: every message round-trips, every malformed input is refused with its reason,
the reader is bounded and indifferent to how the stream is cut, and no garbage raises anything else."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kadnode.torrent.peerwire import (
    HANDSHAKE_SIZE,
    MAX_MESSAGE,
    METADATA_PIECE_SIZE,
    PROTOCOL,
    Bitfield,
    BitfieldMsg,
    Cancel,
    Choke,
    Extended,
    ExtHandshake,
    Handshake,
    Have,
    Interested,
    KeepAlive,
    Message,
    MessageReader,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    NotInterested,
    PeerWireError,
    Piece,
    Port,
    Request,
    Unchoke,
    Unknown,
    bencode_end,
    decode,
    decode_ext_handshake,
    decode_handshake,
    decode_metadata,
    encode,
    encode_ext_handshake,
    encode_handshake,
    encode_metadata,
)
from kadnode.wire.bencode import BencodeError, bencode

INFO_HASH = bytes(range(20))
PEER_ID = b"-KN0100-" + b"x" * 12

ALL_MESSAGES: list[Message] = [
    KeepAlive(),
    Choke(),
    Unchoke(),
    Interested(),
    NotInterested(),
    Have(0),
    Have(2**32 - 1),
    BitfieldMsg(b"\xff\x80"),
    Request(1, 16384, 16384),
    Piece(3, 0, b"block data"),
    Piece(3, 7, b""),
    Cancel(1, 16384, 16384),
    Port(6881),
    Extended(0, b"d1:md11:ut_metadatai2eee"),
    Extended(7, b"x"),
    Unknown(13, 0),
    Unknown(255, 5),
]


def frame(msg_id: int, payload: bytes) -> bytes:
    return struct.pack(">IB", 1 + len(payload), msg_id) + payload


# --- handshake --------------------------------------------------------------------------------------


@pytest.mark.parametrize("extensions", [True, False])
def test_handshake_round_trip(extensions: bool) -> None:
    h = Handshake(INFO_HASH, PEER_ID, extensions=extensions)
    data = encode_handshake(h)
    assert len(data) == HANDSHAKE_SIZE
    assert data.startswith(PROTOCOL)
    assert bool(data[25] & 0x10) is extensions  # BEP 10: reserved byte 5, bit 0x10
    assert decode_handshake(data) == h


def test_handshake_ignores_other_reserved_bits() -> None:
    data = bytearray(encode_handshake(Handshake(INFO_HASH, PEER_ID, extensions=False)))
    data[27] |= 0x05  # DHT and fast extension bits: not ours to refuse
    assert decode_handshake(bytes(data)) == Handshake(INFO_HASH, PEER_ID, extensions=False)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        encode_handshake(Handshake(INFO_HASH, PEER_ID))[:67],
        encode_handshake(Handshake(INFO_HASH, PEER_ID)) + b"\x00",
        b"\x13BitTorrent protocoX" + bytes(48),
        b"\x14BitTorrent protocol" + bytes(48),
        bytes(68),
    ],
)
def test_malformed_handshake_refused(data: bytes) -> None:
    with pytest.raises(PeerWireError) as info:
        decode_handshake(data)
    assert info.value.reason == "bad_handshake"


def test_encode_handshake_checks_sizes() -> None:
    with pytest.raises(ValueError):
        encode_handshake(Handshake(b"short", PEER_ID))


# --- messages ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=repr)
def test_message_round_trip(msg: Message) -> None:
    data = encode(msg)
    assert struct.unpack(">I", data[:4])[0] == len(data) - 4
    assert decode(data[4:]) == msg
    assert MessageReader().feed(data) == [msg]


def test_wire_layout_is_bep3() -> None:
    assert encode(KeepAlive()) == b"\x00\x00\x00\x00"
    assert encode(Interested()) == b"\x00\x00\x00\x01\x02"
    assert encode(Have(5)) == b"\x00\x00\x00\x05\x04\x00\x00\x00\x05"
    assert encode(Request(1, 2, 3)) == bytes.fromhex("0000000d 06 00000001 00000002 00000003")
    assert encode(Cancel(1, 2, 3)) == bytes.fromhex("0000000d 08 00000001 00000002 00000003")
    assert encode(Piece(1, 2, b"ab")) == bytes.fromhex("0000000b 07 00000001 00000002") + b"ab"
    assert encode(Port(6881)) == b"\x00\x00\x00\x03\x09\x1a\xe1"
    assert encode(Extended(3, b"p")) == b"\x00\x00\x00\x03\x14\x03p"


@pytest.mark.parametrize(
    "msg",
    [Have(-1), Have(2**32), Request(0, 0, 2**32), Piece(2**32, 0, b""), Port(70000), Extended(256, b""), Unknown(4, 1)],
    ids=repr,
)
def test_encode_refuses_what_does_not_fit(msg: Message) -> None:
    with pytest.raises(ValueError):
        encode(msg)


@pytest.mark.parametrize(
    "body",
    [
        frame(0, b"x"),  # choke with a payload
        frame(1, b"x"),
        frame(2, b"xx"),
        frame(3, b"x"),
        frame(4, b"\x00\x00\x00"),  # have: exactly 5
        frame(4, b"\x00\x00\x00\x00\x00"),
        frame(5, b""),  # empty bitfield
        frame(6, bytes(11)),  # request: exactly 13
        frame(6, bytes(13)),
        frame(7, bytes(7)),  # piece: at least 9
        frame(8, bytes(11)),  # cancel: exactly 13
        frame(9, b"\x1a"),  # port: exactly 3
        frame(9, b"\x1a\xe1\x00"),
        frame(20, b""),  # extended without its id
    ],
)
def test_bad_lengths_refused(body: bytes) -> None:
    with pytest.raises(PeerWireError) as info:
        decode(body[4:])
    assert info.value.reason == "bad_length"
    with pytest.raises(PeerWireError) as info:
        MessageReader().feed(body)
    assert info.value.reason == "bad_length"


# --- reader -----------------------------------------------------------------------------------------


def test_reader_takes_a_stream_one_byte_at_a_time() -> None:
    stream = b"".join(encode(msg) for msg in ALL_MESSAGES)
    reader = MessageReader()
    out: list[Message] = []
    for i in range(len(stream)):
        out.extend(reader.feed(stream[i : i + 1]))
    assert out == ALL_MESSAGES
    assert reader.buffered == 0


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30))
def test_reader_is_indifferent_to_chunking(cuts: list[int]) -> None:
    stream = b"".join(encode(msg) for msg in ALL_MESSAGES)
    reader = MessageReader()
    out: list[Message] = []
    pos = 0
    for cut in cuts:
        out.extend(reader.feed(stream[pos : pos + cut]))
        pos += cut
    out.extend(reader.feed(stream[pos:]))
    assert out == ALL_MESSAGES


def test_full_block_fits_the_default_limit() -> None:
    msg = Piece(0, 0, bytes(16 * 1024))
    assert MessageReader().feed(encode(msg)) == [msg]


def test_oversized_length_refused_before_buffering() -> None:
    reader = MessageReader()
    assert reader.feed(b"\x00\x00") == []
    with pytest.raises(PeerWireError) as info:
        reader.feed(struct.pack(">I", MAX_MESSAGE + 1)[2:])  # the rest of the prefix, no body at all
    assert info.value.reason == "oversized"
    assert reader.buffered == 0
    with pytest.raises(PeerWireError):  # a failed stream stays failed: it cannot be resynchronised
        reader.feed(encode(KeepAlive()))


def test_limit_is_a_constructor_argument() -> None:
    reader = MessageReader(max_message=100)
    assert reader.feed(encode(Piece(0, 0, bytes(91)))) == [Piece(0, 0, bytes(91))]
    with pytest.raises(PeerWireError) as info:
        reader.feed(encode(Piece(0, 0, bytes(92)))[:4])
    assert info.value.reason == "oversized"


def test_huge_declared_length_refused_after_good_messages_in_the_same_chunk() -> None:
    reader = MessageReader()
    with pytest.raises(PeerWireError) as info:
        reader.feed(encode(Interested()) + b"\xff\xff\xff\xff")
    assert info.value.reason == "oversized"


@given(st.binary(max_size=300))
def test_garbage_only_raises_peerwireerror(data: bytes) -> None:
    reader = MessageReader(max_message=200)
    with contextlib.suppress(PeerWireError):
        reader.feed(data)
    assert reader.buffered <= 204


@given(st.binary(max_size=200))
def test_garbage_payloads_only_raise_peerwireerror(data: bytes) -> None:
    for decoder in (decode_handshake, decode_ext_handshake, decode_metadata, decode):
        with contextlib.suppress(PeerWireError):
            decoder(data)
    with contextlib.suppress(PeerWireError):
        Bitfield.from_bytes(data, 100)


# --- bitfield ---------------------------------------------------------------------------------------


def test_bitfield_bits_are_high_first() -> None:
    field = Bitfield(10)
    field.add(0)
    field.add(9)
    field.add(9)
    assert field.to_bytes() == b"\x80\x40"
    assert len(field) == 2 and list(field) == [0, 9]
    assert 0 in field and 9 in field and 1 not in field and 10 not in field and "0" not in field
    assert not field.complete()
    assert Bitfield.from_bytes(field.to_bytes(), 10).to_bytes() == b"\x80\x40"
    with pytest.raises(IndexError):
        field.add(10)


def test_full_bitfield() -> None:
    field = Bitfield.full(9)
    assert field.complete() and len(field) == 9
    assert field.to_bytes() == b"\xff\x80"
    assert Bitfield.from_bytes(b"\xff\x80", 9).complete()


@pytest.mark.parametrize(
    ("data", "count"),
    [(b"\xff", 9), (b"\xff\x80\x00", 9), (b"\xff\xc0", 9), (b"\x01", 7), (b"", 1)],
)
def test_bad_bitfield_refused(data: bytes, count: int) -> None:
    with pytest.raises(PeerWireError) as info:
        Bitfield.from_bytes(data, count)
    assert info.value.reason == "bad_bitfield"


# --- BEP 10 -----------------------------------------------------------------------------------------


def test_ext_handshake_round_trip() -> None:
    h = ExtHandshake({"ut_metadata": 2, "ut_pex": 0}, metadata_size=31235, client="kadnode 0.1", reqq=250)
    payload = encode_ext_handshake(h)
    assert payload == b"d1:md11:ut_metadatai2e6:ut_pexi0ee13:metadata_sizei31235e4:reqqi250e1:v11:kadnode 0.1e"
    assert decode_ext_handshake(payload) == h
    assert decode_ext_handshake(encode_ext_handshake(ExtHandshake({}))) == ExtHandshake({})


def test_ext_handshake_ignores_unknown_keys() -> None:
    payload = bencode({"m": {"lt_donthave": 7}, "p": 6881, "yourip": b"\x7f\x00\x00\x01", "complete_ago": 1})
    assert decode_ext_handshake(payload) == ExtHandshake({"lt_donthave": 7})


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"d1:m",
        b"li1ee",
        b"d1:mi1ee",
        bencode({"m": {"ut_metadata": 256}}),
        bencode({"m": {"ut_metadata": -1}}),
        bencode({"m": {"ut_metadata": b"2"}}),
        bencode({"m": {}, "metadata_size": -5}),
        bencode({"m": {}, "metadata_size": b"5"}),
        bencode({"m": {}, "reqq": b"x"}),
        bencode({"m": {}, "v": 1}),
        b"d1:v1:x1:md11:ut_metadatai2eee",  # unsorted keys
        b"d1:md1:ad1:ad1:ad1:ad1:aleeeeeee",  # too deep
    ],
)
def test_bad_ext_handshake_refused(payload: bytes) -> None:
    with pytest.raises(PeerWireError) as info:
        decode_ext_handshake(payload)
    assert info.value.reason == "bad_extended"


# --- BEP 9 ------------------------------------------------------------------------------------------


def test_metadata_messages_as_in_bep9() -> None:
    assert encode_metadata(MetadataRequest(0)) == b"d8:msg_typei0e5:piecei0ee"
    assert encode_metadata(MetadataReject(3)) == b"d8:msg_typei2e5:piecei3ee"
    data = encode_metadata(MetadataData(0, 3425, b"x" * 3425))
    assert data == b"d8:msg_typei1e5:piecei0e10:total_sizei3425ee" + b"x" * 3425


@pytest.mark.parametrize(
    "msg",
    [
        MetadataRequest(0),
        MetadataRequest(7),
        MetadataReject(2),
        MetadataData(0, 5, b"hello"),
        MetadataData(0, METADATA_PIECE_SIZE + 1, b"a" * METADATA_PIECE_SIZE),
        MetadataData(1, METADATA_PIECE_SIZE + 1, b"b"),
        MetadataData(1, 2 * METADATA_PIECE_SIZE, b"d" * METADATA_PIECE_SIZE),
        MetadataData(0, 2, b"ee"),  # raw data that looks like bencode stays data
    ],
    ids=lambda m: f"{type(m).__name__}({m.piece})",
)
def test_metadata_round_trip(msg: MetadataRequest | MetadataData | MetadataReject) -> None:
    assert decode_metadata(encode_metadata(msg)) == msg
    assert MessageReader().feed(encode(Extended(2, encode_metadata(msg)))) == [Extended(2, encode_metadata(msg))]


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"d8:msg_typei0e",  # truncated dict
        b"le",
        b"i0e",
        b"d5:piecei0ee",  # no msg_type
        b"d8:msg_typei0ee",  # no piece
        b"d8:msg_typei0e5:piecei-1ee",
        b"d8:msg_typei0e5:piece1:0e",
        b"d8:msg_typei0e5:piecei0eeextra",  # request with trailing data
        b"d8:msg_typei2e5:piecei0eex",
        b"d5:piecei0e8:msg_typei0ee",  # unsorted keys
        b"d8:msg_typei1e5:piecei0ee",  # data without total_size
        b"d8:msg_typei1e5:piecei0e10:total_sizei0ee",
        b"d8:msg_typei1e5:piecei0e10:total_sizei5eeabcd",  # short
        b"d8:msg_typei1e5:piecei0e10:total_sizei5eeabcdef",  # long
        b"d8:msg_typei1e5:piecei1e10:total_sizei5eeabcde",  # piece beyond total_size
        encode_metadata(MetadataData(0, 2 * METADATA_PIECE_SIZE, b"x" * METADATA_PIECE_SIZE))[:-1],  # not last: 16 KiB
        b"d1:ad1:ad1:ad1:aleeeee",  # too deep
        b"d8:msg_typei0e5:piecei0e" + b"1:x1:x" * 30 + b"e",  # too many items
        b"d8:msg_typei0e5:piece99999999999999999999:",
        b"d8:msg_typei0e5:piecei0e1:xi1",
    ],
)
def test_bad_metadata_refused(payload: bytes) -> None:
    with pytest.raises(PeerWireError) as info:
        decode_metadata(payload)
    assert info.value.reason == "bad_metadata"


def test_unknown_metadata_type_has_its_own_reason() -> None:
    with pytest.raises(PeerWireError) as info:
        decode_metadata(b"d8:msg_typei7e5:piecei0ee")
    assert info.value.reason == "unknown_metadata_type"


def test_bencode_end_finds_where_a_value_ends() -> None:
    assert bencode_end(b"d1:ai1eeXYZ") == 8
    assert bencode_end(b"4:spamrest") == 6
    assert bencode_end(b"i-3e") == 4
    assert bencode_end(b"ll1:xeeEE") == 7
    assert bencode_end(b"??d1:ai1ee", 2) == 10
    for bad in (b"", b"e", b"d1:a", b"x", b"5:abc", b"i123", b"llllllllllleeeeeeeeeee"):
        with pytest.raises(BencodeError):
            bencode_end(bad)
