"""The reaper: deletes the pool's instances that stay empty, failed boots, and orphans; with
dedicated tenancy, wipes and frees the claimed hosts the pool did not boot once they are empty.

Every gateway worker runs it; a PoolLease row lets one act at a time. Before deleting, it takes
the instance out of placement in the same transaction as the last emptiness check, then asks
the daemon itself through the agent: an instance whose agent does not answer is kept.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import secrets
import socket
import time

from gateway import imagemap, instances, notifications, store
from gateway.agentclient import AgentClient, UpstreamError
from gateway.config import PlacementSettings
from gateway.placement import wipe
from gateway.placement.pool import _one_line, fail, provider_for
from gateway.placement.provider import Provider
from gateway.placement.scheduler import dedicated, instance_lock
from gateway.store import ACTIVE, BUILDING, DELETING, DRAINING, FAILED, PoolLease, PoolMember
from gateway.wire import AGENT_SEGMENTS_PATH

log = logging.getLogger("moorage.pool")

DRAIN_STUCK = _dt.timedelta(seconds=120)  # a draining member a dead worker left behind
FAILED_KEEP = _dt.timedelta(seconds=60)  # waiters read a failed member's error meanwhile
ORPHAN_SWEEP_SECONDS = 60.0


def take_lease(name: str, holder: str, ttl: float, now: _dt.datetime | None = None) -> bool:
    now = now or store.utcnow()
    expires = now + _dt.timedelta(seconds=ttl)
    query = PoolLease.update(holder=holder, expires_at=expires).where(
        (PoolLease.name == name) & ((PoolLease.holder == holder) | (PoolLease.expires_at < now))
    )
    if query.execute():
        return True
    inserted = PoolLease.insert(name=name, holder=holder, expires_at=expires).on_conflict_ignore().execute()
    return bool(inserted) and PoolLease.get_by_id(name).holder == holder


def held(server_id: str) -> bool:
    """Whether the map puts anything on the instance: a container (or a placement's
    reservation), a user-defined network, a named volume (their rows keep the instance's), or
    the only copy of a project's image (built, committed, loaded: deleting the instance would
    lose it; `docker rmi` lets the instance go)."""
    if any(
        model.select().where(model.instance == server_id).exists()
        for model in (store.Container, store.Network, store.Volume)
    ):
        return True
    P, R = store.ImagePresence, store.ImageRef
    elsewhere = store.ImagePresence.alias()
    return (
        P.select()
        .where(
            (P.instance == server_id)
            & P.image_id.in_(R.select(R.image_id).where(R.project != ""))
            & P.image_id.not_in(elsewhere.select(elsewhere.image_id).where(elsewhere.instance != server_id))
        )
        .exists()
    )


def daemon_busy(instance: store.Instance) -> str:
    """What keeps the instance's daemon from being empty ("" if nothing), asked through its agent."""
    agent = AgentClient(instance)
    found = []
    status, containers = agent.get_json("/containers/json?all=1")
    if status != 200:
        return f"the daemon answered {status} to the container list"
    if isinstance(containers, list) and containers:
        found.append(f"{len(containers)} container(s)")
    status, volumes = agent.get_json("/volumes")
    if status != 200:
        return f"the daemon answered {status} to the volume list"
    named = [
        v
        for v in ((volumes if isinstance(volumes, dict) else {}).get("Volumes") or [])
        if not (len(v.get("Name", "")) == 64 and all(c in "0123456789abcdef" for c in v["Name"]))
    ]
    if named:
        found.append(f"{len(named)} named volume(s)")
    return ", ".join(found)


def reap_once(
    settings, provider: Provider, now: _dt.datetime | None = None, check_daemon=daemon_busy
) -> dict:
    """One pass: fail overdue boots, delete what failed, delete members empty for the grace."""
    is_live = instances.is_live
    now = now or store.utcnow()
    done = {"failed": 0, "deleted": 0}
    mine = PoolMember.select().where(PoolMember.provider == provider.name)
    for member in list(mine):
        if member.state == BUILDING:
            overdue = (now - member.created_at).total_seconds() > provider.boot_timeout
            if overdue and fail(
                member.id,
                f"the instance did not register its agent within {provider.boot_timeout:g} s "
                "([nova] boot_timeout)",
            ):
                done["failed"] += 1
            continue
        if member.state == FAILED:
            if member.server_id and _delete_server(provider, member):
                member.server_id = None
            if not member.server_id and now - member.updated_at > FAILED_KEEP:
                PoolMember.delete().where(PoolMember.id == member.id).execute()
            continue
        if member.state == DRAINING and now - member.updated_at > DRAIN_STUCK:
            _undrain(member)  # a worker died between draining and deleting; start over
            continue
        if member.state == DELETING:
            if _delete_server(provider, member):
                done["deleted"] += 1
            continue
        server_id = member.server_id
        if member.state != ACTIVE or not server_id:
            continue  # (an active member has registered, so it has its server)
        instance = store.Instance.get_or_none(store.Instance.uuid == server_id)
        if held(server_id):
            if member.empty_since is not None:
                PoolMember.update(empty_since=None).where(PoolMember.id == member.id).execute()
            continue
        if member.empty_since is None:
            PoolMember.update(empty_since=now).where(PoolMember.id == member.id).execute()
            continue
        if (now - member.empty_since).total_seconds() < provider.empty_grace:
            continue
        if instance is not None and not is_live(instance, settings):
            continue  # its daemon cannot say whether it holds anything: keep it
        # Empty for the whole grace: take it out of placement, atomically with the last check
        # (under the lock of every decision that could place on it: its project's, or with
        # shared tenancy the one placement lock; no create is placed on it between the two).
        with instance_lock(settings, server_id) as same_owner:
            if not same_owner:
                continue  # claimed meanwhile: looked at again on the next pass
            if held(server_id):
                PoolMember.update(empty_since=None).where(PoolMember.id == member.id).execute()
                continue
            store.Instance.update(state=store.INSTANCE_DRAINING).where(
                store.Instance.uuid == member.server_id
            ).execute()
            PoolMember.update(state=DRAINING, updated_at=now).where(PoolMember.id == member.id).execute()
        if instance is not None:
            store.release_connection()  # none is held across network I/O
            try:
                busy = check_daemon(instance)
            except Exception as exc:  # noqa: BLE001
                busy = f"its agent did not answer ({_one_line(exc)})"
            if busy:
                log.info(
                    "instance %s has been empty in the map for %g s, but its daemon holds %s; keeping it",
                    member.server_id,
                    provider.empty_grace,
                    busy,
                )
                _undrain(member)
                continue
        PoolMember.update(state=DELETING, updated_at=now).where(PoolMember.id == member.id).execute()
        log.info("instance %s stayed empty for %g s: deleting it", member.server_id, provider.empty_grace)
        if _delete_server(provider, member):
            done["deleted"] += 1
    return done


def _undrain(member: PoolMember) -> None:
    with store.write_transaction():
        store.Instance.update(state=store.INSTANCE_UP).where(
            (store.Instance.uuid == member.server_id) & (store.Instance.state == store.INSTANCE_DRAINING)
        ).execute()
        PoolMember.update(state=ACTIVE, empty_since=None, updated_at=store.utcnow()).where(
            PoolMember.id == member.id
        ).execute()


@notifications.instance_hook("delete")  # compute.container_instance.delete.*
def _delete_server(provider: Provider, member: PoolMember) -> bool:
    """Delete the member's server, then its rows. True when it is gone."""
    if member.server_id:
        store.release_connection()
        try:
            if not provider.delete(member.server_id):
                log.error(
                    "refusing to delete server %s: it does not carry this pool's mark", member.server_id
                )
                return False
        except Exception as exc:  # noqa: BLE001 (retried on the next pass)
            log.warning("deleting server %s failed (will retry): %s", member.server_id, _one_line(exc))
            return False
    with store.write_transaction():
        if member.server_id and not held(member.server_id):
            store.Instance.delete().where(store.Instance.uuid == member.server_id).execute()
        if member.state == FAILED:
            PoolMember.update(server_id=None).where(PoolMember.id == member.id).execute()
        else:
            PoolMember.delete().where(PoolMember.id == member.id).execute()
    return True


# uuid -> when the reaper (the lease holder) first saw the host empty. In memory: a new lease
# holder starts each host's grace over, which only delays a release.
_empty_since: dict[str, _dt.datetime] = {}


def release_empty(settings, now: _dt.datetime | None = None, wipe_host=wipe.wipe) -> int:
    """Dedicated tenancy: free the claimed hosts the pool did not boot (static hosts, the
    local provider's pre-booted ones) once they have held nothing of their project for
    ``[placement] release_grace``: out of placement (atomically with the last emptiness check),
    wiped and verified through the agent, then free for any project. A host whose wipe fails
    stays its project's (nothing leaks) and is tried again after another grace. Returns how
    many were freed."""
    now = now or store.utcnow()
    grace = settings.placement.release_grace
    booted = {m.server_id for m in PoolMember.select(PoolMember.server_id) if m.server_id}
    Inst = store.Instance
    freed = 0
    # Only a claimed instance no container row names (container_count, which the database's
    # triggers keep, reservations included) can be empty: one query finds them, rather than a
    # question to the store about each claimed instance on every pass (at 1,000 instances, 500
    # queries a second with the default reap_interval; bench/README.md, bench/scale).
    candidates = list(Inst.select().where(Inst.project.is_null(False) & (Inst.container_count == 0)))
    for uuid in _empty_since.keys() - {instance.uuid for instance in candidates}:
        del _empty_since[uuid]
    for instance in candidates:
        uuid = instance.uuid
        if uuid in booted:
            continue  # the pool's: deleted when empty (reap_once), never handed on
        if held(uuid):
            _empty_since.pop(uuid, None)
            continue
        since = _empty_since.setdefault(uuid, now)
        if (now - since).total_seconds() < grace or not instances.is_live(instance, settings):
            continue
        # Under the project's placement lock (the only decisions that place on its instance:
        # dedicated tenancy), atomically with the last emptiness check.
        with instance_lock(settings, uuid) as same_owner:
            if not same_owner or held(uuid):
                _empty_since.pop(uuid, None)
                continue
            taken = (
                Inst.update(state=store.INSTANCE_DRAINING)
                .where(
                    (Inst.uuid == uuid)
                    & (Inst.state == store.INSTANCE_UP)
                    & (Inst.project == instance.project)
                )
                .execute()
            )
        if not taken:
            continue
        store.release_connection()  # none is held across network I/O
        try:
            wipe_host(instance)
        except Exception as exc:  # noqa: BLE001 (kept, and tried again after another grace)
            log.warning(
                "host %s held nothing of project %s, but wiping it failed (it stays the project's): %s",
                uuid,
                instance.project,
                _one_line(exc),
            )
            Inst.update(state=store.INSTANCE_UP).where(
                (Inst.uuid == uuid) & (Inst.state == store.INSTANCE_DRAINING)
            ).execute()
            _empty_since[uuid] = now
            continue
        _drop_segments(instance)
        public = set(imagemap.public_images())
        with store.write_transaction():
            P = store.ImagePresence
            P.delete().where((P.instance == uuid) & P.image_id.not_in(list(public) or [""])).execute()
            store.NetworkMember.delete().where(store.NetworkMember.instance == uuid).execute()
            Inst.update(state=store.INSTANCE_UP, project=None).where(
                (Inst.uuid == uuid) & (Inst.state == store.INSTANCE_DRAINING)
            ).execute()
        _empty_since.pop(uuid, None)
        log.info("host %s was wiped (verified) after project %s left it: it is free", uuid, instance.project)
        notifications.own_event(instance.project or "", uuid, "release", provider=instance.provider)
        freed += 1
    return freed


def _drop_segments(instance: store.Instance) -> None:
    """A freed host carries none of its last project's spanning networks (agent/segments.py):
    the wipe removed the daemon's copies, this the VXLAN ports, peers and names."""
    for network, _ in store.spans.networks_on(instance.uuid):
        try:
            AgentClient(instance).call_json("DELETE", f"{AGENT_SEGMENTS_PATH}/{network.vni}")
        except (UpstreamError, OSError) as exc:
            log.warning("host %s: segment %s not removed: %s", instance.uuid, network.vni, _one_line(exc))


def sweep_orphans(settings, provider: Provider, now: _dt.datetime | None = None) -> int:
    """Delete servers with this pool's mark that no member knows (a worker died mid-boot)."""
    now = now or store.utcnow()
    known_servers = {m.server_id for m in PoolMember.select(PoolMember.server_id) if m.server_id}
    known_members = {m.id for m in PoolMember.select(PoolMember.id)}
    store.release_connection()
    deleted = 0
    servers = provider.owned_servers()
    forget_vanished(settings, provider, servers)
    for server in servers:
        if server["id"] in known_servers or server.get("member") in known_members:
            continue
        created = server.get("created")
        if created is not None and (now - created).total_seconds() < provider.boot_timeout:
            continue
        log.info("server %s carries this pool's mark but no member knows it: deleting it", server["id"])
        try:
            if provider.delete(server["id"]):
                deleted += 1
        except Exception as exc:  # noqa: BLE001
            log.warning("deleting orphan server %s failed: %s", server["id"], _one_line(exc))
    return deleted


def forget_vanished(settings, provider: Provider, servers: list[dict]) -> int:
    """Members whose server is no longer in Nova (deleted behind Moorage's back) and whose
    agent has gone silent: what ran there went with the server, so its rows in the map go too
    (containers and their execs, networks, volumes, image copies), freeing the project's
    quota, and the instance leaves placement. Both signs are needed: a server missing from
    one listing alone may be a listing's fault. Returns how many were forgotten."""
    existing = {server["id"] for server in servers}
    forgotten = 0
    members = PoolMember.select().where(
        (PoolMember.provider == provider.name) & PoolMember.state.in_([ACTIVE, DRAINING])
    )
    for member in list(members):
        server_id = member.server_id
        if not server_id or server_id in existing:
            continue
        instance = store.Instance.get_or_none(store.Instance.uuid == server_id)
        if instance is not None and instances.is_live(instance, settings):
            continue
        # Under the lock of every decision that could place on it (its project's, the claims
        # lock when none owns it, the one placement lock with shared tenancy): a decision that
        # read it live a moment ago cannot reserve a slot on it while its rows go.
        with instance_lock(settings, server_id):
            C = store.Container
            on_it = C.select(C.id).where(C.instance == server_id)
            store.Exec.delete().where(store.Exec.container.in_(on_it)).execute()
            counts = {
                model.__name__.lower() + "s": model.delete().where(model.instance == server_id).execute()
                for model in (C, store.Network, store.Volume, store.ImagePresence)
            }
            store.Instance.delete().where(store.Instance.uuid == server_id).execute()
            PoolMember.delete().where(PoolMember.id == member.id).execute()
        log.warning(
            "server %s was deleted outside Moorage and its agent is silent: forgot it and what ran on "
            "it (%s)",
            server_id,
            ", ".join(f"{n} {kind}" for kind, n in counts.items()),
        )
        forgotten += 1
    return forgotten


_reaper = None


def start_reaper(settings) -> None:
    """Run the reaper in this worker (every worker does; one at a time acts, by lease)."""
    global _reaper
    provider = provider_for(settings)
    frees_hosts = dedicated(settings)
    if not (provider.can_grow or frees_hosts) or _reaper is not None:
        return
    import gevent

    if not log.handlers and not logging.getLogger().handlers:
        # the pool's decisions (boots, deletions) are the operator's business: to stderr, the
        # gateway's log, unless logging is configured otherwise
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s [%(process)d] %(name)s %(levelname)s %(message)s")
        )
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    interval = settings.placement.reap_interval or PlacementSettings.reap_interval
    holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    def loop() -> None:
        last_sweep = 0.0
        while True:
            try:
                if take_lease("reaper", holder, ttl=max(10.0, interval * 5)):
                    if provider.can_grow:
                        reap_once(settings, provider)
                        if time.monotonic() - last_sweep > ORPHAN_SWEEP_SECONDS:
                            last_sweep = time.monotonic()
                            sweep_orphans(settings, provider)
                    if frees_hosts:
                        release_empty(settings)
            except Exception:  # the reaper must outlive any one failure
                log.exception("instance pool reaper pass failed")
            finally:
                store.release_connection()
            gevent.sleep(interval)

    _reaper = gevent.spawn(loop)
