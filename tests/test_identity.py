"""The daemon's ed25519 identity file: created 0600 on first start, reloaded after, refused when unsafe."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kadnode.core.bep44 import SigningKey
from kadnode.runtime.identity import (
    IDENTITY_FILE,
    IdentityError,
    create_identity,
    encode_key,
    load_identity,
    load_or_create_identity,
)
from kadnode.runtime.node import Node
from kadnode.runtime.state import StateError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_created_once_with_mode_0600_then_loaded(tmp_path: Path) -> None:
    key, created = load_or_create_identity(tmp_path)
    path = tmp_path / IDENTITY_FILE
    assert created and mode(path) == 0o600
    again, created_again = load_or_create_identity(tmp_path)
    assert not created_again
    assert again.seed == key.seed and again.public_key == key.public_key
    assert [p.name for p in tmp_path.iterdir()] == [IDENTITY_FILE]  # no temporary file left behind


def test_the_file_is_standard_pkcs8_pem(tmp_path: Path) -> None:
    key, _ = load_or_create_identity(tmp_path)
    data = (tmp_path / IDENTITY_FILE).read_bytes()
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----")
    private = serialization.load_pem_private_key(data, password=None)
    assert isinstance(private, Ed25519PrivateKey)
    public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert public == key.public_key


def test_a_restrictive_umask_or_a_loose_one_still_gives_0600(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_identity(tmp_path)
    finally:
        os.umask(old)
    assert mode(tmp_path / IDENTITY_FILE) == 0o600


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o660])
def test_loose_permissions_are_refused_with_the_fix(tmp_path: Path, loose: int) -> None:
    load_or_create_identity(tmp_path)
    path = tmp_path / IDENTITY_FILE
    path.chmod(loose)
    with pytest.raises(IdentityError) as info:
        load_or_create_identity(tmp_path)
    message = str(info.value)
    assert f"permissions {loose:04o} for {path} are too open" in message
    assert f"chmod 600 {path}" in message
    path.chmod(0o600)
    load_or_create_identity(tmp_path)  # fixed as told


def test_stricter_permissions_are_fine(tmp_path: Path) -> None:
    key, _ = load_or_create_identity(tmp_path)
    (tmp_path / IDENTITY_FILE).chmod(0o400)
    assert load_identity(tmp_path / IDENTITY_FILE).seed == key.seed


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage\n", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", b"\x00" * 32],
)
def test_a_corrupt_file_is_refused_and_left_alone(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / IDENTITY_FILE
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(IdentityError) as info:
        load_or_create_identity(tmp_path)
    assert str(path) in str(info.value) and "move it away" in str(info.value)
    assert path.read_bytes() == content  # never replaced: items under the old key would be orphaned


def test_another_kind_of_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / IDENTITY_FILE
    ec = generate_private_key(SECP256R1())
    path.write_bytes(
        ec.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)
    with pytest.raises(IdentityError, match="not an ed25519 key"):
        load_identity(path)


def test_a_directory_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / IDENTITY_FILE).mkdir(mode=0o700)
    with pytest.raises(IdentityError, match="not a regular file"):
        load_or_create_identity(tmp_path)


def test_a_huge_file_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / IDENTITY_FILE
    path.write_bytes(b"x" * 100_000)
    path.chmod(0o600)
    with pytest.raises(IdentityError, match="too large"):
        load_identity(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_a_file_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    load_or_create_identity(tmp_path)
    path = tmp_path / IDENTITY_FILE
    os.chown(path, 12345, -1)
    with pytest.raises(IdentityError, match="belongs to user id 12345"):
        load_identity(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    load_or_create_identity(tmp_path)
    path = tmp_path / IDENTITY_FILE
    path.chmod(0o000)
    try:
        with pytest.raises(IdentityError, match="permission denied"):
            load_identity(path)
    finally:
        path.chmod(0o600)


def test_create_never_overwrites_a_key_that_appeared(tmp_path: Path) -> None:
    path = tmp_path / IDENTITY_FILE
    existing = SigningKey.generate()
    path.write_bytes(encode_key(existing))
    path.chmod(0o600)
    assert create_identity(path) is None
    assert load_identity(path).seed == existing.seed


def test_identity_error_is_a_state_error() -> None:
    """The daemon reports StateErrors as operator messages (exit 1); an identity problem is one."""
    assert issubclass(IdentityError, StateError)


# --- the node's identity -----------------------------------------------------------------------


async def test_a_node_with_a_data_dir_keeps_its_identity_across_restarts(tmp_path: Path) -> None:
    async with Node("127.0.0.2", data_dir=tmp_path) as node:
        assert node.identity is not None
        first = node.identity.public_key
        assert node.status()["public_key"] == first.hex()
    assert mode(tmp_path / IDENTITY_FILE) == 0o600
    async with Node("127.0.0.2", data_dir=tmp_path) as node:
        assert node.identity is not None and node.identity.public_key == first


async def test_a_node_without_a_data_dir_has_no_identity_unless_given_one() -> None:
    async with Node("127.0.0.2") as node:
        assert node.identity is None
        assert node.status()["public_key"] is None
    key = SigningKey.generate()
    async with Node("127.0.0.2", identity=key) as node:
        assert node.identity is key


async def test_a_given_identity_wins_over_the_data_dir_and_leaves_the_file_alone(tmp_path: Path) -> None:
    saved, _ = load_or_create_identity(tmp_path)
    key = SigningKey.generate()
    async with Node("127.0.0.2", data_dir=tmp_path, identity=key) as node:
        assert node.identity is key
    assert load_identity(tmp_path / IDENTITY_FILE).seed == saved.seed


async def test_a_node_refuses_to_start_on_a_bad_identity_and_releases_the_data_dir(tmp_path: Path) -> None:
    load_or_create_identity(tmp_path)
    (tmp_path / IDENTITY_FILE).chmod(0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        await Node("127.0.0.2", data_dir=tmp_path).start()
    (tmp_path / IDENTITY_FILE).chmod(0o600)
    async with Node("127.0.0.2", data_dir=tmp_path) as node:  # the lock was released
        assert node.identity is not None
