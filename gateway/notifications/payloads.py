"""The notifications' payloads: versioned objects in Nova's JSON shape.

Each payload is ``{"nova_object.name", "nova_object.namespace", "nova_object.version",
"nova_object.data"}`` as oslo.versionedobjects serialises Nova's, so consumers written for
Nova's versioned notifications read them the same way. A field is added with a minor version
bump; a change of meaning is a major one. docs/notifications.md lists every payload; a unit
test checks that the page names each version below.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

NAMESPACE = "moorage"

# name -> (version, fields): the one table of what every payload carries.
PAYLOADS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ContainerActionPayload": (
        "1.0",
        (
            "project_id",
            "user_id",
            "container_id",
            "name",
            "image",
            "instance_uuid",
            "action",
            "state_before",
            "state_after",
            "request_id",
            "fault",
        ),
    ),
    "ContainerExistsPayload": (
        "1.0",
        (
            "project_id",
            "user_id",
            "container_id",
            "name",
            "image",
            "instance_uuid",
            "audit_period_beginning",
            "audit_period_ending",
            "memory_bytes",
            "cpus",
            "uptime_seconds",
        ),
    ),
    "ContainerInstancePayload": (
        "1.0",
        ("instance_uuid", "project_id", "provider", "pool_member", "action", "fault"),
    ),
    "ImagePayload": ("1.0", ("project_id", "user_id", "image", "action", "request_id", "fault")),
    "VolumePayload": (
        "1.0",
        ("project_id", "user_id", "volume", "instance_uuid", "action", "request_id", "fault"),
    ),
    "NetworkPayload": (
        "1.0",
        ("project_id", "user_id", "network_id", "name", "instance_uuid", "action", "request_id", "fault"),
    ),
    "ExceptionPayload": ("1.0", ("code", "message")),
}


def versioned(object_name: str, /, **data: Any) -> dict:
    """The payload ``object_name`` with ``data``; a field left out is null, one not in its table is
    a programming error (KeyError), so the docs and the wire cannot drift apart."""
    version, fields = PAYLOADS[object_name]
    unknown = set(data) - set(fields)
    if unknown:
        raise KeyError(f"{object_name} has no field {sorted(unknown)}")
    return {
        "nova_object.name": object_name,
        "nova_object.namespace": NAMESPACE,
        "nova_object.version": version,
        "nova_object.data": {f: data.get(f) for f in fields},
    }


def fault(code: int, message: str) -> dict:
    return versioned("ExceptionPayload", code=code, message=message)


def timestamp(when: _dt.datetime) -> str:
    """UTC, as Nova writes audit periods: 2026-12-06T16:00:00.000000."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")
