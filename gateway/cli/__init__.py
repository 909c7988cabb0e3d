"""`moorage`: the operator's and the user's command line (serve, agent, relay, instances, quota,
images, db, login). The login client lives beside the commands: it is a client of the gateway,
not part of it."""

from gateway.cli.commands import main

__all__ = ["main"]
