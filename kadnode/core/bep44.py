"""BEP 44's rules as pure functions: targets, the signing buffer, signatures, and checks of items.

Nothing here reads a clock or a socket, and only `SigningKey.generate` draws randomness (the OS's, via
`cryptography`; the runtime alone calls it). Values are always the bencoded `v` bytes exactly as sent:
hashes and signatures cover those bytes, never a re-encoding of something else.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kadnode.settings import Settings
from kadnode.storage.base import ImmutableItem, Item, MutableItem
from kadnode.wire.bencode import bdecode
from kadnode.wire.krpc import MAX_SEQ as MAX_SEQ  # re-exported: the core's name for it
from kadnode.wire.krpc import PROTOCOL_ERROR, ItemReply, Put

VALUE_TOO_BIG = 205
INVALID_SIGNATURE = 206
SALT_TOO_BIG = 207
CAS_MISMATCH = 301
SEQ_TOO_LOW = 302

SEED_LEN = 32
PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64


class PutRefused(Exception):
    """A received put that must be answered with a KRPC error (`code`, `message`)."""

    code: int
    message: str

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


def immutable_target(value: bytes) -> bytes:
    """SHA-1 of the bencoded value."""
    return hashlib.sha1(value).digest()


def mutable_target(public_key: bytes, salt: bytes = b"") -> bytes:
    """SHA-1 of the public key followed by the salt (an empty salt adds nothing)."""
    return hashlib.sha1(public_key + salt).digest()


def signing_buffer(salt: bytes, seq: int, value: bytes) -> bytes:
    """What a mutable item's signature covers: ``[4:salt<len>:<salt>]3:seqi<seq>e1:v<value>``.

    The pieces are concatenated rather than encoded as one dict, so that no parser quirk can shift a
    length into the seq (BEP 44); the salt part appears only for a non-empty salt.
    """
    head = b"4:salt%d:%s" % (len(salt), salt) if salt else b""
    return b"%s3:seqi%de1:v%s" % (head, seq, value)


def verify_signature(public_key: bytes, signature: bytes, salt: bytes, seq: int, value: bytes) -> bool:
    """Whether `signature` is `public_key`'s ed25519 signature of the item; never raises."""
    if len(public_key) != PUBLIC_KEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, signing_buffer(salt, seq, value))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


class SigningKey:
    """An ed25519 key that signs mutable items; `seed` is the 32-byte secret to keep."""

    __slots__ = ("_private", "public_key", "seed")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_LEN:
            raise ValueError(f"an ed25519 seed is {SEED_LEN} bytes, not {len(seed)}")
        self.seed = bytes(seed)
        self._private = Ed25519PrivateKey.from_private_bytes(self.seed)
        self.public_key = self._private.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> SigningKey:
        """A new key from the OS's randomness (runtime only: the core never makes keys)."""
        return cls(Ed25519PrivateKey.generate().private_bytes_raw())

    def sign(self, salt: bytes, seq: int, value: bytes) -> bytes:
        """The 64-byte signature of the item's signing buffer."""
        return self._private.sign(signing_buffer(salt, seq, value))

    def libtorrent_secret(self) -> bytes:
        """The 64-byte expanded secret key libtorrent's `dht_put_mutable_item` takes.

        libtorrent (like the ed25519 library it embeds) stores SHA-512 of the seed with the scalar half
        clamped as RFC 8032 prescribes; the other half is the nonce prefix. BEP 44's test vectors give
        their "private key" in this form.
        """
        expanded = bytearray(hashlib.sha512(self.seed).digest())
        expanded[0] &= 248
        expanded[31] &= 63
        expanded[31] |= 64
        return bytes(expanded)

    def __repr__(self) -> str:
        return f"SigningKey(public_key={self.public_key.hex()})"  # never the seed


def _check_value(value: bytes) -> None:
    """Raise ValueError unless `value` is exactly one canonical bencoded value (depth and size free)."""
    bdecode(value, max_depth=len(value) + 1, max_items=len(value) + 1)


def make_immutable(value: bytes) -> ImmutableItem:
    """Our own immutable item for the bencoded `value` (ValueError if it is not canonical bencode)."""
    _check_value(value)
    return ImmutableItem(immutable_target(value), value)


def make_mutable(key: SigningKey, value: bytes, seq: int, salt: bytes = b"") -> MutableItem:
    """Our own mutable item, signed by `key` (ValueError for non-canonical bencode or seq out of range)."""
    _check_value(value)
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"seq must be in 0..{MAX_SEQ}, got {seq}")
    return MutableItem(
        target=mutable_target(key.public_key, salt),
        public_key=key.public_key,
        salt=salt,
        seq=seq,
        signature=key.sign(salt, seq, value),
        value=value,
    )


def item_from_put(put: Put, settings: Settings) -> Item:
    """The item a received put stores, or PutRefused (205 value, 207 salt, 206 signature, 203 malformed).

    Token, cas and seq order need state and are the caller's to check. An immutable put's salt, seq and
    signature mean nothing and are ignored, as libtorrent does.
    """
    if len(put.value) > settings.max_value_size:
        raise PutRefused(VALUE_TOO_BIG, "message (v field) too big")
    if put.public_key is None:
        return ImmutableItem(immutable_target(put.value), put.value)
    if put.seq is None or put.signature is None or len(put.public_key) != PUBLIC_KEY_LEN:
        raise PutRefused(PROTOCOL_ERROR, "a mutable put needs a 32-byte 'k', 'seq' and 'sig'")
    if not 0 <= put.seq <= MAX_SEQ:
        raise PutRefused(PROTOCOL_ERROR, f"'seq' must be in 0..{MAX_SEQ}")
    if len(put.salt) > settings.max_salt_size:
        raise PutRefused(SALT_TOO_BIG, "salt (salt field) too big")
    if not verify_signature(put.public_key, put.signature, put.salt, put.seq, put.value):
        raise PutRefused(INVALID_SIGNATURE, "invalid signature")
    return MutableItem(
        target=mutable_target(put.public_key, put.salt),
        public_key=put.public_key,
        salt=put.salt,
        seq=put.seq,
        signature=put.signature,
        value=put.value,
    )


def item_from_reply(target: bytes, reply: ItemReply, salt: bytes) -> Item | None:
    """The item a get response holds for `target`, or None when it holds none or it fails the checks.

    A value whose SHA-1 is the target is the immutable item, whatever else came along; otherwise the
    reply must carry a key that hashes (with our salt) to the target and a valid signature.
    """
    value = reply.value
    if value is None:
        return None
    if immutable_target(value) == target:
        return ImmutableItem(target, value)
    key, seq, signature = reply.public_key, reply.seq, reply.signature
    if key is None or seq is None or signature is None or mutable_target(key, salt) != target:
        return None
    if not 0 <= seq <= MAX_SEQ or not verify_signature(key, signature, salt, seq, value):
        return None
    return MutableItem(target, key, salt, seq, signature, value)
