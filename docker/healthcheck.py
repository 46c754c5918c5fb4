#!/usr/bin/env python3
"""The image's health probe: ``carfac-healthcheck [PATH]`` (default ``/healthz``).

Exits 0 when ``GET http://127.0.0.1:$CARFAC_PORT/PATH`` answers 200, else 1
with the reason on stderr. The image's HEALTHCHECK asks ``/healthz``
(liveness); compose asks ``/readyz``, so that a proxy can wait for replicas
that have compiled. The images have no curl or wget, so the standard library
does the request, bypassing any HTTP proxy configured for the container.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def main(argv: list[str]) -> int:
  path = argv[1] if len(argv) > 1 else "/healthz"
  url = f"http://127.0.0.1:{os.environ.get('CARFAC_PORT', '8000')}{path}"
  opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
  try:
    with opener.open(url, timeout=4) as response:
      return 0 if response.status == 200 else 1
  except OSError as err:  # refused, timed out, or an HTTP error status such as 503
    print(f"{url}: {err}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main(sys.argv))
