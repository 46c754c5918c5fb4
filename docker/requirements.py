"""The image's requirements, read from pyproject.toml, one per line.

The runtime dependencies with the ``server`` extra; with ``--build`` also the
build backend (the image builds the project from source). Used both by
scripts/build_image.sh, which makes them into wheels on the host, and by
docker/Dockerfile, which installs them, so the two cannot disagree.

    python3 docker/requirements.py [--build] [PYPROJECT]
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path


def requirements(pyproject: dict, build: bool) -> list[str]:
  """The runtime requirements of ``pyproject`` (parsed), and its build requirements if ``build``."""
  project = pyproject["project"]
  runtime = [*project["dependencies"], *project["optional-dependencies"]["server"]]
  return [*pyproject["build-system"]["requires"], *runtime] if build else runtime


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description="Prints the container image's requirements from pyproject.toml.")
  parser.add_argument("pyproject", nargs="?", type=Path, default=Path("pyproject.toml"))
  parser.add_argument("--build", action="store_true", help="also the build backend's requirements")
  args = parser.parse_args(argv)
  print("\n".join(requirements(tomllib.loads(args.pyproject.read_text()), args.build)))


if __name__ == "__main__":
  main()
