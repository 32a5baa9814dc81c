"""The installed package's compiled modules pass their own tests, and simulate exactly as the source does.

`pip install .` compiles the hot path with mypyc (setup.py lists the modules). The rest of the suite
imports the source tree, so here the tests of those modules run once more, in a subprocess started
outside the checkout, where `import kadnode` finds the installed package. Skipped when that package is
not compiled (an editable install, a machine without a C compiler, or KADNODE_PURE_PYTHON=1).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
CHECKOUT = TESTS.parent
COMPILED_MODULES = (
    "kadnode.wire.bencode",
    "kadnode.wire.krpc",
    "kadnode.core.node",
    "kadnode.core.routing",
    "kadnode.core.rpc",
    "kadnode.core.tokens",
)
MODULE_TESTS = (
    "test_bencode.py",
    "test_krpc.py",
    "test_routing.py",
    "test_rpc.py",
    "test_tokens.py",
    "test_node.py",
    "test_node_items.py",
    "test_sim.py",
    "test_sim_scenarios.py",
)
SIM_ARGS = ("-m", "kadnode", "sim", "--nodes", "300", "--lookups", "50", "--loss", "0.05", "--seed", "11")


def outside_checkout(tmp_path: Path, *args: str, source: bool = False) -> subprocess.CompletedProcess[str]:
    """Run this Python in `tmp_path`: the installed package, or with `source` the checkout's."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if source:
        env["PYTHONPATH"] = str(CHECKOUT)
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside the checkout, where `import kadnode` finds the installed, compiled package."""
    where = tmp_path_factory.mktemp("outside")
    found = outside_checkout(where, "-c", "; ".join(
        [f"import {name}" for name in COMPILED_MODULES] + [f"print({name}.__file__)" for name in COMPILED_MODULES]
    ))
    assert found.returncode == 0, found.stderr
    files = found.stdout.split()
    if not all(file.endswith(".so") for file in files):
        pytest.skip(f"the installed kadnode is not compiled: {files}")
    return where


def test_compiled_modules_pass_their_tests(compiled: Path) -> None:
    # A copy of the tests (some import helpers from the `tests` package), and not the checkout's pytest
    # configuration, which puts the source first on the path.
    shutil.copytree(TESTS, compiled / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    (compiled / "pytest.ini").write_text("[pytest]\npythonpath = .\nasyncio_mode = auto\n")
    run = outside_checkout(compiled, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", "pytest.ini",
                           "--rootdir", ".", *(f"tests/{name}" for name in MODULE_TESTS))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout


def test_compiled_simulation_has_the_source_trace(compiled: Path) -> None:
    """Same seed, same event trace, compiled or not: compiling changes speed, never behaviour."""
    installed = outside_checkout(compiled, *SIM_ARGS)
    source = outside_checkout(compiled, *SIM_ARGS, source=True)
    assert installed.returncode == 0 and source.returncode == 0, installed.stderr[-2000:] + source.stderr[-2000:]

    def trace(output: str) -> str:
        lines = [line for line in output.splitlines() if "trace hash" in line]
        assert len(lines) == 1, output[-2000:]
        return lines[0]

    assert trace(installed.stdout) == trace(source.stdout)
