"""Gradient speed and memory for training, side by side with the google/carfac JAX reference; JSON.

The spec's example loss (mean squared distance of the NAP to 1, nonlinear
CAR, default design, float32) on ``--examples`` examples of ``--seconds`` of
N(0, 1) * 0.1 noise each. Every case runs in its own child process, so its
peak RSS (``ru_maxrss``, compilation included) is its own. Per case:
seconds per example of the jitted loss (forward) and of its gradient
(forward and backward), throughput in example-seconds per second, and the
first call's time (compilation). Cases:

- ``by_example``: one ``jax.grad`` call per example, one after the other;
  ``by_example_checkpointed``: the same with ``checkpoint_every=64``;
- ``vmap_checkpointed``: one call, ``jax.vmap`` over all examples;
- ``batch_checkpointed``: one call of ``run_segment_batch`` over all examples;
- ``mesh_checkpointed``: the vmapped call with the examples sharded over a
  ``jax.sharding`` mesh of one forced host device per core;
- ``threads_checkpointed``: ``carfac.training.mean_value_and_grad``, one
  example per call, one call in flight per core;
- ``long_plain`` / ``long_checkpointed``: one example of ``--long-seconds``
  (peak memory of a long gradient, without and with checkpointing);
- ``reference_by_example`` (``CARFAC_REFERENCE_SRC`` set to a google/carfac
  ``python/src``): its ``run_segment`` under ``jax.grad``, example by example,
  with JAX's default flags (as its users run it).

Ratios: each case's throughput over the reference's.

    python bench/bench_grad.py [--examples 16] [--seconds 1] [--long-seconds 10]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

FS = 22050.0
CHECKPOINT_EVERY = 64  # the default of --checkpoint-every
OURS = (
  "by_example",
  "by_example_checkpointed",
  "vmap_checkpointed",
  "batch_checkpointed",
  "mesh_checkpointed",
  "threads_checkpointed",
  "long_plain",
  "long_checkpointed",
)


def _timed(call, repeats: int = 2) -> tuple[float, float]:
  """(first call's seconds, best of ``repeats`` later calls)."""
  import jax

  start = time.perf_counter()
  jax.block_until_ready(call())
  first = time.perf_counter() - start
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(call())
    best = min(best, time.perf_counter() - start)
  return first, best


def _examples(n: int, seconds: float):
  import numpy as np

  rng = np.random.default_rng(1)
  return (rng.standard_normal((n, int(seconds * FS))) * 0.1).astype(np.float32)


def _reference_module(src: str):
  spec = importlib.util.spec_from_file_location("carfac_reference_jax", f"{src}/carfac/jax/carfac.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _naps_loss(run_segment, weights, x, hypers, state):
  import jax.numpy as jnp

  naps = run_segment(x, hypers, weights, state)[0]
  return jnp.mean((naps - 1.0) ** 2)


def _design(module):
  params = module.CarfacDesignParameters(fs=FS, n_ears=1)
  params.ears[0].car.linear_car = False
  return module.design_and_init_carfac(params)


def _by_example(run_segment, module, xs) -> dict:
  """Forward and gradient of each example in turn, one compiled call each."""
  import jax

  hypers, weights, state = _design(module)
  loss = functools.partial(_naps_loss, run_segment, hypers=hypers, state=state)
  forward, grad = jax.jit(loss), jax.jit(jax.grad(loss))
  _, forward_s = _timed(lambda: [forward(weights, x) for x in xs], repeats=1)
  first, grad_s = _timed(lambda: [grad(weights, x) for x in xs])
  return {"first_call_s": first, "forward_s": forward_s, "grad_s": grad_s}


def _ours_batched(case: str, xs, every: int) -> dict:
  """One call over all examples: vmap, run_segment_batch, or vmap over a device mesh."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  import carfac

  hypers, weights, state = _design(carfac)
  run = functools.partial(carfac.run_segment, checkpoint_every=every)
  one = functools.partial(_naps_loss, run, hypers=hypers, state=state)
  if case == "batch_checkpointed":
    states = carfac.repeat_streams(state, len(xs))

    def loss(weights, xs):
      seg, _ = carfac.run_segment_batch(xs, hypers, weights, states, phases_at_zero=True, checkpoint_every=every)
      return jnp.mean((seg["naps"] - 1.0) ** 2)
  else:
    loss = lambda weights, xs: jnp.mean(jax.vmap(lambda x: one(weights, x))(xs))
  if case == "mesh_checkpointed":
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()), ("examples",))
    xs = jax.device_put(xs, NamedSharding(mesh, PartitionSpec("examples")))
  forward, grad = jax.jit(loss), jax.jit(jax.grad(loss))
  _, forward_s = _timed(lambda: forward(weights, xs), repeats=1)
  first, grad_s = _timed(lambda: grad(weights, xs))
  return {"first_call_s": first, "forward_s": forward_s, "grad_s": grad_s, "devices": len(jax.devices())}


def _ours_threads(xs, every: int) -> dict:
  import jax

  import carfac
  from carfac.training import available_cores, mean_value_and_grad

  hypers, weights, state = _design(carfac)
  run = functools.partial(carfac.run_segment, checkpoint_every=every)
  value_and_grad = jax.jit(jax.value_and_grad(functools.partial(_naps_loss, run, hypers=hypers, state=state)))
  first, grad_s = _timed(lambda: mean_value_and_grad(value_and_grad, weights, list(xs)))
  return {"first_call_s": first, "grad_s": grad_s, "workers": available_cores()}


def run_case(case: str, args) -> dict:
  """One case, in this process; seconds per example and example-seconds per second."""
  n, seconds = (1, args.long_seconds) if case.startswith("long") else (args.examples, args.seconds)
  if case == "reference_by_example":
    n = min(n, args.reference_examples)
  xs = _examples(n, seconds)
  if case == "reference_by_example":
    ref = _reference_module(args.reference_src)
    result = _by_example(ref.run_segment, ref, xs)
  elif case in ("by_example", "long_plain", "by_example_checkpointed", "long_checkpointed"):
    import carfac

    every = args.checkpoint_every if case.endswith("checkpointed") else None
    result = _by_example(functools.partial(carfac.run_segment, checkpoint_every=every), carfac, xs)
  elif case == "threads_checkpointed":
    result = _ours_threads(xs, args.checkpoint_every)
  else:
    result = _ours_batched(case, xs, args.checkpoint_every)
  result.update(examples=n, example_seconds=seconds)
  for key in ("forward_s", "grad_s"):
    if key in result:
      result[key.replace("_s", "_s_per_example")] = result.pop(key) / n
  result["example_seconds_per_second"] = seconds / result["grad_s_per_example"]
  result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return result


def _in_child(case: str, args) -> dict:
  env = dict(os.environ)
  if case == "reference_by_example":
    env["CARFAC_XLA_TUNING"] = "0"
    env.pop("XLA_FLAGS", None)
  if case == "mesh_checkpointed":
    from carfac.training import available_cores

    flag = f"--xla_force_host_platform_device_count={available_cores()}"
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
  command = [
    sys.executable,
    __file__,
    "--case",
    case,
    "--examples",
    str(args.examples),
    "--seconds",
    str(args.seconds),
    "--long-seconds",
    str(args.long_seconds),
    "--reference-examples",
    str(args.reference_examples),
    "--checkpoint-every",
    str(args.checkpoint_every),
  ]
  if args.reference_src:
    command += ["--reference-src", args.reference_src]
  out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--examples", type=int, default=16)
  parser.add_argument("--seconds", type=float, default=1.0)
  parser.add_argument("--long-seconds", type=float, default=10.0)
  parser.add_argument("--reference-examples", type=int, default=4, help="the reference is slow: time fewer")
  parser.add_argument(
    "--checkpoint-every", type=int, default=CHECKPOINT_EVERY, help="the checkpointed cases' chunk, samples"
  )
  parser.add_argument("--cases", default=",".join(OURS), help="comma-separated subset of our cases")
  parser.add_argument("--case", help=argparse.SUPPRESS)
  parser.add_argument("--reference-src", default=os.environ.get("CARFAC_REFERENCE_SRC"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.case:
    print(json.dumps(run_case(args.case, args)))
    return
  sys.path.insert(0, str(Path(__file__).resolve().parent))
  from machine import describe

  cases = [c for c in args.cases.split(",") if c]
  if args.reference_src:
    cases.append("reference_by_example")
  results = {case: _in_child(case, args) for case in cases}
  report = {
    "machine": describe(),
    "config": {
      "fs": FS,
      "n_ch": 71,
      "dtype": "float32",
      "linear_car": False,
      "checkpoint_every": args.checkpoint_every,
      "examples": args.examples,
      "seconds": args.seconds,
      "long_seconds": args.long_seconds,
    },
    "cases": results,
  }
  reference = results.get("reference_by_example")
  if reference:
    report["throughput_over_reference"] = {
      case: r["example_seconds_per_second"] / reference["example_seconds_per_second"]
      for case, r in results.items()
      if case != "reference_by_example"
    }
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  main()
