"""bench/placement: placement over many instances (the usage is in cli.py).

Modules, lower ones first: common, data (the population), databases, the sections decide and ps,
then cli. The clients, percentiles and the stack's env file come from bench/run's modules.
"""

import sys

from .. import REPO

# The gateway this benchmark times is this checkout's, whatever is installed.
sys.path.insert(0, REPO)
