"""The development and test tooling behind scripts/devstack, scripts/keystone and scripts/nova.

Those executables stay thin: each puts scripts/ first on sys.path (Python does this for the
script's own directory) and runs the `main` of its subpackage here. Stdlib only: nothing here
imports the project, so the tooling runs before Moorage is installed.
"""

from __future__ import annotations

import os
import sys

# The repository root: scripts/moorage_scripts/__init__.py is two directories below it.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


class Fail(Exception):
    """A failure to report as one line on stderr (exit 1)."""


def dispatch(prog: str, args, usage: type[Exception] | None = None) -> int:
    """Run a parsed command (`args.func`) as the CLIs do: a failure is one line on stderr, PROG:
    first, and its exit code (2 for `usage`, 1 for Fail and OSError, 130 for ^C)."""
    try:
        return args.func(args)
    except Exception as exc:
        if usage is not None and isinstance(exc, usage):
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, (Fail, OSError)):
            print(f"{prog}: {exc}", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
