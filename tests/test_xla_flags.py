"""carfac's XLA:CPU tuning: flag merging, and when it is (not) applied."""

from __future__ import annotations

import os
import subprocess
import sys

from carfac._xla_flags import LOOP_OPTION, tuned_xla_flags


def test_tuning_is_added_and_merged_without_overriding_the_user() -> None:
  fresh = tuned_xla_flags("")
  assert f"--xla_backend_extra_options={LOOP_OPTION}=" in fresh
  assert "--xla_cpu_prefer_vector_width=512" in fresh
  merged = tuned_xla_flags("--xla_backend_extra_options=a=1 --xla_cpu_prefer_vector_width=256")
  assert merged.count("--xla_backend_extra_options=") == 1
  assert f"--xla_backend_extra_options=a=1,{LOOP_OPTION}=" in merged
  assert "--xla_cpu_prefer_vector_width=256" in merged and "=512" not in merged
  assert tuned_xla_flags(merged) == merged  # idempotent


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
  environment = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "CARFAC_XLA_TUNING")}
  return subprocess.run(
    [sys.executable, "-c", code], env={**environment, **env}, capture_output=True, text=True, timeout=120
  )


def test_import_sets_flags_opt_out_and_late_import_warns() -> None:
  show = "import carfac, os; print(os.environ.get('XLA_FLAGS', ''))"
  assert LOOP_OPTION in _run(show).stdout
  assert _run(show, CARFAC_XLA_TUNING="0").stdout.strip() == ""
  late = _run("import jax.numpy as jnp; jnp.ones(2).sum(); " + show)
  assert "JAX was used before `import carfac`" in late.stderr
  assert LOOP_OPTION not in late.stdout
