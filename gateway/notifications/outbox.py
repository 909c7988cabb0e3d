"""Queueing a notification: one row in the store's outbox (gateway/store/journal.py).

A request only writes a row (a local database write, as every request does); the broker is the
sender's business (gateway/notifications/sender.py). When ``[notifications] outbox_limit``
notifications are waiting (the broker has been away for long), new ones are dropped, counted
(moorage_notifications_dropped_total) and logged once a minute, so the store cannot fill up.
"""

from __future__ import annotations

import logging
import socket
import time

from gateway import metrics
from gateway.config import NotificationsSettings
from gateway.store import journal

log = logging.getLogger("moorage.notifications")

_settings = NotificationsSettings(driver="noop")
_last_drop_log = 0.0


def configure(settings) -> None:
    """Take the gateway's [notifications] settings (gateway/app.py, moorage commands)."""
    global _settings
    _settings = settings.notifications


def settings() -> NotificationsSettings:
    return _settings


def enabled() -> bool:
    return _settings.enabled


def publisher_id() -> str:
    return f"moorage:{socket.gethostname()}"


def emit(event_type: str, payload: dict, priority: str = "INFO") -> None:
    """Queue one notification. Never raises: a notification is never worth a failed request."""
    global _last_drop_log
    if not _settings.enabled:
        return
    try:
        queued = journal.enqueue_notification(
            event_type, priority, payload, publisher_id(), _settings.outbox_limit
        )
    except Exception:  # the store's trouble shows on the request itself
        log.exception("could not queue notification %s", event_type)
        queued = False
    if not queued:
        metrics.NOTIFICATIONS_DROPPED.inc()
        now = time.monotonic()
        if now - _last_drop_log > 60:
            _last_drop_log = now
            log.warning(
                "notification outbox full (%d waiting, [notifications] outbox_limit): dropping %s; "
                "is the broker at %s reachable?",
                _settings.outbox_limit,
                event_type,
                _settings.transport_url.split("@")[-1] or "(none)",
            )
