"""The one client of an instance's agent: every request the gateway, the pool, the reaper and
the operator's CLI send to an instance goes through ``AgentClient(instance)``.

The agent accepts only requests that carry the secret the gateway issued it at registration
(gateway/wire.py AGENT_SECRET_HEADER); this is the one place that presents it. Requests made on
behalf of a client's request (streamed bodies, hijacks) build on ``send`` in gateway/forward.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from gateway import store
from gateway.wire import AGENT_SECRET_HEADER
from relay import UpstreamError, UpstreamResponse, request
from relay.upstream import Endpoint

__all__ = ["AgentClient", "UpstreamError"]


class AgentClient:
    """Requests to one instance's agent (and through it, its dockerd)."""

    def __init__(self, instance: store.Instance):
        self.instance = instance

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint.parse(self.instance.agent_url)

    def credentials(self) -> list[tuple[str, str]]:
        return [(AGENT_SECRET_HEADER, self.instance.agent_secret)]

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
        Raises relay.UpstreamError when the agent cannot be reached."""
        return request(
            self.endpoint,
            method,
            target,
            [*(headers or []), *self.credentials()],
            body,
            content_length=content_length,
            connect_timeout=connect_timeout,
            timeout=timeout,
        )

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
