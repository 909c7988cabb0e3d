"""The gateway's own events: what it did for a project (an instance booted or deleted for it, an
instance claimed for it or released after its wipe, where a container was placed), recorded in
the project's event journal beside its daemons' events, so that ``docker events --since``
replays them, and told to the project's webhooks (gateway/notifications/webhooks.py).

They are Docker events of ``Type`` ``daemon``: the instance is the tenant's daemon, and every
Docker client prints and filters a daemon event (the docker CLI as
``daemon create UUID (instance=UUID, name=moorage, ...)``, docker-py and dockerode as the JSON
they got). ``Actor.ID`` is the instance's UUID; ``Actor.Attributes`` carry ``name`` (moorage),
``instance``, ``provider`` and the action's own facts, and the project's label, which the
events stream judges them by and strips (gateway/services/events.py). docs/notifications.md
lists every action.
"""

from __future__ import annotations

import logging
import time

from gateway import store
from gateway.notifications import webhooks
from gateway.store import journal
from gateway.wire import PROJECT_LABEL

log = logging.getLogger("moorage.events")

SOURCE = "gateway"  # the journal's "instance" of the gateway's own events
NAME = "moorage"
# The gateway's actions -> the notice a webhook may ask for (None: journal only).
NOTICE_OF = {
    "create": "instance.create",
    "destroy": "instance.delete",
    "claim": None,
    "release": None,
    "place": None,
}

_retention = 7 * 86400.0


def configure(settings) -> None:
    global _retention
    _retention = settings.events.retention


def event(project: str, instance: str, action: str, attributes: dict, nano: int) -> dict:
    """The Docker event of one of the gateway's actions."""
    values = {str(k): str(v) for k, v in attributes.items() if v not in (None, "")}
    values.update({"name": NAME, "instance": instance, PROJECT_LABEL: project})
    return {
        "Type": "daemon",
        "Action": action,
        "Actor": {"ID": instance, "Attributes": values},
        "scope": "local",
        "time": nano // 1_000_000_000,
        "timeNano": nano,
    }


def record(project: str, instance: str, action: str, **attributes) -> None:
    """Record the gateway's ``action`` on ``instance`` for ``project`` (journal and webhooks).
    Never raises: the pool's work is never undone for want of its event."""
    if not project:
        return  # a shared instance: no one project's event
    nano = time.time_ns()
    try:
        if _retention > 0:
            raw = journal.encode(event(project, instance, action, attributes, nano))
            journal.record_events([(project, SOURCE, nano, raw)])
    except Exception:
        log.exception("could not record the gateway's event %s of instance %s", action, instance)
    finally:
        store.release_connection()
    notice = NOTICE_OF.get(action)
    if notice:
        webhooks.notify(project, notice, {"instance_uuid": instance, "action": action, **attributes}, nano)


def recorded_since(projects: list[str] | None, since_nano: int) -> list[journal.EventRecord]:
    """The gateway's own events of ``projects`` (None: every project's) after ``since_nano``,
    for a live events stream (gateway/services/events.py)."""
    return journal.recorded_source_events(SOURCE, projects, since_nano)
