"""``docker events --since``: what the journal recorded (gateway/notifications/recorder.py),
then each live daemon's own stream from just after the last event replayed from it.

The handover is per instance: the replay reads the project's recorded events, and each daemon is
then asked for its events since one nanosecond after the newest one replayed from it (or since
the client's ``since`` if none was), so an event is neither lost nor sent twice between the two.
An instance that is gone, or whose daemon restarted and forgot, is in the replay only.

Replayed events are judged and rewritten as live ones are (gateway/services/events.py
EventJudge), then filtered here with dockerd's semantics (daemon/events/filter.go): values of
one key are alternatives (OR), different keys must all match (AND), except ``label``, whose
values must all match; ``container``, ``network``, ``volume``, ``plugin`` and ``daemon`` match
the ID or the name by prefix; ``image`` matches the ID or name exactly, with or without a tag;
``event`` matches the action exactly (by prefix for health_status, exec_create, exec_start).
"""

from __future__ import annotations

import datetime as _dt
import json
import re

from gateway.store import journal

_FUZZY_EVENTS = ("health_status", "exec_create", "exec_start")


def parse_time(value: str | None, now_nano: int) -> int | None:
    """dockerd's ``since``/``until`` (daemon/events' GetTimestamp): unix seconds with an
    optional fraction, an RFC 3339 time, or a duration before now (``10m``). None: not one."""
    if not value:
        return None
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d{1,9})?", text):
        seconds, _, fraction = text.partition(".")
        return int(seconds) * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))
    found = re.fullmatch(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text)
    if found:
        unit = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}[found.group(2)]
        return now_nano - int(float(found.group(1)) * unit)
    try:
        when = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def _fuzzy(values: list[str], *sources: str) -> bool:
    return not values or any(s and (s == v or s.startswith(v)) for v in values for s in sources)


def _exact(values: list[str], *sources: str) -> bool:
    return not values or any(s and s == v for v in values for s in sources)


def _strip_tag(reference: str) -> str:
    head, _, last = reference.rpartition("/")
    if ":" in last and "@" not in last:
        last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


def _values(raw) -> list[str]:
    """A filter's values: a list, or the older {"value": true} form dockerd still reads."""
    if isinstance(raw, dict):
        return [str(k) for k, v in raw.items() if v]
    if isinstance(raw, list):
        return [str(v) for v in raw]
    return []


def matches(filters: dict, event: dict) -> bool:
    """Whether ``event`` (in the tenant's names) passes ``filters`` as dockerd would judge it."""
    kind = str(event.get("Type", ""))
    action = str(event.get("Action", ""))
    actor = event.get("Actor") or {}
    actor_id = str(actor.get("ID", ""))
    attributes = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
    name = attributes.get("name", "")
    wanted = lambda key: _values(filters.get(key))  # noqa: E731
    events = wanted("event")
    if any(e in _FUZZY_EVENTS for e in events):
        if not _fuzzy(events, action):
            return False
    elif not _exact(events, action):
        return False
    if not _exact(wanted("type"), kind) or not _exact(wanted("scope"), str(event.get("scope", ""))):
        return False
    for key in ("container", "network", "volume", "plugin", "daemon"):
        values = wanted(key)
        if values and not _fuzzy(values, actor_id, name):
            return False
    images = wanted("image")
    if images:
        image = attributes.get("name" if kind == "image" else "image", "")
        if not _exact(images, actor_id, image, _strip_tag(actor_id), _strip_tag(image)):
            return False
    for label in wanted("label"):
        key, has_value, value = label.partition("=")
        if key not in attributes or (has_value and attributes[key] != value):
            return False
    # no swarm here: an event of a node, service, secret or config is never recorded
    return all(not wanted(key) for key in ("node", "service", "secret", "config"))


def replay(
    project: str, all_projects: bool, since: int, until: int | None
) -> tuple[list[dict], dict[str, int]]:
    """The recorded events (daemon names, not yet judged) and, per instance, the newest
    replayed event's time: where its daemon's own stream must start."""
    rows = journal.recorded_events(None if all_projects else [project, ""], since, until)
    newest: dict[str, int] = {}
    events = []
    for row in rows:
        try:
            event = json.loads(row.event)
        except ValueError:
            continue
        newest[row.instance] = max(newest.get(row.instance, 0), row.time_nano)
        events.append(event)
    return events, newest
