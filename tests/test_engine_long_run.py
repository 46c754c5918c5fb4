"""A minute of audio through the engine at full speed: no NaN, the offline frames, flat memory.

``long_run_harness.long_run`` for a minute (``bench/bench_long_run.py`` runs it for an hour):
48 kHz audio, resampled by the engine, against the offline model fed the
same chunks (``run_segment`` with its state carried, bit-identical to one
call over the whole signal).
"""

from __future__ import annotations

from long_run_harness import long_run
from server_harness import TOLERANCE

RSS_GROWTH_MIB = 16  # after the first 10 s of audio (measured: 2.4 MiB over 2 minutes, 0.2 over an hour's first minute)


def test_a_minute_of_audio_through_the_engine_equals_the_offline_model() -> None:
  figures = long_run(60.0, rate=48000.0, rss_every_s=10.0, seed=3)
  assert figures["frames"] == figures["offline_frames"] == figures["compared_frames"] == 60 * 22050 // 220
  assert figures["nonfinite_frames"] == 0
  assert figures["max_error"] <= TOLERANCE, figures["error_by_window"]
  assert max(figures["rss_mib"][1:]) - figures["rss_mib"][1] <= RSS_GROWTH_MIB, figures["rss_mib"]
