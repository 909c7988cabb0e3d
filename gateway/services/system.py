"""System: version and info over the live instances, the caller's disk usage and events."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from gateway import instances, quotas
from gateway.context import Context
from gateway.forward import call, check_agent, forward, raise_for, respond, send
from gateway.notifications import own_events, recorder
from gateway.placement import dedicated
from gateway.services import event_replay, images
from gateway.services.common import (
    every_instance,
    fanout,
    hide_project_label,
    home_instance,
    owned,
    parse_filters,
    with_query,
)
from gateway.services.events import OwnEventsTail, tenant_events
from gateway.tenancy import PROJECT_LABEL, scope

# dockerd's /version answer changes only with its binary and the kernel under it: each worker
# keeps it per instance for VERSION_TTL seconds, while the daemon version the instance's
# heartbeats report stays the same, so that `docker version` (which compose, buildx and the
# SDKs ask first) costs no round trip to the instance. A daemon upgraded in place shows at its
# next heartbeat.
VERSION_TTL = 30.0
_versions: dict[str, tuple[float, str, str]] = {}  # instance UUID -> (when, daemon version, answer)


def version(ctx: Context) -> None:
    instance = home_instance(ctx)
    kept = _versions.get(instance.uuid)
    now = time.monotonic()
    if kept is not None and now - kept[0] < VERSION_TTL and kept[1] == instance.daemon_version:
        payload = json.loads(kept[2])
    else:
        status, payload = call(ctx, instance, "GET", "/version")
        raise_for(status, payload)
        if instance.daemon_version and payload.get("Version") == instance.daemon_version:
            _versions[instance.uuid] = (now, instance.daemon_version, json.dumps(payload))
    maximum, minimum = ctx.gw.api_range()
    payload["ApiVersion"], payload["MinAPIVersion"] = maximum, minimum
    for component in payload.get("Components") or []:
        details = component.get("Details")
        if component.get("Name") == "Engine" and isinstance(details, dict):
            details["ApiVersion"], details["MinAPIVersion"] = maximum, minimum
    ctx.answer_json(payload)


def auth(ctx: Context, body: bytes) -> None:
    """`docker login`: the home daemon checks the credentials with the registry."""
    forward(ctx, home_instance(ctx), body=body)


def _my_containers(ctx: Context) -> list[dict]:
    label = PROJECT_LABEL if ctx.all_projects else f"{PROJECT_LABEL}={ctx.project}"
    query = urlencode({"all": "1", "filters": json.dumps({"label": [label]})})
    return [c for _, payload in every_instance(ctx, "GET", "/containers/json", query) for c in payload]


def info(ctx: Context) -> None:
    """The home daemon's answer, with the caller's counts, and the capacity of the instances
    the caller's daemon is made of added up (as Swarm classic presented a cluster): with
    dedicated tenancy the project's own instances (no other project's container runs on the
    others; a project that owns none yet sees its home daemon's own figures), else, and in
    the admin view, every live instance. Added up by the store (instances.capacity), so its
    cost does not grow with the instances the caller does not use."""
    home = home_instance(ctx)
    status, payload = call(ctx, home, "GET", "/info")
    raise_for(status, payload)
    mine = _my_containers(ctx)
    states = [c.get("State") for c in mine]
    payload["Containers"] = len(mine)
    payload["ContainersRunning"] = states.count("running")
    payload["ContainersPaused"] = states.count("paused")
    payload["ContainersStopped"] = len(mine) - payload["ContainersRunning"] - payload["ContainersPaused"]
    payload["Images"] = images.visible_count(ctx)
    own = dedicated(ctx.settings) and not ctx.all_projects
    ncpu, memory = instances.capacity(ctx.settings, ctx.project if own else None)
    payload["NCPU"] = ncpu or payload.get("NCPU")
    payload["MemTotal"] = memory or payload.get("MemTotal")
    add_quota_labels(ctx, payload)
    ctx.answer_json(payload)


def add_quota_labels(ctx: Context, payload: dict) -> None:
    """The project's quotas as `docker info` prints them, under Labels:
    `moorage.quota.containers=3/5` (in use / limit), one per resource."""
    if isinstance(payload, dict) and ctx.project:
        payload["Labels"] = list(payload.get("Labels") or []) + quotas.info_labels(ctx.project, ctx.settings)


def data_usage(ctx: Context) -> None:
    """`docker system df`: the caller's containers, volumes and images, over every instance."""
    # The builder's cache is the daemon's, shared by every project: none of it is shown.
    merged = {
        "LayersSize": 0,
        "Images": [],
        "Containers": [],
        "Volumes": [],
        "BuildCache": None,
        "BuilderSize": 0,
    }
    for _, payload in every_instance(ctx, "GET", "/system/df", ctx.req.query_string):
        for kind in ("Containers", "Volumes"):
            for item in payload.get(kind) or []:
                if owned(ctx, item.get("Labels")):
                    hide_project_label(item.get("Labels"), ctx)
                    merged[kind].append(scope.strip_names(ctx.project, item))
        seen = {image.get("Id") for image in merged["Images"]}
        for image in images.visible_in_df(ctx, payload.get("Images") or []):
            if image.get("Id") not in seen:
                merged["Images"].append(image)
                merged["LayersSize"] += image.get("Size") or 0
    ctx.answer_json(merged)


def events(ctx: Context) -> None:
    """Every live instance's events, merged into one stream, with only the caller's in it."""
    if parse_filters(ctx) is None:
        forward(ctx, home_instance(ctx))  # filters dockerd cannot parse either: its own error
        return
    live = fanout(ctx)
    now = time.time_ns()
    since = event_replay.parse_time(ctx.query("since"), now)
    until = event_replay.parse_time(ctx.query("until"), now)
    replayed, newest = [], {}
    if since is not None and ctx.settings.events.retention > 0:
        # What no daemon may hold any more, from the journal; each daemon then from just after.
        replayed, newest = event_replay.replay(ctx.project, ctx.all_projects, since, until)
    if not live and not replayed:
        home_instance(ctx)  # the 503 that says so
    if until is not None and until < now:
        # A window wholly in the past: each daemon is asked only for what follows its replay.
        live = [i for i in live if newest.get(i.uuid, -1) < until]
    streams = []
    try:
        for instance in live:
            query = None
            if instance.uuid in newest:
                query = with_query(ctx, since=recorder.since_query(newest[instance.uuid] + 1))
            upstream = send(ctx, instance, path="/events", query=query)
            check_agent(instance, upstream)
            if upstream.status != 200:
                respond(ctx, instance, upstream)  # dockerd's own error (bad since/until, ...)
                return
            streams.append(upstream)
    except BaseException:
        for upstream in streams:
            upstream.close()
        raise
    if ctx.settings.events.retention > 0 and (until is None or until >= now):
        # The gateway's own events to come (and any recorded since the replay was read).
        after = newest.get(own_events.SOURCE, since - 1) if since is not None else now
        streams.append(OwnEventsTail(ctx.project, ctx.all_projects, after, until, parse_filters(ctx) or {}))
    ctx.resp.status = 200
    ctx.resp.content_type = "application/json"
    bounded = bool(ctx.query("until"))
    ctx.resp.stream = tenant_events(
        ctx, streams, ordered=bounded, replayed=replayed, filters=parse_filters(ctx) or {}
    )
