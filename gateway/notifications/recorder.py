"""The event recorder: follows every live instance's daemon events into the store's journal
(gateway/store/journal.py), so that ``docker events --since`` replays what happened across
gateway restarts, replicas, daemon restarts and instances that are gone.

One worker of every replica records, elected by a lease (``events``); the others wait to take
over. Each instance has one follower: ``GET /events?since=T`` through its agent, where T is the
newest event already recorded for that instance (or the retention's start), so that a follower
that reconnects, or a new elected worker, continues where the last one stopped; an event
delivered twice is written once (the journal's unique key). A daemon that restarts has lost its
own memory of events, but not the journal.

Each event is recorded under its project, when the event says whose it is: a container's
project label; a network's or volume's daemon name suffix (gateway/tenancy/names.py); a network
event's container. Image events are recorded under no project and judged when read, by the
image map, as the live stream judges them (gateway/services/events.py).

Containers the daemon removes by itself (``--rm``) send no DELETE through the gateway: their
``destroy`` event is where their ``compute.container.delete`` notifications come from, and
where the map forgets them.

Every event also changes its instance's generation (gateway/generations.py) before it is
recorded: the read cache (gateway/services/readcache.py) then asks the daemon again. An
instance is cached only while its follower is connected (marked every pass).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time

from gateway import generations, imagemap, instances, store
from gateway.agentclient import AgentClient
from gateway.notifications import payloads, webhooks
from gateway.notifications.outbox import emit, enabled
from gateway.store import journal
from gateway.tenancy import PROJECT_LABEL, names, scope

log = logging.getLogger("moorage.events")

LEASE_SECONDS = 15.0
PASS_SECONDS = 2.0
PURGE_SECONDS = 60.0
PROJECTS_SECONDS = 10.0
RECORDED_TYPES = ("container", "network", "volume", "image")
SETTLE_SECONDS = 0.05

# The instances whose followers have their event stream open, in this worker.
_connected: set[str] = set()


def since_query(nano: int) -> str:
    """dockerd's ``since``/``until``: seconds and nanoseconds."""
    return f"{nano // 1_000_000_000}.{nano % 1_000_000_000:09d}"


class Attribution:
    """Whose an event is: the projects the store knows, by their names' suffix."""

    def __init__(self):
        self._suffixes: dict[str, str] = {}
        self._read = 0.0

    def _projects(self) -> dict[str, str]:
        if time.monotonic() - self._read > PROJECTS_SECONDS:
            known: set[str] = set()
            for model in (store.Container, store.Network, store.Volume, journal.NotifiedContainer):
                known.update(p for (p,) in model.select(model.project).distinct().tuples())
            self._suffixes = {names.suffix(p): p for p in known if p}
            self._read = time.monotonic()
        return self._suffixes

    def by_name(self, name: str) -> str:
        for suffix, project in self._projects().items():
            if name.endswith(suffix):
                return project
        return ""

    def project(self, event: dict, instance: store.Instance) -> str:
        kind = event.get("Type")
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        found = ""
        if kind == "container":
            found = str(attributes.get(PROJECT_LABEL, ""))
        elif kind == "network":
            found = self.by_name(str(attributes.get("name", "")))
            container = attributes.get("container")
            if not found and container:
                row = store.Container.get_or_none(store.Container.id == container)
                noted = journal.noted_container(str(container)) if row is None else None
                found = row.project if row else (noted.project if noted else "")
        elif kind == "volume":
            found = self.by_name(str(actor.get("ID", "")))
        if not found and kind != "image":
            # an instance that serves one project (dedicated) says whose all of it is
            found = str(getattr(instance, "project", "") or "")
        return found


def removed_by_daemon(event: dict) -> None:
    """A container's ``destroy``: the map forgets it, and a --rm container gets its delete
    notifications (a DELETE through the gateway told them already, and took the note)."""
    container_id = str((event.get("Actor") or {}).get("ID", ""))
    if not container_id:
        return
    noted = journal.noted_container(container_id)
    store.forget_container(container_id)
    if noted is None or not enabled() or not journal.take_noted_container(container_id, auto_removed=True):
        return
    for phase in ("start", "end"):
        emit(
            f"compute.container.delete.{phase}",
            payloads.versioned(
                "ContainerActionPayload",
                project_id=noted.project,
                user_id=noted.user,
                container_id=container_id,
                name=noted.name,
                image=noted.image or None,
                instance_uuid=noted.instance,
                action="delete",
                state_before="exited",
                state_after="removed" if phase == "end" else None,
                request_id=None,
                fault=None,
            ),
        )


def notice_container(project: str, instance: store.Instance, event: dict, nano: int) -> None:
    """A container's lifecycle, told to the project's webhooks that asked for it."""
    action = str(event.get("Action", ""))
    if event.get("Type") != "container" or f"container.{action}" not in webhooks.NOTICES:
        return
    if not project or not webhooks.subscribed(project):
        return
    attributes = (event.get("Actor") or {}).get("Attributes") or {}
    data = {
        "container_id": str((event.get("Actor") or {}).get("ID", "")),
        "name": scope.strip_names(project, str(attributes.get("name", ""))),
        "image": imagemap.rewrite_text(project, str(attributes.get("image", ""))),
        "instance_uuid": instance.uuid,
        "action": action,
    }
    if action == "die":
        data["exit_code"] = attributes.get("exitCode", "")
    webhooks.notify(project, f"container.{action}", data, nano)


def record_line(
    line: bytes, instance: store.Instance, attribution: Attribution, *, journal_on: bool = True
) -> int | None:
    """Record one line of a daemon's events (``journal_on``: in the journal; always: a --rm
    container's removal); returns the event's time (None if not an event)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    nano = journal.time_nano(event)
    if journal_on and event.get("Type") in RECORDED_TYPES:
        project = attribution.project(event, instance)
        if journal.record_event(project, instance.uuid, nano, journal.encode(event)):
            notice_container(project, instance, event, nano)
    if event.get("Type") == "container" and event.get("Action") == "destroy":
        removed_by_daemon(event)
    return nano


def follow(settings, instance: store.Instance, attribution: Attribution, last: int | None) -> None:
    """Record one instance's events until its stream ends (the caller starts another), from
    ``last``, the newest event recorded for it (journal.last_event_times, asked by the caller
    for every follower it starts at once), or the retention's start."""
    retention = settings.events.retention
    floor = time.time_ns() - int(retention * 1e9)
    since = max(floor, last or floor)
    store.release_connection()
    upstream = AgentClient(instance).send("GET", f"/events?since={since_query(since)}", timeout=None)
    try:
        if upstream.status != 200:
            raise RuntimeError(f"the daemon answered {upstream.status} to /events")
        _connected.add(instance.uuid)
        generations.follower_connected(instance.uuid)
        generations.bump(instance.uuid)
        import gevent

        pending = b""
        late = None
        for chunk in upstream.iter_body():
            generations.bump(instance.uuid)  # first: a read after this sees the daemon's change
            if late is None or late.dead:
                # and again a moment later: dockerd tells some events just before its own
                # view shows them (the die event, then the container's state saved)
                late = gevent.spawn_later(SETTLE_SECONDS, generations.bump, instance.uuid)
            pending += chunk
            while b"\n" in pending:
                line, _, pending = pending.partition(b"\n")
                if line.strip():
                    record_line(line, instance, attribution, journal_on=retention > 0)
                    store.release_connection()
    finally:
        upstream.close()
        _connected.discard(instance.uuid)
        generations.follower_gone(instance.uuid)


_recorder = None


def start_recorder(settings) -> None:
    """Run the recorder in this worker (every worker does; one at a time acts, by lease)."""
    global _recorder
    if _recorder is not None or (settings.events.retention <= 0 and not settings.notifications.enabled):
        return  # neither a journal to keep nor --rm removals to tell
    import gevent

    holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    attribution = Attribution()
    followers: dict[str, gevent.Greenlet] = {}
    lease = journal.Lease("events", holder, LEASE_SECONDS)

    def follower(instance: store.Instance, last: int | None) -> None:
        try:
            follow(settings, instance, attribution, last)
        except Exception as exc:  # noqa: BLE001 (the next pass starts another)
            log.info("events of instance %s: %s", instance.uuid, " ".join(str(exc).split())[:300])
        finally:
            store.release_connection()

    def loop() -> None:
        last_purge = 0.0
        while True:
            try:
                if lease.held():
                    # Which are live, then the rows of those it starts a follower for only:
                    # every pass loading every live row cost tens of ms at 1,000 instances.
                    live = set(instances.live_uuids(settings))
                    for uuid, greenlet in list(followers.items()):
                        if greenlet.dead or uuid not in live:
                            greenlet.kill(block=False)
                            del followers[uuid]
                    starting = instances.by_uuid([uuid for uuid in live if uuid not in followers])
                    newest = journal.last_event_times(list(starting)) if starting else {}
                    for uuid, instance in starting.items():
                        followers[uuid] = gevent.spawn(follower, instance, newest.get(uuid))
                    for uuid in _connected & live:
                        generations.follower_connected(uuid)  # still following (the cache's bound)
                    if settings.events.retention > 0 and time.monotonic() - last_purge > PURGE_SECONDS:
                        last_purge = time.monotonic()
                        journal.purge_events(time.time_ns() - int(settings.events.retention * 1e9))
                elif followers:
                    gevent.killall(list(followers.values()), block=False)
                    followers.clear()
            except Exception:  # the recorder must outlive any one failure
                log.exception("event recorder pass failed")
            finally:
                store.release_connection()
            gevent.sleep(PASS_SECONDS)

    _recorder = gevent.spawn(loop)
