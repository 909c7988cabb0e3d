"""Audit: every mutating request and every refusal as a CADF event (pycadf), as
keystonemiddleware's audit middleware records OpenStack APIs.

The event names who asked (initiator: user, project, address, the kind of credential), what
(action, from the route's Docker operation), on what (target: a typeURI and the tenant's own
reference, as typed), and how it ended (outcome, and a reason: the HTTP status, and for a
refusal its message). It is queued as an ``audit.http.response`` notification and, with
``[notifications] audit_log``, appended to that file as one JSON line.

Nothing secret is recorded: no token (the credential names its kind only), no header, no
query string (registry auth, build args, filters) and no body (environment values); the
target is the path's reference, which the tenant chose as a name.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass

from gateway.notifications.outbox import emit, settings

log = logging.getLogger("moorage.audit")

OBSERVER_ID = "target"  # as keystonemiddleware: the service observes itself

# The start of a Docker operation ID -> the CADF typeURI of what it acts on.
_TYPES = (
    ("Container", "service/compute/containers"),
    ("Exec", "service/compute/containers/execs"),
    ("Image", "service/compute/images"),
    ("Build", "service/compute/images"),
    ("Volume", "service/compute/volumes"),
    ("Network", "service/compute/networks"),
    ("System", "service/compute"),
)
# Docker operations whose CADF action is more than their HTTP method's.
_ACTIONS = {
    "ContainerStart": "start",
    "ContainerStop": "stop",
    "ContainerKill": "stop",
    "ContainerRestart": "start",
    "ContainerUnpause": "start",
    "ContainerPause": "stop",
    "ExecStart": "start",
    "ContainerCreate": "create",
    "ContainerExec": "create",
    "ImageCreate": "create",
    "ImageBuild": "create",
    "ImageLoad": "create",
    "ImageCommit": "create",
    "VolumeCreate": "create",
    "NetworkCreate": "create",
}
# POSTs that change nothing: waiting, attaching, resizing a terminal, checking registry login.
_READS = frozenset(
    {"ContainerWait", "ContainerAttach", "ContainerResize", "ExecResize", "SystemAuth", "Session"}
)
_BY_METHOD = {"GET": "read", "HEAD": "read", "POST": "update", "PUT": "update", "DELETE": "delete"}


@dataclass
class Request:
    """What the serving layer knows of one answered request (gateway/app.py)."""

    method: str
    operation: str
    status: int
    reference: str = ""  # the path's reference to the tenant's object, as typed
    project: str = ""
    user: str = ""
    user_name: str = ""
    address: str = ""
    credential: str = ""  # "token", "certificate", "socket" (a tenant socket's) or "none"
    reason: str = ""  # a refusal's message
    request_id: str = ""


def wanted(method: str, status: int, operation: str) -> bool:
    """Every mutating request, every refusal (401, 403: policy or quota)."""
    if operation in ("Health", "Unknown") and status not in (401, 403):
        return False
    if status in (401, 403):
        return True
    return method not in ("GET", "HEAD") and operation not in _READS


def event(request: Request) -> dict:
    """The CADF event of ``request``, as a dict (pycadf's own serialisation)."""
    with warnings.catch_warnings():
        # pycadf warns of every identifier that is no UUID: Docker names and IDs are not.
        warnings.simplefilter("ignore")
        return _event(request)


def _event(request: Request) -> dict:
    from pycadf import cadftaxonomy, cadftype, credential, host, reason, resource
    from pycadf import event as cadf_event

    type_uri = next((t for prefix, t in _TYPES if request.operation.startswith(prefix)), "service/compute")
    action = _ACTIONS.get(request.operation, _BY_METHOD.get(request.method, "unknown"))
    if request.status == 401:
        action = "authenticate"
    initiator = resource.Resource(
        id=request.user or "unknown",
        typeURI=cadftaxonomy.ACCOUNT_USER,
        name=request.user_name or None,
        host=host.Host(address=request.address or None, agent="docker"),
        credential=credential.Credential(token="-", type=request.credential or "none"),
    )
    if request.project:
        initiator.project_id = request.project
    target = resource.Resource(id=request.reference or request.operation, typeURI=type_uri)
    observer = resource.Resource(id=OBSERVER_ID)
    outcome = cadftaxonomy.OUTCOME_SUCCESS if request.status < 400 else cadftaxonomy.OUTCOME_FAILURE
    built = cadf_event.Event(
        eventType=cadftype.EVENTTYPE_ACTIVITY,
        action=action,
        outcome=outcome,
        initiator=initiator,
        target=target,
        observer=observer,
        reason=reason.Reason(
            reasonType="HTTP", reasonCode=str(request.status), policyType=request.operation or None
        ),
    )
    data = built.as_dict()
    data["operation"] = request.operation  # the Docker operation; never the path or its query
    if request.reason:
        data["reason"]["reasonMessage"] = request.reason[:500]
    if request.request_id:
        data["request_id"] = request.request_id
    return data


def _builds_events(config) -> bool:
    """Whether events are built at all: audit on, and somewhere to send or write them."""
    return config.audit and (config.enabled or bool(config.audit_log))


def prepare() -> None:
    """Import pycadf now, at the worker's start, if events will be built: the import takes
    about 70 ms, which the first audited request of each worker paid otherwise."""
    if _builds_events(settings()):
        import pycadf.event  # noqa: F401 - imported for its load time, used in _event


def record(request: Request) -> None:
    """Queue (and log, with audit_log) the request's CADF event. Never raises."""
    config = settings()
    if not _builds_events(config) or not wanted(request.method, request.status, request.operation):
        return
    try:
        data = event(request)
    except Exception:  # auditing never fails a request
        log.exception("could not build the CADF event of %s", request.operation)
        return
    emit("audit.http.response", data)
    if config.audit_log:
        try:
            fd = os.open(config.audit_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, json.dumps(data, separators=(",", ":")).encode() + b"\n")
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("could not write the audit log %s: %s", config.audit_log, exc)
