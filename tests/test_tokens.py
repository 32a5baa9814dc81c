"""Write tokens: IP binding and the exact validity window of the rotation grid.

With rotation interval I and the grid starting at the first ``now`` seen (t0), a token issued in the
epoch [E, E + I) is valid exactly while now < E + 2I. With I = 300 s and issue at t0 that means valid
at +5 min (one rotation: previous secret) and up to +10 min - ε, invalid from +10 min on.
"""

from __future__ import annotations

import random

from kadnode.core.tokens import TOKEN_SIZE, TokenManager
from kadnode.settings import Settings

T0 = 1000.0
IP = "127.0.0.2"
MINUTE = 60.0


def manager(seed: int = 7) -> TokenManager:
    return TokenManager(random.Random(seed), Settings())


def test_token_shape_and_ip_binding() -> None:
    tokens = manager()
    token = tokens.token_for(IP, T0)
    assert len(token) == TOKEN_SIZE
    assert tokens.token_for(IP, T0 + 1) == token  # stable within an epoch
    assert tokens.is_valid(token, IP, T0)
    assert not tokens.is_valid(token, "127.0.0.3", T0)
    assert tokens.token_for("127.0.0.3", T0) != token
    assert not tokens.is_valid(token[:-1], IP, T0)
    assert not tokens.is_valid(token + b"x", IP, T0)
    assert not tokens.is_valid(b"", IP, T0)


def test_validity_window_from_epoch_start() -> None:
    tokens = manager()
    token = tokens.token_for(IP, T0)
    assert settings_interval() == 5 * MINUTE
    assert tokens.is_valid(token, IP, T0 + 5 * MINUTE - 0.001)
    assert tokens.is_valid(token, IP, T0 + 5 * MINUTE)  # rotated: now the previous secret
    assert tokens.token_for(IP, T0 + 5 * MINUTE) != token
    assert tokens.is_valid(token, IP, T0 + 9 * MINUTE)
    assert tokens.is_valid(token, IP, T0 + 10 * MINUTE - 0.001)
    assert not tokens.is_valid(token, IP, T0 + 10 * MINUTE)
    assert not tokens.is_valid(token, IP, T0 + 11 * MINUTE)


def test_token_issued_late_in_an_epoch_lives_just_over_one_interval() -> None:
    tokens = manager()
    tokens.token_for(IP, T0)  # starts the grid
    late = tokens.token_for(IP, T0 + 4 * MINUTE)
    assert tokens.is_valid(late, IP, T0 + 9 * MINUTE)
    assert not tokens.is_valid(late, IP, T0 + 10 * MINUTE)


def test_lazy_rotation_skipping_epochs_drops_both_secrets() -> None:
    tokens = manager()
    token = tokens.token_for(IP, T0)
    # Nothing called for 12 minutes: two rotations at once, the old current secret is gone.
    assert not tokens.is_valid(token, IP, T0 + 12 * MINUTE)
    fresh = tokens.token_for(IP, T0 + 12 * MINUTE)  # grid epoch [T0 + 10 min, T0 + 15 min)
    assert tokens.is_valid(fresh, IP, T0 + 20 * MINUTE - 0.001)
    assert not tokens.is_valid(fresh, IP, T0 + 20 * MINUTE)


def test_clock_going_backwards_keeps_secrets() -> None:
    tokens = manager()
    token = tokens.token_for(IP, T0)
    assert tokens.is_valid(token, IP, T0 - 100)
    assert tokens.token_for(IP, T0 - 100) == token


def test_different_managers_do_not_accept_each_others_tokens() -> None:
    a, b = manager(1), manager(2)
    assert not b.is_valid(a.token_for(IP, T0), IP, T0)


def settings_interval() -> float:
    return Settings().token_rotation_interval
