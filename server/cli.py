"""``carfac-server``: serve the CARFAC WebSocket service (settings: flags or CARFAC_* env).

    carfac-server --port 8000 --capacity 64
    CARFAC_TOKEN=secret carfac-server
    carfac-server --ears 1 --weights fitted.npz    # trained weights (carfac.save_weights)

Exit status 2 when ``--weights`` cannot be read or is of another design.
"""

from __future__ import annotations

import logging
import signal
import sys

import carfac
from server.engine_thread import served_weights
from server.serve import build_server
from server.settings import Settings


def _exit_cleanly(signum: int, frame) -> None:
  """SIGTERM is a requested stop: exit with status 0.

  uvicorn handles SIGTERM while it serves; when it has shut down it restores
  the previous handler and raises the signal again, which by default would
  kill the process with status 143. This handler ends it with 0 instead.
  """
  raise SystemExit(0)


# The engine thread's step gives up and re-takes the GIL several times; with
# Python's default 5 ms switch interval each re-take can wait that long behind
# the event loop (measured: a 5.8 ms step of 64 streams took 27 ms beside a
# busy Python thread, 7 ms with 1 ms).
_GIL_SWITCH_INTERVAL_S = 0.001


def main(argv: list[str] | None = None) -> int:
  settings = Settings(_cli_parse_args=sys.argv[1:] if argv is None else argv)
  try:  # a weights file of another design is refused before anything starts
    for ears in settings.ears:
      served_weights(settings, ears)
  except (carfac.WeightsFileError, OSError) as err:
    print(f"carfac-server: --weights {settings.weights}: {err}", file=sys.stderr)
    return 2
  sys.setswitchinterval(_GIL_SWITCH_INTERVAL_S)
  logging.basicConfig(format="%(levelname)s:     %(name)s: %(message)s")
  logging.getLogger("server").setLevel(settings.log_level.upper())
  signal.signal(signal.SIGTERM, _exit_cleanly)
  build_server(settings).run()
  return 0
