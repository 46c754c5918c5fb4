"""Whole datasets through the engine: many audio files stepped together, one ``.npz`` each.

    inputs (files, folders, globs, list files) -> jobs (input, output)
    per job, on a reader thread: FileSource -> BlockFeed (resampled to the model rate, re-blocked)
    per ear count, one StreamPool: up to ``batch`` files in its slots, one block of each per step;
    a file that ends leaves, writes its .npz (atomically) and a manifest line; the next file joins
    (the longest files first, so the batch stays full until the last, short files)

Every file is resampled to one model rate (so every output has the same
channels), mono files run in a 1-ear pool and stereo files in a 2-ear pool.
Frames are those of ``carfac-nap`` on one file (the mean NAP over each
complete hop of real samples). An output that exists is a finished job
(outputs are written to a temporary name and renamed), so a run that was
interrupted continues where it stopped. A file that cannot be read, has
more than 2 channels or shares its output name with another gets an error
line in the manifest and the rest go on.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import os
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

import carfac
from engine.block_feed import BlockFeed
from engine.file_source import FileSource
from engine.nap_format import save_nap_npz
from engine.pool import StreamPool

MANIFEST = "manifest.jsonl"
LIST_SUFFIXES = (".txt", ".lst")
AUDIO_SUFFIXES = (
  ".wav",
  ".flac",
  ".ogg",
  ".oga",
  ".opus",
  ".mp3",
  ".aif",
  ".aiff",
  ".aifc",
  ".au",
  ".caf",
  ".w64",
  ".rf64",
)
_GLOB_CHARACTERS = set("*?[")


@dataclasses.dataclass(frozen=True)
class Job:
  """One input file and where its frames go (``error``: why it cannot be done, found before running)."""

  source: Path
  output: Path
  error: str | None = None


def _audio_files_under(folder: Path) -> list[Path]:
  return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def _expand(entry: str, relative_to: Path, seen_lists: set[Path]) -> Iterator[tuple[Path, Path]]:
  """(source, output name relative to OUT_DIR) for one command-line or list-file entry."""
  path = Path(entry) if Path(entry).is_absolute() else relative_to / entry
  if path.is_dir():
    for source in _audio_files_under(path):
      yield source, source.relative_to(path).with_suffix(".npz")
  elif entry.startswith("@") or (path.suffix.lower() in LIST_SUFFIXES and path.is_file()):
    listed = (relative_to / entry[1:]) if entry.startswith("@") else path
    if listed.resolve() in seen_lists:
      raise ValueError(f"list file {listed} includes itself")
    seen_lists.add(listed.resolve())
    for line in listed.read_text().splitlines():
      if line.strip() and not line.lstrip().startswith("#"):
        yield from _expand(line.strip(), listed.parent, seen_lists)
  elif _GLOB_CHARACTERS & set(entry):
    for match in sorted(glob.glob(str(path), recursive=True)):
      if Path(match).is_file():
        yield Path(match), Path(Path(match).stem + ".npz")
  else:
    yield path, Path(path.stem + ".npz")


def expand_inputs(inputs: Sequence[str], out_dir: Path) -> list[Job]:
  """Every input as a job, in order: files, folders (their audio files, recursively, mirrored in OUT_DIR),
  globs (``**`` recursive), and list files (``@list`` or ``*.txt``/``*.lst``: one entry per line, ``#``
  comments, relative to the list's folder). A repeated input is done once; two inputs with one output
  name: the second is an error job."""
  jobs: list[Job] = []
  owners: dict[Path, Path] = {}
  for entry in inputs:
    for source, name in _expand(entry, Path.cwd(), set()):
      output = out_dir / name
      owner = owners.setdefault(output, source)
      if owner.resolve() == source.resolve():
        if all(job.source.resolve() != source.resolve() for job in jobs):
          jobs.append(Job(source, output))
      else:
        jobs.append(Job(source, output, f"its output {output} is also that of {owner}"))
  return jobs


@dataclasses.dataclass(frozen=True)
class Options:
  """How the dataset is converted (``carfac-nap``'s flags)."""

  model_rate: float = 22050.0
  hop: int = 220  # model samples per frame
  frames_per_block: int = 64  # a block is this many hops
  batch: int = 32  # files stepped together per ear count
  shards: int = 1
  ihc_style: str = "two_cap"
  raw_outputs: tuple[str, ...] = ()  # per-sample naps / bm in the outputs too
  weights: dict[int, carfac.CarfacWeights] = dataclasses.field(default_factory=dict)  # per ear count, e.g. a profile
  input_gain: float = 1.0  # a calibrated level for every file

  def design(self, ears: int) -> carfac.CarfacDesignParameters:
    return carfac.CarfacDesignParameters(fs=self.model_rate, n_ears=ears, ihc_style=self.ihc_style)


@dataclasses.dataclass
class _Loaded:
  """A file read and cut into model-rate blocks (on the reader thread)."""

  job: Job
  rate: float = 0.0
  channels: int = 0
  blocks: list[np.ndarray] = dataclasses.field(default_factory=list)
  feed: BlockFeed | None = None
  error: str | None = None


def _load(job: Job, options: Options, block_size: int) -> _Loaded:
  loaded = _Loaded(job)
  try:
    source = FileSource(job.source, chunk_frames=1 << 16)
    loaded.rate, loaded.channels = source.sample_rate, source.channels
    feed = BlockFeed(source.sample_rate, options.model_rate, source.channels, block_size)
    for chunk in source:
      loaded.blocks += feed.push(chunk)
    loaded.blocks += feed.finish()
    loaded.feed = feed
    if feed.model_samples == 0:
      loaded.error = "no audio samples"
  except Exception as err:  # anything libsndfile or the file system says: this file's error, not the run's
    loaded.error = f"cannot read: {err}"
  return loaded


@dataclasses.dataclass
class _Active:
  loaded: _Loaded
  next_block: int = 0
  frames: list[np.ndarray] = dataclasses.field(default_factory=list)
  raw: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=lambda: collections.defaultdict(list))


@dataclasses.dataclass
class Summary:
  done: int = 0
  skipped: int = 0  # outputs already there (a resumed run)
  failed: int = 0
  audio_seconds: float = 0.0  # of the files done


class _Manifest:
  """``OUT_DIR/manifest.jsonl``: one JSON line per job outcome, appended (a resumed run adds to it)."""

  def __init__(self, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    self._file = path.open("a", encoding="utf-8")

  def write(self, job: Job, status: str, **details) -> None:
    record = {"input": str(job.source), "output": str(job.output), "status": status, **details}
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def _probe(job: Job) -> tuple[int, float] | str:
  """The file's channel count and duration (s), or why it cannot be read."""
  try:
    source = FileSource(job.source)
  except Exception as err:
    return f"cannot read: {err}"
  return source.channels, source.frames / source.sample_rate


class DatasetConverter:
  """Runs jobs through one pool per ear count; see the module doc."""

  def __init__(
    self,
    options: Options,
    on_progress: Callable[[Job, str, float], None] | None = None,
    refused_ears: Collection[int] = (),
  ):
    """``refused_ears``: ear counts whose files fail (e.g. ``--weights`` of the other ear count's design)."""
    self.options = options
    self.refused_ears = set(refused_ears)
    self.on_progress = on_progress or (lambda job, status, seconds: None)
    self.block_size = options.hop * options.frames_per_block
    self._pools: dict[int, StreamPool] = {}

  def pool(self, ears: int) -> StreamPool:
    """The pool for ``ears``-channel files (built, and compiled, on first use)."""
    if ears not in self._pools:
      o = self.options
      self._pools[ears] = StreamPool(
        o.design(ears),
        capacity=o.batch,
        block_size=self.block_size,
        hop=o.hop,
        raw_outputs=o.raw_outputs,
        shards=o.shards,
        weights=o.weights.get(ears),
      )
    return self._pools[ears]

  def run(self, jobs: Sequence[Job], out_dir: Path) -> Summary:
    """Converts every job whose output is not there yet; returns the counts."""
    summary = Summary()
    manifest = _Manifest(out_dir / MANIFEST)
    groups: dict[int, list[tuple[float, Job]]] = collections.defaultdict(list)
    try:
      for job in jobs:
        if job.output.exists():
          summary.skipped += 1
          manifest.write(job, "skipped", reason="output exists")
          self.on_progress(job, "skipped", 0.0)
          continue
        probed = _probe(job) if job.error is None else job.error
        if isinstance(probed, tuple) and probed[0] > 2:
          probed = f"{probed[0]} channels: the model has 1 or 2 ears"
        elif isinstance(probed, tuple) and probed[0] in self.refused_ears:
          probed = f"{probed[0]}-channel files: the weights are not of the {probed[0]}-ear design"
        if isinstance(probed, str):
          self._fail(job, probed, manifest, summary)
        else:
          groups[probed[0]].append((probed[1], job))
      for ears, group in sorted(groups.items()):
        # Longest first: the batch stays full until the end, and the last files to finish are short.
        longest_first = [job for _, job in sorted(group, key=lambda entry: -entry[0])]
        self._run_group(ears, longest_first, manifest, summary)
    finally:
      manifest.close()
    return summary

  def _fail(self, job: Job, error: str, manifest: _Manifest, summary: Summary) -> None:
    summary.failed += 1
    manifest.write(job, "error", error=error)
    self.on_progress(job, "error", 0.0)

  def _run_group(self, ears: int, jobs: list[Job], manifest: _Manifest, summary: Summary) -> None:
    """The files of one ear count, ``batch`` at a time in one pool, read ahead on a thread."""
    pool = self.pool(ears)
    with ThreadPoolExecutor(1, thread_name_prefix="carfac-dataset-reader") as reader:
      pending: collections.deque[Future] = collections.deque()
      queue = iter(jobs)

      def read_ahead() -> None:  # keeps a batch's worth of files decoded ahead of the pool
        while len(pending) < pool.capacity:
          job = next(queue, None)
          if job is None:
            return
          pending.append(reader.submit(_load, job, self.options, self.block_size))

      active: dict[int, _Active] = {}
      read_ahead()
      while pending or active:
        while pending and len(active) < pool.capacity:
          loaded = pending.popleft().result()
          if loaded.error is not None:
            self._fail(loaded.job, loaded.error, manifest, summary)
            continue
          active[pool.join(input_gain=self.options.input_gain)] = _Active(loaded)
        read_ahead()
        if not active:
          continue
        results = pool.step({slot: a.loaded.blocks[a.next_block] for slot, a in active.items()})
        for slot, result in results.items():
          entry = active[slot]
          feed = entry.loaded.feed
          entry.frames.append(feed.over_real_samples(result.frames, result.first_frame, pool.hop))
          for name, values in result.raw.items():
            entry.raw[name].append(feed.over_real_samples(values, entry.next_block * self.block_size, 1))
          entry.next_block += 1
          if entry.next_block == len(entry.loaded.blocks):
            pool.leave(slot)
            del active[slot]
            self._finish(entry, pool, manifest, summary)

  def _finish(self, entry: _Active, pool: StreamPool, manifest: _Manifest, summary: Summary) -> None:
    loaded, job = entry.loaded, entry.loaded.job
    frames = np.concatenate(entry.frames)
    raw = {name: np.concatenate(parts) for name, parts in entry.raw.items()}
    job.output.parent.mkdir(parents=True, exist_ok=True)
    partial = job.output.with_name(job.output.name + ".partial")
    with partial.open("wb") as file:
      save_nap_npz(file, frames, pool.centre_frequencies(), pool.hypers.fs, pool.hop, str(job.source), **raw)
    os.replace(partial, job.output)
    seconds = loaded.feed.model_samples / pool.hypers.fs
    summary.done += 1
    summary.audio_seconds += seconds
    manifest.write(
      job, "done", seconds=round(seconds, 6), frames=len(frames), sample_rate_hz=loaded.rate, ears=loaded.channels
    )
    self.on_progress(job, "done", seconds)


def progress_bar(total_files: int) -> tuple[Callable[[Job, str, float], None], Callable[[], None]]:
  """A tqdm bar over the files (on stderr; quiet when it is not a terminal): (on_progress, close)."""
  from tqdm import tqdm

  bar = tqdm(total=total_files, unit="file", disable=None, dynamic_ncols=True)
  started = time.perf_counter()
  audio = [0.0]

  def on_progress(job: Job, status: str, seconds: float) -> None:
    audio[0] += seconds
    elapsed = max(time.perf_counter() - started, 1e-9)
    bar.set_postfix_str(f"{status} {job.source.name}, {audio[0] / elapsed:.1f}x real time", refresh=False)
    bar.update()

  return on_progress, bar.close
