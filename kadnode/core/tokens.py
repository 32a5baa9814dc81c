"""BEP 5 write tokens: proof that an announcer recently asked us from the IP it announces from.

A token is ``sha1(secret + ip)[:8]``. Secrets rotate on a fixed grid of ``token_rotation_interval``
(I) seconds that starts at the first ``now`` the manager sees; the previous secret stays valid. A token
issued at ``t``, in the epoch ``[E, E + I)`` containing ``t``, is therefore accepted exactly while
``now < E + 2I``: for more than I and at most 2I seconds (5-10 minutes with the default I = 300 s).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import random

from kadnode.core.nodeid import pack_ipv4
from kadnode.settings import Settings

TOKEN_SIZE = 8
"""Bytes per token: short keeps replies small; 64 bits are far beyond guessing within 10 minutes."""
_SECRET_SIZE = 16
TOKEN_CACHE_SIZE = 4096
"""Tokens under the current secret kept per IP: every get_peers, get and find_node-like reply needs
one, and an asker usually asks again soon. Emptied at each rotation, and when full."""


class TokenManager:
    """Issues and checks write tokens; rotation happens lazily on the ``now`` of each call."""

    def __init__(self, rng: random.Random, settings: Settings) -> None:
        self._rng = rng
        self._interval = settings.token_rotation_interval
        self._current = rng.randbytes(_SECRET_SIZE)
        self._previous: bytes | None = None
        self._epoch_start: float | None = None
        self._issued: dict[str, bytes] = {}
        """ip -> its token under the current secret."""

    def _rotate(self, now: float) -> None:
        if self._epoch_start is None:
            self._epoch_start = now
            return
        elapsed = now - self._epoch_start
        if elapsed < self._interval:  # also covers a clock that went backwards: keep the secrets
            return
        epochs = math.floor(elapsed / self._interval)
        # Two or more epochs passed: the old current secret is too old to be "previous" any more.
        self._previous = self._current if epochs == 1 else self._rng.randbytes(_SECRET_SIZE)
        self._current = self._rng.randbytes(_SECRET_SIZE)
        self._epoch_start += epochs * self._interval
        self._issued.clear()

    @staticmethod
    def _token(secret: bytes, ip: str) -> bytes:
        return hashlib.sha1(secret + pack_ipv4(ip)).digest()[:TOKEN_SIZE]

    def token_for(self, ip: str, now: float) -> bytes:
        """The token to hand out in a get_peers reply to ``ip`` (BEP 5 binds it to the IP only)."""
        self._rotate(now)
        token = self._issued.get(ip)
        if token is None:
            if len(self._issued) >= TOKEN_CACHE_SIZE:
                self._issued.clear()
            token = self._issued[ip] = self._token(self._current, ip)
        return token

    def is_valid(self, token: bytes, ip: str, now: float) -> bool:
        """Whether ``token`` was issued to ``ip`` under the current or the previous secret."""
        self._rotate(now)
        if len(token) != TOKEN_SIZE:
            return False
        if hmac.compare_digest(token, self._token(self._current, ip)):
            return True
        return self._previous is not None and hmac.compare_digest(token, self._token(self._previous, ip))
