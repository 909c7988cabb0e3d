"""What happened, told to OpenStack: notifications (oslo.messaging), CADF audit events, and the
durable per-project event journal behind ``docker events --since``.

- ``outbox``: every notification goes into the store first (``emit``), so that a broker that is
  down never fails or slows a request; ``sender`` delivers them from one elected worker;
- ``payloads``: the versioned payloads, in Nova's shape (``nova_object.name/.version/.data``);
- ``hooks``: what the instance pool calls when it boots or deletes an instance;
- ``audit``: CADF events for mutating requests and refusals (pycadf);
- ``recorder``: follows every instance's daemon events into the journal (one elected worker),
  and tells the delete of containers the daemon removes by itself (``--rm``);
- ``sender``: the elected loop that sends the outbox, the ``exists`` rounds, the journal's purge.

docs/notifications.md lists every notification and its fields.
"""

from gateway.notifications.hooks import instance_hook
from gateway.notifications.outbox import configure, emit, enabled, publisher_id

__all__ = ["configure", "emit", "enabled", "instance_hook", "publisher_id"]
