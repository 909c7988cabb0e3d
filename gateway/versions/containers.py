"""The table's transforms for containers: create, inspect, list, update, stop, exec."""

from __future__ import annotations

from gateway.versions.rows import Call, Followup, Reply, items, obj, pop_empty, pop_keys, refuse

# -- create: networking ------------------------------------------------------------------------


def _endpoints(body) -> dict | None:
    endpoints = (obj(body, "NetworkingConfig") or {}).get("EndpointsConfig")
    return endpoints if isinstance(endpoints, dict) else None


def _primary(body, endpoints: dict) -> str:
    """The endpoint a one-network daemon creates the container on: the network mode's, as the
    docker CLI sends it, else the first listed."""
    mode = (obj(body, "HostConfig") or {}).get("NetworkMode")
    return mode if isinstance(mode, str) and mode in endpoints else next(iter(endpoints))


def several_endpoints(call: Call) -> None:
    """1.44: create with several networks → create on one, then connect the others, as
    `docker run --network a --network b` did before (create, connect, start)."""
    endpoints = _endpoints(call.body)
    if not endpoints or len(endpoints) < 2:
        return
    primary = _primary(call.body, endpoints)
    for network, settings in list(endpoints.items()):
        if network == primary:
            continue
        del endpoints[network]
        call.followups.append(
            Followup(
                "POST",
                f"/networks/{network}/connect",
                {"Container": "{id}", "EndpointConfig": settings if isinstance(settings, dict) else {}},
                f"connecting the container to network {network}",
            )
        )
    if call.followups:
        call.undo = Followup("DELETE", "/containers/{id}", None, "removing the half-made container")


def endpoint_mac_address(call: Call) -> None:
    """1.44: MacAddress per endpoint → the container-wide MacAddress, which a one-network daemon
    gives the container's endpoint on its network mode's network."""
    endpoints = _endpoints(call.body)
    if not endpoints:
        return
    primary = _primary(call.body, endpoints)
    for network, settings in endpoints.items():
        mac = settings.pop("MacAddress", None) if isinstance(settings, dict) else None
        if not mac:
            continue
        if network != primary:
            raise refuse(
                f"NetworkingConfig.EndpointsConfig[{network}].MacAddress",
                "1.44",
                "set a MAC address only on the container's first network (--network), or none",
            )
        current = call.body.get("MacAddress")
        if current and current != mac:
            raise refuse(
                "MacAddress (both container-wide and per endpoint)",
                "1.44",
                "set one MAC address, per endpoint",
            )
        call.body["MacAddress"] = mac


def config_mac_address_older(call: Call) -> None:
    """An older client's container-wide MacAddress, for a daemon that reads it per endpoint."""
    mac = call.body.pop("MacAddress", None) if isinstance(call.body, dict) else None
    if not mac:
        return
    networking = call.body.setdefault("NetworkingConfig", {})
    if not isinstance(networking, dict):
        return
    endpoints = networking.get("EndpointsConfig")
    if not isinstance(endpoints, dict) or not endpoints:
        mode = (obj(call.body, "HostConfig") or {}).get("NetworkMode") or "default"
        endpoints = networking["EndpointsConfig"] = {mode: {}}
    settings = endpoints[_primary(call.body, endpoints)]
    if isinstance(settings, dict):
        settings.setdefault("MacAddress", mac)


def gw_priority(call: Call) -> None:
    """1.48: GwPriority per endpoint. One network: nothing to choose, dropped. Several: the
    daemon gives the gateway to the network the container was created on (the network mode's),
    so only priorities that pick that one can be honoured."""
    body = call.body if isinstance(call.body, dict) else {}
    endpoints = _endpoints(body) or {}
    settings = [s for s in endpoints.values() if isinstance(s, dict)]
    if isinstance(body.get("EndpointConfig"), dict):  # network connect
        settings.append(body["EndpointConfig"])
    priorities = {id(s): s.pop("GwPriority", 0) or 0 for s in settings}
    if len(endpoints) > 1 and any(priorities.values()):
        primary = endpoints[_primary(body, endpoints)]
        top = priorities.get(id(primary), 0)
        if any(p >= top for key, p in priorities.items() if key != id(primary)):
            raise refuse(
                "EndpointsConfig.GwPriority",
                "1.48",
                "give the highest GwPriority to the first network (--network), or drop gw-priority",
            )
    if "EndpointConfig" in body and priorities.get(id(body.get("EndpointConfig")), 0):
        raise refuse(
            "EndpointConfig.GwPriority",
            "1.48",
            "connect without gw-priority; the first network keeps the gateway",
        )


# -- create: host config and mounts ----------------------------------------------------------------


def _mounts(call: Call) -> list:
    return [m for m in items((obj(call.body, "HostConfig") or {}).get("Mounts")) if isinstance(m, dict)]


def console_size(call: Call) -> None:
    """1.42: ConsoleSize at create (and exec create); the client sets the size by resize once the
    container starts, as it did before."""
    pop_keys(obj(call.body, "HostConfig"), ("ConsoleSize",))
    if isinstance(call.body, dict) and "HostConfig" not in call.body:
        pop_keys(call.body, ("ConsoleSize",))  # exec create


def create_mountpoint(call: Call) -> None:
    for mount in _mounts(call):
        options = mount.get("BindOptions")
        if isinstance(options, dict) and options.get("CreateMountpoint"):
            raise refuse("Mounts[].BindOptions.CreateMountpoint", "1.42", "create the source directory first")


def kernel_memory(call: Call) -> None:
    """1.42: KernelMemory is ignored from 1.42 on: so it is for this daemon."""
    pop_keys(obj(call.body, "HostConfig"), ("KernelMemory",))
    pop_keys(call.body, ("KernelMemory",))  # update's body is the resources themselves


def kernel_memory_tcp(call: Call) -> None:
    pop_keys(obj(call.body, "HostConfig"), ("KernelMemoryTCP",))
    pop_keys(call.body, ("KernelMemoryTCP",))


def annotations(call: Call) -> None:
    if (obj(call.body, "HostConfig") or {}).get("Annotations"):
        raise refuse("HostConfig.Annotations", "1.43", "drop the annotations (--annotation)")
    pop_keys(obj(call.body, "HostConfig"), ("Annotations",))


def start_interval(call: Call) -> None:
    """1.44: Healthcheck.StartInterval takes effect only during StartPeriod; without one it
    changes nothing and is dropped."""
    check = obj(call.body, "Healthcheck")
    if not check or not check.get("StartInterval"):
        pop_keys(check, ("StartInterval",))
        return
    if check.get("StartPeriod") and check["StartInterval"] != check.get("Interval"):
        raise refuse(
            "Healthcheck.StartInterval",
            "1.44",
            "drop start_interval (--health-start-interval); checks then run every Interval "
            "during the start period",
        )
    del check["StartInterval"]


def bind_recursive(call: Call) -> None:
    """1.44: a daemon before 1.44 makes read-only binds read-only non-recursively: asking for
    exactly that is fine, forcing recursion is not."""
    for mount in _mounts(call):
        options = mount.get("BindOptions")
        if not isinstance(options, dict):
            continue
        if options.get("ReadOnlyForceRecursive"):
            raise refuse(
                "Mounts[].BindOptions.ReadOnlyForceRecursive",
                "1.44",
                "use a read-only bind without forcing recursion",
            )
        pop_keys(options, ("ReadOnlyNonRecursive", "ReadOnlyForceRecursive"))


def volume_subpath(call: Call) -> None:
    for mount in _mounts(call):
        if (obj(mount, "VolumeOptions") or {}).get("Subpath"):
            raise refuse(
                "Mounts[].VolumeOptions.Subpath", "1.45", "mount the whole volume (drop volume-subpath)"
            )


def tmpfs_options(call: Call) -> None:
    for mount in _mounts(call):
        if (obj(mount, "TmpfsOptions") or {}).get("Options"):
            raise refuse(
                "Mounts[].TmpfsOptions.Options",
                "1.46",
                "use tmpfs-size and tmpfs-mode only, or --tmpfs with options",
            )


def image_mounts(call: Call) -> None:
    for mount in _mounts(call):
        if str(mount.get("Type", "")).lower() == "image":
            raise refuse('Mounts[].Type "image"', "1.48", "copy what you need from the image into a volume")


# -- stop, restart, update, network connect -----------------------------------------------------------


def stop_signal(call: Call) -> None:
    if any(call.param("signal")):
        raise refuse(
            "the signal parameter",
            "1.42",
            "set the container's stop signal at create (--stop-signal), or use docker kill",
        )
    call.drop_param("signal")


def blkio_devices(call: Call) -> None:
    """1.55: update applies the per-device blkio settings, which earlier daemons ignored."""
    body = call.body if isinstance(call.body, dict) else {}
    for key in (
        "BlkioWeightDevice",
        "BlkioDeviceReadBps",
        "BlkioDeviceWriteBps",
        "BlkioDeviceReadIOps",
        "BlkioDeviceWriteIOps",
    ):
        if body.get(key) is not None:
            raise refuse(key, "1.55", "set per-device blkio limits at create")


def blkio_devices_ignored(call: Call) -> None:
    """Below 1.55 the daemon ignored them: so does a newer daemon for an older client."""
    pop_keys(
        call.body,
        (
            "BlkioWeightDevice",
            "BlkioDeviceReadBps",
            "BlkioDeviceWriteBps",
            "BlkioDeviceReadIOps",
            "BlkioDeviceWriteIOps",
        ),
    )


def connect_mac_address(call: Call) -> None:
    """Between 1.44 and 1.53 dockerd ignored MacAddress on connect (1.54 applies it): so does
    this daemon for those versions, and refuses it for 1.54 and later."""
    pop_keys(obj(call.body, "EndpointConfig"), ("MacAddress",))


def connect_mac_address_applied(call: Call) -> None:
    if (obj(call.body, "EndpointConfig") or {}).get("MacAddress"):
        raise refuse(
            "EndpointConfig.MacAddress", "1.54", "connect without a MAC address (drop --mac-address)"
        )


# -- inspect and list answers ---------------------------------------------------------------------


def _networks(container) -> dict:
    networks = (obj(container, "NetworkSettings") or {}).get("Networks")
    return networks if isinstance(networks, dict) else {}


_PLAIN = ("bridge", "host", "none")


def dns_names(reply: Reply) -> None:
    """1.44: DNSNames per endpoint: the names the container answers to on a network with
    service discovery (every one but the predefined ones), as dockerd lists them."""
    container = reply.payload
    if not isinstance(container, dict):
        return
    name = str(container.get("Name", "")).lstrip("/")
    short_id = str(container.get("Id", ""))[:12]
    hostname = (obj(container, "Config") or {}).get("Hostname") or ""
    for network, endpoint in _networks(container).items():
        if not isinstance(endpoint, dict) or "DNSNames" in endpoint:
            continue
        if network in _PLAIN or network.startswith("container:"):
            endpoint["DNSNames"] = None
            continue
        found = [name, *items(endpoint.get("Aliases")), short_id, hostname]
        endpoint["DNSNames"] = list(dict.fromkeys(n for n in found if n))


def dns_names_older(reply: Reply) -> None:
    for endpoint in _networks(reply.payload).values():
        pop_keys(endpoint, ("DNSNames",))


def aliases_as_given(reply: Reply) -> None:
    """1.45: Aliases are exactly those asked for; earlier daemons append the short ID."""
    container = reply.payload
    short_id = str(container.get("Id", ""))[:12] if isinstance(container, dict) else ""
    for endpoint in _networks(container).values():
        aliases = endpoint.get("Aliases") if isinstance(endpoint, dict) else None
        if isinstance(aliases, list) and short_id and short_id in aliases:
            aliases.remove(short_id)
            if not aliases:  # none were given: Go's nil slice
                endpoint["Aliases"] = None


def aliases_with_short_id(reply: Reply) -> None:
    container = reply.payload
    short_id = str(container.get("Id", ""))[:12] if isinstance(container, dict) else ""
    for network, endpoint in _networks(container).items():
        if network in _PLAIN or not isinstance(endpoint, dict) or not short_id:
            continue
        aliases = endpoint.get("Aliases") if isinstance(endpoint.get("Aliases"), list) else []
        if short_id not in aliases:
            endpoint["Aliases"] = [*aliases, short_id]


def _each(reply: Reply) -> list:
    """The containers of an answer: inspect's one, or the list's."""
    payload = reply.payload
    return [c for c in payload if isinstance(c, dict)] if isinstance(payload, list) else [payload]


def gw_priority_answer(reply: Reply) -> None:
    """1.48: GwPriority per endpoint; a daemon before it has no priorities, all are 0."""
    for container in _each(reply):
        for endpoint in _networks(container).values():
            if isinstance(endpoint, dict):
                endpoint.setdefault("GwPriority", 0)


def gw_priority_older(reply: Reply) -> None:
    for container in _each(reply):
        for endpoint in _networks(container).values():
            pop_keys(endpoint, ("GwPriority",))


def kernel_memory_omitted(reply: Reply) -> None:
    """1.42: KernelMemory and KernelMemoryTCP omitted when not set."""
    pop_empty(obj(reply.payload, "HostConfig"), ("KernelMemory", "KernelMemoryTCP"))


def kernel_memory_older(reply: Reply) -> None:
    host = obj(reply.payload, "HostConfig")
    if host is not None:
        host.setdefault("KernelMemory", 0)
        host.setdefault("KernelMemoryTCP", 0)


LEGACY_NETWORK_SETTINGS = (
    "Bridge",
    "HairpinMode",
    "LinkLocalIPv6Address",
    "LinkLocalIPv6PrefixLen",
    "SecondaryIPAddresses",
    "SecondaryIPv6Addresses",
    "EndpointID",
    "Gateway",
    "GlobalIPv6Address",
    "GlobalIPv6PrefixLen",
    "IPAddress",
    "IPPrefixLen",
    "IPv6Gateway",
    "MacAddress",
)
_FROM_ENDPOINT = (
    "EndpointID",
    "Gateway",
    "GlobalIPv6Address",
    "GlobalIPv6PrefixLen",
    "IPAddress",
    "IPPrefixLen",
    "IPv6Gateway",
    "MacAddress",
)


def legacy_network_settings(reply: Reply) -> None:
    """1.52: the top-level copies of the default network's endpoint are gone."""
    pop_keys(obj(reply.payload, "NetworkSettings"), LEGACY_NETWORK_SETTINGS)
    pop_keys(obj(reply.payload, "HostConfig"), ("KernelMemoryTCP",))
    pop_empty(obj(reply.payload, "Config"), ("OnBuild",))


def legacy_network_settings_older(reply: Reply) -> None:
    """For older clients: the copies again, from the default bridge's endpoint they mirrored."""
    settings = obj(reply.payload, "NetworkSettings")
    if settings is None:
        return
    endpoint = obj(settings, "Networks", "bridge") or {}
    for key in _FROM_ENDPOINT:
        settings.setdefault(key, endpoint.get(key, 0 if key.endswith("PrefixLen") else ""))
    for key, empty in (
        ("Bridge", ""),
        ("HairpinMode", False),
        ("LinkLocalIPv6Address", ""),
        ("LinkLocalIPv6PrefixLen", 0),
        ("SecondaryIPAddresses", None),
        ("SecondaryIPv6Addresses", None),
    ):
        settings.setdefault(key, empty)


def start_interval_older(call: Call) -> None:
    pop_keys(obj(call.body, "Healthcheck"), ("StartInterval",))
