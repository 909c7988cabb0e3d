"""`python -m gateway.cli`: the same as the `moorage` command."""

import sys

from gateway.cli.commands import main

sys.exit(main())
