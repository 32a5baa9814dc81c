"""Build kadnode, compiling its bencode codec with mypyc where a C compiler is at hand.

Every datagram is decoded and every reply encoded by `kadnode/wire/bencode.py`; compiled, a daemon
answers ~30% more queries per CPU-second (docs/performance.md). The .py sources ship as well, so a
compile that fails (no compiler) or is skipped leaves a working pure-Python package. It is skipped for
editable installs, which put the compiled module next to its source where it would shadow every edit,
and when KADNODE_PURE_PYTHON=1.

Only bencode.py is compiled: compiled code enforces type annotations at call boundaries with its own
TypeError, and the other wire modules check hostile arguments themselves (tests/test_compiled_codec.py
runs the codec's tests against the installed, compiled module).
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup

COMPILED = ["kadnode/wire/bencode.py"]


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
