"""The read cache: ``ps`` and ``inspect`` answered from a daemon's answer of a moment ago,
without the round trip through the agent, while nothing can have changed it.

What is kept is the daemon's own answer, before the tenant's rewrite and the translation to the
client's API version, which run on it as on a fresh one (so the answers are the same). An
answer is used only while

- its instance's generation (gateway/generations.py) is the one read before it was asked for:
  every request the gateway sends that instance other than a read, and every event its daemon
  reports, changes it, so a read after a write through any worker asks the daemon again;
- the instance's event follower is connected (else a container that exits by itself would go
  unseen), which ``generations.current`` says (the recorder runs while ``[events] retention`` is
  above 0, the default, or notifications are on; without it nothing is cached);
- it is younger than MAX_AGE: what changes with no event and no request (the "Up 3 seconds"
  of ``ps``) is never older than that.

Answers that change without an event are never kept: sizes (``size=1``: the container's
writes), and an inspect that carries a health check's log (each probe appends to it).
Each worker keeps its own answers; the generations are shared. Off with ``[gateway]
read_cache = false`` and with the PostgreSQL store (another replica's writes are unseen).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl

from gateway import generations, jsonbody, replay, store
from gateway.budgeted import Budgeted
from gateway.context import Context
from gateway.forward import call as daemon_call
from gateway.forward import daemon_version

MAX_AGE = 0.5  # seconds
MAX_ENTRIES = 512
MAX_BYTES = 1 << 20  # a larger answer is asked for every time
BUDGET = 32 << 20  # bytes of answers one worker keeps at most
_FALSE = ("", "0", "false", "none")  # dockerd's false for a boolean query parameter

# (instance, operation, client version, daemon version, path, query) -> (generation, asked at,
# the answer's JSON)
_answers: Budgeted[tuple[int, float, bytes]] = Budgeted(MAX_ENTRIES, BUDGET, lambda entry: len(entry[2]))


def _sized(query: str) -> bool:
    if "size" not in query and "%" not in query:  # most reads: no parse (3% of a ps's CPU)
        return False
    return any(k == "size" and v.lower() not in _FALSE for k, v in parse_qsl(query, keep_blank_values=True))


def call(
    ctx: Context, instance: store.Instance, method: str, path: str, *, query: str = ""
) -> tuple[int, Any]:
    """forward.call for a GET of ps or inspect, answered from the cache when it may be."""
    generation = generations.current(instance.uuid) if method == "GET" else None
    if generation is None or not ctx.settings.gateway.read_cache or _sized(query):
        replay.spoil()  # an answer made of this read is not replayed either (gateway/replay.py)
        return daemon_call(ctx, instance, method, path, query=query)
    spoken = daemon_version(ctx, instance)  # noted for the answer's translation, as a call does
    key = (instance.uuid, ctx.route.operation, ctx.version, spoken, path, query)
    asked = time.monotonic()
    kept = _answers.get(key)
    if kept is not None and kept[0] == generation and asked - kept[1] < MAX_AGE:
        replay.daemon_read(instance.uuid, generation, kept[1] + MAX_AGE)
        return 200, jsonbody.decode(kept[2])
    status, payload = daemon_call(ctx, instance, method, path, query=query)
    if status == 200 and _keepable(payload):
        answer = jsonbody.encode(payload)
        if len(answer) <= MAX_BYTES:
            _answers.keep(key, (generation, asked, answer))
        replay.read_cache_asked()
        replay.daemon_read(instance.uuid, generation, asked + MAX_AGE)
    else:
        replay.spoil()
    return status, payload


def _keepable(payload: Any) -> bool:
    if isinstance(payload, list):
        return True
    return isinstance(payload, dict) and not (payload.get("State") or {}).get("Health")


def clear() -> None:
    _answers.clear()
