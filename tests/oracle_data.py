"""Reading the reference-output oracle and turning its designs into ours.

The full battery lives in ``../shared/oracle`` (or ``$CARFAC_ORACLE_DIR``); a
small self-contained subset, made by ``scripts/make_oracle_subset.py``, is
committed under ``tests/data/oracle`` so the suite also runs from a bare
clone. Both have the same layout: ``manifest.json`` plus one ``.npz`` per case.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import carfac

REPO_ROOT = Path(__file__).resolve().parents[1]
SUBSET_DIR = REPO_ROOT / "tests" / "data" / "oracle"

# numpy reference AGC field names that differ from ours.
_AGC_FIELD_ALIASES = {"agc_mix_coeff": "agc_mix_coeffs"}


def full_oracle_dir() -> Path | None:
  """The full oracle battery, if present: $CARFAC_ORACLE_DIR or ../shared/oracle."""
  return _first_holding("CARFAC_ORACLE_DIR", REPO_ROOT.parent / "shared" / "oracle", "manifest.json")


DEFAULT_GOLDEN_DIR = REPO_ROOT.parent / "shared" / "golden"
DEFAULT_SAI_ORACLE_DIR = REPO_ROOT.parent / "shared" / "oracle_sai"
SAI_SUBSET_DIR = REPO_ROOT / "tests" / "data" / "oracle_sai"


def _first_holding(env_var: str, default: Path, marker: str) -> Path | None:
  """$env_var when set and holding ``marker``, else ``default`` when it does."""
  env = os.environ.get(env_var)
  for path in ([Path(env)] if env else []) + [default]:
    if (path / marker).is_file():
      return path
  return None


def golden_dir() -> Path | None:
  """The v1 golden folder: $CARFAC_GOLDEN_DIR when set and present, else ../shared/golden."""
  return _first_holding("CARFAC_GOLDEN_DIR", DEFAULT_GOLDEN_DIR, "binaural_test-audio.txt")


def sai_oracle_dir() -> Path | None:
  """The C++ pipeline outputs: $CARFAC_ORACLE_SAI_DIR or ../shared/oracle_sai, if present."""
  return _first_holding("CARFAC_ORACLE_SAI_DIR", DEFAULT_SAI_ORACLE_DIR, "case1.npz")


def load_npz(path: Path) -> dict[str, np.ndarray]:
  """Every array of an npz file, read into memory (no pickle)."""
  with np.load(path, allow_pickle=False) as data:
    return {k: data[k] for k in data.files}


@dataclass(frozen=True)
class OracleCase:
  """One oracle case: its manifest entry and the folder holding its npz."""

  name: str
  entry: dict
  folder: Path
  time_stride: int = 1  # the subset keeps every time_stride-th output sample

  def load(self) -> dict[str, np.ndarray]:
    with np.load(self.folder / self.entry["file"]) as data:
      return {k: data[k] for k in data.files}

  @property
  def open_loop(self) -> bool:
    return bool(self.entry["run"]["open_loop"])

  @property
  def segments(self) -> list[int]:
    return list(self.entry["run"]["segments"])


def load_cases(folder: Path | None) -> list[OracleCase]:
  """Every case listed in ``folder``'s manifest (none if folder is None)."""
  if folder is None:
    return []
  manifest = json.loads((folder / "manifest.json").read_text())
  stride = int(manifest.get("time_stride", 1))
  return [OracleCase(c["name"], c, folder, stride) for c in manifest["cases"]]


def _apply_overrides(target: object, overrides: dict) -> None:
  for key, value in overrides.items():
    name = _AGC_FIELD_ALIASES.get(key, key)
    if not hasattr(target, name):
      raise KeyError(f"{type(target).__name__} has no field {name!r}")
    if isinstance(value, list):
      value = np.array(value) if name != "decimation" else tuple(value)
    setattr(target, name, value)


def design_params(case: OracleCase) -> carfac.CarfacDesignParameters:
  """Our design parameters for the case's neutral design description."""
  design = case.entry["design"]
  params = carfac.CarfacDesignParameters(fs=design["fs"], n_ears=len(design["ears"]))
  for ear_params, ear_design in zip(params.ears, design["ears"]):
    for stage in ("car", "agc", "ihc", "syn"):
      _apply_overrides(getattr(ear_params, stage), ear_design.get(stage, {}))
  return params


def ohc_health(case: OracleCase, n_ch: int) -> np.ndarray | None:
  """The OHC health vector the case's rule describes (None: all healthy)."""
  rule = case.entry["design"]["ears"][0].get("ohc_health")
  if rule is None:
    return None
  if rule["kind"] != "scale_channels":
    raise NotImplementedError(f"ohc_health rule {rule['kind']!r}")
  stop = n_ch // 2 if rule["ch_stop"] == "half" else int(rule["ch_stop"])
  health = np.ones(n_ch)
  health[int(rule["ch_start"]) : stop] *= rule["factor"]
  return health
