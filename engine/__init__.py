"""Streaming engine: many CARFAC streams on the device, stepped block by block."""

from engine.frames import max_frames, reduce_to_frames
from engine.pool import BlockResult, StreamPool

__all__ = ["BlockResult", "StreamPool", "max_frames", "reduce_to_frames"]
