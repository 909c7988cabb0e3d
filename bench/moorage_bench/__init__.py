"""The benchmarks behind bench/run and bench/placement.

Those executables stay thin: Python puts bench/ first on sys.path (the script's own directory)
and they run the `main` of their subpackage here.
"""

from __future__ import annotations

import os

# The repository root: bench/moorage_bench/__init__.py is two directories below it.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
