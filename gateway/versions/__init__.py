"""API versions: what the gateway advertises, what a request may ask for, what reaches a
daemon, and the translation between the two.

The gateway speaks every API version from MOORAGE_MIN_API to MOORAGE_MAX_API whatever its
daemons speak. A request is sent to its instance at the version nearest the client's that the
daemon speaks (``for_daemon``), and the differences between the two versions are bridged by one
table (gateway/versions/table.py): each row is one change of the API, with what turns a newer
client's request into the daemon's (``request``) and the daemon's answer into the shape the
client's version has (``answer``), and the reverse for a client older than the daemon's own
minimum. Two places apply the table, and nothing else in the gateway looks at a version:
gateway/forward.py for the requests a client's call makes of a daemon (``translate_request``),
and gateway/context.py / forward.respond for the answers, after tenancy has rewritten them
(``translate_answer``)."""

from __future__ import annotations

import functools
from typing import Any

from gateway.errors import DockerError
from gateway.versions.rows import Call, Reply, Row

# The range Moorage speaks to clients, whatever its daemons speak.
MOORAGE_MAX_API = "1.55"
MOORAGE_MIN_API = "1.24"
# The table holds every change after this version: a daemon that speaks at least this much can
# be translated to any client version up to MOORAGE_MAX_API.
TABLE_FLOOR = "1.41"

__all__ = [
    "Call",
    "Reply",
    "Row",
    "advertised",
    "check",
    "for_daemon",
    "translate_answer",
    "translate_request",
]


@functools.lru_cache(maxsize=256)
def parse(version: str) -> tuple[int, ...]:
    # cached: a request parses its versions several times (check, for_daemon, translate_answer)
    return tuple(int(part) for part in version.split("."))


def lowest(versions: list[str], default: str) -> str:
    valid = [v for v in versions if v]
    return min(valid, key=parse) if valid else default


def highest(versions: list[str], default: str) -> str:
    valid = [v for v in versions if v]
    return max(valid, key=parse) if valid else default


def advertised(daemon_maxima: list[str]) -> tuple[str, str]:
    """(maximum, minimum) the gateway advertises. A daemon older than the table's floor can
    only be spoken to at its own versions, so it caps the maximum; every other daemon is
    translated up to MOORAGE_MAX_API."""
    floor = lowest(daemon_maxima, TABLE_FLOOR)
    maximum = MOORAGE_MAX_API if parse(floor) >= parse(TABLE_FLOOR) else floor
    return maximum, MOORAGE_MIN_API


def for_daemon(requested: str, daemon_max: str = "", daemon_min: str = "") -> str:
    """The version a request speaks to a daemon that speaks ``daemon_min``..``daemon_max``
    (unknown bounds: the client's own): the client's, or the nearest the daemon speaks."""
    if daemon_max and parse(requested) > parse(daemon_max):
        return daemon_max
    if daemon_min and parse(requested) < parse(daemon_min):
        return daemon_min
    return requested


def check(requested: str, maximum: str, minimum: str) -> None:
    """dockerd's answers (status, wording and content type) for a version out of range."""
    if parse(requested) < parse(minimum):
        raise DockerError(
            400,
            f"client version {requested} is too old. Minimum supported API version is {minimum}, "
            "please upgrade your client to a newer version",
            content_type="text/plain; charset=utf-8",
        )
    if parse(requested) > parse(maximum):
        raise DockerError(
            400, f"client version {requested} is too new. Maximum supported API version is {maximum}"
        )


def _between(operation: str, low: str, high: str) -> list[Row]:
    """The table's rows for ``operation`` that changed it after ``low`` up to ``high``, oldest
    first."""
    from gateway.versions.table import ROWS

    lo, hi = parse(low), parse(high)
    return [row for row in ROWS if operation in row.operations and lo < parse(row.version) <= hi]


def translate_request(
    operation: str, client: str, daemon: str, body: Any, query: list[tuple[str, str]]
) -> Call:
    """The client's request for ``operation`` (at ``client``) as a daemon at ``daemon`` must
    receive it: body and query rewritten, follow-up calls that emulate what the daemon cannot
    do in one, or a 400 naming what cannot be translated."""
    call = Call(body, list(query))
    if parse(client) > parse(daemon):
        for row in reversed(_between(operation, daemon, client)):  # the newest change first
            if row.request is not None:
                row.request(call)
    elif parse(client) < parse(daemon):
        for row in _between(operation, client, daemon):
            if row.older_request is not None:
                row.older_request(call)
    return call


def translate_answer(
    operation: str,
    client: str,
    spoken: list[str],
    payload: Any,
    query: dict[str, list[str]],
    reference: str = "",
) -> Any:
    """A daemon's answer (at the versions in ``spoken``; a merged answer may come from several
    daemons) in the shape ``client`` expects. Every transform leaves an answer that already
    has its target shape as it is, so an answer merged from daemons of different versions
    comes out in one shape."""
    reply = Reply(payload, query, reference)
    if not spoken:
        spoken = [client]
    low, high = lowest(spoken, client), highest(spoken, client)
    if parse(client) > parse(low):
        for row in _between(operation, low, client):
            if row.answer is not None:
                row.answer(reply)
    if parse(client) < parse(high):
        for row in reversed(_between(operation, client, high)):
            if row.older_answer is not None:
                row.older_answer(reply)
    return reply.payload


def answers_change(operation: str, client: str, spoken: list[str]) -> bool:
    """Whether ``translate_answer`` would touch an answer (so a streamed one must be read)."""
    if not spoken:
        return False
    low, high = lowest(spoken, client), highest(spoken, client)
    return any(r.answer for r in _between(operation, low, client)) or any(
        r.older_answer for r in _between(operation, client, high)
    )


def requests_change(operation: str, client: str, daemon: str) -> bool:
    """Whether ``translate_request`` may touch a request (so its body must be read first)."""
    if parse(client) > parse(daemon):
        return any(r.request for r in _between(operation, daemon, client))
    if parse(client) < parse(daemon):
        return any(r.older_request for r in _between(operation, client, daemon))
    return False
