"""The google/carfac C++ reference, built and timed by our own timing program (bench/reference_cpp_timer.cc).

``CARFAC_REFERENCE_CPP`` names a google/carfac checkout (fetch it; it is never
part of this repository). Its ``cpp/car.cc``, ``carfac.cc`` and ``ear.cc`` are
compiled with ``reference_cpp_timer.cc`` by ``g++ -O3 -march=native``
against Debian's Eigen headers (``bash scripts/install_system_packages.sh
--bench``) in a temporary folder, and run once. The C++ is float, NAP only,
its defaults at 22050 Hz: one-capacitor IHC, so compare it with our
``one_cap`` design.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

TIMER = Path(__file__).resolve().parent / "reference_cpp_timer.cc"
EIGEN = Path("/usr/include/eigen3")
SOURCES = ("car.cc", "carfac.cc", "ear.cc")
FLAGS = ("-O3", "-march=native", "-DNDEBUG", "-std=c++17", "-pthread")


def checkout() -> Path | None:
  """The checkout named by ``CARFAC_REFERENCE_CPP``, or None when unset."""
  path = os.environ.get("CARFAC_REFERENCE_CPP")
  return Path(path) if path else None


def time_reference(root: Path, seconds: float, block: int, threads: int) -> dict:
  """Builds the timer against ``root/cpp`` and returns what it prints, plus how it was built."""
  if not (EIGEN / "Eigen").is_dir():
    raise RuntimeError(f"no Eigen headers in {EIGEN}: run bash scripts/install_system_packages.sh --bench")
  cpp = root / "cpp"
  with tempfile.TemporaryDirectory() as build:
    binary = Path(build) / "reference_cpp_timer"
    subprocess.run(
      ["g++", *FLAGS, f"-I{cpp}", f"-I{EIGEN}", str(TIMER), *(str(cpp / s) for s in SOURCES), "-o", str(binary)],
      check=True,
      capture_output=True,
      text=True,
    )
    out = subprocess.run(
      [str(binary), str(seconds), str(block), str(threads)], check=True, capture_output=True, text=True
    ).stdout
  result = json.loads(out)
  result["build"] = " ".join(("g++", *FLAGS))
  result["design"] = "C++ defaults at 22050 Hz: one_cap IHC, float, NAP only"
  return result
