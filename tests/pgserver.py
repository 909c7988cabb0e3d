"""A throwaway PostgreSQL for tests and the placement bench: the helper devstack's --postgres
cluster also uses (scripts/moorage_scripts/postgres.py), re-exported under the name tests import.

Tests that need it skip, saying why, only when the server binaries are absent
(scripts/install-deps installs them).
"""

from __future__ import annotations

import os
import sys

# scripts/ holds the dev tooling's package; it is not installed, so it is put on the path here.
_SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")
if _SCRIPTS not in sys.path:
    sys.path.insert(0, _SCRIPTS)

from moorage_scripts.postgres import ThrowawayPostgres, server_bin  # noqa: E402

__all__ = ["ThrowawayPostgres", "server_bin"]
