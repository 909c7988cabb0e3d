"""The agent API: what agents call on the gateway, under gateway/wire.py AGENTS_PATH on the
gateway's own listeners. Not part of the Docker API: no Keystone identity, each call
authenticated by the agent's own secret.

    POST /moorage/v1/agents                  register (operator's secret, or a pool's bootstrap secret)
    PUT  /moorage/v1/agents/{uuid}/heartbeat heartbeat (the secret issued at registration)
"""

from __future__ import annotations

import json

import falcon

from gateway import instances, metrics
from gateway.errors import DockerError
from gateway.placement import pool
from gateway.routing import Route
from gateway.services import spans
from gateway.wire import AGENT_SECRET_HEADER, BOOTSTRAP_SECRET_HEADER, REGISTRATION_SECRET_HEADER

BODY_LIMIT = 1 << 20


def _json_body(req: falcon.Request) -> dict:
    length = req.content_length or 0
    if length > BODY_LIMIT:
        raise DockerError(413, "registration body too large")
    try:
        data = json.loads(req.bounded_stream.read(BODY_LIMIT + 1) or b"{}")
    except ValueError as exc:
        raise DockerError(400, f"invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DockerError(400, "expected a JSON object")
    return data


def register(req: falcon.Request, resp: falcon.Response, settings, params: dict) -> None:
    bootstrap = req.get_header(BOOTSTRAP_SECRET_HEADER)
    if bootstrap:
        # An instance the pool booted: the secret names its server, whose UUID it registers under.
        data = _json_body(req)
        uuid, agent_secret = pool.bootstrap(bootstrap, data)
        resp.status = 201
        answer = {
            "agent_secret": agent_secret,
            "heartbeat_interval": settings.gateway.heartbeat_interval,
            "uuid": uuid,
        }
    else:
        presented = req.get_header(REGISTRATION_SECRET_HEADER) or ""
        previous = req.get_header(AGENT_SECRET_HEADER) or ""
        data = _json_body(req)
        created, agent_secret = instances.register(presented, data, settings, previous)
        uuid = str(data.get("uuid", "")).strip()
        resp.status = 201 if created else 200
        answer = {"agent_secret": agent_secret, "heartbeat_interval": settings.gateway.heartbeat_interval}
    # Its address between instances and that interface's MTU (spanning networks' peers, MTU).
    spans.record_underlay(str(uuid), data)
    # The segments of the spanning networks the instance carries, which the agent (re)applies:
    # after a restart of the agent, dockerd or the whole instance.
    answer["segments"] = spans.desired(str(uuid), settings) if uuid else []
    resp.content_type = "application/json"
    resp.media = answer


def heartbeat(req: falcon.Request, resp: falcon.Response, settings, params: dict) -> None:
    presented = req.get_header(AGENT_SECRET_HEADER) or ""
    try:
        instances.heartbeat(params["uuid"], presented, _json_body(req), settings)
    except DockerError:
        metrics.HEARTBEATS.labels("refused").inc()
        raise
    metrics.HEARTBEATS.labels("ok").inc()
    # The instance gauges are counted on a heartbeat, rather than on any request (and by each
    # worker's upkeep, gateway/upkeep.py, for when every agent is silent); at most once a
    # heartbeat interval per worker: a census reads every instance, and a census per heartbeat
    # cost N² a interval (bench/scale: half a worker at 1,000 instances, registrations stalled).
    _census.get(
        lambda: instances.publish_census(settings), seconds=max(1.0, settings.gateway.heartbeat_interval)
    )
    resp.status = 204


_census: instances.Kept[None] = instances.Kept(1.0)  # this worker's last count of the instance gauges


ROUTES = [
    Route("POST", "", "AgentRegister", register),
    Route("PUT", "/{uuid}/heartbeat", "AgentHeartbeat", heartbeat),
]
