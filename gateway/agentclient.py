"""The one client of an instance's agent: every request the gateway, the pool, the reaper and
the operator's CLI send to an instance goes through ``AgentClient(instance)``.

The agent accepts only requests that carry the secret the gateway issued it at registration
(gateway/wire.py AGENT_SECRET_HEADER); this is the one place that presents it. Requests made on
behalf of a client's request (streamed bodies, hijacks) build on ``send`` in gateway/forward.py.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import Any

from gateway import generations, logs, replay, store
from gateway.wire import AGENT_SECRET_HEADER, REQUEST_ID_HEADER
from relay import UpstreamError, UpstreamResponse, request
from relay.pool import Pool
from relay.upstream import Endpoint

__all__ = ["AGENT_CONNECTIONS", "AgentClient", "UpstreamError"]

# The connections this process keeps to the agents between requests (relay/pool.py says why).
AGENT_CONNECTIONS = Pool()


@functools.lru_cache(maxsize=4096)
def _endpoint(url: str) -> Endpoint:
    return Endpoint.parse(url)


class AgentClient:
    """Requests to one instance's agent (and through it, its dockerd)."""

    def __init__(self, instance: store.Instance):
        self.instance = instance

    @property
    def endpoint(self) -> Endpoint:
        return _endpoint(self.instance.agent_url)

    def credentials(self) -> list[tuple[str, str]]:
        return [(AGENT_SECRET_HEADER, self.instance.agent_secret)]

    @staticmethod
    def request_id() -> list[tuple[str, str]]:
        """The ID of the client's request this call serves (gateway/logs.py), so the agent's
        log and the gateway's name the same request; none for calls of no request's."""
        rid = logs.request_id()
        return [(REQUEST_ID_HEADER, rid)] if rid else []

    def send(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | Iterable[bytes] | None = None,
        *,
        content_length: int | None = None,
        connect_timeout: float = 3.0,
        timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send one request; the response head comes back, its body left to the caller.
        Raises relay.UpstreamError when the agent cannot be reached.

        Anything but a read changes the instance's generation (gateway/generations.py) before
        it is sent and once its answer's head is back (or it failed), so that no read cached
        before the daemon acted is used after: the gateway's reads see its writes."""
        writes = method not in ("GET", "HEAD")
        if writes:
            generations.bump(self.instance.uuid)
        # No pooled PostgreSQL connection is held while a daemon answers (a create, a pull, a
        # stream for as long as it lasts): the request checks one out again for its next
        # statement, without a round trip (gateway/store/db.py PooledStore). Under 200
        # concurrent creates a worker's 20 connections were otherwise held through their
        # forwards, and the other requests' first statements queued for them.
        store.release_connection()
        replay.agent_called()  # an answer made of a call the read cache did not cover never replays
        try:
            return request(
                self.endpoint,
                method,
                target,
                [*(headers or []), *self.credentials(), *self.request_id()],
                body,
                content_length=content_length,
                connect_timeout=connect_timeout,
                timeout=timeout,
                pool=AGENT_CONNECTIONS,
            )
        finally:
            if writes:
                generations.bump(self.instance.uuid)

    def get_json(self, target: str, *, connect_timeout: float = 3.0, timeout: float = 15) -> tuple[int, Any]:
        """(status, parsed body) of a GET whose answer is small JSON."""
        return self.call_json("GET", target, connect_timeout=connect_timeout, timeout=timeout)

    def call_json(
        self, method: str, target: str, *, connect_timeout: float = 3.0, timeout: float = 15
    ) -> tuple[int, Any]:
        """(status, parsed body) of a request without a body whose answer is small JSON."""
        upstream = self.send(method, target, connect_timeout=connect_timeout, timeout=timeout)
        raw = upstream.read()
        try:
            return upstream.status, json.loads(raw) if raw else None
        except ValueError:
            return upstream.status, raw.decode(errors="replace")
