"""What happened, told to OpenStack: notifications (oslo.messaging), CADF audit events, and the
durable per-project event journal behind ``docker events --since``.

- ``outbox``: every notification goes into the store first (``emit``), so that a broker that is
  down never fails or slows a request; ``sender`` delivers them from one elected worker;
- ``payloads``: the versioned payloads, in Nova's shape (``nova_object.name/.version/.data``);
- ``hooks``: what the instance pool calls when it boots or deletes an instance;
- ``own_events``: the gateway's own events (boots, deletions, claims, placements) in the
  project's journal, as Docker daemon events;
- ``webhooks``: projects' webhooks for notices, signed, queued and retried;
- ``audit``: CADF events for mutating requests and refusals (pycadf);
- ``recorder``: follows every instance's daemon events into the journal (one elected worker),
  and tells the delete of containers the daemon removes by itself (``--rm``);
- ``sender``: the elected loop that sends the outbox, the ``exists`` rounds, the journal's purge.

docs/notifications.md lists every notification and its fields.
"""

from gateway.notifications import outbox, own_events, webhooks
from gateway.notifications.hooks import instance_hook
from gateway.notifications.outbox import emit, enabled, publisher_id
from gateway.notifications.own_events import record as own_event


def configure(settings) -> None:
    """Take the gateway's [notifications], [events] and [notices] settings (gateway/app.py)."""
    outbox.configure(settings)
    own_events.configure(settings)
    webhooks.configure(settings)


__all__ = ["configure", "emit", "enabled", "instance_hook", "own_event", "publisher_id"]
