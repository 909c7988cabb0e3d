"""Notifications of what a request does, from one table: Docker operation -> (what, action).

gateway/app.py runs every route's handler through ``around``: a route in ``ACTIONS`` sends
``compute.<what>.<action>.start`` before its handler, then ``.end`` when it answered under 400,
or ``.error`` (code, message) when it refused or failed. Nothing else in the services knows about
notifications. Container notifications carry the state before and after, read from the daemon
(inspect) only while notifications are on; containers the daemon removes by itself (``--rm``)
get their delete from its events (gateway/notifications/recorder.py).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable

import falcon

from gateway import notifications, store
from gateway.agentclient import AgentClient
from gateway.context import Context
from gateway.errors import DockerError
from gateway.notifications import payloads
from gateway.routing import CONTAINER
from gateway.services.images import tenant_image_name
from gateway.store import journal
from gateway.tenancy import resolve

log = logging.getLogger("moorage.notifications")

CONTAINER_EVENT = "compute.container"
ACTIONS: dict[str, tuple[str, str]] = {
    "ContainerCreate": (CONTAINER_EVENT, "create"),
    "ContainerStart": (CONTAINER_EVENT, "start"),
    "ContainerStop": (CONTAINER_EVENT, "stop"),
    "ContainerRestart": (CONTAINER_EVENT, "restart"),
    "ContainerKill": (CONTAINER_EVENT, "kill"),
    "ContainerPause": (CONTAINER_EVENT, "pause"),
    "ContainerUnpause": (CONTAINER_EVENT, "unpause"),
    "ContainerUpdate": (CONTAINER_EVENT, "update"),
    "ContainerRename": (CONTAINER_EVENT, "rename"),
    "ContainerExec": (CONTAINER_EVENT, "exec"),
    "ContainerAttach": (CONTAINER_EVENT, "attach"),
    "ImageCommit": (CONTAINER_EVENT, "commit"),
    "ContainerDelete": (CONTAINER_EVENT, "delete"),
    "ImageCreate": ("compute.container_image", "create"),
    "ImageBuild": ("compute.container_image", "create"),
    "ImageLoad": ("compute.container_image", "create"),
    "ImageDelete": ("compute.container_image", "delete"),
    "VolumeCreate": ("compute.container_volume", "create"),
    "VolumeDelete": ("compute.container_volume", "delete"),
    "NetworkCreate": ("compute.container_network", "create"),
    "NetworkDelete": ("compute.container_network", "delete"),
}
REMOVED = "removed"  # the state after a delete, or of a container the daemon no longer has


def around(ctx: Context, handler: Callable[[Context], None]) -> None:
    """Run ``handler``, with the route's notifications around it when it has any."""
    entry = ACTIONS.get(ctx.route.operation)
    if entry is None or not notifications.enabled():
        handler(ctx)
        return
    event, action = entry
    notice = _Notice(ctx, event, action)
    notice.tell("start")
    try:
        handler(ctx)
    except DockerError as exc:
        notice.tell("error", payloads.fault(exc.status, exc.message))
        raise
    except falcon.HTTPError as exc:
        notice.tell("error", payloads.fault(exc.status_code, str(exc.description or exc.title)))
        raise
    except Exception as exc:
        notice.tell("error", payloads.fault(500, f"internal error ({type(exc).__name__})"))
        raise
    status = 101 if ctx.req.env.get("moorage.hijacked") else falcon.code_to_http_status(ctx.resp.status)
    code = int(str(status)[:3])
    if code >= 400:
        notice.tell("error", payloads.fault(code, _message(ctx)))
    else:
        notice.tell("end")


def _message(ctx: Context) -> str:
    data = ctx.resp.data
    if data:
        try:
            message = json.loads(data).get("message")
            if isinstance(message, str):
                return message
        except (ValueError, AttributeError):
            pass
    return falcon.code_to_http_status(ctx.resp.status)


def _answer(ctx: Context) -> dict:
    """The JSON answer the gateway composed (a create's ID), or {}."""
    try:
        payload = json.loads(ctx.resp.data or b"{}")
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


class _Notice:
    """One request's notifications: what they name is gathered before and after the handler."""

    def __init__(self, ctx: Context, event: str, action: str):
        self.ctx = ctx
        self.event = event
        self.action = action
        self.request_id = ctx.req.env.setdefault("moorage.request_id", "req-" + str(uuid.uuid4()))
        self.container: store.Container | None = None
        self.state_before: str | None = None
        self.noted: journal.NotifiedContainer | None = None
        if event == CONTAINER_EVENT and action != "create":
            self.container = self._container()
            if self.container is not None:
                self.noted = journal.noted_container(self.container.id)
                self.state_before, _ = _inspect(self.container)

    def _container(self) -> store.Container | None:
        """The route's container if the caller has it; looked up without raising, so that
        the handler's own checks (policy first) answer as they would without notifications."""
        ctx = self.ctx
        try:
            if ctx.route.resolves == CONTAINER:
                target = ctx.target
            elif ctx.route.operation == "ImageCommit" and ctx.query("container"):
                target = resolve.container(ctx.project, ctx.query("container") or "")
            else:
                return None
        except DockerError:
            return None
        return target if isinstance(target, store.Container) else None

    def tell(self, phase: str, fault: dict | None = None) -> None:
        try:
            payload = self._payload(phase, fault)
        except Exception:  # a notification never fails the request
            log.exception("could not build the %s.%s.%s notification", self.event, self.action, phase)
            return
        notifications.emit(f"{self.event}.{self.action}.{phase}", payload, "ERROR" if fault else "INFO")

    def _payload(self, phase: str, fault: dict | None) -> dict:
        ctx = self.ctx
        common = {
            "project_id": ctx.project,
            "user_id": ctx.identity.user_id if ctx.identity else "",
            "action": self.action,
            "request_id": self.request_id,
            "fault": fault,
        }
        if self.event == CONTAINER_EVENT:
            return self._container_payload(phase, common)
        if self.event == "compute.container_image":
            reference = ctx.params.get("name") or _image_query(ctx)
            return payloads.versioned("ImagePayload", image=reference, **common)
        if self.event == "compute.container_volume":
            name = ctx.ref or (_answer(ctx).get("Name") if phase == "end" else None)
            instance = journal.instance_of(ctx._target) if isinstance(ctx._target, store.Volume) else None
            return payloads.versioned("VolumePayload", volume=name, instance_uuid=instance, **common)
        network_id = _answer(ctx).get("Id") if phase == "end" and not ctx.ref else None
        row = store.Network.get_or_none(store.Network.id == network_id) if network_id else None
        if ctx.ref:
            row = ctx._target if isinstance(ctx._target, store.Network) else None
        return payloads.versioned(
            "NetworkPayload",
            network_id=row.id if row else network_id,
            name=row.name if row else ctx.ref or None,
            instance_uuid=journal.instance_of(row) if row else None,
            **common,
        )

    def _container_payload(self, phase: str, common: dict) -> dict:
        ctx = self.ctx
        if self.action == "create" and phase == "end":
            created = _answer(ctx).get("Id")
            self.container = store.Container.get_or_none(store.Container.id == created) if created else None
        container = self.container
        state_after, info = None, {}
        if phase == "end" and container is not None:
            state_after, info = (REMOVED, {}) if self.action == "delete" else _inspect(container)
        image = self.noted.image if self.noted else ""
        if info:
            image = tenant_image_name(ctx.project, (info.get("Config") or {}).get("Image", "")) or image
        if container is not None and self.action == "create" and phase == "end":
            journal.note_container(
                container.id,
                ctx.project,
                common["user_id"],
                container.name,
                image,
                journal.instance_of(container),
                bool((info.get("HostConfig") or {}).get("AutoRemove")),
            )
        if container is not None and self.action == "delete" and phase == "start":
            journal.take_noted_container(container.id)  # told here: not again from the daemon's events
        if container is not None and self.action == "delete" and phase == "error" and self.noted:
            n = self.noted  # still there (running, without force): its daemon may yet remove it
            journal.note_container(n.id, n.project, n.user, n.name, n.image, n.instance, n.auto_remove)
        return payloads.versioned(
            "ContainerActionPayload",
            container_id=container.id if container else None,
            name=container.name if container else (ctx.query("name") or None),
            image=image or None,
            instance_uuid=journal.instance_of(container) if container else None,
            state_before=self.state_before,
            state_after=state_after,
            **common,
        )


def _image_query(ctx: Context) -> str | None:
    image = ctx.query("fromImage") or ctx.query("t") or ctx.query("repo")
    tag = ctx.query("tag")
    if image and tag and ":" not in image.rsplit("/", 1)[-1]:
        image = f"{image}:{tag}"
    return image


def _inspect(container: store.Container) -> tuple[str | None, dict]:
    """(the daemon's state of ``container``, its inspect), or (None, {}) if it cannot say."""
    instance = store.Instance.get_or_none(store.Instance.uuid == journal.instance_of(container))
    store.release_connection()
    if instance is None:
        return None, {}
    try:
        status, info = AgentClient(instance).get_json(f"/containers/{container.id}/json", timeout=5)
    except Exception:  # noqa: BLE001 (an agent away: the state is unknown)
        return None, {}
    if status == 404:
        return REMOVED, {}
    if status != 200 or not isinstance(info, dict):
        return None, {}
    return str((info.get("State") or {}).get("Status") or "") or None, info
