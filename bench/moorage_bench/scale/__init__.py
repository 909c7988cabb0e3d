"""bench/scale: the gateway and its store at N instances (the usage is in cli.py).

Modules, lower ones first: common (layout, targets), daemon (the in-memory Docker API), sim (the
simulated agents' process), stack (PostgreSQL, two replicas, the simulators), measure (the
phases), plot (the cost curve), cli. The client, percentiles and rows come from bench/run's
modules; the throwaway PostgreSQL from tests/pgserver.py.
"""

import sys

from .. import REPO

# The gateway this benchmark times is this checkout's, whatever is installed.
if REPO not in sys.path:
    sys.path.insert(0, REPO)
