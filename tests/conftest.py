"""Test-wide set-up: float64 available (models pick their dtype explicitly), server fixtures."""

import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["server_harness", "reliability_harness", "audio_harness"]
