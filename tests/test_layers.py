"""The project's layering, checked with import-linter (contracts in pyproject.toml's [tool.importlinter]).

``server`` and ``client`` sit above ``engine``, which sits above ``carfac``;
server and client do not import each other; nothing outside ``carfac``
imports its private ``carfac._*`` modules. A reversed contract must break,
so the check is known to look at this code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(*config: str) -> subprocess.CompletedProcess:
  return subprocess.run([LINT_IMPORTS, "--no-cache", *config], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_layers_and_private_modules_are_kept() -> None:
  done = _lint()
  assert done.returncode == 0, done.stdout + done.stderr
  assert "Contracts: 2 kept, 0 broken." in done.stdout


def test_a_contract_the_code_breaks_is_reported(tmp_path: Path) -> None:
  reversed_layers = tmp_path / "reversed.toml"
  reversed_layers.write_text(
    '[tool.importlinter]\nroot_packages = ["carfac", "engine"]\n\n'
    '[[tool.importlinter.contracts]]\nname = "engine below carfac (false)"\ntype = "layers"\n'
    'layers = ["carfac", "engine"]\n'
  )
  done = _lint(str(reversed_layers))
  assert done.returncode == 1 and "engine below carfac (false) BROKEN" in done.stdout, done.stdout
