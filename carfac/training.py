"""The mean loss and gradient over many examples, computed on every CPU core.

Training fits Weights to a dataset: the gradient wanted is the mean of the
examples' gradients. On CPU, ``jax.vmap`` or ``run_segment_batch`` over the
examples does not make the backward pass cheaper per example, and a
``jax.sharding`` mesh over forced host devices runs its shards one after the
other (``bench/bench_grad.py`` measures all three); one example per call, with
as many calls in flight as there are cores, is what scales. JAX releases the
GIL while a compiled call runs, so plain threads suffice.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np


def available_cores() -> int:
  """The CPUs this process may run on (its affinity mask, not the machine's count)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def mean_value_and_grad(
  value_and_grad: Callable,
  weights,
  examples: Sequence,
  n_workers: int | None = None,
) -> tuple[jax.Array, object]:
  """The mean over ``examples`` of ``value_and_grad(weights, example)``.

  Args:
    value_and_grad: ``(weights, example) -> (loss, grads)``, typically
      ``jax.jit(jax.value_and_grad(loss))`` (with the hypers and state bound
      by ``functools.partial``). Examples of one shape share one compilation.
    weights: the pytree of weights being trained.
    examples: the examples, each whatever ``value_and_grad`` takes.
    n_workers: how many examples are computed at once; default, one per
      available core.

  Returns:
    (mean loss, mean grads). The sum runs in the examples' order, so the
    result does not depend on ``n_workers`` or on timing.
  """
  if not examples:
    raise ValueError("mean_value_and_grad needs at least one example")
  workers = available_cores() if n_workers is None else n_workers
  if workers < 1:
    raise ValueError(f"n_workers must be >= 1, got {n_workers}")

  def one(example):
    return jax.block_until_ready(value_and_grad(weights, example))

  with ThreadPoolExecutor(max_workers=min(workers, len(examples))) as pool:
    results = list(pool.map(one, examples))
  in_order_sum = lambda *values: sum(values[1:], values[0])
  total_loss = in_order_sum(*(loss for loss, _ in results))
  total_grads = jax.tree.map(in_order_sum, *(grads for _, grads in results))
  mean = lambda total: total / np.asarray(len(examples), total.dtype)
  return mean(total_loss), jax.tree.map(mean, total_grads)
