"""Writes the small self-contained oracle subset under tests/data/oracle.

Every case of the full battery is kept with its whole input, design products
and final states; the per-sample outputs keep one time sample in
``TIME_STRIDE`` (samples 0, 13, 26, ...), which is enough to catch any error
while keeping the folder at a few MB. Run it when the shared oracle changes:

    python scripts/make_oracle_subset.py [FULL_ORACLE_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "tests" / "data" / "oracle"
TIME_STRIDE = 13
PER_SAMPLE_OUTPUTS = ("naps", "naps_fibers", "bm", "seg_ohc", "seg_agc")


def main() -> None:
  full = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT.parent / "shared" / "oracle"
  manifest = json.loads((full / "manifest.json").read_text())
  OUT_DIR.mkdir(parents=True, exist_ok=True)
  for case in manifest["cases"]:
    with np.load(full / case["file"]) as data:
      arrays = {k: data[k][::TIME_STRIDE] if k in PER_SAMPLE_OUTPUTS else data[k] for k in data.files}
    np.savez_compressed(OUT_DIR / case["file"], **arrays)
  manifest["battery"] = "subset of the public battery"
  manifest["time_stride"] = TIME_STRIDE
  (OUT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=1))


if __name__ == "__main__":
  main()
