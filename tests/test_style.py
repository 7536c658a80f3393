"""The house style is checked, not hoped for: `ruff check` (pyproject.toml's [tool.ruff]) passes on the repository."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def ruff() -> list[str]:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: it comes with the test extra (pip install -e '.[test]')")
    return [found]


def test_ruff_check_passes():
    out = subprocess.run([*ruff(), "check", "--no-cache", "--output-format", "concise", "."], cwd=REPO,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_ruff_sees_a_long_line(tmp_path):
    """The check can fail: a line one character over the limit is reported (the config is read)."""
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    (tmp_path / "long.py").write_text("x = '" + "a" * 120 + "'\n")
    out = subprocess.run([*ruff(), "check", "--no-cache", "--output-format", "concise", "."], cwd=tmp_path,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 1 and "E501" in out.stdout, out.stdout
