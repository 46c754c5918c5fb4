"""``carfac-client``: stream a file or the microphone to a CARFAC server; save the NAP frames.

    carfac-client stream speech.wav --url ws://HOST:8000/v1/stream --out nap.npz --png nap.png
    carfac-client stream speech.flac --realtime --format s16le --hop-ms 5 --out nap.npz
    carfac-client stream --mic --seconds 10 --out mic.npz      # or until Ctrl-C
    carfac-client stream voice.wav --outputs pitchogram --png pitch.png
    carfac-client stream speech.wav --hearing-profile moderate-sloping --level-db-spl 70 --out impaired.npz

A file goes as fast as the server reads it (``--realtime``: at its own
pace), with a progress bar on a terminal. The ``.npz`` has the keys that
``carfac-nap`` writes: ``nap`` (n_frames, channels, ears), ``centre_frequencies_hz``
(channel 0 highest), ``sample_rate_hz`` (the model's), ``hop_samples`` (at the
model rate) and ``source``, plus ``dropped_rows`` (rows the server dropped
for a slow reader; they are zeros in ``nap``). ``--png`` draws the cochleagram
(frequency in Hz, time in s). ``--outputs pitchogram`` (mono) asks for the
server's pitchogram too: the ``.npz`` then also holds ``pitchogram`` (n_blocks,
lags), ``vowel_coords`` (n_blocks, 2: F2, F1), ``pitchogram_lags_s`` and
``block_samples``, and ``--png`` draws the vowel-coloured pitchogram image
(lag in ms, time in s; ``--light`` for the light theme) - beside the
cochleagram, as ``<png stem>.pitchogram.png``, when frames are asked for too.
``--hearing-profile`` or ``--audiogram`` and ``--level-db-spl`` listen with a
hearing loss and a calibrated level (the ``.npz`` then also holds the
``ohc_health`` and ``input_gain`` the server used); stream the same file with
and without to compare.
A start the server refuses for now
(``pool_full``, ``too_many_connections``, ``not_ready``, ``shutting_down``)
is tried again (``--retries``, exponential ``--retry-backoff-s``); behind a
load balancer the next try reaches another replica. A stream a draining
server hands over (a resume token in its ``end``) goes on by itself on the
next connection. Exit status: 0 done, 1 the server refused or
ended the stream, 2 a local problem (file, device, connection, arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import os
import signal
import sys
import threading
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from websockets.exceptions import WebSocketException

from client import cochleagram, pitchogram_picture
from client.progress import Progress
from client.protocol import SAMPLE_FORMATS, StreamRequest, auth_headers
from client.sources import in_thread, realtime
from client.stream import Session, StreamFailed, joined, resume_token_of, stream, with_retries
from engine.file_source import FileSource
from engine.hearing_arguments import add_hearing_arguments, hearing_request
from engine.microphone import MicrophoneSource, device_argument
from engine.nap_format import save_nap_npz

DEFAULT_URL = "ws://127.0.0.1:8000/v1/stream"
OUTPUT_CHOICES = ("frames", "pitchogram")


def outputs_argument(text: str) -> tuple[str, ...]:
  """``--outputs``: distinct names among OUTPUT_CHOICES, comma-separated."""
  names = tuple(name.strip() for name in text.split(",") if name.strip())
  unknown = [name for name in names if name not in OUTPUT_CHOICES]
  if not names or unknown or len(set(names)) != len(names):
    raise argparse.ArgumentTypeError(f"{text!r}: distinct names from {', '.join(OUTPUT_CHOICES)}")
  return names


def save_npz(
  path: Path, frames: np.ndarray, ready: dict[str, Any], source: str, dropped_rows: int, pitchogram=None
) -> None:
  """Writes frames (n, channels, ears) with what they are: the keys of ``carfac-nap``, and ``dropped_rows``;
  with ``pitchogram`` rows (n_blocks, lags + 2, 1), those and their lags too; with a hearing profile,
  the ``ohc_health`` (ears, channels) and ``input_gain`` the server used."""
  extra = {}
  hearing = ready.get("hearing")
  if hearing is not None:
    if hearing["ohc_health"] is not None:
      extra["ohc_health"] = np.asarray(hearing["ohc_health"], np.float32)
    extra["input_gain"] = hearing["input_gain"]
  if pitchogram is not None:
    rows = np.asarray(pitchogram)[..., 0]
    extra.update(
      pitchogram=rows[:, :-2],
      vowel_coords=rows[:, -2:],
      pitchogram_lags_s=np.asarray(ready["pictures"]["lags_s"]),
      block_samples=ready["block_samples"],
    )
  save_nap_npz(
    path,
    frames,
    ready["centre_frequencies_hz"],
    ready["model_rate"],
    ready["hop_samples"],
    source,
    dropped_rows=dropped_rows,
    **extra,
  )


@contextlib.contextmanager
def _stop_on_ctrl_c(stop: threading.Event) -> Iterator[None]:
  """The first Ctrl-C stops the audio (the stream is then flushed); a second one aborts."""
  loop = asyncio.get_running_loop()

  def interrupted() -> None:
    print("\nstopping; Ctrl-C again aborts", file=sys.stderr)
    stop.set()
    loop.remove_signal_handler(signal.SIGINT)

  loop.add_signal_handler(signal.SIGINT, interrupted)
  try:
    yield
  finally:
    loop.remove_signal_handler(signal.SIGINT)


async def _stream_file(args: argparse.Namespace, stop: threading.Event) -> Session:
  """The file in ``--chunk-ms`` chunks, as fast as the server reads them or in real time.

  A drained server's resume token continues the stream from the first
  sample that server did not take.
  """
  source = FileSource(args.file)
  source.chunk_frames = max(1, round(args.chunk_ms * source.sample_rate / 1000))
  request = StreamRequest(
    source.sample_rate, source.channels, args.format, args.hop_ms, args.outputs, hearing=hearing_request(args)
  )
  progress = Progress(source.frames / source.sample_rate, sys.stderr if sys.stderr.isatty() else None)

  def connection(resume_token: str | None, samples_taken: int) -> Awaitable[Session]:
    source.start_frame = samples_taken
    chunks: AsyncIterable[np.ndarray] = in_thread(source, stop)
    if args.realtime:
      chunks = realtime(chunks, source.sample_rate)
    tracked = progress.track(chunks, source.sample_rate)
    resumed = dataclasses.replace(request, resume_token=resume_token)
    return stream(args.url, resumed, tracked, headers=auth_headers(args.token), on_frames=progress.on_frames)

  try:
    return await _resuming(args, connection, stop)
  finally:
    progress.close()


async def _stream_microphone(args: argparse.Namespace, stop: threading.Event) -> Session:
  """The microphone (mono) until ``--seconds`` pass or Ctrl-C."""
  with MicrophoneSource(args.device, args.rate, channels=1) as mic:
    request = StreamRequest(mic.sample_rate, 1, args.format, args.hop_ms, args.outputs, hearing=hearing_request(args))
    if args.seconds is not None:
      asyncio.get_running_loop().call_later(args.seconds, stop.set)
    print(f"{mic.device_name}: {mic.sample_rate:g} Hz -> {args.url}; Ctrl-C stops", file=sys.stderr)
    chunks = in_thread(mic, stop)

    def connection(resume_token: str | None, samples_taken: int) -> Awaitable[Session]:
      # Live audio: what was captured while the stream moved is not sent again.
      resumed = dataclasses.replace(request, resume_token=resume_token)
      return stream(args.url, resumed, chunks, headers=auth_headers(args.token))

    return await _resuming(args, connection, stop)


#: Most drains one stream follows to another replica.
MAX_RESUMES = 16

Connection = Callable[[str | None, int], Awaitable[Session]]


def _say_retry(tries: int, error: dict, delay_s: float) -> None:
  print(f"the server answered {error['code']}: try {tries + 1} in {delay_s:g} s", file=sys.stderr)


async def _resuming(args: argparse.Namespace, connection: Connection, stop: threading.Event) -> Session:
  """``connection(resume token, samples the server took)``: tried again under ``--retries`` when refused
  for now, and opened again with the token when a draining server hands the stream over."""
  sessions: list[Session] = []
  token, taken = None, 0
  while True:
    attempt = functools.partial(connection, token, taken)
    sessions.append(await with_retries(attempt, args.retries, args.retry_backoff_s, _say_retry))
    token = resume_token_of(sessions[-1])
    if token is None or stop.is_set() or len(sessions) > MAX_RESUMES:
      return joined(sessions)
    taken = sessions[-1].end["samples_received"]
    print(f"the server handed the stream over after {taken} samples; resuming", file=sys.stderr)


async def _run_stream(args: argparse.Namespace) -> Session:
  stop = threading.Event()
  with _stop_on_ctrl_c(stop):
    return await (_stream_microphone if args.mic else _stream_file)(args, stop)


def stream_command(args: argparse.Namespace) -> int:
  """``carfac-client stream``: streams, then writes the ``.npz`` and/or the PNG."""
  session = asyncio.run(_run_stream(args))
  session.check()
  ready, end = session.ready, session.end
  source = "microphone" if args.mic else str(args.file)
  with_frames = "frames" in args.outputs
  if with_frames:
    frames = session.rows("frames", fill=0.0)
  else:
    frames = np.zeros((0, ready["channels"], ready["ears"]), np.float32)
  pitchogram = session.rows("pitchogram", fill=0.0) if "pitchogram" in args.outputs else None
  hop_s = ready["hop_samples"] / ready["model_rate"]
  written = [args.out] if args.out else []
  if args.out:
    save_npz(args.out, frames, ready, source, end["dropped_rows"], pitchogram)
  if args.png:
    title = source if args.mic else args.file.name
    if with_frames:
      cochleagram.save_png(args.png, frames, np.asarray(ready["centre_frequencies_hz"]), hop_s, title)
      written.append(args.png)
    if pitchogram is not None:
      path = args.png.with_suffix(".pitchogram.png") if with_frames else args.png
      block_s = ready["block_samples"] / ready["model_rate"]
      pitchogram_picture.save_png(path, pitchogram, ready["pictures"]["lags_s"], block_s, title, args.light)
      written.append(path)
  written = " and ".join(str(path) for path in written)
  pitchogram_note = "" if pitchogram is None else f", {len(pitchogram)} pitchogram columns"
  print(
    f"{source} -> {written}: {len(frames)} frames x {frames.shape[1]} channels x {frames.shape[2]} ear(s), "
    f"hop {1000 * hop_s:.2f} ms, model {ready['model_rate']:g} Hz{pitchogram_note}"
  )
  if end["reason"] != "stop":
    print(f"warning: the server ended the stream early ({end['reason']})", file=sys.stderr)
  if end["dropped_rows"]:
    print(f"warning: the server dropped {end['dropped_rows']} rows (this client read too slowly)", file=sys.stderr)
  return 0


def parser() -> argparse.ArgumentParser:
  top = argparse.ArgumentParser(prog="carfac-client", description=__doc__.split("\n\n")[0])
  commands = top.add_subparsers(dest="command", required=True)
  command = commands.add_parser("stream", help="stream a file or the microphone; save the frames")
  command.add_argument("file", type=Path, nargs="?", help="an audio file (WAV, FLAC, OGG, ...)")
  command.add_argument("--mic", action="store_true", help="stream the microphone instead of a file")
  command.add_argument("--url", default=DEFAULT_URL, help=f"the server's stream endpoint (default {DEFAULT_URL})")
  command.add_argument("--token", default=os.environ.get("CARFAC_TOKEN"), help="bearer token (default: $CARFAC_TOKEN)")
  command.add_argument("--out", type=Path, help="write the frames and their metadata to this .npz")
  command.add_argument(
    "--png", type=Path, help="draw the cochleagram (or, with only pitchogram, the pitchogram) into this PNG"
  )
  command.add_argument(
    "--outputs",
    type=outputs_argument,
    default=("frames",),
    help="what to ask for, comma-separated: frames (the NAP, default), pitchogram (mono; the server's --pitchogram)",
  )
  add_hearing_arguments(command)
  command.add_argument("--light", action="store_true", help="draw the pitchogram in the light theme (white background)")
  command.add_argument(
    "--realtime", action="store_true", help="send a file at its own pace (default: as fast as the server reads)"
  )
  command.add_argument("--hop-ms", type=float, help="frame hop, ms (default: the server's)")
  command.add_argument("--format", choices=sorted(SAMPLE_FORMATS), default="f32le", help="sample format on the wire")
  command.add_argument("--chunk-ms", type=float, default=20.0, help="audio per message for a file, ms")
  command.add_argument(
    "--device", type=device_argument, help="input device name or index (--mic; default: the system's)"
  )
  command.add_argument("--rate", type=float, help="capture rate, Hz (--mic; default: the device's)")
  command.add_argument("--seconds", type=float, help="stop the microphone after this long (default: Ctrl-C)")
  command.add_argument(
    "--retries",
    type=int,
    default=3,
    help="when the server refuses the start for now (pool_full, too_many_connections, not_ready, "
    "shutting_down), try again this many times (behind a load balancer: another replica); default 3",
  )
  command.add_argument(
    "--retry-backoff-s",
    type=float,
    default=0.5,
    help="wait before the first retry, doubled before each next one (default 0.5 s)",
  )
  return top


def main(argv: list[str] | None = None) -> int:
  arguments = parser()
  args = arguments.parse_args(argv)
  if args.mic == (args.file is not None):
    arguments.error("give a FILE or --mic")
  if not (args.out or args.png):
    arguments.error("nothing to write: give --out and/or --png")
  if args.realtime and args.mic:
    arguments.error("--realtime is for files (a microphone is real time)")
  if args.retries < 0 or args.retry_backoff_s < 0:
    arguments.error("--retries and --retry-backoff-s must be >= 0")
  try:
    return stream_command(args)
  except StreamFailed as err:
    print(f"carfac-client: {err}", file=sys.stderr)
    return 1
  except (OSError, RuntimeError, ImportError, ValueError, WebSocketException) as err:
    print(f"carfac-client: {err}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    return 130


if __name__ == "__main__":
  sys.exit(main())
