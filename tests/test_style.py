"""The code passes the project's lint and format rules (``[tool.ruff]`` in pyproject.toml).

Run ``ruff format . && ruff check --fix .`` to make it so.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
  "command", [["check", "--output-format", "concise"], ["format", "--check"]], ids=["lint", "format"]
)
def test_the_code_passes_ruff(command: list[str]) -> None:
  result = subprocess.run([sys.executable, "-m", "ruff", *command, "."], cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_reports_a_violation(tmp_path: Path) -> None:
  """The check can fail: an unused import and a 4-space indent are both reported."""
  (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
  (tmp_path / "bad.py").write_text("import os\n\n\ndef f():\n    return 1\n")
  lint = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=tmp_path, capture_output=True, text=True)
  assert lint.returncode == 1 and "F401" in lint.stdout
  style = subprocess.run(
    [sys.executable, "-m", "ruff", "format", "--check", "."], cwd=tmp_path, capture_output=True, text=True
  )
  assert style.returncode == 1 and "bad.py" in style.stdout
