"""What the services share: the home instance, every instance's answer for the merged views,
the project's filters and labels, and streams passed through with the tenant's names."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode

import gevent

from gateway import instances, jsonbody, store
from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import call, forward, raise_for
from gateway.placement import PlacementRequest, dedicated, place
from gateway.tenancy import PROJECT_LABEL, names
from gateway.tenancy.trusts import Delegation
from gateway.wire import TOKEN_HEADER


def home_instance(ctx: Context, *, claim: bool = False) -> store.Instance:
    """Where requests about no particular object go (version, info, a body only dockerd can
    judge, a build or pull): the first live instance that is up, in fill order. With dedicated
    tenancy, the project's own first; ``claim`` (the request leaves something on the daemon:
    a build, pull, load or import) makes one the project's when it has none, as its first
    container would."""
    if dedicated(ctx.settings) and not ctx.all_projects:
        own = [
            i for i in instances.project_instances(ctx.settings, ctx.project) if i.state == store.INSTANCE_UP
        ]
        if own:
            return own[0]
        if claim:
            return new_object_instance(ctx)
    live = [i for i in instances.live_instances(ctx.settings) if i.state == store.INSTANCE_UP]  # not draining
    if not live:
        raise DockerError(
            503,
            "no instance is available: no agent is registered and answering; "
            "ask the operator to check `moorage instances list`",
        )
    return live[0]


def fanout(ctx: Context) -> list[store.Instance]:
    """The live instances a merged view asks, in fill order: every one; with dedicated tenancy
    the project's own only (the first live one when it has none yet: what every project sees
    there, such as the public images, is the same everywhere), so that no other project's
    instance, nor its agent, has a say in the project's lists and events."""
    if dedicated(ctx.settings) and not ctx.all_projects:
        own = instances.project_instances(ctx.settings, ctx.project)
        return own or instances.live_instances(ctx.settings)[:1]
    return instances.live_instances(ctx.settings)


def every_instance(ctx: Context, method: str, path: str, query: str = "", *, ask: Callable | None = None):
    """(instance, answer) from each live instance, in fill order: what the merged views
    (lists, prunes, df) are made of. A daemon's error is the client's error (the first one
    in fill order). Reads (GET) ask every instance at once, so a list over N instances takes
    about as long as the slowest one, not the sum; anything else goes one instance after
    another and stops at the first error. Which instances: ``fanout``; ``ask``: forward.call,
    or one like it (gateway/services/readcache.py)."""
    ask = ask or call
    live = fanout(ctx)
    if method != "GET" or len(live) < 2:
        for instance in live:
            status, payload = ask(ctx, instance, method, path, query=query)
            raise_for(status, payload)
            yield instance, payload
        return

    def asked(instance: store.Instance):
        try:
            return ask(ctx, instance, method, path, query=query), None
        except Exception as exc:  # noqa: BLE001 - raised in fill order below, not in the greenlet
            return None, exc

    jobs = [gevent.spawn(asked, instance) for instance in live]
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


def owned(ctx: Context, labels: dict | None) -> bool:
    """Whether an object with these labels is the caller's (any project's, in the admin view)."""
    labels = labels or {}
    return PROJECT_LABEL in labels if ctx.all_projects else labels.get(PROJECT_LABEL) == ctx.project


def with_query(ctx: Context, **changes: str | None) -> str:
    """The client's query string with some parameters replaced (None removes one)."""
    pairs = [(k, v) for k, v in parse_qsl(ctx.req.query_string, keep_blank_values=True) if k not in changes]
    pairs += [(k, v) for k, v in changes.items() if v is not None]
    return urlencode(pairs)


def parse_filters(ctx: Context) -> dict | None:
    """The client's filters, or None when they are not a JSON object (dockerd then answers)."""
    raw = ctx.query("filters")
    if not raw:
        return {}
    try:
        filters = json.loads(raw)
    except RecursionError:
        # Python's decoder gives up on nesting Go's reads (and refuses); nothing sane is
        # this deep, so it is the client's to fix.
        raise DockerError(
            400, "invalid filters: nested too deeply to be read as JSON; send flatter filters"
        ) from None
    except ValueError:
        return None
    if filters is None:
        return {}  # JSON null: Go reads it as no filters, and so must we (the label still applies)
    return filters if isinstance(filters, dict) else None


def add_filter(filters: dict, key: str, value: str) -> dict:
    """Add one value to a filter, in whichever of its two wire forms the client used."""
    out = dict(filters)
    current = out.get(key)
    if isinstance(current, dict):
        out[key] = {**current, value: True}
    elif isinstance(current, list):
        out[key] = [*current, value]
    elif any(isinstance(v, dict) for v in out.values()):
        # dockerd parses one form per request: {"k": {"v": true}} (current) or {"k": ["v"]}
        # (legacy); never mix them.
        out[key] = {value: True}
    else:
        out[key] = [value]
    return out


def project_label_filter(ctx: Context, filters: dict | None = None) -> str | None:
    """The client's filters (or ``filters``) plus 'only this project's objects', as a filters
    JSON value; None when the client's filters cannot be parsed (forward them: dockerd says
    why). The admin view asks for every project's objects that carry a project at all."""
    filters = parse_filters(ctx) if filters is None else filters
    if filters is None:
        return None
    return jsonbody.encode(
        add_filter(filters, "label", PROJECT_LABEL if ctx.all_projects else f"{PROJECT_LABEL}={ctx.project}")
    ).decode()


def take_filter(filters: dict, key: str) -> tuple[dict, list[str]]:
    """(the filters without ``key``, its values), in either of its two wire forms."""
    rest = {k: v for k, v in filters.items() if k != key}
    values = filters.get(key)
    if isinstance(values, dict):
        return rest, [str(v) for v, on in values.items() if on]
    if isinstance(values, list):
        return rest, [str(v) for v in values]
    return rest, []


def hide_project_label(labels: dict | None, ctx: Context | None = None) -> None:
    """The project label is Moorage's bookkeeping, not the tenant's: answers leave it out
    (the admin view keeps it: it says whose each object is)."""
    if isinstance(labels, dict) and not (ctx is not None and ctx.all_projects):
        labels.pop(PROJECT_LABEL, None)


def new_object_instance(ctx: Context) -> store.Instance:
    """Where a new network or volume goes: where the scheduler would put the next container
    (its containers are then placed with it). The slot is only asked about, not kept."""
    request = PlacementRequest(ctx.project, "", {}, probe=True, delegation=delegation(ctx))
    return place(request, ctx.settings).instance


def delegation(ctx: Context) -> Delegation | None:
    """The caller's Keystone token and who it is, for placement: a boot in the caller's own
    project (nova, dedicated tenancy) makes the project's trust from it when none is kept.
    None without Keystone (the embedded backend's tokens are no Keystone credentials)."""
    identity = ctx.identity
    token = (ctx.req.get_header(TOKEN_HEADER) or "").strip()
    if ctx.settings.identity.backend != "keystone" or identity is None or not token:
        return None
    return Delegation(
        token=token,
        user_id=identity.user_id,
        project_id=identity.project_id,
        user_name=identity.user_name,
        project_name=identity.project_name,
    )


def names_stripped(chunks, project: str):
    """A line-delimited JSON stream (stats) with the project's daemon names turned back into
    its own, one line at a time, so every other byte is dockerd's own."""
    end = names.suffix(project).encode()
    pending = b""
    for chunk in chunks:
        if not chunk:
            yield chunk  # the "send the head now" flush (gateway.forward): never hold it
            continue
        pending += chunk
        if b"\n" not in pending:
            if len(pending) > 1 << 20:  # not line-delimited after all: pass it on
                yield pending.replace(end, b"")
                pending = b""
            continue
        complete, _, pending = pending.rpartition(b"\n")
        yield complete.replace(end, b"") + b"\n"
    if pending:
        yield pending.replace(end, b"")


def on_finish(chunks, callback: Callable[[], None]):
    """Pass a response stream through, and run ``callback`` once it has been fully sent."""
    yield from chunks
    callback()


def to_home(ctx: Context) -> None:
    """The request as the client sent it, to the home instance, and its answer back."""
    forward(ctx, home_instance(ctx))


INT64 = (-(2**63), 2**63 - 1)
_DECODER = json.JSONDecoder()


def odd_numbers(body: object) -> bool:
    """Whether ``body`` holds a number no field of a Docker create body can take as written:
    a fraction or an exponent (Go's decoder refuses 1e9 for an int64), or an integer beyond
    64 bits. Such a body must never reach the gateway's arithmetic or its store."""
    stack = [body]
    while stack:
        value = stack.pop()
        if isinstance(value, float):
            return True
        if isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]:
            return True
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def not_objects(body: dict, keys: tuple[str, ...]) -> bool:
    """Whether one of ``keys`` holds something other than a JSON object (or null)."""
    return any(body.get(key) is not None and not isinstance(body.get(key), dict) for key in keys)


def daemon_judges(
    ctx: Context, raw: bytes, path: str, *, query: str = "", invalid_name: str | None = None
) -> DockerError:
    """The refusal for a body the gateway cannot interpret, in the daemon's own words.

    The body goes to the project's home instance as a create that cannot succeed: with an
    invalid ``name`` query (containers), or with an invalid ``Name`` appended (networks,
    volumes: Go's decoder keeps the last of repeated keys), so the daemon decodes it exactly
    as written and creates nothing. Its decoder's refusal ("json: cannot unmarshal ...")
    comes back as a 400, as current dockerd answers it (20.10 says 500 for containers); a body
    it decodes gets the gateway's own 400."""
    text = raw.decode("utf-8", errors="replace")
    start = len(text) - len(text.lstrip(" \t\r\n"))
    if invalid_name is not None:
        obj, end = _DECODER.raw_decode(text, start)
        head = text[start : end - 1].rstrip()
        text = head + ("," if obj else "") + json.dumps({"Name": invalid_name}, separators=(",", ":"))[1:]
    status, payload = call(ctx, home_instance(ctx), "POST", path, query=query, body=text.encode())
    message = payload.get("message") if isinstance(payload, dict) else None
    if status >= 400 and isinstance(message, str) and message.startswith("json: "):
        return DockerError(status, message)
    return DockerError(
        400,
        "the request body holds a value the gateway cannot interpret (a number that is no 64-bit "
        "integer, or a field of the wrong type); correct the request",
    )
