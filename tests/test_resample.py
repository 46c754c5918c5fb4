"""StreamResampler: tones keep their frequency, chunking changes nothing, the delay is short and steady, the
filter matches soxr's best one-shot resampling, equal rates pass through."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soxr

from engine.resample import StreamResampler

MODEL_RATE = 22050


def _tone(freq: float, rate: float, seconds: float, channels: int = 1) -> np.ndarray:
  t = np.arange(int(rate * seconds)) / rate
  return np.repeat(0.5 * np.sin(2 * np.pi * freq * t)[:, None], channels, axis=1).astype(np.float32)


def _in_chunks(resampler: StreamResampler, audio: np.ndarray, sizes: np.ndarray) -> np.ndarray:
  bounds = np.cumsum(np.concatenate([[0], sizes]))
  bounds = bounds[bounds < len(audio)].tolist() + [len(audio)]
  parts = [resampler.process(audio[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
  return np.concatenate(parts + [resampler.flush()])


def _peak_hz(signal: np.ndarray, rate: float) -> float:
  spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
  return float(np.fft.rfftfreq(len(signal), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("in_rate", [48000, 16000, 44100, 44056])  # 44056 Hz: no simple ratio, soxr
def test_a_tone_keeps_its_frequency_and_level(in_rate: int) -> None:
  resampler = StreamResampler(in_rate, MODEL_RATE, channels=1)
  sizes = np.random.default_rng(in_rate).integers(1, 2000, 200)
  out = _in_chunks(resampler, _tone(1000.0, in_rate, 2.0), sizes)[:, 0]
  assert abs(len(out) - 2 * MODEL_RATE) <= 1
  steady = out[MODEL_RATE // 2 : -MODEL_RATE // 2]  # clear of the filter's edges
  assert abs(_peak_hz(steady, MODEL_RATE) - 1000.0) <= 0.5
  assert np.sqrt(np.mean(steady**2)) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)


@pytest.mark.parametrize("in_rate", [48000, 16000, 44100, 44056])
@pytest.mark.parametrize("chunk", [1, 441, 4097])
def test_chunked_output_equals_one_shot_output(in_rate: int, chunk: int) -> None:
  audio = np.random.default_rng(1).uniform(-0.5, 0.5, (in_rate // 2, 2)).astype(np.float32)
  one_shot = StreamResampler(in_rate, MODEL_RATE, channels=2)
  expected = np.concatenate([one_shot.process(audio), one_shot.flush()])
  sizes = np.full(len(audio) // chunk + 1, chunk)
  np.testing.assert_array_equal(_in_chunks(StreamResampler(in_rate, MODEL_RATE, channels=2), audio, sizes), expected)


def _band_limited_noise(rate: int, top_hz: float, seconds: float) -> np.ndarray:
  spectrum = np.fft.rfft(np.random.default_rng(rate).standard_normal(int(rate * seconds)))
  spectrum[np.fft.rfftfreq(int(rate * seconds), 1 / rate) > top_hz] = 0
  return np.fft.irfft(spectrum, int(rate * seconds)).astype(np.float32)


@pytest.mark.parametrize(
  "in_rate, top_hz, min_snr_db", [(48000, 9500.0, 90.0), (44100, 9500.0, 90.0), (16000, 7000.0, 80.0)]
)
def test_the_passband_matches_soxr_very_high_quality(in_rate: int, top_hz: float, min_snr_db: float) -> None:
  """Noise within the passband (90% of the lower Nyquist frequency) comes out as soxr's VHQ one-shot makes it
  (measured 93, 115 and 82 dB)."""
  noise = _band_limited_noise(in_rate, top_hz, 2.0)
  resampler = StreamResampler(in_rate, MODEL_RATE)
  ours = np.concatenate([resampler.process(noise), resampler.flush()])[:, 0]
  theirs = soxr.resample(noise, in_rate, MODEL_RATE, quality="VHQ")
  assert len(ours) == len(theirs)
  inner = slice(2000, -2000)  # clear of the two filters' different edges
  error = ours[inner] - theirs[inner]
  assert 10 * np.log10(np.mean(theirs[inner] ** 2) / np.mean(error**2)) >= min_snr_db


def test_above_the_lower_nyquist_frequency_nothing_aliases() -> None:
  """A 12 kHz tone at 48 kHz lies above the model's 11.025 kHz Nyquist frequency: it must vanish (100 dB)."""
  resampler = StreamResampler(48000, MODEL_RATE)
  out = np.concatenate([resampler.process(_tone(12000.0, 48000, 1.0)), resampler.flush()])[:, 0]
  assert np.sqrt(np.mean(out[1000:-1000] ** 2)) < 0.5 * 1e-5


@pytest.mark.parametrize("in_rate", [48000, 16000, 44100])
def test_the_output_lags_the_input_by_at_most_the_filter_delay_after_every_chunk(in_rate: int) -> None:
  """No bursts: after each chunk, whatever its size, the output is complete up to ``delay_s`` before the input's end."""
  resampler = StreamResampler(in_rate, MODEL_RATE)
  assert 0 < resampler.delay_s < 0.005
  received = produced = 0
  for size in np.random.default_rng(3).integers(1, 2000, 300):
    produced += len(resampler.process(np.zeros(size, np.float32)))
    received += size
    assert received / in_rate - produced / MODEL_RATE <= resampler.delay_s + 1 / MODEL_RATE


def test_a_rate_with_no_simple_ratio_goes_through_soxr_and_promises_no_delay_bound() -> None:
  assert StreamResampler(44056, MODEL_RATE).delay_s == math.inf
  assert StreamResampler(MODEL_RATE, MODEL_RATE).delay_s == 0.0


def test_equal_rates_pass_through_exactly() -> None:
  audio = np.random.default_rng(2).standard_normal((1000, 2)).astype(np.float32)
  resampler = StreamResampler(MODEL_RATE, MODEL_RATE, channels=2)
  assert resampler.passthrough
  np.testing.assert_array_equal(resampler.process(audio[:300]), audio[:300])
  np.testing.assert_array_equal(resampler.process(audio[300:]), audio[300:])
  assert resampler.flush().shape == (0, 2)
