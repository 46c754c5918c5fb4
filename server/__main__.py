"""``python -m server``: the same as ``carfac-server``."""

import sys

from server.cli import main

sys.exit(main())
