"""Typed KRPC messages (BEP 5, with BEP 42 `ip`, BEP 43 `ro` and BEP 44 `get`/`put`).

`decode_message` turns a datagram into a frozen value or raises `KrpcError`; it never raises anything
else, whatever the bytes. The error carries the transaction id whenever it could be read, so the node
can answer a malformed query with a 203 error that the sender can match. Unknown keys are allowed
everywhere (forward compatibility) but still count against the bencode limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kadnode.types import Addr, NodeInfo
from kadnode.wire.bencode import Bencoded, BencodeError, Raw, bdecode, bencode
from kadnode.wire.compact import CompactError, decode_nodes, decode_peer, encode_peer

GENERIC_ERROR = 201
SERVER_ERROR = 202
PROTOCOL_ERROR = 203
METHOD_UNKNOWN = 204

MAX_TID_LEN = 16
"""Longest transaction id accepted. BEP 5 suggests 2 bytes; some clients use 4 or 8."""

MAX_SEQ = 2**63 - 1
"""Largest BEP 44 sequence number (MAX_INT64); negative ones are refused too, as the BEP allows."""

MAX_INCARNATION = 2**32 - 1
"""Largest gossip incarnation (4 bytes in a claim)."""
MAX_PROBE_TIMEOUT_MS = 60_000
"""Longest indirect-probe wait a kn_gossip request may ask for."""

_ID_LEN = 20
_NODE_LEN = 26  # compact node info
_KEY_LEN = 32  # ed25519 public key
_SIG_LEN = 64  # ed25519 signature


@dataclass(frozen=True, slots=True)
class Ping:
    @property
    def method(self) -> bytes:
        return b"ping"


@dataclass(frozen=True, slots=True)
class FindNode:
    target: bytes

    @property
    def method(self) -> bytes:
        return b"find_node"


@dataclass(frozen=True, slots=True)
class GetPeers:
    info_hash: bytes
    noseed: bool = False
    scrape: bool = False

    @property
    def method(self) -> bytes:
        return b"get_peers"


@dataclass(frozen=True, slots=True)
class AnnouncePeer:
    info_hash: bytes
    port: int
    """0 when absent; meaningless when `implied_port` is set (the UDP source port counts then)."""
    token: bytes
    implied_port: bool = False
    seed: bool = False

    @property
    def method(self) -> bytes:
        return b"announce_peer"


@dataclass(frozen=True, slots=True)
class UnknownMethod:
    """A query we do not implement; `target` lets the node answer it like find_node (libtorrent does)."""

    method: bytes
    target: bytes | None
    """The 20-byte `target` argument, else the 20-byte `info_hash`, else None."""


@dataclass(frozen=True, slots=True)
class Get:
    """BEP 44 get: an item by target (SHA-1 of an immutable value, or of a public key and salt)."""

    target: bytes
    seq: int | None = None
    """Only send the item's value if its seq is greater than this."""

    @property
    def method(self) -> bytes:
        return b"get"


@dataclass(frozen=True, slots=True)
class Put:
    """BEP 44 put; a `public_key` makes it mutable (then `seq` and `signature` are always set).

    `value` is the bencoded `v` exactly as received: BEP 44 hashes and signs those bytes. The decoder
    is canonical, so re-encoding the decoded `v` gives back precisely the bytes that were on the wire.
    The encoder writes `value` verbatim, unchecked: it must be one canonical bencoded value.
    Salt, seq and signature on an immutable put are kept as sent; the core ignores them.
    """

    token: bytes
    value: bytes
    public_key: bytes | None = None
    salt: bytes = b""
    seq: int | None = None
    signature: bytes | None = None
    cas: int | None = None

    @property
    def method(self) -> bytes:
        return b"put"


@dataclass(frozen=True, slots=True)
class KnGossip:
    """kadnode's liveness-gossip query (docs/gossip.md): a probe that carries claims, or, with `probe`,
    a request to probe that node for the sender (an indirect probe) and say whether it answered.

    Other clients answer it 204 (method unknown): they are then probed with plain `ping` instead.
    """

    incarnation: int
    """The sender's incarnation (`inc`, 0..2**32-1)."""
    claims: bytes = b""
    """Concatenated 31-byte claims (`c`), decoded by the gossip layer."""
    probe: bytes | None = None
    """`p`: the 26-byte compact node info of the node to probe on the sender's behalf."""
    probe_timeout_ms: int | None = None
    """`pt`: how long the sender waits for the indirect probe's outcome, in milliseconds."""

    @property
    def method(self) -> bytes:
        return b"kn_gossip"


QueryBody = Ping | FindNode | GetPeers | AnnouncePeer | Get | Put | KnGossip | UnknownMethod


@dataclass(frozen=True, slots=True)
class Query:
    tid: bytes
    sender_id: bytes
    body: QueryBody
    version: bytes | None = None
    read_only: bool = False
    claims: bytes = b""
    """kadnode's liveness claims piggybacked on any query but kn_gossip (`a.kn_c`, docs/gossip.md): other
    clients ignore an argument they don't know; a malformed one is dropped, not the query."""


PIGGYBACK_KEY = b"kn_c"
"""Where liveness claims ride on queries (in `a`) and replies (in `r`) other than kn_gossip's own."""


@dataclass(frozen=True, slots=True)
class Response:
    """A reply; `values` is the whole `r` dict as sent, `id` included (filled in from `sender_id`)."""

    tid: bytes
    sender_id: bytes
    values: dict[bytes, Any]
    version: bytes | None = None
    ip: Addr | None = None
    """BEP 42: the requester's address as the responder saw it."""

    def __post_init__(self) -> None:
        have = self.values.get(b"id")
        if have is None:
            object.__setattr__(self, "values", {**self.values, b"id": self.sender_id})
        elif have != self.sender_id:
            raise ValueError("values[b'id'] differs from sender_id")


@dataclass(frozen=True, slots=True)
class ErrorReply:
    tid: bytes
    code: int
    message: str
    version: bytes | None = None


Message = Query | Response | ErrorReply


class KrpcError(Exception):
    """The remote sent something we cannot accept."""

    code: int
    message: str
    tid: bytes | None
    """Set when the transaction id was readable, so that an error reply can be matched."""
    reason: str
    """Counter name, e.g. "bad_bencode", "missing_field", "bad_id"."""
    msg_type: bytes | None
    """The `y` of the offending message when readable: only queries deserve an error reply."""

    def __init__(
        self,
        code: int,
        message: str,
        tid: bytes | None = None,
        reason: str = "protocol_error",
        msg_type: bytes | None = None,
    ) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.tid = tid
        self.reason = reason
        self.msg_type = msg_type


class _Envelope:
    """What is known about the message so far, to stamp onto a KrpcError."""

    __slots__ = ("msg_type", "tid")

    def __init__(self) -> None:
        self.tid: bytes | None = None
        self.msg_type: bytes | None = None

    def error(self, reason: str, message: str) -> KrpcError:
        return KrpcError(PROTOCOL_ERROR, message, self.tid, reason, self.msg_type)

    def get(self, d: dict[bytes, Bencoded], key: bytes) -> Bencoded:
        value = d.get(key)
        if value is None:
            raise self.error("missing_field", f"missing '{key.decode()}'")
        return value

    def get_id20(self, d: dict[bytes, Bencoded], key: bytes, reason: str) -> bytes:
        value = self.get(d, key)
        if type(value) is not bytes or len(value) != _ID_LEN:
            raise self.error(reason, f"'{key.decode()}' must be a {_ID_LEN}-byte string")
        return value

    def get_flag(self, d: dict[bytes, Bencoded], key: bytes) -> bool:
        value = d.get(key)
        if value is None:
            return False
        if type(value) is not int:
            raise self.error("bad_field", f"'{key.decode()}' must be an integer")
        return value != 0


def decode_message(data: bytes, *, max_depth: int = 10, max_items: int = 500) -> Message:
    """Parse and validate one KRPC datagram; any problem raises KrpcError (code 203)."""
    env = _Envelope()
    try:
        msg = bdecode(data, max_depth=max_depth, max_items=max_items)
    except BencodeError as exc:
        error = KrpcError(PROTOCOL_ERROR, f"invalid bencode ({exc.reason})", None, "bad_bencode")
        error.__cause__ = exc  # spelled out: mypyc-compiled code drops the cause of `raise ... from`
        raise error from exc
    if type(msg) is not dict:
        raise env.error("not_dict", "message is not a dict")
    tid = env.get(msg, b"t")
    if type(tid) is not bytes or not 0 < len(tid) <= MAX_TID_LEN:
        raise env.error("bad_tid", f"'t' must be a string of 1 to {MAX_TID_LEN} bytes")
    env.tid = tid
    y = env.get(msg, b"y")
    if type(y) is not bytes or y not in (b"q", b"r", b"e"):
        raise env.error("bad_message_type", "'y' must be 'q', 'r' or 'e'")
    env.msg_type = y
    version = msg.get(b"v")
    if type(version) is not bytes:
        version = None  # a malformed optional field is ignored, as other clients do
    if y == b"q":
        return _decode_query(env, msg, tid, version)
    if y == b"r":
        return _decode_response(env, msg, tid, version)
    return _decode_error(env, msg, tid, version)


def _decode_query(env: _Envelope, msg: dict[bytes, Bencoded], tid: bytes, version: bytes | None) -> Query:
    method = env.get(msg, b"q")
    if type(method) is not bytes:
        raise env.error("bad_method", "'q' must be a string")
    args = env.get(msg, b"a")
    if type(args) is not dict:
        raise env.error("bad_args", "'a' must be a dict")
    sender_id = env.get_id20(args, b"id", "bad_id")
    body: QueryBody
    if method == b"ping":
        body = Ping()
    elif method == b"find_node":
        body = FindNode(env.get_id20(args, b"target", "bad_target"))
    elif method == b"get_peers":
        body = GetPeers(
            env.get_id20(args, b"info_hash", "bad_info_hash"),
            noseed=env.get_flag(args, b"noseed"),
            scrape=env.get_flag(args, b"scrape"),
        )
    elif method == b"announce_peer":
        body = _decode_announce(env, args)
    elif method == b"get":
        body = Get(env.get_id20(args, b"target", "bad_target"), _optional_int(env, args, b"seq", "bad_seq"))
    elif method == b"put":
        body = _decode_put(env, args)
    elif method == b"kn_gossip":
        body = _decode_gossip(env, args)
    else:
        target = args.get(b"target")
        if type(target) is not bytes or len(target) != _ID_LEN:
            target = args.get(b"info_hash")
            if type(target) is not bytes or len(target) != _ID_LEN:
                target = None
        body = UnknownMethod(method, target)
    ro = msg.get(b"ro")
    claims = args.get(PIGGYBACK_KEY)
    if type(claims) is not bytes or type(body) is KnGossip:
        claims = b""
    return Query(tid, sender_id, body, version, type(ro) is int and ro == 1, claims)


def _decode_announce(env: _Envelope, args: dict[bytes, Bencoded]) -> AnnouncePeer:
    info_hash = env.get_id20(args, b"info_hash", "bad_info_hash")
    token = env.get(args, b"token")
    if type(token) is not bytes:
        raise env.error("bad_token", "'token' must be a string")
    implied = env.get_flag(args, b"implied_port")
    raw_port = args.get(b"port")
    if type(raw_port) is int and 0 <= raw_port <= 0xFFFF:
        port = raw_port
    elif implied:
        port = 0  # ignored anyway: the UDP source port is the peer's port
    elif raw_port is None:
        raise env.error("missing_field", "missing 'port'")
    else:
        raise env.error("bad_port", "'port' must be an integer in 0..65535")
    return AnnouncePeer(info_hash, port, token, implied, env.get_flag(args, b"seed"))


def _optional_int(env: _Envelope, args: dict[bytes, Bencoded], key: bytes, reason: str) -> int | None:
    value = args.get(key)
    if value is None or type(value) is int:
        return value
    raise env.error(reason, f"'{key.decode()}' must be an integer")


def _optional_bytes(
    env: _Envelope, args: dict[bytes, Bencoded], key: bytes, reason: str, length: int | None = None
) -> bytes | None:
    value = args.get(key)
    if value is None:
        return None
    if type(value) is not bytes or (length is not None and len(value) != length):
        size = "a string" if length is None else f"a {length}-byte string"
        raise env.error(reason, f"'{key.decode()}' must be {size}")
    return value


def _decode_put(env: _Envelope, args: dict[bytes, Bencoded]) -> Put:
    """Types and lengths only: sizes, the signature, token and seq order are the core's business."""
    token = env.get(args, b"token")
    if type(token) is not bytes:
        raise env.error("bad_token", "'token' must be a string")
    value = bencode(env.get(args, b"v"))  # exact: see Put
    public_key = _optional_bytes(env, args, b"k", "bad_key", _KEY_LEN)
    salt = _optional_bytes(env, args, b"salt", "bad_salt")
    seq = _optional_int(env, args, b"seq", "bad_seq")
    if seq is not None and not 0 <= seq <= MAX_SEQ:
        raise env.error("bad_seq", f"'seq' must be in 0..{MAX_SEQ}")
    signature = _optional_bytes(env, args, b"sig", "bad_signature", _SIG_LEN)
    cas = _optional_int(env, args, b"cas", "bad_cas")
    if public_key is not None and (seq is None or signature is None):
        raise env.error("missing_field", "a mutable put ('k') needs 'seq' and 'sig'")
    return Put(token, value, public_key, salt or b"", seq, signature, cas)


def _decode_gossip(env: _Envelope, args: dict[bytes, Bencoded]) -> KnGossip:
    incarnation = env.get(args, b"inc")
    if type(incarnation) is not int or not 0 <= incarnation <= MAX_INCARNATION:
        raise env.error("bad_incarnation", f"'inc' must be an integer in 0..{MAX_INCARNATION}")
    claims = _optional_bytes(env, args, b"c", "bad_claims") or b""
    probe = _optional_bytes(env, args, b"p", "bad_probe", _NODE_LEN)
    timeout = _optional_int(env, args, b"pt", "bad_probe")
    if timeout is not None and not 0 <= timeout <= MAX_PROBE_TIMEOUT_MS:
        raise env.error("bad_probe", f"'pt' must be in 0..{MAX_PROBE_TIMEOUT_MS}")
    return KnGossip(incarnation, claims, probe, timeout)


def _decode_response(
    env: _Envelope, msg: dict[bytes, Bencoded], tid: bytes, version: bytes | None
) -> Response:
    values = env.get(msg, b"r")
    if type(values) is not dict:
        raise env.error("bad_response", "'r' must be a dict")
    sender_id = env.get_id20(values, b"id", "bad_id")
    ip: Addr | None = None
    raw_ip = msg.get(b"ip")
    if type(raw_ip) is bytes and len(raw_ip) == 6:
        ip = decode_peer(raw_ip)
    return Response(tid, sender_id, values, version, ip)


def _decode_error(
    env: _Envelope, msg: dict[bytes, Bencoded], tid: bytes, version: bytes | None
) -> ErrorReply:
    err = env.get(msg, b"e")
    if type(err) is not list or len(err) != 2 or type(err[0]) is not int or type(err[1]) is not bytes:
        raise env.error("bad_error", "'e' must be [integer code, string message]")
    return ErrorReply(tid, err[0], err[1].decode("utf-8", errors="replace"), version)


def encode_message(msg: Message) -> bytes:
    """Canonical bencode of a message; `v`, `ip` and `ro` appear only when set.

    Written out directly, with the top-level keys in their sorted order (a < e < ip < q < r < ro < t
    < v < y): every datagram a node sends comes through here.
    """
    kind = type(msg)
    if kind is Query:
        assert isinstance(msg, Query)
        body = msg.body
        parts = [b"d1:a", bencode(_query_args(msg)), b"1:q", _string(body.method)]
        if msg.read_only:
            parts.append(b"2:roi1e")
        tail = b"1:y1:qe"
    elif kind is Response:
        assert isinstance(msg, Response)
        return encode_response(msg.tid, msg.values, msg.version, msg.ip)
    elif kind is ErrorReply:
        assert isinstance(msg, ErrorReply)
        parts = [b"d1:e", bencode([msg.code, msg.message])]
        tail = b"1:y1:ee"
    else:
        raise TypeError(f"not a KRPC message: {type(msg).__name__}")
    parts += (b"1:t", _string(msg.tid))
    if msg.version is not None:
        parts += (b"1:v", _string(msg.version))
    parts.append(tail)
    return b"".join(parts)


def encode_response(
    tid: bytes, values: dict[bytes, Any], version: bytes | None, ip: Addr | None, encoded_ip: bytes | None = None
) -> bytes:
    """`encode_message` of a Response, without building one: a node answers every query through here.
    `values` must hold the responder's `id` (Response checks that; this does not). `encoded_ip`, when
    given, is `encode_peer(ip)` already made."""
    parts = [b"d"]
    if ip is not None:
        parts += (b"2:ip6:", encoded_ip or encode_peer(ip))
    parts += (b"1:r", bencode(values), b"1:t", _string(tid))
    if version is not None:
        parts += (b"1:v", _string(version))
    parts.append(b"1:y1:re")
    return b"".join(parts)


def _string(value: bytes) -> bytes:
    if type(value) is bytes:
        return b"%d:%s" % (len(value), value)
    return bencode(value)  # a bytearray, say: the general encoder copes


def _query_args(query: Query) -> dict[bytes, Any]:
    args: dict[bytes, Any] = {b"id": query.sender_id}
    body = query.body
    if isinstance(body, FindNode):
        args[b"target"] = body.target
    elif isinstance(body, GetPeers):
        args[b"info_hash"] = body.info_hash
        if body.noseed:
            args[b"noseed"] = 1
        if body.scrape:
            args[b"scrape"] = 1
    elif isinstance(body, AnnouncePeer):
        args[b"info_hash"] = body.info_hash
        args[b"port"] = body.port
        args[b"token"] = body.token
        if body.implied_port:
            args[b"implied_port"] = 1
        if body.seed:
            args[b"seed"] = 1
    elif isinstance(body, Get):
        args[b"target"] = body.target
        if body.seq is not None:
            args[b"seq"] = body.seq
    elif isinstance(body, Put):
        _put_args(body, args)
    elif isinstance(body, KnGossip):
        args[b"inc"] = body.incarnation
        if body.claims:
            args[b"c"] = body.claims
        if body.probe is not None:
            args[b"p"] = body.probe
        if body.probe_timeout_ms is not None:
            args[b"pt"] = body.probe_timeout_ms
    elif isinstance(body, UnknownMethod) and body.target is not None:
        args[b"target"] = body.target
    if query.claims and not isinstance(body, KnGossip):
        args[PIGGYBACK_KEY] = query.claims
    return args


def _put_args(body: Put, args: dict[bytes, Any]) -> None:
    args[b"token"] = body.token
    args[b"v"] = Raw(body.value)
    optional = {b"k": body.public_key, b"seq": body.seq, b"sig": body.signature, b"cas": body.cas}
    args.update((key, value) for key, value in optional.items() if value is not None)
    if body.salt:
        args[b"salt"] = body.salt


def _bad_value(resp: Response, reason: str, message: str) -> KrpcError:
    return KrpcError(PROTOCOL_ERROR, message, resp.tid, reason, b"r")


def response_nodes(resp: Response) -> list[NodeInfo]:
    """The nodes in `nodes` (none when absent)."""
    raw = resp.values.get(b"nodes")
    if raw is None:
        return []
    if type(raw) is not bytes:
        raise _bad_value(resp, "bad_nodes", "'nodes' must be a string")
    try:
        return decode_nodes(raw)
    except CompactError as exc:
        raise _bad_value(resp, "bad_nodes", str(exc)) from None


def response_peers(resp: Response) -> list[Addr]:
    """The peers in `values` (none when absent); entries that are not 6-byte strings are skipped."""
    raw = resp.values.get(b"values")
    if raw is None:
        return []
    if type(raw) is not list:
        raise _bad_value(resp, "bad_values", "'values' must be a list")
    return [decode_peer(item) for item in raw if type(item) is bytes and len(item) == 6]


def response_token(resp: Response) -> bytes | None:
    """The write token, if the response carries one."""
    raw = resp.values.get(b"token")
    if raw is None:
        return None
    if type(raw) is not bytes:
        raise _bad_value(resp, "bad_token", "'token' must be a string")
    return raw


@dataclass(frozen=True, slots=True)
class ItemReply:
    """The BEP 44 item fields of a get response, checked for type and length but not authenticated."""

    value: bytes | None
    """The bencoded `v`, byte for byte as received; None when absent."""
    public_key: bytes | None
    seq: int | None
    signature: bytes | None


def response_item(resp: Response) -> ItemReply:
    """The item in a get response. A `seq` alone means "I hold that seq, no newer than you asked"."""
    values = resp.values
    raw_value = values.get(b"v")
    # A decoded `v` re-encodes to exactly the received bytes (canonical decoder); a Raw stays verbatim.
    value = None if raw_value is None else bencode(raw_value)
    public_key = values.get(b"k")
    if public_key is not None and (type(public_key) is not bytes or len(public_key) != _KEY_LEN):
        raise _bad_value(resp, "bad_key", f"'k' must be a {_KEY_LEN}-byte string")
    seq = values.get(b"seq")
    if seq is not None and (type(seq) is not int or not 0 <= seq <= MAX_SEQ):
        raise _bad_value(resp, "bad_seq", f"'seq' must be an integer in 0..{MAX_SEQ}")
    signature = values.get(b"sig")
    if signature is not None and (type(signature) is not bytes or len(signature) != _SIG_LEN):
        raise _bad_value(resp, "bad_signature", f"'sig' must be a {_SIG_LEN}-byte string")
    return ItemReply(value, public_key, seq, signature)


@dataclass(frozen=True, slots=True)
class GossipReply:
    """The gossip fields of a kn_gossip response, checked for type and range."""

    incarnation: int | None
    claims: bytes
    probe_acked: bool | None
    """For an indirect-probe request: whether the node probed for us answered (`pa`); else None."""


def response_gossip(resp: Response) -> GossipReply:
    """The gossip fields of a response (a node that is not kadnode sends none of them)."""
    values = resp.values
    incarnation = values.get(b"inc")
    if incarnation is not None and (type(incarnation) is not int or not 0 <= incarnation <= MAX_INCARNATION):
        raise _bad_value(resp, "bad_incarnation", f"'inc' must be an integer in 0..{MAX_INCARNATION}")
    claims = values.get(b"c", b"")
    if type(claims) is not bytes:
        raise _bad_value(resp, "bad_claims", "'c' must be a string")
    acked = values.get(b"pa")
    if acked is not None and type(acked) is not int:
        raise _bad_value(resp, "bad_probe", "'pa' must be an integer")
    return GossipReply(incarnation, claims, None if acked is None else acked != 0)
