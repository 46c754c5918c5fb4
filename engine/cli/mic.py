"""``carfac-mic``: list input devices, or run the microphone through the model.

    carfac-mic --list-devices
    carfac-mic --device pulse --seconds 10

The second form prints, once a second, the centre frequency of the channel
with the strongest mean NAP (``engine.microphone.MicrophoneSource`` through
a one-slot ``StreamPool`` on the engine runner's thread).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import carfac
from engine.microphone import MicrophoneError, MicrophoneSource, device_argument, list_input_devices
from engine.pool import BlockResult, StreamPool
from engine.runner import EngineRunner


def _print_devices() -> None:
  for device in list_input_devices():
    print(f"{device.index:3d}  {device.name}  ({device.max_input_channels} in, {device.default_sample_rate:g} Hz)")


def _monitor(device: int | str | None, sample_rate: float | None, seconds: float | None) -> None:
  """Runs the microphone through the model; prints the loudest channel's CF each second."""
  model_rate, hop = 22050.0, 220
  pool = StreamPool(carfac.CarfacDesignParameters(fs=model_rate), capacity=1, block_size=2 * hop, hop=hop)
  centre_frequencies = pool.centre_frequencies()
  frames_per_second = round(model_rate / hop)
  pending: list[np.ndarray] = []

  def report(result: BlockResult) -> None:
    pending.extend(result.frames[:, :, 0])
    if len(pending) >= frames_per_second:
      level = np.mean(pending, axis=0)
      pending.clear()
      loudest = int(level.argmax())
      print(
        f"{time.strftime('%H:%M:%S')}  {centre_frequencies[loudest]:7.1f} Hz  (NAP {level[loudest]:.4f})", flush=True
      )

  with MicrophoneSource(device, sample_rate) as mic:
    print(f"{mic.device_name}: {mic.sample_rate:g} Hz -> model {model_rate:g} Hz; Ctrl-C stops", flush=True)
    runner = EngineRunner(pool, mic, report)
    runner.start()
    try:
      runner.join(seconds)  # ends early only by raising the engine thread's error
    except (TimeoutError, KeyboardInterrupt):
      runner.stop()
    print(f"{mic.callbacks} callbacks, {mic.overflowed} frames overflowed, {mic.input_overflows} PortAudio overflows")


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="carfac-mic", description=__doc__.split("\n\n")[0])
  parser.add_argument("--list-devices", action="store_true", help="list input devices and exit")
  parser.add_argument(
    "--device", type=device_argument, help="input device index or name (default: the system's default input)"
  )
  parser.add_argument("--rate", type=float, help="capture rate in Hz (default: the device's)")
  parser.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
  args = parser.parse_args(argv)
  try:
    if args.list_devices:
      _print_devices()
    else:
      _monitor(args.device, args.rate, args.seconds)
  except (ImportError, MicrophoneError, ValueError) as err:
    print(f"carfac-mic: {err}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
