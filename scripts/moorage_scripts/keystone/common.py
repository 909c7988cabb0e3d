"""What every keystone module shares: its settings, its error, running a command, private files."""

from __future__ import annotations

import os
import sys

from .. import (
    REPO,
    Fail,  # noqa: F401 (the keystone modules take it from here)
    files,
)
from ..files import write_private  # noqa: F401 (the keystone modules take it from here)
from ..procs import quiet_env, run  # noqa: F401 (the keystone modules take it from here)

CONSTRAINTS = os.path.join(REPO, "keystone-constraints.txt")
PACKAGES = ["keystone", "gunicorn"]
DEFAULT_EXPIRATION = 7 * 24 * 3600
INSTALL_TIMEOUT = 900
MANAGE_TIMEOUT = 120
START_TIMEOUT = 60
STOP_TIMEOUT = 10
LOCK_TIMEOUT = 900

SHIM = """\
# written by scripts/keystone: Keystone parses sys.argv with oslo.config, which would read
# gunicorn's own command line and exit 2 in every worker; give it an empty one.
import sys

sys.argv = sys.argv[:1]
from keystone.server import wsgi as _ks_wsgi  # noqa: E402

application = _ks_wsgi.initialize_public_application()
"""


def say(msg: str) -> None:
    print(f"keystone: {msg}", file=sys.stderr, flush=True)


def tail(path: str, lines: int = 5) -> str:
    return files.tail(path, lines, window=8192)
