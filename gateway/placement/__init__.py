"""Placement: which instance runs a new container.

A request is placed by a strategy (fill in order, or spread) over the instances that pass
every filter (live, not draining, has room, the pinned instance when one is named). The
decision and a reservation row are written in one transaction, so concurrent creates never
overfill an instance; the reservation becomes the container's row once the daemon answers.
When no instance has room and the pool's provider can add one (nova), `place` grows the
pool first (gateway/placement/pool.py).
"""

from gateway.placement.pool import place
from gateway.placement.scheduler import (
    PIN_LABEL,
    Placement,
    PlacementRequest,
    dedicated,
    release,
)

__all__ = ["PIN_LABEL", "Placement", "PlacementRequest", "dedicated", "place", "release"]
