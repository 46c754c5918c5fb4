"""Long run: up to hours of audio through the engine at full speed, checked against the offline model; JSON.

The run and its figures are ``tests/long_run_harness.py``'s ``long_run``
(the suite runs it for a minute): one synthetic stream through
``engine.runner.EngineRunner`` and, chunk for chunk, through the offline
``run_segment``; the largest frame difference overall and per
``--rss-every-s`` window, non-finite frames, speed against real time, and
this process's resident memory every ``--rss-every-s`` seconds of audio.

    python bench/bench_long_run.py --seconds 3600 [--rate 48000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from long_run_harness import MODEL_RATE, long_run  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seconds", type=float, default=3600.0, help="audio to stream (default: an hour)")
  parser.add_argument("--rate", type=float, default=MODEL_RATE, help="the audio's sample rate (resampled to 22050 Hz)")
  parser.add_argument("--rss-every-s", type=float, default=60.0, help="audio seconds between memory samples")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  print(json.dumps(long_run(args.seconds, args.rate, rss_every_s=args.rss_every_s, seed=args.seed), indent=1))


if __name__ == "__main__":
  main()
