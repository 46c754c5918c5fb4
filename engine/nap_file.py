"""``carfac-nap``: turn a WAV file into NAP frames saved as ``.npz``.

The model is designed at the file's own sample rate and the file is streamed
through a one-slot ``StreamPool`` in fixed-size blocks (one compilation,
bounded memory); each frame is the mean NAP over one complete hop. WAV files
are read with the standard library's ``wave`` (integer PCM).

    carfac-nap speech.wav speech_nap.npz --hop-ms 10
"""

from __future__ import annotations

import argparse
import sys
import wave
from pathlib import Path

import numpy as np

import carfac
from engine.frames import samples_for_ms
from engine.pool import StreamPool

_PCM_DTYPES = {1: np.uint8, 2: np.int16, 4: np.int32}


def read_wav(path: Path) -> tuple[np.ndarray, float]:
  """Integer PCM WAV -> (float32 samples in [-1, 1), (n_samp, n_channels)), rate."""
  with wave.open(str(path), "rb") as wav:
    width, n_channels = wav.getsampwidth(), wav.getnchannels()
    if width not in _PCM_DTYPES:
      raise ValueError(f"{path}: {8 * width}-bit WAV not supported (8, 16 or 32-bit PCM)")
    raw = np.frombuffer(wav.readframes(wav.getnframes()), _PCM_DTYPES[width])
    rate = float(wav.getframerate())
  if width == 1:
    samples = (raw.astype(np.float32) - 128) / 128
  else:
    samples = raw.astype(np.float32) / float(2 ** (8 * width - 1))
  return samples.reshape(-1, n_channels), rate


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
  """Float samples (n_samp,) or (n_samp, n_channels) -> 16-bit PCM WAV."""
  samples = np.atleast_2d(np.asarray(samples).T).T
  pcm = np.clip(np.round(samples * 32768), -32768, 32767).astype("<i2")
  with wave.open(str(path), "wb") as wav:
    wav.setnchannels(samples.shape[1])
    wav.setsampwidth(2)
    wav.setframerate(rate)
    wav.writeframes(pcm.tobytes())


def save_nap_npz(
    path, frames: np.ndarray, centre_frequencies, sample_rate: float, hop: int, source: str, **extra
) -> None:
  """Writes NAP frames (n, n_ch, n_ears) with what they are, as ``.npz``.

  Keys: ``nap``, ``centre_frequencies_hz``, ``sample_rate_hz`` (the model's),
  ``hop_samples``, ``source``, plus ``extra`` (e.g. the client's
  ``dropped_rows``); the one format of ``carfac-nap`` and ``carfac-client``.
  """
  np.savez_compressed(
      path,
      nap=frames,
      centre_frequencies_hz=np.asarray(centre_frequencies),
      sample_rate_hz=sample_rate,
      hop_samples=hop,
      source=source,
      **extra,
  )


def wav_to_nap_frames(
    audio: np.ndarray,
    params: carfac.CarfacDesignParameters,
    hop: int,
    frames_per_block: int = 64,
    weights: carfac.CarfacWeights | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Mean NAP per complete hop of ``audio`` (n_samp, n_ears), with the design's or trained ``weights``.

  Returns (frames (n_frames, n_ch, n_ears) float32, centre frequencies).
  """
  block = hop * frames_per_block
  pool = StreamPool(params, capacity=1, block_size=block, hop=hop, weights=weights)
  slot = pool.join()
  n_samp = audio.shape[0]
  padded = np.zeros((-(-n_samp // block) * block, audio.shape[1]), np.float32)
  padded[:n_samp] = audio
  frames = [
      pool.step({slot: padded[start : start + block]})[slot].frames
      for start in range(0, len(padded), block)
  ]
  # Frames that reach into the zero padding are not the file's.
  return np.concatenate(frames)[: n_samp // hop], pool.centre_frequencies()


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="carfac-nap", description=__doc__.split("\n\n")[0])
  parser.add_argument("input", type=Path, help="integer PCM WAV file")
  parser.add_argument("output", type=Path, help="where to write the .npz")
  parser.add_argument("--hop-ms", type=float, default=10.0, help="frame hop (default 10 ms)")
  parser.add_argument(
      "--ihc-style", default="two_cap", choices=["just_hwr", "one_cap", "two_cap", "two_cap_with_syn"]
  )
  parser.add_argument(
      "--weights", type=Path, help="trained weights (carfac.save_weights) of this design: the file's rate, ears and --ihc-style"
  )
  args = parser.parse_args(argv)
  try:
    audio, rate = read_wav(args.input)
  except (OSError, wave.Error, ValueError) as err:
    print(f"carfac-nap: cannot read {args.input}: {err}", file=sys.stderr)
    return 2
  params = carfac.CarfacDesignParameters(fs=rate, n_ears=audio.shape[1])
  for ear in params.ears:
    ear.ihc.ihc_style = args.ihc_style
  weights = None
  if args.weights is not None:
    hypers, designed, _ = carfac.design_and_init_carfac(params, np.float32)
    try:
      weights = carfac.load_weights(args.weights, hypers, like=designed)
    except (carfac.WeightsFileError, OSError) as err:
      print(f"carfac-nap: --weights {args.weights}: {err}", file=sys.stderr)
      return 2
  hop = samples_for_ms(args.hop_ms, rate)
  frames, centre_frequencies = wav_to_nap_frames(audio, params, hop, weights=weights)
  save_nap_npz(args.output, frames, centre_frequencies, rate, hop, str(args.input))
  print(
      f"{args.input}: {audio.shape[0] / rate:.2f} s, {audio.shape[1]} ear(s) -> "
      f"{args.output}: {frames.shape[0]} frames x {frames.shape[1]} channels"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
