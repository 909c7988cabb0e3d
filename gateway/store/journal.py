"""What happened, kept until it is told: the notification outbox, the event journal, and the
containers whose notifications need what the daemon's events do not carry.

- ``Notification``: one row per notification not yet handed to the broker. Every worker
  writes; one elected sender (gateway/notifications/sender.py) reads in id order, sends and
  deletes. Bounded by ``[notifications] outbox_limit``: the span of ids is the queue's length,
  since rows leave from the low end only.
- ``EventRecord``: every daemon event the gateway sees (and its own), per project, kept for
  ``[events] retention``, so that ``docker events --since`` replays what no daemon holds any
  more. A unique (instance, time_nano, digest) makes a follower that reconnects with
  ``since`` write each event once.
- ``NotifiedContainer``: who created a container and from what image, so that a container the
  daemon removes by itself (``--rm``) still gets its delete notification with them.
- ``Mark``: small named values that one elected worker carries over (the end of the last
  audit period of ``compute.container.exists``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import time

import peewee

from gateway.store.db import with_commit
from gateway.store.models import BaseModel, JSONField, utcnow


class Notification(BaseModel):
    id = peewee.BigAutoField()
    event_type = peewee.CharField(max_length=128)
    priority = peewee.CharField(max_length=16, default="INFO")
    payload = JSONField()
    publisher = peewee.CharField(max_length=255)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "notification"


class EventRecord(BaseModel):
    id = peewee.BigAutoField()
    project = peewee.CharField(max_length=64)  # "": judged when read (image events)
    instance = peewee.CharField(max_length=64)
    time_nano = peewee.BigIntegerField()
    digest = peewee.CharField(max_length=32)
    event = peewee.TextField()  # the event as its daemon wrote it (daemon names)

    class Meta:
        table_name = "event_record"
        indexes = (
            (("project", "time_nano"), False),
            (("time_nano",), False),  # the retention's purge
            (("instance", "time_nano", "digest"), True),
        )


class NotifiedContainer(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=64)
    project = peewee.CharField(max_length=64)
    user = peewee.CharField(max_length=64, default="")
    name = peewee.CharField(max_length=255, default="")
    image = peewee.CharField(max_length=512, default="")
    instance = peewee.CharField(max_length=64, default="")
    auto_remove = peewee.BooleanField(default=False)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "notified_container"


class Mark(BaseModel):
    name = peewee.CharField(primary_key=True, max_length=64)
    value = peewee.CharField(max_length=255, default="")

    class Meta:
        table_name = "mark"


JOURNAL_MODELS = [Notification, EventRecord, NotifiedContainer, Mark]


def create_journal(db: peewee.Database) -> None:
    """The migration: the four tables (gateway/store/schema.py MIGRATIONS)."""
    db.create_tables(JOURNAL_MODELS, safe=True)


# -- the outbox ---------------------------------------------------------------------------------


def enqueue_notification(event_type: str, priority: str, payload: dict, publisher: str, limit: int) -> bool:
    """Queue one notification; False (and nothing written) when ``limit`` are waiting."""
    if limit > 0:
        low, high = Notification.select(
            peewee.fn.MIN(Notification.id), peewee.fn.MAX(Notification.id)
        ).scalar(as_tuple=True)
        if low is not None and high - low + 1 >= limit:
            return False
    Notification.insert(
        event_type=event_type, priority=priority, payload=payload, publisher=publisher
    ).execute()
    return True


def pending_notifications(count: int) -> list[Notification]:
    return list(Notification.select().order_by(Notification.id).limit(count))


def sent_notifications(ids: list[int]) -> None:
    if ids:
        Notification.delete().where(Notification.id.in_(ids)).execute()


def outbox_length() -> int:
    return Notification.select().count()


# -- the event journal -------------------------------------------------------------------------


def event_digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def record_events(rows: list[tuple[str, str, int, str]]) -> None:
    """(project, instance, time_nano, raw event) rows; an event already recorded is skipped.
    Inside a transaction (a placement's own event), written with its commit (with_commit)."""
    if not rows:
        return
    with_commit(
        EventRecord.insert_many(
            [
                {"project": p, "instance": i, "time_nano": t, "digest": event_digest(raw), "event": raw}
                for p, i, t, raw in rows
            ]
        ).on_conflict_ignore()
    )


def record_event(project: str, instance: str, nano: int, raw: str) -> bool:
    """Record one event; False when it was recorded already (a follower that reconnected reads
    its newest event again: what is told of it is told once)."""
    digest = event_digest(raw)
    recorded = EventRecord.select().where(
        (EventRecord.instance == instance) & (EventRecord.time_nano == nano) & (EventRecord.digest == digest)
    )
    if recorded.exists():
        return False
    record_events([(project, instance, nano, raw)])
    return True


def last_event_time(instance: str) -> int | None:
    """The newest recorded event's time on ``instance`` (nanoseconds), or None."""
    return last_event_times([instance]).get(instance)


# Instances asked about per statement: far under SQLite's limit of bound parameters.
_BATCH = 500


def last_event_times(uuids: list[str]) -> dict[str, int]:
    """The newest recorded event's time (nanoseconds) on each of these instances that has
    one: a statement per 500 instances, not one per instance (the recorder starts a follower
    for every live instance at once: 10,000 queries at 10,000 instances, bench/scale). Each
    instance's newest is still one backward step of the (instance, time_nano) index: a
    correlated MAX per listed instance, which SQLite and PostgreSQL both answer from the index
    (written out: peewee builds no VALUES list in FROM, whose column both name column1)."""
    db = EventRecord._meta.database
    found: dict[str, int] = {}
    for start in range(0, len(uuids), _BATCH):
        batch = uuids[start : start + _BATCH]
        values = ", ".join([f"({db.param})"] * len(batch))
        sql = (
            'SELECT v.column1, (SELECT MAX(e.time_nano) FROM "event_record" AS e '
            f"WHERE e.instance = v.column1) FROM (VALUES {values}) AS v"
        )
        found.update((uuid, nano) for uuid, nano in db.execute_sql(sql, batch).fetchall() if nano is not None)
    return found


def recorded_events(projects: list[str] | None, since_nano: int, until_nano: int | None) -> list[EventRecord]:
    """Events of ``projects`` (None: every project) from ``since_nano`` to ``until_nano``
    (inclusive), in time order and, within one nanosecond, in the order they were recorded."""
    query = EventRecord.select().where(EventRecord.time_nano >= since_nano)
    if until_nano is not None:
        query = query.where(EventRecord.time_nano <= until_nano)
    if projects is not None:
        query = query.where(EventRecord.project.in_(projects))
    return list(query.order_by(EventRecord.time_nano, EventRecord.id))


def recorded_source_events(instance: str, projects: list[str] | None, after_nano: int) -> list[EventRecord]:
    """Events recorded under ``instance`` (the gateway's own: its name for them) after
    ``after_nano``, in order."""
    query = EventRecord.select().where(
        (EventRecord.instance == instance) & (EventRecord.time_nano > after_nano)
    )
    if projects is not None:
        query = query.where(EventRecord.project.in_(projects))
    return list(query.order_by(EventRecord.time_nano, EventRecord.id))


def purge_events(before_nano: int) -> int:
    return EventRecord.delete().where(EventRecord.time_nano < before_nano).execute()


# -- containers' notification facts ---------------------------------------------------------------


def note_container(
    container_id: str, project: str, user: str, name: str, image: str, instance: str, auto_remove: bool
) -> None:
    NotifiedContainer.insert(
        id=container_id,
        project=project,
        user=user,
        name=name,
        image=image,
        instance=instance,
        auto_remove=auto_remove,
    ).on_conflict(
        conflict_target=[NotifiedContainer.id],
        preserve=[
            NotifiedContainer.project,
            NotifiedContainer.user,
            NotifiedContainer.name,
            NotifiedContainer.image,
            NotifiedContainer.instance,
            NotifiedContainer.auto_remove,
        ],
    ).execute()


def noted_container(container_id: str) -> NotifiedContainer | None:
    return NotifiedContainer.get_or_none(NotifiedContainer.id == container_id)


def take_noted_container(container_id: str, *, auto_removed: bool = False) -> bool:
    """Forget the container's facts; True if this call did (of a gateway's DELETE and the
    daemon's own removal, only the first tells). ``auto_removed``: only a --rm container's."""
    query = NotifiedContainer.delete().where(NotifiedContainer.id == container_id)
    if auto_removed:
        query = query.where(NotifiedContainer.auto_remove == True)  # noqa: E712 (peewee expression)
    return bool(query.execute())


# -- marks ------------------------------------------------------------------------------------------


def read_mark(name: str) -> str:
    row = Mark.get_or_none(Mark.name == name)
    return row.value if row else ""


def write_mark(name: str, value: str) -> None:
    Mark.insert(name=name, value=value).on_conflict(
        conflict_target=[Mark.name], preserve=[Mark.value]
    ).execute()


def instance_of(row: peewee.Model) -> str:
    """The instance UUID a container, network or volume row names, without loading the row."""
    return str(row.__data__.get("instance") or "")


def time_nano(event: dict) -> int:
    """An event's time in nanoseconds, as dockerd stamps it (timeNano, else time)."""
    value = event.get("timeNano")
    if isinstance(value, int):
        return value
    seconds = event.get("time")
    return int(seconds) * 1_000_000_000 if isinstance(seconds, int | float) else 0


def encode(event: dict) -> str:
    return json.dumps(event, separators=(",", ":"), sort_keys=True)


def as_datetime(nano: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(nano / 1e9, _dt.UTC).replace(tzinfo=None)


class Lease:
    """One worker's claim on a lease, renewed every ``ttl / 3`` seconds rather than on every
    pass (each renewal is a write), and tried for by the others as often."""

    def __init__(self, name: str, holder: str, ttl: float):
        self.name, self.holder, self.ttl = name, holder, ttl
        self._checked = 0.0
        self._held = False
        _leases.append(self)

    def held(self) -> bool:
        now = time.monotonic()
        if now - self._checked >= self.ttl / 3:
            self._checked = now
            self._held = hold_lease(self.name, self.holder, self.ttl)
        return self._held

    def release(self) -> None:
        """Give the lease up now (a worker that stops), so that another takes it on its next
        try rather than after the ttl: the event recorder's lease is what the read cache waits
        for, and a restart otherwise left every read uncached for up to 15 s."""
        from gateway.store.models import PoolLease

        if self._held:
            PoolLease.delete().where(
                (PoolLease.name == self.name) & (PoolLease.holder == self.holder)
            ).execute()
            self._held = False


_leases: list[Lease] = []


def release_leases() -> None:
    """Give up every lease this process holds (gunicorn's worker_exit: gateway/server.py)."""
    for lease in _leases:
        lease.release()


def hold_lease(name: str, holder: str, ttl: float) -> bool:
    """Take or renew the lease ``name`` (a PoolLease row) for ``holder``; True while it holds.
    The same election as the reaper's (gateway/placement/reaper.py take_lease), for the
    notification sender and the event recorder, which live below placement."""
    from gateway.store.models import PoolLease

    now = utcnow()
    expires = now + _dt.timedelta(seconds=ttl)
    query = PoolLease.update(holder=holder, expires_at=expires).where(
        (PoolLease.name == name) & ((PoolLease.holder == holder) | (PoolLease.expires_at < now))
    )
    if query.execute():
        return True
    inserted = PoolLease.insert(name=name, holder=holder, expires_at=expires).on_conflict_ignore().execute()
    return bool(inserted) and PoolLease.get_by_id(name).holder == holder
