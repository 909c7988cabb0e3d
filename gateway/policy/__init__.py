"""Policy: what a request may ask of the instance, per project, and the limits it is held to.

Every setting that lets a container reach past itself into the instance is refused, 403 in
Docker's error shape, unless the operator's policy file allows its rule for the asking project
or role (gateway.policy.rules); resource limits get the project's defaults and are held to its
maxima, and what a request carries is bounded (gateway.policy.limits). Checks run before
anything is forwarded: a refused request creates nothing.

Bodies are read as dockerd's Go decoder reads them (gateway.policy.bodies): field names
case-insensitively. The checks are pure: they read the request, the settings and what the
caller passes in (the registered agents' ports), never the store.

The handlers call one function each (``policy.container_create(ctx, body, agent_ports=...)``);
:class:`Checker` is the same checks for one identity without a request context.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.config import LimitsSettings, PolicySettings, Settings
from gateway.policy import containers, images, networks, volumes
from gateway.policy.limits import Limits
from gateway.policy.ports import AGENT_PORT, reserved_ports
from gateway.policy.rules import RULES, Asker, PolicyFile, Request

__all__ = [
    "AGENT_PORT",
    "RULES",
    "Checker",
    "build",
    "checker",
    "container_create",
    "container_rename",
    "container_update",
    "exec_create",
    "image_import",
    "network_create",
    "reserved_ports",
    "volume_create",
]


class Checker:
    """The policy file and limits of one settings, checking one identity's requests."""

    def __init__(self, policy: PolicySettings, limits: LimitsSettings, dedicated: bool = False):
        self.policy = PolicyFile(policy.file or None)
        self.limits = Limits(limits)
        self.dedicated = dedicated
        self.tenant_socket = policy.tenant_socket

    def _req(self, identity: Asker | None, reserved: frozenset[int] | None = None) -> Request:
        return Request(
            self.policy,
            self.limits,
            identity,
            reserved or frozenset({AGENT_PORT}),
            self.dedicated,
            self.tenant_socket,
        )

    def container_create(
        self,
        identity: Asker | None,
        body,
        *,
        name: str | None = None,
        version: str = "1.41",
        reserved_ports: frozenset[int] | None = None,
    ) -> None:
        """``reserved_ports``: host ports never published (the agents', the operator's)."""
        containers.container_create(self._req(identity, reserved_ports), body, name=name, version=version)

    def container_start(self, identity: Asker | None, body) -> None:
        containers.container_start(self._req(identity), body)

    def container_update(self, identity: Asker | None, body) -> None:
        containers.container_update(self._req(identity), body)

    def exec_create(self, identity: Asker | None, body) -> None:
        containers.exec_create(self._req(identity), body)

    def build(
        self, identity: Asker | None, query_string: str, content_type: str | None
    ) -> list[tuple[str, str]]:
        return images.build(self._req(identity), query_string, content_type)

    def image_import(self, identity: Asker | None, from_src: str) -> None:
        images.image_import(self._req(identity), from_src)

    def network_create(self, identity: Asker | None, body) -> None:
        networks.network_create(self._req(identity), body)

    def volume_create(self, identity: Asker | None, body) -> None:
        volumes.volume_create(self._req(identity), body)


# -- per process, per settings --------------------------------------------------------------------
_checkers: dict[int, tuple[object, Checker]] = {}


def checker(settings: Settings) -> Checker:
    """The one Checker for these settings (a process usually has one)."""
    entry = _checkers.get(id(settings))
    if entry is None or entry[0] is not settings:
        dedicated = settings.placement.tenancy != "shared"
        entry = (settings, Checker(settings.policy, settings.limits, dedicated))
        _checkers[id(settings)] = entry
    return entry[1]


# -- what the handlers call (one line each) -------------------------------------------------------
def container_create(ctx, body, *, agent_ports: Iterable[int]) -> None:
    """``agent_ports``: the ports the registered agents listen on (gateway.instances.agent_ports);
    no container publishes one, nor the default agent port, nor one of [policy] reserved_ports."""
    checker(ctx.settings).container_create(
        ctx.identity,
        body,
        name=ctx.query("name"),
        version=ctx.version,
        reserved_ports=reserved_ports(ctx.settings.policy.reserved_ports, agent_ports),
    )


def container_update(ctx, body) -> None:
    checker(ctx.settings).container_update(ctx.identity, body)


def container_rename(ctx) -> None:
    checker(ctx.settings).limits.check_name(ctx.query("name"))


def exec_create(ctx, body) -> None:
    checker(ctx.settings).exec_create(ctx.identity, body)


def build(ctx) -> list[tuple[str, str]]:
    """Refuse (403/400), or return the build's query pairs to send on (resource defaults in)."""
    return checker(ctx.settings).build(ctx.identity, ctx.req.query_string, ctx.req.content_type)


def image_import(ctx, from_src: str) -> None:
    checker(ctx.settings).image_import(ctx.identity, from_src)


def network_create(ctx, body) -> None:
    checker(ctx.settings).network_create(ctx.identity, body)


def volume_create(ctx, body) -> None:
    checker(ctx.settings).volume_create(ctx.identity, body)
