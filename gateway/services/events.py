"""The events stream of /events: every instance's events merged, the caller's only.

dockerd's own label filter would keep only container events (networks and volumes carry no
labels in their events), so the gateway decides per event instead, statelessly where it can:
a container event carries the project label; a network's or volume's daemon name carries
the project's suffix (tenancy.names); a network event about a predefined network names the
container, which the store knows. Image events are judged by the image map (gateway.imagemap). Events are
small and few, so each is parsed, judged, rewritten (the tenant's names, no project label)
and sent on as one compact line, as dockerd writes them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import gevent
import gevent.queue

from gateway import imagemap, store
from gateway.context import Context
from gateway.notifications import own_events
from gateway.services import event_replay
from gateway.tenancy import PROJECT_LABEL, names, scope

# What each merged stream's reader puts in the queue when its stream ends.
_END = object()


class EventJudge:
    """Which events belong to one project (or to every project, in the admin view)."""

    def __init__(self, project: str, all_projects: bool = False):
        self.project = project
        self.all_projects = all_projects
        self.suffix = names.suffix(project)
        # The project's own bridge (made on demand with shared tenancy; with dedicated, one an
        # instance may keep from before, removed by its wipe): not the tenant's doing. The
        # daemon's own bridge has no create or destroy; its connects and disconnects name the
        # container, judged below as on any predefined network.
        self.project_bridge = scope.project_bridge(project)
        self._containers: dict[str, bool] = {}

    def _mine_container(self, container_id: str) -> bool:
        if container_id not in self._containers:
            self._containers[container_id] = bool(store.mine_among(self.project, [container_id]))
        return self._containers[container_id]

    def keep(self, event: dict) -> bool:
        kind = event.get("Type")
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        if self.all_projects:
            return PROJECT_LABEL in attributes or kind in ("network", "volume", "image")
        if kind == "container":
            return attributes.get(PROJECT_LABEL) == self.project
        if kind == "network":
            name = str(attributes.get("name", ""))
            if name == self.project_bridge and event.get("Action") in ("create", "destroy"):
                return False  # made on demand by Moorage (tenancy.scope.project_bridge), not by the tenant
            if name.endswith(self.suffix):
                return True
            container = attributes.get("container")
            return bool(container) and self._mine_container(container)
        if kind == "volume":
            return str(actor.get("ID", "")).endswith(self.suffix)
        if kind == "image":
            return imagemap.image_visible(self.project, str(actor.get("ID", ""))) is not None
        if kind == "daemon":
            # the gateway's own events (gateway/notifications/own_events.py), the project's
            # label theirs; a daemon's own (reload) are the operator's
            return attributes.get(PROJECT_LABEL) == self.project
        return False  # plugin, ...

    def rewrite(self, event: dict) -> dict:
        attributes = (event.get("Actor") or {}).get("Attributes")
        if isinstance(attributes, dict) and not self.all_projects:
            attributes.pop(PROJECT_LABEL, None)
        return scope.strip_names(self.project, event)


class OwnEventsTail:
    """The gateway's own events (gateway/notifications/own_events.py) as they are recorded, for
    a live stream: the journal, read every second after the newest already sent, filtered here
    as a daemon filters its own stream. Read like a daemon's answer (``iter_body``, ``close``)."""

    POLL_SECONDS = 1.0
    WINDOW_NANO = 5_000_000_000

    def __init__(
        self, project: str, all_projects: bool, after_nano: int, until_nano: int | None, filters: dict
    ):
        self.projects = None if all_projects else [project]
        self.start = self.after = after_nano  # what is not after start was replayed, or is past
        self.until = until_nano
        self.filters = filters
        self.closed = False

    def _passes(self, raw: str) -> bool:
        if not self.filters:
            return True
        event = json.loads(raw)
        ((event.get("Actor") or {}).get("Attributes") or {}).pop(PROJECT_LABEL, None)
        return event_replay.matches(self.filters, event)

    def iter_body(self) -> Iterator[bytes]:
        sent: dict[int, int] = {}  # row id -> its time: rows re-read in the window, sent once
        while not self.closed:
            ending = self.until is not None and time.time_ns() > self.until
            # Two workers' events may commit out of their times' order: each read looks a
            # window back past the newest sent.
            floor = max(self.start, self.after - self.WINDOW_NANO)
            rows = own_events.recorded_since(self.projects, floor)
            store.release_connection()
            for row in rows:
                if row.id in sent:
                    continue
                sent[row.id] = row.time_nano
                self.after = max(self.after, row.time_nano)
                if (self.until is None or row.time_nano <= self.until) and self._passes(row.event):
                    yield row.event.encode() + b"\n"
            for row_id in [i for i, t in sent.items() if t < self.after - self.WINDOW_NANO]:
                del sent[row_id]
            if ending:
                return
            gevent.sleep(self.POLL_SECONDS)

    def close(self) -> None:
        self.closed = True


def _lines(upstream) -> Iterator[bytes]:
    pending = b""
    for chunk in upstream.iter_body():
        pending += chunk
        while b"\n" in pending:
            line, _, pending = pending.partition(b"\n")
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def _judged(judge: EventJudge, line: bytes) -> dict | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or not judge.keep(event):
        return None
    return judge.rewrite(event)


def _encode(event: dict, project: str) -> bytes:
    # Image references in any event (a container's `image`, an image's own) in the tenant's names.
    return imagemap.rewrite_bytes(project, json.dumps(event, separators=(",", ":")).encode()) + b"\n"


def tenant_events(
    ctx: Context,
    streams: list,
    *,
    ordered: bool,
    replayed: list[dict] | None = None,
    filters: dict | None = None,
) -> Iterator[bytes]:
    """The merged stream. With ``until``, every stream ends: the events are then sent in time
    order, as one daemon would; a live stream is sent as events arrive. ``replayed``: events
    from the journal (gateway/services/event_replay.py), sent first, filtered by ``filters``
    as the daemons filter their own."""
    judge = EventJudge(ctx.project, ctx.all_projects)
    yield b""  # the response head at once: `docker events` waits for it before any event
    held = []
    for event in replayed or ():
        if not judge.keep(event):
            continue
        event = judge.rewrite(event)
        if filters and not event_replay.matches(filters, event):
            continue
        if ordered:
            held.append(event)
        else:
            yield _encode(event, judge.project)
    queue: gevent.queue.Queue = gevent.queue.Queue()

    def read(upstream) -> None:
        try:
            for line in _lines(upstream):
                queue.put(line)
        except Exception:  # noqa: BLE001 (an instance going away ends its part of the stream only)
            pass
        finally:
            queue.put(_END)

    readers = [gevent.spawn(read, upstream) for upstream in streams]
    try:
        remaining = len(readers)
        while remaining:
            item = queue.get()
            if item is _END:
                remaining -= 1
                continue
            event = _judged(judge, item)
            if event is None:
                continue
            if ordered:
                held.append(event)
            else:
                yield _encode(ctx.translated(event), judge.project)
        held.sort(key=lambda e: e.get("timeNano") or 0)
        for event in held:
            yield _encode(ctx.translated(event), judge.project)
    finally:
        gevent.killall(readers, block=False)
        for upstream in streams:
            upstream.close()
