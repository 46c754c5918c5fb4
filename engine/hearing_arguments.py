"""The command-line flags for a listener's hearing profile and level, shared by ``carfac-client`` and ``carfac-nap``.

``--hearing-profile NAME`` or ``--audiogram HZ:DB,...``, and ``--level-db-spl``;
``hearing_request`` turns them into protocol v1's ``hearing`` object (the
same fields ``carfac.hearing`` takes). Plain argparse: no model import.
"""

from __future__ import annotations

import argparse
from typing import Any

PROFILE_NAMES = (
  "normal",
  "mild-high-frequency",
  "moderate-sloping",
  "noise-notch",
)  # carfac.hearing.EXAMPLE_AUDIOGRAMS


def audiogram_argument(text: str) -> dict[str, list[float]]:
  """``--audiogram``: ``FREQUENCY_HZ:LOSS_DB`` pairs, comma-separated (the values are checked where they are used)."""
  try:
    pairs = [tuple(float(x) for x in pair.split(":")) for pair in text.split(",") if pair.strip()]
  except ValueError:
    pairs = []
  if not pairs or any(len(pair) != 2 for pair in pairs):
    raise argparse.ArgumentTypeError(f"{text!r}: FREQUENCY_HZ:LOSS_DB pairs, e.g. 500:10,1000:20,4000:50")
  return {"frequencies_hz": [f for f, _ in pairs], "loss_db": [loss for _, loss in pairs]}


def add_hearing_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds ``--hearing-profile`` / ``--audiogram`` (one or the other) and ``--level-db-spl``."""
  profile = parser.add_mutually_exclusive_group()
  profile.add_argument(
    "--hearing-profile",
    metavar="NAME",
    choices=PROFILE_NAMES,
    help=f"listen with an example hearing loss: {', '.join(PROFILE_NAMES)} (README, 'Hearing profiles')",
  )
  profile.add_argument(
    "--audiogram",
    type=audiogram_argument,
    metavar="HZ:DB,...",
    help="listen with this hearing loss (dB HL at each frequency), e.g. 500:10,1000:20,4000:50",
  )
  parser.add_argument(
    "--level-db-spl",
    type=float,
    help="the sound level a full-scale sine stands for (default: the model's own scale, about 104 dB SPL)",
  )


def hearing_request(args: argparse.Namespace) -> dict[str, Any] | None:
  """Protocol v1's ``hearing`` object from the flags (None when none is given)."""
  hearing: dict[str, Any] = {}
  if args.hearing_profile is not None:
    hearing["profile"] = args.hearing_profile
  if args.audiogram is not None:
    hearing["audiogram"] = args.audiogram
  if args.level_db_spl is not None:
    hearing["level_db_spl"] = args.level_db_spl
  return hearing or None
