"""The service's settings: ``CARFAC_*`` environment variables or command-line flags.

One declaration serves both sources (pydantic-settings): ``CARFAC_PORT=9000``
and ``--port 9000`` set the same field; the command line wins. Lists are JSON
in the environment (``CARFAC_EARS='[1]'``) and comma-separated or JSON on the
command line (``--ears 1`` or ``--raw-outputs naps,bm``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from carfac.ihc import IHC_STYLE_NAMES
from engine.frames import samples_for_ms
from engine.pool import RAW_OUTPUTS

IhcStyle = Literal[IHC_STYLE_NAMES]  # the model's one list
RawOutput = Literal[RAW_OUTPUTS]  # the engine's one list


class Settings(BaseSettings):
  """Settings of carfac-server; each flag is also an environment variable, e.g.
  --max-connections and CARFAC_MAX_CONNECTIONS."""

  model_config = SettingsConfigDict(
    env_prefix="CARFAC_",
    cli_prog_name="carfac-server",
    cli_kebab_case=True,
    frozen=True,
  )

  host: str = Field("127.0.0.1", description="address to listen on")
  port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
  log_level: Literal["critical", "error", "warning", "info", "debug"] = Field("info", description="uvicorn log level")

  model_rate: float = Field(22050.0, gt=0, description="the model's sample rate, Hz")
  ihc_style: IhcStyle = Field("two_cap", description="inner hair cell model")
  ears: list[Literal[1, 2]] = Field(
    [1, 2], min_length=1, description="ear counts served (1: mono, 2: binaural); one engine pool each"
  )
  capacity: int | Literal["auto"] = Field(
    "auto",
    description="streams admitted per pool: auto = as many as the machine serves in real time, measured at "
    "start-up (all pools together); a number admits that many (a warning is logged above the measured figure)",
  )
  pool_slots: int = Field(
    64,
    ge=1,
    description="streams a pool can hold with --capacity auto (a numeric --capacity sets it, rounded up to "
    "a multiple of --shards)",
  )
  shards: int = Field(
    2, ge=1, description="batches per pool, stepped in parallel (must divide the pool's slots; at most one per core)"
  )
  realtime_margin: float = Field(
    0.5, gt=0, le=1, description="with --capacity auto: the share of a block's duration that a step may take"
  )
  max_lag_s: float = Field(
    2.0, gt=0, description="a stream that the engine falls further behind than this is ended (overloaded, 1013)"
  )
  block_size: int = Field(256, ge=1, description="model samples per engine step (a multiple of 64 is fastest)")
  hop_ms: float = Field(10.0, gt=0, description="default frame hop, ms")
  min_hop_ms: float = Field(2.0, gt=0, description="smallest frame hop a client may ask for, ms")
  raw_outputs: list[RawOutput] = Field(
    [], description="per-sample outputs clients may ask for (each costs engine time for every stream)"
  )
  pitchogram: bool = Field(
    True,
    description="offer the pitchogram and sai outputs to mono clients: one more engine pool, whose streams "
    "also run the SAI (about 2.3 to 2.6x a stream's NAP cost)",
  )
  hearing_profiles: bool = Field(
    True,
    description="let each stream carry its own hearing profile and input level (the start message's hearing): "
    "every pool keeps per-stream weights (measured within 3% of shared weights per step)",
  )
  step_interval_ms: float | None = Field(
    None,
    ge=0,
    description="a pool steps no sooner than this after its previous step unless every stream has a block "
    "(default: one block's duration)",
  )
  compile_cache_dir: Path | None = Field(None, description="JAX persistent compilation cache directory")
  weights: Path | None = Field(
    None,
    description="serve trained weights from this file (carfac.save_weights); it must be of the server's design "
    "(--model-rate, --ihc-style, and one ear count in --ears)",
  )

  token: SecretStr | None = Field(None, description="bearer token clients must present (none: open)")
  allowed_origins: list[str] = Field(
    [], description="browser origins allowed to connect ('*': any); requests without Origin are always allowed"
  )
  max_message_bytes: int = Field(1 << 20, ge=1024, description="largest client message accepted")
  max_connections: int = Field(256, ge=1, description="simultaneous WebSocket connections")
  idle_timeout_s: float = Field(30.0, gt=0, description="longest silence from a client before it is closed")
  send_queue_messages: int = Field(
    256, ge=1, description="frame messages queued per client before the oldest are dropped (slow readers)"
  )
  input_queue_blocks: int = Field(
    32, ge=1, description="blocks queued per stream before the server stops reading that client"
  )
  join_wait_s: float = Field(
    2.0,
    ge=0,
    description="longest a start waits, when its pool is full, for a slot that a finishing stream is giving back "
    "(then pool_full)",
  )
  shutdown_timeout_s: float = Field(5.0, gt=0, description="longest wait for streams to finish on shutdown")
  resume_key: SecretStr | None = Field(
    None,
    description="key shared by the replicas that signs resume tokens (HMAC-SHA256): on shutdown each stream's "
    "end message carries one, and a start with it continues the stream (none: streams end for good)",
  )
  resume_token_ttl_s: float = Field(300.0, gt=0, description="how long a resume token is accepted after it was issued")

  @model_validator(mode="after")
  def _consistent(self) -> Settings:
    if self.min_hop_ms > self.hop_ms:
      raise ValueError(f"min_hop_ms ({self.min_hop_ms}) must not exceed hop_ms ({self.hop_ms})")
    if self.capacity != "auto" and self.capacity < 1:
      raise ValueError(f"capacity must be 'auto' or >= 1, got {self.capacity}")
    if self.pool_slots % self.shards:
      raise ValueError(f"shards ({self.shards}) must divide the pool's slots ({self.pool_slots})")
    return self

  @model_validator(mode="before")
  @classmethod
  def _slots_follow_a_numeric_capacity(cls, data):
    """A numeric capacity sets the slots, rounded up to a whole number per shard (``--capacity 1`` with the
    default 2 shards: 2 slots, one admitted stream; a shard with no stream costs nothing)."""
    if isinstance(data, dict) and "capacity" in data and str(data["capacity"]) != "auto":
      shards = data.get("shards", cls.model_fields["shards"].default)
      try:
        capacity, shards = int(data["capacity"]), int(shards)
      except (TypeError, ValueError):  # left for the fields' own validation to report
        return data
      data = {**data, "pool_slots": max(1, -(-capacity // max(1, shards))) * max(1, shards)}
    return data

  @property
  def step_interval_s(self) -> float:
    if self.step_interval_ms is None:
      return self.block_size / self.model_rate
    return self.step_interval_ms / 1000

  def model_samples(self, ms: float) -> int:
    """A duration in ms as a whole number (>= 1) of model-rate samples."""
    return samples_for_ms(ms, self.model_rate)
