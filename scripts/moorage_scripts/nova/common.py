"""What every nova module shares: its settings, its error, running a command, private files."""

from __future__ import annotations

import os
import sys

from .. import (
    REPO,
    Fail,  # noqa: F401 (the nova modules take it from here)
    files,
)
from ..files import parse_exports  # noqa: F401 (the nova modules take it from here)
from ..procs import quiet_env, run  # noqa: F401 (the nova modules take it from here)

CONSTRAINTS = os.path.join(REPO, "nova-constraints.txt")
PACKAGES = ["nova", "openstack-placement", "neutron", "python-novaclient", "pymysql", "gunicorn"]
APT_PACKAGES = ["mariadb-server", "rabbitmq-server"]
# What `up` runs from them (rsync, socat, erlang... come as their dependencies): checked after
# apt, so that a half-removed package is reinstalled rather than failing later, mid-start.
APT_COMMANDS = {
    "mariadb-server": ["mariadbd", "mariadb-install-db", "mariadb"],
    "rabbitmq-server": ["/usr/lib/rabbitmq/bin/rabbitmq-server", "epmd"],
}
INSTALL_TIMEOUT = 1200
MANAGE_TIMEOUT = 300
START_TIMEOUT = 120
STOP_TIMEOUT = 15
LOCK_TIMEOUT = 1200
FLAVOR = "m1.moorage"
SERVICE_USERS = ("nova", "placement", "neutron")
MOORAGE_PROJECT = "moorage"
MOORAGE_USER = "moorage"
SERVICES = ("placement", "neutron", "nova-api", "nova-conductor", "nova-scheduler", "nova-compute")


def say(msg: str) -> None:
    print(f"nova: {msg}", file=sys.stderr, flush=True)


def tail(path: str, lines: int = 8) -> str:
    return files.tail(path, lines, window=16384, skip="Warning")


def write_private(path: str, text: str) -> bool:
    """Write a file only readable by us; True if its content changed."""
    try:
        with open(path) as fh:
            if fh.read() == text:
                return False
    except OSError:
        pass
    files.write_private(path, text)
    return True


# --- MariaDB -----------------------------------------------------------------------------------
