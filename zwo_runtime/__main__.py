"""``python -m zwo_runtime``: the same as the ``zwo-alpaca`` command."""

import sys

from .cli import main

sys.exit(main())
