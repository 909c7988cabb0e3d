"""Where instances come from: the Provider interface and the providers that never grow.

The pool's logic (gateway/placement/pool.py, reaper.py) is the same for every provider; a
provider only talks to its cloud. ``nova`` (gateway/placement/nova.py) and ``local`` with boot commands
(gateway/placement/local.py) grow.
"""

from __future__ import annotations


class Provider:
    """Where instances come from. The pool logic is here; a provider only talks to its cloud."""

    name = "static"
    can_grow = False
    boot_timeout = 300.0
    empty_grace = 600.0
    capacity = 0
    max_instances = 0

    def authorize(self, project: str | None, delegation=None) -> None:
        """Before a boot for ``project``: make sure the provider may act there, using
        ``delegation`` (the caller's credentials, gateway/tenancy/trusts.py Delegation, or None)
        if it must. Providers that boot in their own space have nothing to do; nova makes or
        checks the project's Keystone trust (dedicated tenancy)."""

    def boot(self, member_id: str, secret: str, project: str | None = None) -> str:
        """Start an instance whose agent registers with ``secret``; returns its server UUID.
        ``project``: the project it is for (dedicated tenancy), None for any (shared)."""
        raise NotImplementedError

    def delete(self, server_id: str) -> bool:
        """Delete a server this pool created (False: refused, it is not ours; gone is True)."""
        raise NotImplementedError

    def owned_servers(self) -> list[dict]:
        """The servers carrying this pool's mark: [{"id", "member", "created"}]."""
        return []


class StaticProvider(Provider):
    """Instances the operator runs, each with an agent that registers."""

    name = "static"
