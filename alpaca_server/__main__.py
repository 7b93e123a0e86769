"""``python -m alpaca_server``: the same as the ``zwo-alpaca`` command (kept for scripts that use it).

The command-line programs belong to the composition root, `zwo_runtime`, which a front end must not
import; so this hands the process over to ``python -m zwo_runtime`` with the same arguments (same
PID, so service managers see no difference) instead of importing it.
"""

import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "zwo_runtime", *sys.argv[1:]])
