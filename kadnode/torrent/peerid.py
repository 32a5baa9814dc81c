"""Our BitTorrent peer ID: Azureus style, ``-KN0100-`` and 12 random bytes, so that other clients'
peer lists name us (libtorrent shows "kadnode 0.1.0.0")."""

from __future__ import annotations

import os

from kadnode import __version__

PREFIX_LENGTH = 8


def new_peer_id() -> bytes:
    """A fresh 20-byte peer ID: ``-KN`` + four version digits + ``-`` + 12 random bytes."""
    digits = "".join(part for part in __version__.split(".") if part.isdigit())[:4].ljust(4, "0")
    prefix = f"-KN{digits}-".encode()
    return prefix + os.urandom(20 - len(prefix))
