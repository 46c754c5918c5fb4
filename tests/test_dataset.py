"""``carfac-nap INPUT... OUT_DIR``: whole datasets batched through the engine.

Every output must equal an offline run of its file alone (resampled to the
model rate in one shot, one ``run_segment``), bad files must get their own
manifest error while the rest are done, and a second run must do only what
the first left undone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from server_harness import TOLERANCE, max_error, to_model_rate

import carfac
from engine.cli.nap import main
from engine.dataset import MANIFEST, expand_inputs

MODEL_RATE, HOP = 22050.0, 220
FILES = {  # name: (rate, channels, seconds)
  "a.wav": (22050, 1, 1.3),
  "b.flac": (44100, 1, 0.7),
  "stereo.wav": (16000, 2, 0.9),
  "deep/c.wav": (48000, 1, 1.6),
  "deep/deeper/d.ogg": (22050, 1, 0.5),
}


def _write(folder: Path) -> dict[str, np.ndarray]:
  """The dataset, plus an unreadable file and a 4-channel one; returns each good file's samples as read."""
  rng = np.random.default_rng(0)
  audio = {}
  for name, (rate, channels, seconds) in FILES.items():
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(rate * seconds)) / rate
    tone = 0.1 * np.sin(2 * np.pi * (300 + 500 * len(audio)) * t)[:, None]
    soundfile.write(path, tone + 0.02 * rng.standard_normal((len(t), channels)), rate)
    audio[name] = soundfile.read(path, dtype="float32", always_2d=True)[0]
  (folder / "broken.wav").write_bytes(b"RIFF, but not really")
  soundfile.write(folder / "four.wav", np.zeros((2205, 4)), 22050)
  return audio


def _offline(audio: np.ndarray, rate: float, ohc_health=None, gain: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """(frames, per-sample naps) of one file alone, as float64."""
  params = carfac.CarfacDesignParameters(fs=MODEL_RATE, n_ears=audio.shape[1])
  hypers, weights, state = carfac.design_and_init_carfac(params, np.float32)
  if ohc_health is not None:
    weights = carfac.with_ohc_health(weights, ohc_health)
  x = to_model_rate(audio, rate, MODEL_RATE) * np.float32(gain)
  naps = np.asarray(carfac.run_segment_jit(x, hypers, weights, state).naps, np.float64)
  n = len(naps) // HOP
  return naps[: n * HOP].reshape(n, HOP, *naps.shape[1:]).mean(axis=1), naps


def _manifest(out: Path) -> list[dict]:
  return [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  folder = tmp_path_factory.mktemp("dataset")
  return folder, _write(folder / "in")


def test_inputs_expand_from_files_folders_globs_and_list_files(tmp_path: Path) -> None:
  for name in ("x/1.wav", "x/y/2.flac", "x/notes.md", "z/3.wav", "z/also/3.wav"):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b"")
  (tmp_path / "list.txt").write_text("# the z files\nz/3.wav\n\nz/also/3.wav\n")
  out = tmp_path / "out"
  jobs = expand_inputs([str(tmp_path / "x"), str(tmp_path / "x/*.wav"), "@" + str(tmp_path / "list.txt")], out)
  assert [(j.source.relative_to(tmp_path).as_posix(), j.output.relative_to(out).as_posix(), j.error) for j in jobs] == [
    ("x/1.wav", "1.npz", None),  # the folder mirrors its tree; the glob's x/1.wav is the same file: once
    ("x/y/2.flac", "y/2.npz", None),
    ("z/3.wav", "3.npz", None),
    ("z/also/3.wav", "3.npz", f"its output {out / '3.npz'} is also that of {tmp_path / 'z/3.wav'}"),
  ]


def test_a_dataset_gives_each_files_offline_frames_and_a_manifest_with_the_bad_files(dataset, capsys) -> None:
  folder, audio = dataset
  out = folder / "out"
  assert main([str(folder / "in"), str(out), "--batch", "2", "--shards", "1"]) == 1  # 1: some files failed
  assert "5 done, 0 already there, 2 failed" in capsys.readouterr().out
  records = {Path(r["input"]).relative_to(folder / "in").as_posix(): r for r in _manifest(out)}
  assert records["broken.wav"]["status"] == "error" and "cannot read" in records["broken.wav"]["error"]
  assert records["four.wav"]["error"] == "4 channels: the model has 1 or 2 ears"
  for name, (rate, channels, seconds) in FILES.items():
    saved = np.load(out / Path(name).with_suffix(".npz"))
    expected, _ = _offline(audio[name], rate)
    assert saved["nap"].shape == expected.shape == (int(seconds * 100), 71, channels), name
    assert max_error(saved["nap"], expected) <= TOLERANCE, name
    assert float(saved["sample_rate_hz"]) == MODEL_RATE and int(saved["hop_samples"]) == HOP
    assert records[name]["status"] == "done" and records[name]["frames"] == len(expected)
    assert records[name]["sample_rate_hz"] == rate and records[name]["ears"] == channels


def test_a_second_run_does_only_what_the_first_left_undone(dataset, capsys) -> None:
  folder, audio = dataset
  out = folder / "resumed"
  jobs = [str(folder / "in" / name) for name in ("a.wav", "b.flac", "deep/c.wav")]
  assert main([*jobs, str(out), "--batch", "2", "--shards", "1"]) == 0
  first = (out / "a.npz").stat().st_mtime_ns
  (out / "c.npz").unlink()  # as if the run had been stopped before c was written ...
  (out / "c.npz.partial").write_bytes(b"half")  # ... while writing it
  capsys.readouterr()
  assert main([*jobs, str(out), "--batch", "2", "--shards", "1"]) == 0
  assert "1 done, 2 already there, 0 failed" in capsys.readouterr().out
  assert (out / "a.npz").stat().st_mtime_ns == first and not (out / "c.npz.partial").exists()
  expected, _ = _offline(audio["deep/c.wav"], 48000)
  assert max_error(np.load(out / "c.npz")["nap"], expected) <= TOLERANCE
  statuses = [r["status"] for r in _manifest(out)]
  assert statuses == ["done"] * 3 + ["skipped", "skipped", "done"]


def test_raw_outputs_and_a_hearing_profile_for_the_whole_dataset(dataset) -> None:
  folder, audio = dataset
  out = folder / "impaired"
  args = [str(folder / "in" / "a.wav"), str(folder / "in" / "b.flac"), str(out), "--batch", "2", "--shards", "1"]
  assert main(args + ["--raw", "naps", "--hearing-profile", "noise-notch", "--level-db-spl", "80"]) == 0
  hypers, _, _ = carfac.design_and_init_carfac(carfac.CarfacDesignParameters(fs=MODEL_RATE), np.float32)
  health = carfac.ohc_health_from_audiogram(
    carfac.hearing.AUDIOMETRIC_FREQUENCIES_HZ,
    carfac.hearing.EXAMPLE_AUDIOGRAMS["noise-notch"],
    hypers.ears[0].pole_freqs,
  )
  gain = carfac.input_gain_for_level(80.0)
  for name, rate in (("a.wav", 22050), ("b.flac", 44100)):
    saved = np.load(out / Path(name).with_suffix(".npz"))
    frames, naps = _offline(audio[name], rate, health, gain)
    assert max_error(saved["nap"], frames) <= TOLERANCE
    assert saved["naps"].shape == naps.shape and max_error(saved["naps"], naps) <= TOLERANCE
    healthy, _ = _offline(audio[name], rate, gain=gain)
    assert max_error(saved["nap"], healthy) > 100 * TOLERANCE


def test_an_out_dir_that_is_a_file_is_refused(tmp_path: Path, capsys) -> None:
  (tmp_path / "taken").write_text("")
  assert main([str(tmp_path / "a.wav"), str(tmp_path / "b.wav"), str(tmp_path / "taken")]) == 2
  assert "is not a folder" in capsys.readouterr().err
