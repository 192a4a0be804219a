"""Every Python example in README.md runs as written, only the connection string changed, on
each backend."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from support import child_env

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = "postgresql://localhost/mydb"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every ```python fenced block."""
    blocks = []
    for m in re.finditer(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, re.S | re.M):
        line = text.count("\n", 0, m.start()) + 1
        blocks.append((line, m.group(1)))
    return blocks


README = ROOT / "README.md"
BLOCKS = python_blocks(README.read_text()) if README.exists() else []


def test_readme_has_python_examples() -> None:
    assert README.exists(), f"{README} is missing"
    assert BLOCKS, f"no ```python block in {README}"
    assert any(PLACEHOLDER in code for _, code in BLOCKS), (
        f"no example connects to {PLACEHOLDER}: the tests could not point them at a test DSN"
    )


@pytest.mark.parametrize(
    "code", [code for _, code in BLOCKS], ids=[f"{README.name}:{line}" for line, _ in BLOCKS]
)
def test_readme_example_runs(code: str, dsn: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code.replace(PLACEHOLDER, dsn))
    p = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
        check=False,
    )
    assert p.returncode == 0, (
        f"example exited {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
    )
