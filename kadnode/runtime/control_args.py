"""Checks of the control API's arguments, shared by the node's commands (control.py) and the file
commands (files_api.py): a bad argument becomes a RequestError whose message tells the user what to do."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class RequestError(ValueError):
    """A request the server answers with ok:false; the message tells the user what to do."""


def check_args(args: Mapping[str, Any], required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(args) - set(required) - set(optional))
    if unknown:
        allowed = ", ".join((*required, *optional)) or "none"
        raise RequestError(f"unknown argument(s) {', '.join(unknown)}; this command takes: {allowed}")
    missing = [name for name in required if name not in args]
    if missing:
        raise RequestError(f"missing argument(s): {', '.join(missing)}")


def parse_hex20(value: Any, name: str) -> bytes:
    """A 20-byte ID or info-hash given as 40 hex characters."""
    if not isinstance(value, str) or len(value) != 40:
        raise RequestError(f"{name} must be 40 hex characters (20 bytes), got {value!r:.60}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise RequestError(f"{name} must be 40 hex characters (20 bytes), got {value!r:.60}") from None


def parse_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise RequestError(f"{name} must be true or false, got {value!r:.60}")
    return value
