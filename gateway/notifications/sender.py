"""The sender: one elected worker (of every worker of every replica) hands the outbox to the
broker, in the order the notifications were queued, and runs the ``exists`` rounds.

Every gateway worker runs the loop; a lease row (``notifier``, the reaper's kind of election)
lets one act at a time, so two replicas never send one notification twice. A row leaves the
outbox only once oslo.messaging has handed it to the broker: a broker that is down, or a
gateway that restarts, loses nothing (a sender that dies between the broker's acceptance and the
row's deletion sends that one again: at least once).

oslo.messaging is imported here only, lazily, in the elected worker (it brings eventlet, which
this gevent process never uses). Its messaging drivers log a failed send instead of raising;
``_Failures`` catches that log record, so a failed send keeps its row and the loop backs off.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import secrets
import socket
import warnings

from gateway import instances, metrics, store
from gateway.agentclient import AgentClient
from gateway.notifications import payloads
from gateway.notifications.outbox import emit
from gateway.store import journal

log = logging.getLogger("moorage.notifications")

BATCH = 200
IDLE_SECONDS = 0.5
MAX_BACKOFF = 30.0
LEASE_SECONDS = 15.0
EXISTS_MARK = "exists_period_end"


class _Failures(logging.Handler):
    """Catches oslo.messaging's "could not send" records during one send (and keeps them,
    with their payloads, out of the gateway's log: the loop logs one line of its own)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.failed = ""

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            exc = record.exc_info[1] if record.exc_info else None
            self.failed = " ".join(str(exc or record.getMessage()).split())[:300]


class Broker:
    """oslo.messaging's Notifier for [notifications], made on first use."""

    def __init__(self, settings):
        self.settings = settings
        self._notifier = None
        self._failures = _Failures()

    def _make(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # eventlet's deprecation notice, on import
            import oslo_messaging
            from oslo_config import cfg
        conf = cfg.ConfigOpts()
        conf([], project="moorage", default_config_files=[], default_config_dirs=[])
        url = self.settings.transport_url or "fake://"  # the log driver needs no broker
        transport = oslo_messaging.get_notification_transport(conf, url=url)
        for name in ("oslo_messaging.notify.messaging", "oslo_messaging.notify.notifier"):
            logger = logging.getLogger(name)
            logger.addHandler(self._failures)
            logger.propagate = False
        return oslo_messaging.Notifier(
            transport,
            driver=self.settings.driver,
            topics=list(self.settings.topics) or ["notifications"],
            retry=0,  # fail at once when the broker is away: the row waits in the outbox
        )

    def send(self, row) -> str:
        """Hand one notification to the broker: "" when done, else why not."""
        if self._notifier is None:
            self._notifier = self._make()
        self._failures.failed = ""
        notifier = self._notifier.prepare(publisher_id=row.publisher)
        method = getattr(notifier, row.priority.lower(), notifier.info)
        method({}, row.event_type, row.payload)
        return self._failures.failed


def send_pending(broker: Broker) -> tuple[int, str]:
    """Send what the outbox holds, oldest first; (how many were sent, why it stopped early)."""
    rows = journal.pending_notifications(BATCH)
    store.release_connection()
    sent: list[int] = []
    failure = ""
    for row in rows:
        failure = broker.send(row)
        if failure:
            break
        sent.append(row.id)
    if sent:
        journal.sent_notifications(sent)
        metrics.NOTIFICATIONS_SENT.inc(len(sent))
    return len(sent), failure


# -- compute.container.exists ---------------------------------------------------------------------


def _daemon_states(settings) -> dict[str, tuple[str, dict]]:
    """container ID -> (state, its list entry), from every live instance's daemon."""
    states: dict[str, tuple[str, dict]] = {}
    for instance in instances.live_instances(settings, fresh=True):
        store.release_connection()
        try:
            status, listing = AgentClient(instance).get_json("/containers/json?all=1")
        except Exception:  # noqa: BLE001 (an instance away: its containers' state is unknown)
            continue
        if status == 200 and isinstance(listing, list):
            for entry in listing:
                states[str(entry.get("Id"))] = (str(entry.get("State", "")), entry)
    return states


def exists_round(settings, now: _dt.datetime | None = None) -> int:
    """One compute.container.exists per container the map holds, for the audit period since
    the last round's end; returns how many were queued."""
    now = now or store.utcnow()
    interval = settings.notifications.exists_interval
    last = journal.read_mark(EXISTS_MARK)
    beginning = _dt.datetime.fromisoformat(last) if last else now - _dt.timedelta(seconds=interval)
    states = _daemon_states(settings)
    noted = {n.id: n for n in journal.NotifiedContainer.select()}
    count = 0
    rows = store.Container.select().where(~store.Container.id.startswith(store.RESERVATION_PREFIX))
    for container in rows:
        state, entry = states.get(container.id, ("unknown", {}))
        since = max(beginning, container.created_at)
        # Running for the period (or since it was created in it): the daemon's list says
        # running now; a stopped container's running time in the period is not counted.
        uptime = max(0.0, (now - since).total_seconds()) if state == "running" else 0.0
        note = noted.get(container.id)
        emit(
            "compute.container.exists",
            payloads.versioned(
                "ContainerExistsPayload",
                project_id=container.project,
                user_id=note.user if note else "",
                container_id=container.id,
                name=container.name,
                image=(note.image if note else "") or entry.get("Image", ""),
                instance_uuid=journal.instance_of(container),
                audit_period_beginning=payloads.timestamp(beginning),
                audit_period_ending=payloads.timestamp(now),
                memory_bytes=container.memory,
                cpus=container.nano_cpus / 1e9,
                uptime_seconds=round(uptime, 3),
            ),
        )
        count += 1
    journal.write_mark(EXISTS_MARK, now.isoformat())
    return count


def exists_due(settings, now: _dt.datetime | None = None) -> bool:
    interval = settings.notifications.exists_interval
    if interval <= 0:
        return False
    last = journal.read_mark(EXISTS_MARK)
    if not last:
        journal.write_mark(EXISTS_MARK, (now or store.utcnow()).isoformat())  # the first period starts now
        return False
    return ((now or store.utcnow()) - _dt.datetime.fromisoformat(last)).total_seconds() >= interval


# -- the loop -------------------------------------------------------------------------------------

_sender = None


def start_sender(settings) -> None:
    """Run the sender in this worker (every worker does; one at a time acts, by lease)."""
    global _sender
    if _sender is not None or not settings.notifications.enabled:
        return
    import gevent

    holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    broker = Broker(settings.notifications)
    lease = journal.Lease("notifier", holder, LEASE_SECONDS)

    def loop() -> None:
        backoff = 0.0
        while True:
            pause = IDLE_SECONDS
            try:
                if lease.held():
                    if exists_due(settings):
                        exists_round(settings)
                    sent, failure = send_pending(broker)
                    if failure:
                        backoff = min(MAX_BACKOFF, backoff * 2 or 1.0)
                        pause = backoff
                        log.warning(
                            "the broker did not take a notification (%s); %d waiting, retrying in %g s",
                            failure,
                            journal.outbox_length(),
                            backoff,
                        )
                    else:
                        backoff = 0.0
                        if sent == BATCH:
                            pause = 0.0
            except Exception:  # the sender must outlive any one failure
                log.exception("notification sender pass failed")
                pause = max(pause, 2.0)
            finally:
                store.release_connection()
            gevent.sleep(pause)

    _sender = gevent.spawn(loop)
