"""The daemon's ed25519 identity: the key its BEP 44 mutable items are signed with.

It lives in DATA_DIR/identity.key as a PKCS#8 PEM file (so `openssl pkey -in identity.key -pubout`
reads it), mode 0600, created on first start. Whoever reads it can publish under this node's name, so
a file that others may read is refused the way ssh refuses a private key with loose permissions: with
the chmod command that fixes it. A file that cannot be parsed is never replaced silently: a new key
would orphan every item published under the old one.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kadnode.core.bep44 import SigningKey
from kadnode.runtime.state import StateError

IDENTITY_FILE = "identity.key"
FILE_MODE = 0o600
MAX_KEY_FILE = 64 * 1024
"""A PEM ed25519 key is 119 bytes; anything this large is not one, and is not read into memory."""


class IdentityError(StateError):
    """The identity file cannot be used; the message says how to fix it."""


def identity_path(data_dir: Path) -> Path:
    return Path(data_dir) / IDENTITY_FILE


def encode_key(key: SigningKey) -> bytes:
    """PKCS#8 PEM of the key's seed."""
    private = Ed25519PrivateKey.from_private_bytes(key.seed)
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def decode_key(data: bytes, path: Path) -> SigningKey:
    """The key in a PEM file's bytes; IdentityError (naming `path`) if they hold no ed25519 key."""
    advice = (
        "move it away to let kadnode create a new identity (items published under the old key can "
        "then no longer be updated), or restore it from a backup"
    )
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(
            f"{path} is not a readable identity key (expected an unencrypted PEM ed25519 private key: "
            f"{exc}); {advice}"
        ) from None
    except Exception as exc:  # cryptography raises its own types for unsupported algorithms
        raise IdentityError(f"{path} is not a usable identity key ({exc}); {advice}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise IdentityError(f"{path} holds a {type(private).__name__}, not an ed25519 key; {advice}")
    return SigningKey(private.private_bytes_raw())


def _check_permissions(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise IdentityError(f"{path} is not a regular file; move it away so that kadnode can create its key")
    if st.st_uid != os.geteuid():
        raise IdentityError(
            f"{path} belongs to user id {st.st_uid}, not to the user running kadnode ({os.geteuid()}); "
            f"run the daemon as its owner, or `chown {os.geteuid()} {path}`"
        )
    loose = stat.S_IMODE(st.st_mode) & 0o077
    if loose:
        raise IdentityError(
            f"permissions {stat.S_IMODE(st.st_mode):04o} for {path} are too open: it is this node's private "
            f"signing key and must be readable only by its owner. Run: chmod 600 {path}"
        )


def load_identity(path: Path) -> SigningKey:
    """Read the key at `path`, refusing loose permissions, another owner, or a corrupt file."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except PermissionError:
        raise IdentityError(f"cannot read {path}: permission denied; run the daemon as the file's owner") from None
    except OSError as exc:
        raise IdentityError(f"cannot open identity key {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        _check_permissions(path, st)
        if st.st_size > MAX_KEY_FILE:
            raise IdentityError(f"{path} is {st.st_size} bytes, too large to be an identity key; move it away")
        chunks = []
        while chunk := os.read(fd, MAX_KEY_FILE):
            chunks.append(chunk)
    except OSError as exc:
        raise IdentityError(f"cannot read identity key {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return decode_key(b"".join(chunks), path)


def create_identity(path: Path) -> SigningKey | None:
    """Write a new key to `path` (mode 0600) atomically: a crash leaves no half-written key behind.

    Returns None when the file appeared meanwhile (it is not overwritten); then load it instead.
    """
    path = Path(path)
    key = SigningKey.generate()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away, never add them
            os.write(fd, encode_key(key))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # unlike rename, never replaces a key that appeared meanwhile
        except FileExistsError:
            return None
        _fsync_dir(path.parent)
    except OSError as exc:
        raise IdentityError(f"cannot create identity key {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return key


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create_identity(data_dir: Path) -> tuple[SigningKey, bool]:
    """The data directory's key, created on first use; the flag says whether it was just created."""
    path = identity_path(data_dir)
    for _ in range(2):
        try:
            return load_identity(path), False
        except FileNotFoundError:
            pass
        created = create_identity(path)
        if created is not None:
            return created, True
    return load_identity(path), False
