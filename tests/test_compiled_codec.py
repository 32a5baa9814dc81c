"""The installed package's compiled codec passes the codec's own tests.

`pip install .` compiles `kadnode/wire/bencode.py` with mypyc (see setup.py). The suite imports the
source tree, so here the bencode and KRPC test files run once more, in a subprocess started outside the
checkout, where `import kadnode` finds the installed package. Skipped when that package is not compiled
(an editable install, a machine without a C compiler, or KADNODE_PURE_PYTHON=1).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
CODEC_TESTS = ("test_bencode.py", "test_krpc.py")
COMPILED_MODULES = ("kadnode.wire.bencode",)


def outside_checkout(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def test_compiled_codec_passes_the_codec_tests(tmp_path: Path) -> None:
    where = outside_checkout(tmp_path, "-c", "; ".join(
        [f"import {name}" for name in COMPILED_MODULES] + [f"print({name}.__file__)" for name in COMPILED_MODULES]
    ))
    assert where.returncode == 0, where.stderr
    files = where.stdout.split()
    if not all(file.endswith(".so") for file in files):
        pytest.skip(f"the installed kadnode is not compiled: {files}")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the checkout's config: it puts the source first
    run = outside_checkout(tmp_path, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib",
                           "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path),
                           *(str(TESTS / name) for name in CODEC_TESTS))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
