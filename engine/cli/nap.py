"""``carfac-nap``: turn a WAV file, or a whole dataset, into NAP frames saved as ``.npz``.

One file: the model is designed at the file's own sample rate and the file
is streamed through a one-slot ``StreamPool`` in fixed-size blocks (one
compilation, bounded memory; ``engine.offline``); each frame is the mean NAP
over one complete hop. WAV files are read with the standard library's
``wave`` (integer PCM; ``engine.wav``). Several inputs (files of any format
libsndfile reads, folders, globs, list files) go to ``OUT_DIR``, every file
resampled to ``--model-rate`` and ``--batch`` files stepped together
(``engine.dataset``), with a progress bar, a manifest, and a rerun
continuing an interrupted one.

    carfac-nap speech.wav speech_nap.npz --hop-ms 10
    carfac-nap corpus/ extra/*.flac @more.txt naps/ --batch 32
"""

from __future__ import annotations

import argparse
import sys
import time
import wave
from pathlib import Path

import numpy as np

import carfac
from engine import dataset
from engine.frames import samples_for_ms
from engine.hearing_arguments import add_hearing_arguments
from engine.nap_format import save_nap_npz
from engine.offline import audio_to_nap_frames
from engine.pool import RAW_OUTPUTS, default_shards
from engine.wav import read_wav


def _profile_health(args: argparse.Namespace, hypers: carfac.CarfacHypers) -> np.ndarray | None:
  """The flags' hearing profile or audiogram as per-channel health at the design's poles (None: neither)."""
  poles = np.asarray(hypers.ears[0].pole_freqs)
  if args.hearing_profile is not None:
    return carfac.hearing.profile_ohc_health(args.hearing_profile, poles)
  if args.audiogram is not None:
    return carfac.ohc_health_from_audiogram(args.audiogram["frequencies_hz"], args.audiogram["loss_db"], poles)
  return None


def _input_gain(args: argparse.Namespace) -> float:
  return 1.0 if args.level_db_spl is None else carfac.input_gain_for_level(args.level_db_spl)


def _model_weights(args: argparse.Namespace, params: carfac.CarfacDesignParameters) -> carfac.CarfacWeights | None:
  """The weights the flags ask for at this design: ``--weights`` (raises ``carfac.WeightsFileError`` or
  ``OSError``) and/or the hearing profile's health in the designed ones; None for the designed weights."""
  if args.weights is None and args.hearing_profile is None and args.audiogram is None:
    return None
  hypers, designed, _ = carfac.design_and_init_carfac(params, np.float32)
  weights = designed if args.weights is None else carfac.load_weights(args.weights, hypers, like=designed)
  health = _profile_health(args, hypers)
  return weights if health is None else carfac.with_ohc_health(weights, health)


def _one_file(args: argparse.Namespace, source: Path, output: Path) -> int:
  """``carfac-nap IN.wav OUT.npz``: the model designed at the file's own rate."""
  try:
    audio, rate = read_wav(source)
  except (OSError, wave.Error, ValueError) as err:
    print(f"carfac-nap: cannot read {source}: {err}", file=sys.stderr)
    return 2
  params = carfac.CarfacDesignParameters(rate, audio.shape[1], ihc_style=args.ihc_style)
  try:
    weights = _model_weights(args, params)
  except (carfac.WeightsFileError, OSError) as err:
    print(f"carfac-nap: --weights {args.weights}: {err}", file=sys.stderr)
    return 2
  hop = samples_for_ms(args.hop_ms, rate)
  frames, centre_frequencies = audio_to_nap_frames(audio * np.float32(_input_gain(args)), params, hop, weights=weights)
  save_nap_npz(output, frames, centre_frequencies, rate, hop, str(source))
  print(
    f"{source}: {audio.shape[0] / rate:.2f} s, {audio.shape[1]} ear(s) -> "
    f"{output}: {frames.shape[0]} frames x {frames.shape[1]} channels"
  )
  return 0


def _many_files(args: argparse.Namespace, inputs: list[str], out_dir: Path) -> int:
  """``carfac-nap INPUT... OUT_DIR``: every file at ``--model-rate``, ``--batch`` at a time (engine.dataset)."""
  if out_dir.exists() and not out_dir.is_dir():
    print(f"carfac-nap: {out_dir} is not a folder (several inputs go to OUT_DIR)", file=sys.stderr)
    return 2
  try:
    jobs = dataset.expand_inputs(inputs, out_dir)
  except (OSError, ValueError) as err:
    print(f"carfac-nap: {err}", file=sys.stderr)
    return 2
  weights = {}
  for ears in (1, 2):
    try:
      params = carfac.CarfacDesignParameters(args.model_rate, ears, ihc_style=args.ihc_style)
      weights[ears] = _model_weights(args, params)
    except carfac.WeightsFileError as err:  # of the other ear count: files of that count will fail
      weights[ears] = err
    except OSError as err:
      print(f"carfac-nap: --weights {args.weights}: {err}", file=sys.stderr)
      return 2
  if args.weights is not None and all(isinstance(w, Exception) for w in weights.values()):
    print(f"carfac-nap: --weights {args.weights}: {weights[1]}", file=sys.stderr)
    return 2
  options = dataset.Options(
    model_rate=args.model_rate,
    hop=samples_for_ms(args.hop_ms, args.model_rate),
    batch=args.batch,
    shards=args.shards,
    ihc_style=args.ihc_style,
    raw_outputs=args.raw,
    weights={ears: w for ears, w in weights.items() if w is not None and not isinstance(w, Exception)},
    input_gain=_input_gain(args),
  )
  wrong_design = {ears for ears, w in weights.items() if isinstance(w, Exception)}
  on_progress, close = dataset.progress_bar(len(jobs))
  started = time.perf_counter()
  try:
    summary = dataset.DatasetConverter(options, on_progress, refused_ears=wrong_design).run(jobs, out_dir)
  finally:
    close()
  wall = time.perf_counter() - started
  print(
    f"{len(jobs)} inputs -> {out_dir}: {summary.done} done, {summary.skipped} already there, "
    f"{summary.failed} failed ({out_dir / dataset.MANIFEST}); {summary.audio_seconds:.1f} s of audio in "
    f"{wall:.1f} s ({summary.audio_seconds / max(wall, 1e-9):.1f}x real time)"
  )
  return 1 if summary.failed else 0


def _raw_argument(text: str) -> tuple[str, ...]:
  names = tuple(name.strip() for name in text.split(",") if name.strip())
  if not names or any(name not in RAW_OUTPUTS for name in names) or len(set(names)) != len(names):
    raise argparse.ArgumentTypeError(f"{text!r}: distinct names from {', '.join(RAW_OUTPUTS)}")
  return names


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="carfac-nap", description=__doc__.split("\n\n")[0])
  parser.add_argument(
    "paths",
    nargs="+",
    metavar="INPUT",
    help="IN.wav OUT.npz (one file), or INPUT... OUT_DIR: files, folders, globs and list files (@list or "
    "*.txt), one OUT_DIR/<name>.npz each",
  )
  parser.add_argument("--hop-ms", type=float, default=10.0, help="frame hop (default 10 ms)")
  parser.add_argument("--ihc-style", default="two_cap", choices=carfac.IHC_STYLE_NAMES)
  parser.add_argument(
    "--weights",
    type=Path,
    help="trained weights (carfac.save_weights) of this design: the file's rate, ears and --ihc-style",
  )
  add_hearing_arguments(parser)
  many = parser.add_argument_group("several inputs (INPUT... OUT_DIR)")
  many.add_argument(
    "--model-rate", type=float, default=22050.0, help="every file is resampled to it (default 22050 Hz)"
  )
  many.add_argument("--batch", type=int, default=32, help="files stepped together per ear count (default 32)")
  many.add_argument(
    "--shards", type=int, default=None, help="batches run in parallel (default: one per core; 1 on a GPU)"
  )
  many.add_argument("--raw", type=_raw_argument, default=(), help="also save per-sample outputs: naps, bm")
  args = parser.parse_args(argv)
  if len(args.paths) < 2:
    parser.error("give IN.wav OUT.npz, or INPUT... OUT_DIR")
  *inputs, output = args.paths
  one = Path(inputs[0])
  if len(inputs) == 1 and output.endswith(".npz") and one.is_file() and one.suffix.lower() not in dataset.LIST_SUFFIXES:
    return _one_file(args, one, Path(output))
  if args.batch < 1:
    parser.error(f"--batch ({args.batch}) must be >= 1")
  args.shards = args.shards or default_shards(args.batch)
  if args.batch % args.shards:
    parser.error(f"--batch ({args.batch}) must be >= 1 and a multiple of --shards ({args.shards})")
  return _many_files(args, inputs, Path(output))


if __name__ == "__main__":
  sys.exit(main())
