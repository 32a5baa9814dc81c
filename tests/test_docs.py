"""The Python examples in the README and docs run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


EXAMPLES = [
    pytest.param(block, id=f"{path.name}#{i}")
    for path in DOCS
    for i, block in enumerate(python_blocks(path))
    if "asyncio.run(" in block  # complete programs; API sketches are not run
]


def test_readme_has_runnable_examples() -> None:
    assert any("README" in p.id for p in EXAMPLES)  # type: ignore[operator]


@pytest.mark.parametrize("source", EXAMPLES)
def test_example_runs(source: str) -> None:
    done = subprocess.run([sys.executable, "-c", source], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def test_every_setting_is_in_the_operators_table() -> None:
    """docs/operating.md's "Every setting" lists each field of Settings, with its default."""
    from kadnode.settings import Settings

    text = (ROOT / "docs" / "operating.md").read_text().split("## Every setting", 1)[1]
    rows = dict(re.findall(r"^\| `(\w+)` \| [^|]+ \| `([^`]*)`", text, flags=re.M))
    defaults = Settings()
    assert sorted(rows) == sorted(Settings.field_names())
    for name, shown in rows.items():
        value = getattr(defaults, name)
        if isinstance(value, bool):
            assert shown == str(value).lower(), name
        elif isinstance(value, int | float):
            assert float(shown) == value, name
