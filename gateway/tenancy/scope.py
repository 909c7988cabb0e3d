"""What goes down: a tenant's references inside a container's create body, made the daemon's.

A create body names other objects: containers (``--link``, ``--volumes-from``,
``--network/--pid/--ipc container:X``), networks (``--network app``) and named volumes
(``-v data:/data``, ``--mount source=data``). Each is resolved within the caller's project
(another project's object is a 404, as if it did not exist) and rewritten to what the daemon
knows it by. Each also ties the new container to the instance that object lives on: Docker
semantics need them on one daemon.

dockerd reads the host settings from ``HostConfig``, or, when a body has none, from the same
fields at the top level (the pre-1.24 shape); both places are rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar, cast

from gateway import jsonbody, store
from gateway.config import Settings
from gateway.errors import DockerError
from gateway.policy import bodies
from gateway.tenancy import names, resolve

# Network modes that name no tenant object.
PLAIN_NETWORK_MODES = ("", "default", "bridge", "host", "none")
# What a container asks for when it asks for no network, or for the default bridge.
DEFAULT_BRIDGE_MODES = ("", "default", "bridge")
# The daemon's own default bridge (docker0).
DAEMON_BRIDGE = "bridge"
# What dockerd fills in the top level of NetworkSettings for the default bridge only (and
# clients read, e.g. .NetworkSettings.IPAddress): copied from the project's bridge endpoint.
_LEGACY_ENDPOINT_FIELDS = (
    "EndpointID",
    "Gateway",
    "GlobalIPv6Address",
    "GlobalIPv6PrefixLen",
    "IPAddress",
    "IPPrefixLen",
    "IPv6Gateway",
    "MacAddress",
)


# A create body's fields that are not host settings (dockerd's container.Config, and the
# networking config): a body of these alone is one without host settings.
_CONFIG_FIELDS = frozenset(
    name.lower()
    for name in (
        "Hostname",
        "Domainname",
        "User",
        "AttachStdin",
        "AttachStdout",
        "AttachStderr",
        "ExposedPorts",
        "Tty",
        "OpenStdin",
        "StdinOnce",
        "Env",
        "Cmd",
        "Healthcheck",
        "ArgsEscaped",
        "Image",
        "Volumes",
        "WorkingDir",
        "Entrypoint",
        "NetworkDisabled",
        "MacAddress",
        "OnBuild",
        "Labels",
        "StopSignal",
        "StopTimeout",
        "Shell",
        "HostConfig",
        "NetworkingConfig",
    )
)


T = TypeVar("T")


def default_bridge(project: str, settings: Settings) -> str:
    """The daemon network a project's containers join when they ask for no network, or for
    "bridge" or "default": the one place that decides it.

    With dedicated tenancy an instance is one project's from its claim until it is empty and
    wiped, so the daemon's own default bridge is the project's already: containers use it as
    dockerd would (its names, its legacy links, no embedded DNS, the fastest start). With
    shared tenancy the daemon's bridge would put every project's containers on an instance
    on one segment (able to reach each other by address), so each project has its own bridge
    network on each instance (project_bridge), made on demand
    (services/networks.py ensure_default_bridge) and shown to the tenant as "bridge"."""
    if settings.placement.tenancy != "shared":
        return DAEMON_BRIDGE
    return project_bridge(project)


def project_bridge(project: str) -> str:
    """The daemon name of the project's own bridge network: its default bridge with shared
    tenancy. With dedicated tenancy no new container joins it, but an instance claimed before
    dedicated projects used the daemon's bridge may still hold one with the project's
    containers on it: those stay there, and every view of a container or of the "bridge"
    network still shows it as the default bridge (show_default_bridge, services/networks.py),
    whichever tenancy the gateway runs with."""
    return names.to_daemon(project, "bridge")


@dataclass
class CreateScope:
    """What a rewritten create body needs from placement."""

    instance: str | None = None  # the instance the container must run on, if any
    reason: str = ""  # which reference ties it there (for errors)
    volumes: dict[str, str] = field(default_factory=dict)  # tenant name -> daemon name, to make sure of
    # The daemon network the project's containers join for the default bridge (default_bridge)
    bridge: str = DAEMON_BRIDGE
    default_bridge: bool = False  # the project's own bridge must exist on the instance
    on_default_bridge: bool = False  # the container's network is its default bridge (either kind)
    missing_links: list[str] = field(default_factory=list)  # --link targets the project lacks
    # Spanning networks the container joins (daemon name -> row): made on whichever instance
    # placement chooses (services/spans.py join_create), so they tie it to none.
    networks: dict[str, store.Network] = field(default_factory=dict)

    def need(self, instance_uuid: str, reason: str) -> None:
        if self.instance and self.instance != instance_uuid:
            raise DockerError(
                409,
                f"{reason} and {self.reason} are on different instances, and a container "
                "runs on one: create it with references that live together",
            )
        self.instance, self.reason = instance_uuid, reason


def _unknown(project: str, ref: str) -> str:
    """A reference to nothing the project has: sent down in the project's own daemon
    namespace, where it names nothing either (not another project's object, by name or ID),
    so dockerd fails it where and as it fails any missing reference (at create or at
    start), and the tenant reads its own words back in the message."""
    return names.to_daemon(project, ref.lstrip("/"))


def _mine(lookup, project: str, ref: str):
    """The project's object ``ref`` names (``lookup`` is a resolve function), or None."""
    try:
        return lookup(project, ref)
    except DockerError as exc:
        if exc.status != 404:
            raise
        return None


def container_for_daemon(project: str, ref: str, scope: CreateScope | None = None, reason: str = "") -> str:
    """How a container reference in a body goes down: the project's container by full ID, or a
    name that names nothing (_unknown); with ``scope``, the container's instance is noted."""
    found = _mine(resolve.container, project, ref)
    if found is None:
        return _unknown(project, ref)
    if scope is not None:
        scope.need(found.instance_id, f"{reason} {ref}")
    return found.id


def _container_mode(project: str, mode, scope: CreateScope, what: str):
    """``container:X`` modes (network, pid, ipc) name one of the tenant's containers."""
    if isinstance(mode, str) and mode.startswith("container:"):
        return "container:" + container_for_daemon(
            project, mode[len("container:") :], scope, f"--{what} container:"
        )
    return mode


def _network_name(project: str, ref: str, scope: CreateScope) -> str:
    if ref in ("default", "bridge"):
        if scope.bridge == DAEMON_BRIDGE:
            return ref  # the daemon's own, as the client named it (dockerd's inspect shows that)
        scope.default_bridge = True
        return scope.bridge
    if ref in PLAIN_NETWORK_MODES or ref in resolve.BUILTIN_NETWORKS:
        return ref
    found = _mine(resolve.network, project, ref)
    if found is None:
        return _unknown(project, ref)
    if found.subnet:
        scope.networks[found.daemon_name] = found
    else:  # a network of another driver, or made before networks spanned instances
        scope.need(found.instance_id, f"network {ref}")
    return found.daemon_name


def _volume_source(project: str, source: str, scope: CreateScope) -> str:
    """A named volume's daemon name; a host path (policy's business) or empty is left alone."""
    if not source or source.startswith("/") or not names.VALID_NAME.match(source):
        return source
    found = _mine(resolve.volume, project, source)
    if found is not None:
        scope.need(found.instance_id, f"volume {source}")
        return found.daemon_name
    daemon = names.to_daemon(project, source)
    scope.volumes[source] = daemon  # created on the chosen instance before the container (containers.create)
    return daemon


def _host_config(project: str, hc: dict, scope: CreateScope) -> None:
    links = hc.get("Links")
    if isinstance(links, list):
        out = []
        for link in links:
            if not isinstance(link, str):
                out.append(link)
                continue
            target, _, alias = link.partition(":")
            found = _mine(resolve.container, project, target)
            if found is None:
                scope.missing_links.append(target)
                out.append(f"{_unknown(project, target)}:{alias or target.lstrip('/')}")
                continue
            scope.need(found.instance_id, f"--link {target}")
            out.append(f"{resolve.container_daemon_name(found)}:{alias or found.name}")
        hc["Links"] = out
    volumes_from = hc.get("VolumesFrom")
    if isinstance(volumes_from, list):
        out = []
        for entry in volumes_from:
            if not isinstance(entry, str):
                out.append(entry)
                continue
            ref, sep, mode = entry.partition(":")
            out.append(container_for_daemon(project, ref, scope, "--volumes-from") + sep + mode)
        hc["VolumesFrom"] = out
    for key, what in (("PidMode", "pid"), ("IpcMode", "ipc")):
        if key in hc:
            hc[key] = _container_mode(project, hc[key], scope, what)
    mode = hc.get("NetworkMode")
    if isinstance(mode, str) and mode:
        if mode.startswith("container:"):
            hc["NetworkMode"] = _container_mode(project, mode, scope, "network")
        else:
            hc["NetworkMode"] = _network_name(project, mode, scope)
    binds = hc.get("Binds")
    if isinstance(binds, list):
        out = []
        for bind in binds:
            if isinstance(bind, str) and ":" in bind:
                source, rest = bind.split(":", 1)
                bind = _volume_source(project, source, scope) + ":" + rest
            out.append(bind)
        hc["Binds"] = out
    mounts = hc.get("Mounts")
    if isinstance(mounts, list):
        for mount in mounts:
            if (
                isinstance(mount, dict)
                and (mount.get("Type") or "volume") == "volume"
                and isinstance(mount.get("Source"), str)
            ):
                mount["Source"] = _volume_source(project, mount["Source"], scope)


_HOST_FIELDS = ("Links", "VolumesFrom", "PidMode", "IpcMode", "NetworkMode", "Binds", "Mounts")


def canonical(obj, fields, where: str = "the request body") -> None:
    """Give ``fields`` of ``obj`` their canonical spelling, in place.

    dockerd's decoder matches field names case-insensitively (``hostconfig`` is HostConfig),
    so a reference under any spelling must be seen and rewritten; two spellings of one field
    are refused (bodies.GoObject), as the gateway cannot tell which one dockerd would take."""
    if not isinstance(obj, dict):
        return
    go = bodies.GoObject(obj, where)
    for name in fields:
        key = go.key(name)
        if key is not None and key != name:
            obj[name] = obj.pop(key)


def canonical_create(body: dict) -> None:
    """A create body with every field tenancy reads or rewrites under its canonical name."""
    canonical(body, ("Labels", "HostConfig", "NetworkingConfig", "Image", *_HOST_FIELDS))
    hc = body.get("HostConfig")
    canonical(hc, _HOST_FIELDS, "HostConfig")
    for holder in (hc, body):
        if isinstance(holder, dict) and isinstance(holder.get("Mounts"), list):
            for mount in holder["Mounts"]:
                canonical(mount, ("Type", "Source"), "a mount")
    networking = body.get("NetworkingConfig")
    canonical(networking, ("EndpointsConfig",), "NetworkingConfig")
    endpoints = networking.get("EndpointsConfig") if isinstance(networking, dict) else None
    if isinstance(endpoints, dict):
        for endpoint in endpoints.values():
            canonical(endpoint, ("Aliases",), "an endpoint")


def container_create(project: str, body: dict, tenant_name: str, settings: Settings) -> CreateScope:
    """Rewrite ``body`` in place for the daemon; return what placement must honour.
    (``body`` has been through canonical_create.)"""
    scope = CreateScope(bridge=default_bridge(project, settings))
    native = scope.bridge == DAEMON_BRIDGE
    hc = body.get("HostConfig")
    if isinstance(hc, dict):
        _host_config(project, hc, scope)
    _host_config(project, body, scope)  # the top-level (pre-1.24) shape
    # dockerd reads the top-level shape only when there is no HostConfig: the mode goes where
    # it will be read. No mode at all is dockerd's "default", the default bridge: on the
    # daemon's own (native) the body goes down as the client sent it, and dockerd's inspect
    # shows the mode the client gave ("default" for none).
    holder = hc if isinstance(hc, dict) else body
    without_host_config = hc is None and all(key.lower() in _CONFIG_FIELDS for key in body)
    if not native and without_host_config:
        # No host settings at all: dockerd then applies defaults of its own that any host
        # field would change (IpcMode for old API versions, Runtime), so the project's bridge
        # goes in as the endpoint of the default mode, which dockerd connects instead.
        networking = body.get("NetworkingConfig")
        endpoints = networking.get("EndpointsConfig") if isinstance(networking, dict) else None
        if not endpoints:
            body["NetworkingConfig"] = {
                **(networking if isinstance(networking, dict) else {}),
                "EndpointsConfig": {"default": {}},
            }
    elif not native and holder.get("NetworkMode") in (None, ""):
        holder["NetworkMode"] = _network_name(project, "default", scope)
    network_mode = holder.get("NetworkMode") or ""
    bridge = scope.bridge
    on_default = network_mode == bridge or (native and network_mode in DEFAULT_BRIDGE_MODES)
    scope.on_default_bridge = on_default
    if on_default and scope.missing_links:
        # dockerd checks links at create only on its own default bridge (on any other network
        # a link to nothing is accepted and resolves nothing): as on that bridge, refused, in
        # the tenant's words (the daemon's would name the target with the project's suffix).
        target = scope.missing_links[0]
        raise DockerError(400, f"could not get container for {target}: No such container: {target}")
    links = holder.get("Links")
    networking = body.get("NetworkingConfig")
    endpoints = networking.get("EndpointsConfig") if isinstance(networking, dict) else None
    if isinstance(endpoints, dict):
        networking["EndpointsConfig"] = {
            _network_name(project, ref, scope): endpoint for ref, endpoint in endpoints.items()
        }
    if not native and network_mode == bridge and isinstance(links, list) and links:
        # On any network but its own default bridge dockerd reads links from the endpoint
        # (as the docker CLI sends them for user-defined networks), not from HostConfig;
        # on the daemon's own bridge it reads HostConfig.Links, as they are.
        _add_to_endpoint(body, network_mode, "Links", links)
    # On a user-defined network dockerd makes a container's name resolvable, but that is the
    # daemon's name: the tenant's name is added as an alias, so its containers find each
    # other as they named them.
    # So on every user-defined network the container joins (API 1.44 creates on several).
    renamed = (
        (body.get("NetworkingConfig") or {}).get("EndpointsConfig") if isinstance(endpoints, dict) else None
    )
    joined = [network_mode, *(renamed if isinstance(renamed, dict) else ())]
    for network in dict.fromkeys(n for n in joined if isinstance(n, str)):
        if (
            tenant_name
            and network not in PLAIN_NETWORK_MODES
            and network != bridge
            and not network.startswith("container:")
        ):
            _add_to_endpoint(body, network, "Aliases", [tenant_name])
    return scope


def _add_to_endpoint(body: dict, network: str, key: str, items: list) -> None:
    """Append ``items`` not already there to the list ``key`` of the body's endpoint settings
    for ``network``, making the networking config, endpoint or list it lacks."""
    networking = body.get("NetworkingConfig")
    if not isinstance(networking, dict):
        networking = body["NetworkingConfig"] = {}
    endpoints = networking.get("EndpointsConfig")
    if not isinstance(endpoints, dict):
        endpoints = networking["EndpointsConfig"] = {}
    endpoint = endpoints.get(network)
    if not isinstance(endpoint, dict):
        endpoint = endpoints[network] = {}
    known = endpoint.get(key) if isinstance(endpoint.get(key), list) else []
    endpoint[key] = [*known, *(item for item in items if item not in known)]


def hide_added_aliases(container: dict) -> None:
    """Answers show a network's aliases as dockerd would have them without the one Moorage
    added (the container's own name, last of the requested ones, just before the short ID
    dockerd appends)."""
    name = str(container.get("Name", "")).lstrip("/")
    short_id = str(container.get("Id", ""))[:12]
    networks = (container.get("NetworkSettings") or {}).get("Networks")
    if not name or not isinstance(networks, dict):
        return
    for endpoint in networks.values():
        aliases = endpoint.get("Aliases") if isinstance(endpoint, dict) else None
        if (
            isinstance(aliases, list)
            and len(aliases) >= 2
            and aliases[-1] == short_id
            and aliases[-2] == name
        ):
            del aliases[-2]


def show_default_bridge(project: str, container: dict) -> None:
    """A container on its project's own bridge (project_bridge), as dockerd shows one on its
    default bridge: mode "default", no aliases, and the endpoint's addresses at the top of
    NetworkSettings. (Before strip_names, which then names the network "bridge".) A container
    on the daemon's own bridge is left as dockerd shows it. Keyed on the project's bridge in
    either tenancy: with dedicated tenancy that is a container created before its project's
    containers used the daemon's bridge, still on the bridge it was created on."""
    bridge = project_bridge(project)
    hc = container.get("HostConfig")
    if isinstance(hc, dict) and hc.get("NetworkMode") == bridge:
        hc["NetworkMode"] = "default"
    settings = container.get("NetworkSettings")
    networks = settings.get("Networks") if isinstance(settings, dict) else None
    endpoint = networks.get(bridge) if isinstance(networks, dict) else None
    if not isinstance(endpoint, dict):
        return
    if "Aliases" in endpoint:
        endpoint["Aliases"] = None
    links = endpoint.get("Links")
    if isinstance(links, list) and links and isinstance(hc, dict) and not hc.get("Links"):
        # Where dockerd shows links of its default bridge (containers.create moved them).
        me = str(container.get("Name", ""))
        hc["Links"] = [
            f"/{target}:{me}/{alias or target}"
            for target, _, alias in (str(link).partition(":") for link in links)
        ]
        endpoint["Links"] = None
    if "IPAddress" in settings and not settings.get("IPAddress"):  # inspect's shape, not ps's
        for key in _LEGACY_ENDPOINT_FIELDS:
            if key in endpoint:
                settings[key] = endpoint[key]


def network_alias(endpoint_config, tenant_name: str) -> dict:
    """``docker network connect``: the container's own name as an alias on the network."""
    config = endpoint_config if isinstance(endpoint_config, dict) else {}
    aliases = config.get("Aliases") if isinstance(config.get("Aliases"), list) else []
    if tenant_name and tenant_name not in aliases:
        config["Aliases"] = [*aliases, tenant_name]
    return config


def strip_names(project: str, value: T) -> T:
    """An answer for the tenant: every daemon name of its project turned back into its own
    (container names and links, network and volume names, binds, modes, aliases)."""
    end = names.suffix(project)
    if isinstance(value, dict | list):
        # The whole answer as one text, the suffix removed from it once: 3x cheaper than the
        # walk below (an inspect: 13 us, not 39), exact as jsonbody.replaced says (a suffix is
        # "." and letters and digits).
        stripped = jsonbody.replaced(value, end)
        if stripped is not None:
            return cast(T, stripped)

    # One suffix for the whole answer (a list of 2,000 containers holds some 100,000 values).
    def strip(value):
        if isinstance(value, str):
            return value.replace(end, "") if end in value else value
        if isinstance(value, dict):
            return {
                (k.replace(end, "") if isinstance(k, str) and end in k else k): strip(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [strip(item) for item in value]
        return value

    return cast(T, strip(value))
