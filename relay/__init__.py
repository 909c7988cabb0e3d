"""relay: Moorage's one streaming engine.

Every byte Moorage moves between a client and a daemon goes through here: request bodies
(build contexts, image loads, archives) are piped upstream as they arrive, response bodies
(logs, events, stats, exports, progress) are piped back as they arrive, and hijacked
connections (attach, exec) are spliced both ways with half-close. Nothing is read whole:
every loop moves at most one buffer before it waits for the other side, which is the
backpressure. Connections are kept between requests (``pool``), with each body's end found by
following its framing (``framing``).
"""

from relay.pump import splice
from relay.upstream import Endpoint, Framed, UpstreamError, UpstreamResponse, request

__all__ = ["Endpoint", "Framed", "UpstreamError", "UpstreamResponse", "request", "splice"]
