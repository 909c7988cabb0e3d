"""What one row of the version table is, and what its transforms work on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import DockerError

# How a row bridges its change (docs/divergences.md lists the rows by it).
CONVERTED = "converted"  # the daemon's answer or the client's request, rewritten into the other shape
EMULATED = "emulated"  # the daemon does the same work in several calls
DROPPED = "dropped"  # a request field the daemon cannot apply, and whose absence changes nothing
REFUSED = "refused"  # a 400 naming the field: the daemon cannot do it, and ignoring it would lie
# An answer field the daemon's answer cannot honestly fill: left out, as dockerd leaves it out
# when unset.
OMITTED = "omitted"


@dataclass(frozen=True)
class Followup:
    """A daemon call that completes an emulated request once its own call succeeded.
    ``path`` may hold ``{id}``: the ID the first call answered with."""

    method: str
    path: str
    body: Any
    what: str  # for the error message when it fails


@dataclass
class Call:
    """A client's request on its way to a daemon: its parsed JSON body (or None) and query."""

    body: Any
    query: list[tuple[str, str]]
    followups: list[Followup] = field(default_factory=list)
    # What takes the first call back when a follow-up fails (the emulation is all or nothing).
    undo: Followup | None = None
    # Whether the query was rewritten (the forwarded target then carries this one).
    query_changed: bool = False

    def param(self, name: str) -> list[str]:
        return [value for key, value in self.query if key == name]

    def drop_param(self, name: str) -> None:
        kept = [(key, value) for key, value in self.query if key != name]
        if len(kept) != len(self.query):
            self.query, self.query_changed = kept, True


@dataclass
class Reply:
    """A daemon's answer on its way to a client, and the client's query."""

    payload: Any
    query: dict[str, list[str]]
    reference: str = ""  # what the client named in the path (an image's reference, ...)

    def flag(self, name: str) -> bool:
        return any(v.lower() in ("1", "true") for v in self.query.get(name, []))


Transform = Callable[[Any], None]


@dataclass(frozen=True)
class Row:
    version: str  # the API version the change appeared in
    operations: tuple[str, ...]  # Docker's operation IDs it concerns
    change: str  # what changed, in a line
    handling: str  # CONVERTED, EMULATED, DROPPED, REFUSED or OMITTED
    # A client newer than the daemon: its request made the daemon's (Call), the daemon's
    # answer made the client's (Reply).
    request: Transform | None = None
    answer: Transform | None = None
    # A client older than the daemon's own minimum: the same the other way.
    older_request: Transform | None = None
    older_answer: Transform | None = None


def refuse(field_name: str, version: str, instead: str) -> DockerError:
    return DockerError(
        400,
        f"{field_name} needs API {version} on the daemon, and this instance's daemon speaks an "
        f"older version, which cannot do the same: {instead}",
    )


def obj(value: Any, *keys: str) -> dict | None:
    """The dict at ``value[keys[0]][keys[1]]...``, or None."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, dict) else None


def items(value: Any) -> list:
    return value if isinstance(value, list) else []


def pop_keys(value: Any, keys) -> None:
    if isinstance(value, dict):
        for key in keys:
            value.pop(key, None)


def pop_empty(value: Any, keys) -> None:
    """Remove each of ``keys`` whose value is empty (Go's omitempty)."""
    if isinstance(value, dict):
        for key in keys:
            if key in value and value[key] in (None, "", [], {}, 0, False):
                del value[key]
