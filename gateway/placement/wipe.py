"""Wiping a host before another project may claim it (dedicated tenancy, hosts that are not
deleted: static hosts and the local provider's pre-booted ones).

A project's containers, images, volumes, networks and build cache all go; what stays is what
every project may see anyway: the operator's public images (by ID, with their public tags
only) and dockerd's predefined networks. Then the daemon is asked again, and the host is
freed only when that second look finds nothing else: a wipe is verified, never assumed.
"""

from __future__ import annotations

from urllib.parse import quote

from gateway import imagemap, store
from gateway.agentclient import AgentClient

PREDEFINED_NETWORKS = frozenset({"bridge", "host", "none"})
WIPE_TIMEOUT = 120.0  # seconds for any one daemon call (a container's forced removal, a prune)


class WipeFailed(RuntimeError):
    """The daemon still holds something after the wipe (or did not answer): the host stays out."""


def leftovers(agent: AgentClient, public: dict[str, set[str]]) -> list[str]:
    """What the daemon holds beyond a wiped host's ("" entries never appear)."""
    found: list[str] = []
    status, containers = agent.get_json("/containers/json?all=1")
    if status != 200 or not isinstance(containers, list):
        return [f"the container list answered {status}"]
    found += [f"container {c.get('Id', '')[:12]}" for c in containers]
    status, volumes = agent.get_json("/volumes")
    if status != 200 or not isinstance(volumes, dict):
        return [*found, f"the volume list answered {status}"]
    found += [f"volume {v.get('Name')}" for v in volumes.get("Volumes") or []]
    status, networks = agent.get_json("/networks")
    if status != 200 or not isinstance(networks, list):
        return [*found, f"the network list answered {status}"]
    found += [f"network {n.get('Name')}" for n in networks if n.get("Name") not in PREDEFINED_NETWORKS]
    status, images = agent.get_json("/images/json?all=1")
    if status != 200 or not isinstance(images, list):
        return [*found, f"the image list answered {status}"]
    for image in images:
        image_id = image.get("Id", "")
        if image_id not in public:
            found.append(f"image {image_id[:19]}")
            continue
        extra = [t for t in image.get("RepoTags") or [] if imagemap.familiar_tag(t) not in public[image_id]]
        found += [f"tag {t}" for t in extra if t != "<none>:<none>"]
    status, df = agent.get_json("/system/df", timeout=WIPE_TIMEOUT)
    if status == 200 and isinstance(df, dict):
        found += [f"build cache {b.get('ID', '')[:12]}" for b in df.get("BuildCache") or []]
    return found


def wipe(instance: store.Instance) -> None:
    """Remove every project object from the instance's daemon, then verify; WipeFailed if
    anything is left (or a call fails). The store's rows are the caller's."""
    agent = AgentClient(instance)
    public = imagemap.public_images()

    def must(method: str, target: str, *ok: int) -> None:
        status, payload = agent.call_json(method, target, timeout=WIPE_TIMEOUT)
        if status not in (200, 204, 404, *ok):
            message = payload.get("message") if isinstance(payload, dict) else payload
            raise WipeFailed(f"{method} {target.split('?', maxsplit=1)[0]} answered {status}: {message}")

    status, containers = agent.get_json("/containers/json?all=1")
    for c in containers if status == 200 and isinstance(containers, list) else []:
        must("DELETE", f"/containers/{c['Id']}?force=1&v=1")
    status, networks = agent.get_json("/networks")
    for n in networks if status == 200 and isinstance(networks, list) else []:
        if n.get("Name") not in PREDEFINED_NETWORKS:
            must("DELETE", f"/networks/{n['Id']}")
    status, volumes = agent.get_json("/volumes")
    for v in (volumes.get("Volumes") or []) if status == 200 and isinstance(volumes, dict) else []:
        must("DELETE", f"/volumes/{quote(v['Name'], safe='')}?force=1")
    status, images = agent.get_json("/images/json?all=1")
    for image in images if status == 200 and isinstance(images, list) else []:
        image_id = image.get("Id", "")
        if image_id in public:
            # A public image stays, without the tags a project gave it.
            for tag in image.get("RepoTags") or []:
                if tag != "<none>:<none>" and imagemap.familiar_tag(tag) not in public[image_id]:
                    must("DELETE", f"/images/{quote(tag, safe='')}?noprune=1")
        else:
            must("DELETE", f"/images/{image_id}?force=1", 409)
    # Images that other images were built on: removed once their children are gone.
    status, images = agent.get_json("/images/json?all=1")
    for image in images if status == 200 and isinstance(images, list) else []:
        if image.get("Id", "") not in public:
            must("DELETE", f"/images/{image['Id']}?force=1")
    must("POST", "/build/prune?all=1")
    left = leftovers(agent, public)
    if left:
        raise WipeFailed(
            "the daemon still holds " + ", ".join(left[:10]) + (" ..." if len(left) > 10 else "")
        )
