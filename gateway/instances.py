"""The instance registry: agents register and heartbeat here; the gateway finds them here.

Agent-facing endpoints live under ``/moorage/v1/agents`` on the gateway's own listeners.
They are not part of the Docker API and are authenticated by their own secrets: the
operator's registration secret to register, the issued per-agent secret to heartbeat.
"""

from __future__ import annotations

import datetime as _dt
import hmac
import json
import secrets
import time
from urllib.parse import urlsplit

import falcon
import peewee

from gateway import store
from gateway.errors import DockerError
from gateway.tenancy import names
from relay.upstream import Endpoint

_live_cache: tuple[float, list] | None = None
LIVE_CACHE_SECONDS = 1.0


def live_instances(settings, *, fresh: bool = False) -> list[store.Instance]:
    """Instances that are up or draining and heard from recently, in fill order: a draining
    instance takes no new container (placement reads the store itself) but its containers
    still run, and every merged view shows them.

    Cached for a second per worker: lists and system calls ask on every request, and a
    second's staleness only delays a new instance's first listing (placement always reads
    the store itself, in its transaction)."""
    global _live_cache
    now = time.monotonic()
    if not fresh and _live_cache and now - _live_cache[0] < LIVE_CACHE_SECONDS:
        return list(_live_cache[1])
    horizon = store.utcnow() - _dt.timedelta(seconds=settings.heartbeat_timeout)
    live = list(
        store.Instance.select()
        .where(
            store.Instance.state.in_([store.INSTANCE_UP, store.INSTANCE_DRAINING])
            & (store.Instance.last_heartbeat >= horizon)
        )
        .order_by(store.Instance.position, store.Instance.uuid)
    )
    # An empty answer is never cached: it would refuse work for a second after the first
    # agent registers.
    _live_cache = (now, live) if live else None
    return list(live)


def is_live(instance: store.Instance, settings) -> bool:
    horizon = store.utcnow() - _dt.timedelta(seconds=settings.heartbeat_timeout)
    return instance.state == store.INSTANCE_UP and instance.last_heartbeat >= horizon


def endpoint(instance: store.Instance) -> Endpoint:
    return Endpoint.parse(instance.agent_url)


def agent_ports() -> frozenset[int]:
    """The TCP ports every registered agent listens on (its agent URL's): the daemon's port
    forwarding would take a container publishing one of them the gateway's traffic to that
    agent, so policy refuses them (gateway.policy.ports)."""
    ports = set()
    for (url,) in store.Instance.select(store.Instance.agent_url).tuples():
        try:
            agent = Endpoint.parse(url)
        except ValueError:
            continue
        if agent.scheme == "tcp":
            ports.add(int(agent.address[1]))
    return frozenset(ports)


def _json_body(req: falcon.Request, limit: int = 1 << 20) -> dict:
    length = req.content_length or 0
    if length > limit:
        raise DockerError(413, "registration body too large")
    try:
        data = json.loads(req.bounded_stream.read(limit + 1) or b"{}")
    except ValueError as exc:
        raise DockerError(400, f"invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DockerError(400, "expected a JSON object")
    return data


def _apply_facts(instance: store.Instance, data: dict) -> None:
    for key in ("daemon_version", "api_version", "min_api_version"):
        if data.get(key):
            setattr(instance, key, str(data[key]))
    if isinstance(data.get("facts"), dict):
        instance.facts = data["facts"]
    if "capacity" in data:
        instance.capacity = max(0, int(data.get("capacity") or 0))


def register(req: falcon.Request, resp: falcon.Response, settings) -> None:
    bootstrap = req.get_header("X-Moorage-Bootstrap-Secret")
    if bootstrap:  # an instance the pool booted (gateway/placement/pool.py)
        from gateway.placement import pool

        return pool.register_bootstrapped(req, resp, settings, bootstrap)
    presented = req.get_header("X-Moorage-Registration-Secret") or ""
    expected = settings.registration_secret
    if not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise DockerError(401, "agent registration refused: wrong or missing registration secret")
    data = _json_body(req)
    uuid = str(data.get("uuid", "")).strip()
    agent_url = str(data.get("agent_url", "")).strip()
    if not uuid or not agent_url:
        raise DockerError(400, "agent registration needs uuid and agent_url")
    try:
        Endpoint.parse(agent_url)
    except ValueError as exc:
        raise DockerError(400, str(exc)) from exc
    agent_secret = secrets.token_urlsafe(32)
    now = store.utcnow()
    with store.write_transaction():
        instance = store.Instance.get_or_none(store.Instance.uuid == uuid)
        created = instance is None
        if created:
            last = store.Instance.select(peewee.fn.MAX(store.Instance.position)).scalar() or 0
            instance = store.Instance(uuid=uuid, position=last + 1, registered_at=now)
        instance.provider = str(data.get("provider") or instance.provider or "static")
        instance.agent_url = agent_url
        instance.agent_secret = agent_secret
        if instance.state != store.INSTANCE_DRAINING:
            instance.state = store.INSTANCE_UP
        instance.last_heartbeat = now
        _apply_facts(instance, data)
        instance.save(force_insert=created)
    resp.status = 201 if created else 200
    resp.content_type = "application/json"
    resp.media = {"agent_secret": agent_secret, "heartbeat_interval": settings.heartbeat_interval}


def heartbeat(req: falcon.Request, resp: falcon.Response, settings, uuid: str) -> None:
    instance = store.Instance.get_or_none(store.Instance.uuid == uuid)
    if instance is None:
        raise DockerError(404, f"unknown instance {uuid}: register first")
    presented = req.get_header("X-Moorage-Agent-Secret") or ""
    if not hmac.compare_digest(presented.encode(), instance.agent_secret.encode()):
        raise DockerError(401, "heartbeat refused: wrong agent secret; register again")
    data = _json_body(req)
    fields = {store.Instance.last_heartbeat: store.utcnow()}
    if data.get("daemon") == "down":
        fields[store.Instance.state] = store.INSTANCE_DOWN
    else:
        _apply_facts(instance, data)
        fields.update(
            {
                store.Instance.daemon_version: instance.daemon_version,
                store.Instance.api_version: instance.api_version,
                store.Instance.min_api_version: instance.min_api_version,
                store.Instance.facts: instance.facts,
                store.Instance.capacity: instance.capacity,
            }
        )
        if instance.state == store.INSTANCE_DOWN:
            fields[store.Instance.state] = store.INSTANCE_UP
    store.Instance.update(fields).where(store.Instance.uuid == uuid).execute()
    if isinstance(data.get("containers"), list):
        reconcile(instance, data["containers"])
    resp.status = 204


# A row younger than this is left alone: its create may still be in flight (reserved, or
# created on the daemon after the agent listed it).
RECONCILE_GRACE = _dt.timedelta(seconds=60)


def reconcile(instance: store.Instance, on_daemon: list[dict]) -> dict[str, int]:
    """The daemon is the truth about which containers exist; the map follows it.

    Rows whose container the daemon no longer has (removed by --rm, or behind the gateway's
    back) are dropped; labelled containers the map lacks (created while the gateway was
    down, or by an earlier database) are adopted with their project. Nothing else is touched.
    """
    C = store.Container
    daemon = {c["id"]: c for c in on_daemon if isinstance(c, dict) and c.get("id") and c.get("project")}
    horizon = store.utcnow() - RECONCILE_GRACE
    with store.write_transaction():
        known = {row.id: row for row in C.select().where(C.instance == instance.uuid)}
        gone = [cid for cid, row in known.items() if cid not in daemon and row.created_at < horizon]
        if gone:
            C.delete().where(C.id.in_(gone)).execute()
        adopted = [c for cid, c in daemon.items() if cid not in known]
        for c in adopted:
            daemon_name = c.get("name", "")
            tenant_name = names.to_tenant(c["project"], daemon_name)
            C.insert(
                id=c["id"],
                project=c["project"],
                name=tenant_name,
                daemon_name=daemon_name if tenant_name == daemon_name else None,
                instance=instance.uuid,
                labels=c.get("labels") or None,
            ).on_conflict_ignore().execute()
    return {"dropped": len(gone), "adopted": len(adopted)}


def published_address(instance: store.Instance) -> str:
    """The address clients reach an instance's published ports on: what its agent was told
    (``moorage agent --public-address``), else the host the gateway reaches its agent at."""
    facts = instance.facts if isinstance(instance.facts, dict) else {}
    return str(facts.get("PublicAddress") or urlsplit(instance.agent_url).hostname or "")


def publish_bindings(bindings, address: str, key: str):
    """A container's port bindings (inspect's ``[{"HostIp", "HostPort"}]`` with key "HostIp"
    for one port, or ps's ``Ports`` with key "IP") with "every address" of the published
    address's family replaced by that address, as Swarm classic showed them: ``docker port``
    and ``docker ps`` then print where the port is reached. The other family's binding stays
    as dockerd reports it (one line each, as dockerd prints them)."""
    if not address or not isinstance(bindings, list):
        return bindings
    any_address = ("::",) if ":" in address else ("0.0.0.0", "")
    return [
        {**binding, key: address}
        if isinstance(binding, dict) and binding.get(key) in any_address
        else binding
        for binding in bindings
    ]
