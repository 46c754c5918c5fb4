"""Prometheus metrics of one app, in a registry of its own.

A per-app ``CollectorRegistry`` (not the process-wide default) lets several
apps live in one process, as the tests do, without their series colliding.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Step latency buckets, seconds: a step should take a fraction of a block (11.6 ms at 256 / 22050 Hz).
_STEP_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.030, 0.050, 0.1, 0.25)


class Metrics:
  """The service's counters, gauges and histograms."""

  content_type = CONTENT_TYPE_LATEST

  def __init__(self):
    self.registry = CollectorRegistry()
    self.connections = Gauge("carfac_connections", "open WebSocket connections", registry=self.registry)
    self.active_streams = Gauge(
      "carfac_active_streams", "streams holding an engine slot", ["ears"], registry=self.registry
    )
    self.slots_in_use = Gauge(
      "carfac_pool_slots_in_use",
      "engine pool slots taken (set by the engine thread)",
      ["ears"],
      registry=self.registry,
    )
    self.frames_sent = Counter(
      "carfac_frames_sent", "rows sent to clients, by kind (frames, naps, bm)", ["kind"], registry=self.registry
    )
    self.frames_dropped = Counter(
      "carfac_frames_dropped", "rows dropped for slow readers, by kind", ["kind"], registry=self.registry
    )
    self.step_seconds = Histogram(
      "carfac_step_seconds",
      "duration of one batched engine step",
      ["ears"],
      buckets=_STEP_BUCKETS,
      registry=self.registry,
    )
    self.realtime_capacity = Gauge(
      "carfac_realtime_capacity",
      "streams a pool serves in real time on its own, measured at start-up",
      ["ears"],
      registry=self.registry,
    )
    self.engine_load = Gauge(
      "carfac_engine_load",
      "predicted engine time per block over the block's duration, for the streams admitted (all pools)",
      registry=self.registry,
    )
    self.step_slowdown = Gauge(
      "carfac_step_slowdown",
      "running ratio of steps' durations in the server to those measured at start-up (admission includes it)",
      ["ears"],
      registry=self.registry,
    )
    self.step_load = Histogram(
      "carfac_step_load",
      "one step's duration over its block's duration",
      ["ears"],
      buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 1.0, 1.5, 2.0, 5.0),
      registry=self.registry,
    )
    self.errors = Counter("carfac_errors", "errors reported to clients, by code", ["kind"], registry=self.registry)

  def render(self) -> bytes:
    """The Prometheus text exposition of every metric."""
    return generate_latest(self.registry)
