"""The development and test tooling behind scripts/devstack, scripts/keystone and scripts/nova.

Those executables stay thin: each puts scripts/ first on sys.path (Python does this for the
script's own directory) and runs the `main` of its subpackage here. Stdlib only: nothing here
imports the project, so the tooling runs before Moorage is installed.
"""

from __future__ import annotations

import os

# The repository root: scripts/moorage_scripts/__init__.py is two directories below it.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


class Fail(Exception):
    """A failure to report as one line on stderr (exit 1)."""
