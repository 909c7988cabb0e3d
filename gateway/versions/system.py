"""The table's transforms for /info, /system/df, networks and volume prune."""

from __future__ import annotations

import json

from gateway.versions.images import no_virtual_size, virtual_size_older
from gateway.versions.rows import Call, Reply, items, obj, pop_empty, pop_keys, refuse

# -- /info ------------------------------------------------------------------------------------


def info_kernel_memory(reply: Reply) -> None:
    """1.42: KernelMemory and KernelMemoryTCP omitted where the host does not support them."""
    pop_empty(reply.payload, ("KernelMemory", "KernelMemoryTCP"))


def info_kernel_memory_older(reply: Reply) -> None:
    if isinstance(reply.payload, dict):
        reply.payload.setdefault("KernelMemory", False)
        reply.payload.setdefault("KernelMemoryTCP", False)


def info_cdi(reply: Reply) -> None:
    """1.44: CDISpecDirs. A daemon before 1.44 has no CDI: no directories."""
    if isinstance(reply.payload, dict):
        reply.payload.setdefault("CDISpecDirs", [])


def info_cdi_older(reply: Reply) -> None:
    pop_keys(reply.payload, ("CDISpecDirs",))


def info_expected_commits(reply: Reply) -> None:
    """1.49: no `Expected` commits, no non-distributable registry settings."""
    for key in ("ContainerdCommit", "RuncCommit", "InitCommit"):
        pop_keys(obj(reply.payload, key), ("Expected",))
    pop_keys(
        obj(reply.payload, "RegistryConfig"),
        ("AllowNondistributableArtifactsCIDRs", "AllowNondistributableArtifactsHostnames"),
    )


def info_bridge_nf(reply: Reply) -> None:
    """1.50: BridgeNfIptables and BridgeNfIp6tables omitted."""
    pop_keys(reply.payload, ("BridgeNfIptables", "BridgeNfIp6tables"))


def info_bridge_nf_older(reply: Reply) -> None:
    if isinstance(reply.payload, dict):
        reply.payload.setdefault("BridgeNfIptables", False)
        reply.payload.setdefault("BridgeNfIp6tables", False)


def info_kernel_memory_tcp(reply: Reply) -> None:
    """1.52: KernelMemoryTCP removed."""
    pop_keys(reply.payload, ("KernelMemoryTCP",))


# -- /system/df --------------------------------------------------------------------------------

_KINDS = {"container": "Containers", "image": "Images", "volume": "Volumes", "build-cache": "BuildCache"}


def _types(reply: Reply) -> set[str]:
    """The kinds `type` asks for (all when none)."""
    asked = {t for t in reply.query.get("type", []) if t}
    return asked or set(_KINDS)


def df_types(reply: Reply) -> None:
    """1.42: `type` selects the kinds computed (the others are null); BuilderSize is gone."""
    payload = reply.payload
    if not isinstance(payload, dict):
        return
    payload.pop("BuilderSize", None)
    wanted = _types(reply)
    for kind, key in _KINDS.items():
        if kind not in wanted and key in payload:
            payload[key] = None
    if "image" not in wanted and "LayersSize" in payload:
        payload["LayersSize"] = 0


def df_types_older(reply: Reply) -> None:
    if isinstance(reply.payload, dict):
        reply.payload.setdefault("BuilderSize", 0)


def df_virtual_size(reply: Reply) -> None:
    """1.44: no VirtualSize in df's images either."""
    no_virtual_size(Reply(items((reply.payload or {}).get("Images")), reply.query))


def df_virtual_size_older(reply: Reply) -> None:
    virtual_size_older(Reply(items((reply.payload or {}).get("Images")), reply.query))


def _usage(things: list, active, size, reclaimable_size) -> dict:
    return {
        "ActiveCount": sum(1 for t in things if active(t)),
        "TotalCount": len(things),
        "Reclaimable": sum(reclaimable_size(t) for t in things),
        "TotalSize": sum(size(t) for t in things),
    }


def _positive(value) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def df_usage(reply: Reply) -> None:
    """1.52: per-kind usage summaries (ImageUsage, ContainerUsage, VolumeUsage,
    BuildCacheUsage), computed from the lists as the docker CLI computed them; `verbose` puts
    the lists in them, and leaves the legacy fields out."""
    payload = reply.payload
    if not isinstance(payload, dict) or "ImageUsage" in payload:
        return
    wanted, verbose = _types(reply), reply.flag("verbose")
    images = [i for i in items(payload.get("Images")) if isinstance(i, dict)]
    containers = [c for c in items(payload.get("Containers")) if isinstance(c, dict)]
    volumes = [v for v in items(payload.get("Volumes")) if isinstance(v, dict)]
    cache = [b for b in items(payload.get("BuildCache")) if isinstance(b, dict)]
    usage: dict[str, dict] = {}
    if "image" in wanted:
        layers = _positive(payload.get("LayersSize"))
        used = sum(
            _positive(i.get("Size")) - _positive(i.get("SharedSize"))
            for i in images
            if i.get("Containers", 0) > 0
        )
        usage["ImageUsage"] = {
            "ActiveCount": sum(1 for i in images if i.get("Containers", 0) > 0),
            "TotalCount": len(images),
            "Reclaimable": max(layers - used, 0),
            "TotalSize": layers,
        } | ({"Items": images} if verbose else {})
    if "container" in wanted:

        def active(c):
            return c.get("State") in ("running", "paused", "restarting")

        usage["ContainerUsage"] = _usage(
            containers,
            active,
            lambda c: _positive(c.get("SizeRw")),
            lambda c: 0 if active(c) else _positive(c.get("SizeRw")),
        ) | ({"Items": containers} if verbose else {})
    if "volume" in wanted:

        def refs(v):
            return (obj(v, "UsageData") or {}).get("RefCount", 0)

        def vsize(v):
            return _positive((obj(v, "UsageData") or {}).get("Size"))

        usage["VolumeUsage"] = _usage(
            volumes, lambda v: refs(v) > 0, vsize, lambda v: 0 if refs(v) > 0 else vsize(v)
        ) | ({"Items": volumes} if verbose else {})
    if "build-cache" in wanted:
        usage["BuildCacheUsage"] = _usage(
            cache,
            lambda b: b.get("InUse"),
            lambda b: _positive(b.get("Size")),
            lambda b: 0 if b.get("InUse") or b.get("Shared") else _positive(b.get("Size")),
        ) | ({"Items": cache} if verbose else {})
    if verbose:
        pop_keys(payload, ("LayersSize", "Images", "Containers", "Volumes", "BuildCache"))
    payload.update(usage)


def df_legacy_gone(reply: Reply) -> None:
    """1.53: the legacy lists are gone (df_usage, which runs first, has read them)."""
    pop_keys(reply.payload, ("LayersSize", "Images", "Containers", "Volumes", "BuildCache", "BuilderSize"))


# -- /events -------------------------------------------------------------------------------------


def events_without_legacy(reply: Reply) -> None:
    """1.52: no `status`, `id` and `from` (deprecated since 1.22): Action and Actor say it."""
    pop_keys(reply.payload, ("status", "id", "from"))


def events_with_legacy(reply: Reply) -> None:
    event = reply.payload
    if not isinstance(event, dict) or "Action" not in event:
        return
    actor = obj(event, "Actor") or {}
    if event.get("Type") in ("container", "image"):
        event.setdefault("status", event["Action"])
        event.setdefault("id", actor.get("ID", ""))
        image = (obj(actor, "Attributes") or {}).get("image")
        if event.get("Type") == "container" and image:
            event.setdefault("from", image)


# -- networks and volumes --------------------------------------------------------------------------


def enable_ipv4(reply: Reply) -> None:
    """1.48: EnableIPv4; a daemon before 1.48 always gives a network IPv4."""
    payload = reply.payload
    for network in payload if isinstance(payload, list) else [payload]:
        if isinstance(network, dict):
            network.setdefault("EnableIPv4", True)


def enable_ipv4_older(reply: Reply) -> None:
    payload = reply.payload
    for network in payload if isinstance(payload, list) else [payload]:
        pop_keys(network, ("EnableIPv4",))


def create_enable_ipv4(call: Call) -> None:
    if isinstance(call.body, dict) and call.body.get("EnableIPv4") is False:
        raise refuse("EnableIPv4: false", "1.48", "create the network with IPv4 (drop --ipv4=false)")
    pop_keys(call.body, ("EnableIPv4",))


def volume_prune_anonymous(call: Call) -> None:
    """1.42: prune removes only anonymous volumes unless the `all` filter is set. This daemon
    removes every unused volume and knows no `all` filter: with `all`, that is the same prune;
    without it, refused rather than removing named volumes the client meant to keep."""
    raw = next(iter(call.param("filters")), "")
    try:
        filters = json.loads(raw) if raw else {}
    except ValueError:
        return  # the daemon's own error for filters it cannot read
    if not isinstance(filters, dict):
        return
    wanted = filters.pop("all", None)
    values = list(wanted) if isinstance(wanted, dict) else wanted if isinstance(wanted, list) else []
    if not any(str(v).lower() in ("1", "true") for v in values):
        raise refuse(
            "pruning only anonymous volumes",
            "1.42",
            "prune every unused volume with the all filter (docker volume prune --all)",
        )
    call.drop_param("filters")
    call.query.append(("filters", json.dumps(filters)))
    call.query_changed = True
