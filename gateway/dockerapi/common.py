"""What the resource families share: the home instance, JSON bodies, project filters."""

from __future__ import annotations

import json
from collections.abc import Callable

from gateway import store
from gateway.context import Context
from gateway.errors import DockerError

# The route modules reach these through here; they live in the service layer, which shares them.
from gateway.services.common import every_instance, hide_project_label, home_instance, with_query  # noqa: F401
from gateway.tenancy import PROJECT_LABEL, names

JSON_BODY_LIMIT = 10 * 1024 * 1024
_JSON = json.JSONDecoder()


def owned(ctx: Context, labels: dict | None) -> bool:
    """Whether an object with these labels is the caller's (any project's, in the admin view)."""
    labels = labels or {}
    return PROJECT_LABEL in labels if ctx.all_projects else labels.get(PROJECT_LABEL) == ctx.project


def read_json(ctx: Context, limit: int = JSON_BODY_LIMIT) -> tuple[object | None, bytes]:
    """(parsed body, raw bytes). Parsed is None when the daemon should judge the raw body:
    empty, not JSON, or not declared as JSON; dockerd then answers with its own exact error."""
    length = ctx.req.content_length
    if length is not None and length > limit:
        raise DockerError(
            413, f"request body too large: {length} bytes (limit {limit}); send a smaller request"
        )
    raw = ctx.req.bounded_stream.read(limit + 1)
    if len(raw) > limit:
        raise DockerError(413, f"request body too large (limit {limit} bytes); send a smaller request")
    ctype = (ctx.req.content_type or "").split(";")[0].strip().lower()
    if not raw or ctype != "application/json":
        return None, raw
    try:
        # Go's decoder accepts invalid UTF-8 (replacing it), so must we: a body dockerd
        # would accept must never slip past the gateway unparsed. dockerd reads one JSON value
        # with json.Decoder and ignores what follows it: so do we (raw_decode).
        text = raw.decode("utf-8", errors="replace")
        return _JSON.raw_decode(text, len(text) - len(text.lstrip(" \t\r\n")))[0], raw
    except RecursionError:
        raise DockerError(
            400, "request body nested too deeply to be read as JSON; send a flatter body"
        ) from None
    except ValueError:
        return None, raw


def parse_filters(ctx: Context) -> dict | None:
    """The client's filters, or None when they are not a JSON object (dockerd then answers)."""
    raw = ctx.query("filters")
    if not raw:
        return {}
    try:
        filters = json.loads(raw)
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


def project_label_filter(ctx: Context) -> str | None:
    """The client's filters plus 'only this project's objects', as a filters JSON value;
    None when the client's filters cannot be parsed (forward them: dockerd says why).
    The admin view asks for every project's objects that carry a project at all."""
    filters = parse_filters(ctx)
    if filters is None:
        return None
    return json.dumps(
        add_filter(filters, "label", PROJECT_LABEL if ctx.all_projects else f"{PROJECT_LABEL}={ctx.project}")
    )


def new_object_instance(ctx: Context) -> store.Instance:
    """Where a new network or volume goes: where the scheduler would put the next container
    (its containers are then placed with it). The slot is only asked about, not kept."""
    from gateway.placement import PlacementRequest, place

    return place(PlacementRequest(ctx.project, "", {}, probe=True), ctx.settings).instance


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
