"""The browser page (``client/web``, served at ``/``) in headless Chromium against a real server.

Chromium's fake microphone plays a 1 kHz tone WAV; the page streams it over
protocol v1 at the browser's own rate and draws the frames on its canvas,
whose pixels (read back here) are brightest on the band of rows of the
channel nearest 1 kHz. The "play a local file" mode gets a 500 Hz file. A
second browser's fake microphone plays a 220 Hz harmonic complex, and the
page's pitchogram canvas is brightest on the lag cell of 1/220 s.
Screenshots go to ``artifacts/``. Playwright drives Debian's
``/usr/bin/chromium`` (scripts/install_system_packages.sh installs it); when
either is missing the tests fail, saying so.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile
from server_harness import TOKEN

import carfac
from carfac import hearing
from server.access import check_access
from server.protocol import ProtocolError
from server.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
  "--use-fake-ui-for-media-stream",  # grants the microphone without a prompt
  "--use-fake-device-for-media-stream",  # a fake microphone (no sound card here) ...
  "--autoplay-policy=no-user-gesture-required",
]
MIC_HZ, FILE_HZ = 1000.0, 500.0
WAIT_MS = 20_000  # bound on any wait for the page

# Mean luminance of each pixel row of a canvas, over its rightmost `columns` columns.
ROW_LUMINANCE = """([id, columns]) => {
  const canvas = document.getElementById(id);
  const data = canvas.getContext("2d").getImageData(canvas.width - columns, 0, columns, canvas.height).data;
  const rows = [];
  for (let y = 0; y < canvas.height; y++) {
    let sum = 0;
    for (let x = 0; x < columns; x++) {
      const i = 4 * (y * columns + x);
      sum += 0.2126 * data[i] + 0.7152 * data[i + 1] + 0.0722 * data[i + 2];
    }
    rows.push(sum / columns);
  }
  return {rows, rowPx: Number(canvas.dataset.rowPx), channels: Number(canvas.dataset.channels),
          lags: Number(canvas.dataset.lags)};
}"""
PITCH_HZ = 220.0  # (at 150 Hz the reference's own pitchogram is brightest at 2/150 s: see the README)


def _tone(path: Path, hz: float, seconds: float, rate: int = 48000) -> Path:
  t = np.arange(round(seconds * rate)) / rate
  soundfile.write(path, 0.5 * np.sin(2 * np.pi * hz * t), rate, subtype="PCM_16")
  return path


def _harmonic_complex(path: Path, f0: float, seconds: float, rate: int = 48000) -> Path:
  t = np.arange(round(seconds * rate)) / rate
  soundfile.write(path, 0.02 * sum(np.sin(2 * np.pi * k * f0 * t) for k in range(1, 21)), rate, subtype="PCM_16")
  return path


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
  """Playwright's driver, shared by this module's browsers."""
  if not CHROMIUM.exists():
    pytest.fail(f"{CHROMIUM} is missing: scripts/install_system_packages.sh installs Debian's chromium")
  try:
    from playwright.sync_api import sync_playwright
  except ImportError as err:
    pytest.fail(f"playwright is missing ({err}): scripts/setup.sh installs the test extra")
  with sync_playwright() as driver:
    yield driver


def _chromium(playwright, microphone: Path) -> Iterator[Any]:
  """Chromium whose fake microphone plays ``microphone`` (the file loops)."""
  chromium = playwright.chromium.launch(
    executable_path=str(CHROMIUM),
    headless=True,
    args=[*FLAGS, f"--use-file-for-fake-audio-capture={microphone}"],
    timeout=WAIT_MS,
  )
  yield chromium
  chromium.close()


@pytest.fixture(scope="module")
def browser(playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
  """Chromium, its fake microphone playing a MIC_HZ tone."""
  yield from _chromium(playwright, _tone(tmp_path_factory.mktemp("web") / "microphone.wav", MIC_HZ, 3.0))


@pytest.fixture(scope="module")
def pitch_browser(playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
  """Chromium, its fake microphone playing a PITCH_HZ harmonic complex."""
  yield from _chromium(playwright, _harmonic_complex(tmp_path_factory.mktemp("web") / "voice.wav", PITCH_HZ, 3.0))


def _page(browser) -> Iterator[Any]:
  context = browser.new_context(permissions=["microphone"], viewport={"width": 900, "height": 900})
  context.set_default_timeout(WAIT_MS)
  page = context.new_page()
  errors: list[str] = []
  page.on("pageerror", lambda error: errors.append(str(error)))
  yield page
  context.close()
  assert not errors, errors


@pytest.fixture
def page(browser, main_server) -> Iterator[Any]:
  """A fresh page context with the microphone granted; fails the test on any uncaught page error."""
  yield from _page(browser)


@pytest.fixture
def pitch_page(pitch_browser, main_server) -> Iterator[Any]:
  yield from _page(pitch_browser)


def _brightest_channel(page, columns: int) -> int:
  """The channel whose band of canvas rows is brightest over the rightmost ``columns`` columns."""
  drawn = page.evaluate(ROW_LUMINANCE, ["cochleagram", columns])
  assert drawn["channels"] == 71 and len(drawn["rows"]) == drawn["channels"] * drawn["rowPx"], drawn["channels"]
  return int(np.argmax(drawn["rows"])) // drawn["rowPx"]


def _nearest_channel(page, hz: float) -> int:
  return int(np.abs(np.asarray(page.evaluate("window.carfacState.ready.centre_frequencies_hz")) - hz).argmin())


def test_the_page_is_served_at_the_root_and_keeps_the_token(main_server) -> None:
  with httpx.Client(base_url=main_server.http, trust_env=False, timeout=10) as http:
    root = http.get("/", params={"token": "abc"})
    assert root.status_code == 307 and root.headers["location"] == "web/?token=abc"
    index = http.get("/web/")
    assert index.status_code == 200 and '<canvas id="cochleagram"' in index.text
    for name in ("app.js", "protocol.js", "capture.js", "capture-worklet.js", "cochleagram.js", "pitchogram.js"):
      script = http.get(f"/web/{name}")
      assert script.status_code == 200 and "javascript" in script.headers["content-type"], name


def test_the_microphone_is_drawn_brightest_on_the_tone_channel(page, main_server) -> None:
  page.goto(f"{main_server.http}/?token={TOKEN}")
  page.click("#start-mic")
  page.wait_for_function("window.carfacState.framesDrawn >= 150")
  assert page.text_content("#state") == "streaming"
  ARTIFACTS.mkdir(exist_ok=True)
  page.screenshot(path=ARTIFACTS / "web-page-microphone.png")
  drawn, nearest = _brightest_channel(page, columns=100), _nearest_channel(page, MIC_HZ)
  print(f"microphone: brightest canvas rows show channel {drawn}; nearest {MIC_HZ:g} Hz: channel {nearest}")
  assert drawn == nearest

  page.click("#stop")
  page.wait_for_function("window.carfacState.state === 'stopped'")
  end = page.evaluate("window.carfacState.end")
  assert end["reason"] == "stop" and end["dropped_rows"] == 0 and end["rows"]["frames"] >= 150, end


def test_a_local_file_is_played_streamed_and_drawn(page, main_server, tmp_path: Path) -> None:
  seconds = 1.5
  page.goto(f"{main_server.http}/?token={TOKEN}")
  page.set_input_files("#file", _tone(tmp_path / "file.wav", FILE_HZ, seconds))
  page.wait_for_function("window.carfacState.state === 'stopped'")  # played to its end, flushed
  ARTIFACTS.mkdir(exist_ok=True)
  page.screenshot(path=ARTIFACTS / "web-page-file.png")
  state = page.evaluate("window.carfacState")
  assert state["source"] == "file.wav" and state["error"] is None
  frames = state["end"]["rows"]["frames"]
  assert abs(frames - seconds * 100) <= 2 and state["framesDrawn"] == frames, state["end"]  # 10 ms hops
  drawn, nearest = _brightest_channel(page, columns=100), _nearest_channel(page, FILE_HZ)
  print(f"file: brightest canvas rows show channel {drawn}; nearest {FILE_HZ:g} Hz: channel {nearest}")
  assert drawn == nearest


def test_the_pitchogram_of_a_harmonic_complex_is_brightest_at_its_period(pitch_page, main_server) -> None:
  page = pitch_page
  page.goto(f"{main_server.http}/?token={TOKEN}")
  page.wait_for_function("document.getElementById('server').textContent.startsWith('Server:')")
  page.click("#start-mic")
  page.wait_for_function("window.carfacState.pitchogramColumns >= 120")
  assert page.is_visible("#pitchogram")
  ARTIFACTS.mkdir(exist_ok=True)
  page.screenshot(path=ARTIFACTS / "web-page-pitchogram.png")
  drawn = page.evaluate(ROW_LUMINANCE, ["pitchogram", 60])
  lags_s = np.asarray(page.evaluate("window.carfacState.ready.pictures.lags_s"))
  assert drawn["lags"] == len(lags_s) == 148 and len(drawn["rows"]) == 148 * drawn["rowPx"]
  brightest = int(np.argmax(drawn["rows"])) // drawn["rowPx"]
  period = int(np.abs(lags_s - 1 / PITCH_HZ).argmin())
  print(
    f"pitchogram: brightest rows show lag cell {brightest} ({1000 * lags_s[brightest]:.2f} ms); "
    f"1/{PITCH_HZ:g} s is cell {period}"
  )
  assert abs(brightest - period) <= 1
  page.click("#stop")
  page.wait_for_function("window.carfacState.state === 'stopped'")
  assert page.evaluate("window.carfacState.end.rows.pitchogram") >= 120


def test_a_chosen_hearing_profile_and_level_go_with_the_stream(page, main_server, tmp_path: Path) -> None:
  page.goto(f"{main_server.http}/?token={TOKEN}")
  page.wait_for_function("!document.getElementById('hearing-field').hidden")
  offered = page.eval_on_selector_all("#hearing option", "options => options.map(o => o.value)")
  assert offered == list(hearing.EXAMPLE_AUDIOGRAMS)
  page.select_option("#hearing", "noise-notch")
  page.fill("#level", "70")
  page.set_input_files("#file", _tone(tmp_path / "file.wav", FILE_HZ, 0.5))
  page.wait_for_function("window.carfacState.state === 'stopped'")
  state = page.evaluate("window.carfacState")
  assert state["error"] is None and state["framesDrawn"] == state["end"]["rows"]["frames"] > 0
  used = state["ready"]["hearing"]
  poles = np.asarray(state["ready"]["centre_frequencies_hz"])
  expected = carfac.ohc_health_from_audiogram(
    hearing.AUDIOMETRIC_FREQUENCIES_HZ, hearing.EXAMPLE_AUDIOGRAMS["noise-notch"], poles
  )
  np.testing.assert_allclose(used["ohc_health"][0], expected, atol=1e-6)
  assert used["level_db_spl"] == 70 and used["input_gain"] == pytest.approx(carfac.input_gain_for_level(70))
  assert "hearing noise-notch, full scale = 70 dB SPL" in page.text_content("#detail")


def test_a_refused_stream_is_shown(page, main_server) -> None:
  page.goto(f"{main_server.http}/?token=wrong")
  page.click("#start-mic")
  page.wait_for_function("window.carfacState.state === 'error'")
  assert page.is_visible("#error") and "unauthorized" in page.text_content("#error")


@pytest.mark.parametrize(
  "origin, host, allowed",
  [
    ("http://127.0.0.1:8000", "127.0.0.1:8000", True),  # the server's own page
    ("https://carfac.example", "CARFAC.example", True),
    ("http://127.0.0.1:9000", "127.0.0.1:8000", False),  # another port is another site
    ("http://evil.example", "127.0.0.1:8000", False),
    ("http://127.0.0.1:8000", None, False),
  ],
)
def test_only_the_servers_own_page_passes_the_origin_check(origin: str, host: str | None, allowed: bool) -> None:
  headers = {"origin": origin, **({"host": host} if host else {})}
  settings = Settings(allowed_origins=["http://allowed.example"])
  if allowed:
    check_access(headers, {}, settings)
  else:
    with pytest.raises(ProtocolError, match="not allowed"):
      check_access(headers, {}, settings)
