"""Writes the small self-contained SAI/pitchogram oracle subset under tests/data/oracle_sai.

The full C++ pipeline outputs live in ``../shared/oracle_sai`` (see its
README). The subset keeps, for case1 (150 Hz complex, log lag) and case4 (the
same input, linear lag), the first ``SEGMENTS`` segments: their input, NAP,
per-segment pitchogram, vowel coordinates and SAI channel means, the stored
SAI frames among them, and the pole frequencies and parameters. Run it when
the shared oracle changes:

    python scripts/make_sai_subset.py [FULL_ORACLE_SAI_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "tests" / "data" / "oracle_sai"
SEGMENTS = 12
PER_SEGMENT = ("nap", "pitchogram", "vowel", "sai_channel_mean")


def subset(data: dict[str, np.ndarray], segment_width: int) -> dict[str, np.ndarray]:
  """The first SEGMENTS segments of one case."""
  out = {k: data[k][:SEGMENTS] for k in PER_SEGMENT if k in data}
  out["input"] = data["input"][: SEGMENTS * segment_width]
  for key in ("pole_freqs", "params_json"):
    out[key] = data[key]
  if "sai" in data:
    keep = data["sai_frame_index"] < SEGMENTS
    out["sai_frame_index"] = data["sai_frame_index"][keep]
    out["sai"] = data["sai"][keep]
    if "sai_numpy" in data:
      out["sai_numpy"] = data["sai_numpy"][keep]
  return out


def main() -> None:
  full = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT.parent / "shared" / "oracle_sai"
  OUT_DIR.mkdir(parents=True, exist_ok=True)
  with np.load(full / "case1.npz") as case1:
    data = {k: case1[k] for k in case1.files}
  np.savez_compressed(OUT_DIR / "case1.npz", **subset(data, 256))
  with np.load(full / "case4.npz") as case4:
    linear = {k: case4[k] for k in case4.files}
  linear["input"] = data["input"]  # case4 stores no input or NAP: they are case1's
  np.savez_compressed(OUT_DIR / "case4.npz", **subset(linear, 256))


if __name__ == "__main__":
  main()
