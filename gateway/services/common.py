"""What the services share: the home instance, every instance's answer, query rewriting."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import gevent

from gateway import instances, store
from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import call, forward, raise_for
from gateway.tenancy import PROJECT_LABEL


def home_instance(ctx: Context) -> store.Instance:
    """Where requests about objects not yet tracked per instance go: the first live instance
    that is not draining."""
    live = [i for i in instances.live_instances(ctx.settings) if i.state == store.INSTANCE_UP]  # not draining
    if not live:
        raise DockerError(
            503,
            "no instance is available: no agent is registered and answering; "
            "ask the operator to check `moorage instances list`",
        )
    return live[0]


def every_instance(ctx: Context, method: str, path: str, query: str = ""):
    """(instance, answer) from each live instance, in fill order: what the merged views
    (lists, prunes, df) are made of. A daemon's error is the client's error (the first one
    in fill order). Reads (GET) ask every instance at once, so a list over N instances takes
    about as long as the slowest one, not the sum; anything else goes one instance after
    another and stops at the first error."""
    live = instances.live_instances(ctx.settings)
    if method != "GET" or len(live) < 2:
        for instance in live:
            status, payload = call(ctx, instance, method, path, query=query)
            raise_for(status, payload)
            yield instance, payload
        return

    def ask(instance: store.Instance):
        try:
            return call(ctx, instance, method, path, query=query), None
        except Exception as exc:  # noqa: BLE001 - raised in fill order below, not in the greenlet
            return None, exc

    jobs = [gevent.spawn(ask, instance) for instance in live]
    try:
        for instance, job in zip(live, jobs, strict=True):
            answer, error = job.get()
            if error is not None:
                raise error
            status, payload = answer
            raise_for(status, payload)
            yield instance, payload
    finally:
        gevent.killall([job for job in jobs if not job.ready()], block=False)


def with_query(ctx: Context, **changes: str | None) -> str:
    """The client's query string with some parameters replaced (None removes one)."""
    pairs = [(k, v) for k, v in parse_qsl(ctx.req.query_string, keep_blank_values=True) if k not in changes]
    pairs += [(k, v) for k, v in changes.items() if v is not None]
    return urlencode(pairs)


def hide_project_label(labels: dict | None, ctx: Context | None = None) -> None:
    """The project label is Moorage's bookkeeping, not the tenant's: answers leave it out
    (the admin view keeps it: it says whose each object is)."""
    if isinstance(labels, dict) and not (ctx is not None and ctx.all_projects):
        labels.pop(PROJECT_LABEL, None)


def to_home(ctx: Context) -> None:
    """The request as the client sent it, to the home instance, and its answer back."""
    forward(ctx, home_instance(ctx))
