"""Build kadnode, compiling its hot path with mypyc where a C compiler is at hand.

Every datagram is decoded (`kadnode/wire`), answered (`kadnode/core/node.py`, with the routing table,
write tokens and the RPC manager) and encoded again in these modules; compiled, a daemon answers about
1.6 times as many queries per CPU-second as the pure-Python package (docs/performance.md), and the
simulator runs faster by as much. The .py sources ship as well, so a compile that fails (no compiler) or
is skipped leaves a working pure-Python package. It is skipped for editable installs, which put the
compiled modules next to their sources where they would shadow every edit, and when
KADNODE_PURE_PYTHON=1.

`compact.py` is left out: compiled code enforces type annotations at call boundaries with its own
TypeError, and its functions check hostile arguments themselves. The compiled modules' classes are
native: they cannot be monkeypatched or subclassed from Python. tests/test_compiled.py runs these
modules' tests against the installed, compiled package.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup

COMPILED = [
    "kadnode/wire/bencode.py",
    "kadnode/wire/krpc.py",
    "kadnode/core/node.py",
    "kadnode/core/routing.py",
    "kadnode/core/rpc.py",
    "kadnode/core/tokens.py",
]


def compiled_extensions() -> list[Extension]:
    if os.environ.get("KADNODE_PURE_PYTHON") or "editable_wheel" in sys.argv:
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        return []
    # Only the compiled module is type-checked here: what the package imports elsewhere (cryptography)
    # is not in the build environment, and the full check runs in CI.
    flags = ["--follow-imports=silent", "--ignore-missing-imports"]
    extensions: list[Extension] = mypycify([*flags, *COMPILED], opt_level="3")
    for extension in extensions:
        extension.optional = True  # without a compiler, install the pure-Python module instead
    return extensions


setup(ext_modules=compiled_extensions())
