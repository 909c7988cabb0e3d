"""Each gateway worker's upkeep, in one greenlet beside its requests (started by
gateway/app.py when the worker runs under gevent, as `moorage serve` does):

- every ``[rate_limits] sync_interval``: the fair shares' exchange with the store
  (gateway/fairshare.py), two statements whatever the request rate;
- every ``[gateway] heartbeat_interval``: the instance gauges (instances by state, heartbeats
  missed per instance; gateway/instances.py publish_census), which agent heartbeats also
  count, so that they still move when every agent has gone silent;
- every minute: the worker's greenlets (gateway/metrics.py GREENLETS: a leak shows as a climb).
"""

from __future__ import annotations

import gc
import logging
import time

from gateway import instances, metrics, store

log = logging.getLogger("moorage.upkeep")

_running = None


# How often the greenlets are counted: the walk below holds the worker (no other greenlet runs)
# for tens of milliseconds on a busy worker's heap, up to 100 ms on a loaded machine (py-spy,
# bench/README.md), and a leak is a climb over minutes: once a minute.
GREENLET_CENSUS_EVERY = 60.0


def count_greenlets() -> int:
    """Greenlets alive in this process. gevent keeps no registry of them, so this walks the
    collector's objects, once every GREENLET_CENSUS_EVERY seconds."""
    from greenlet import greenlet

    return sum(1 for obj in gc.get_objects() if isinstance(obj, greenlet) and not obj.dead)


def start(settings, fairshare) -> None:
    """Start the upkeep in this worker, once; only under gevent's monkey-patching (a worker
    of `moorage serve`): elsewhere (tests, commands) nothing would run the greenlet."""
    global _running
    try:
        from gevent import monkey
    except ImportError:
        return
    if _running is not None or not monkey.is_module_patched("socket"):
        return
    import gevent

    share_every = max(0.1, settings.rate_limits.sync_interval)
    census_every = max(1.0, settings.gateway.heartbeat_interval)

    def loop() -> None:
        last_census = last_greenlets = 0.0
        while True:
            gevent.sleep(share_every)
            try:
                fairshare.exchange()
                if time.monotonic() - last_census >= census_every:
                    last_census = time.monotonic()
                    instances.publish_census(settings)
                if time.monotonic() - last_greenlets >= GREENLET_CENSUS_EVERY:
                    last_greenlets = time.monotonic()
                    metrics.GREENLETS.set(count_greenlets())
            except Exception:  # the upkeep outlives a store that is away for a while
                log.exception("upkeep pass failed (the store may be away); retrying")
            finally:
                store.release_connection()

    _running = gevent.spawn(loop)
