"""Images follow containers: where an image is, and moving it between instances.

The store's presence rows (gateway/imagemap.py: present, absent, holders) say which instances
hold an image; a probe of the daemon has the last word, and corrects the rows. An image moves as
one stream (save on the source, load on the target), never held whole by the gateway.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from gateway import imagemap, instances, store
from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import call, check_agent, send
from gateway.services.jsonlines import json_lines

log = logging.getLogger("moorage.gateway")


def image_path(name: str, suffix: str = "") -> str:
    return f"/images/{name}{suffix}"


def short(image_id: str) -> str:
    """An image ID as dockerd's messages print it (12 hex digits)."""
    return image_id.split(":", 1)[-1][:12]


def split(daemon_name: str) -> tuple[str, str]:
    """repo, tag of a tagged daemon reference."""
    colon = daemon_name.rfind(":")
    if colon > daemon_name.rfind("/"):
        return daemon_name[:colon], daemon_name[colon + 1 :]
    return daemon_name, "latest"


def has(ctx: Context, instance: store.Instance, image_id: str) -> bool:
    status, _ = call(ctx, instance, "GET", image_path(image_id, "/json"), timeout=30)
    return status == 200


def holder(ctx: Context, image_id: str, prefer: store.Instance | None = None) -> store.Instance | None:
    """A live instance that holds ``image_id`` (the store's presence first, then a probe; the
    caller's own instances before others', under dedicated tenancy)."""
    live = instances.live_instances(ctx.settings)
    known = set(imagemap.holders(image_id))
    project = getattr(ctx, "project", None)
    ordered = sorted(
        live,
        key=lambda i: (
            prefer is None or i.uuid != prefer.uuid,
            i.project is not None and i.project != project,
            i.uuid not in known,
        ),
    )
    for instance in ordered:
        if has(ctx, instance, image_id):
            imagemap.present(image_id, instance)
            return instance
        if instance.uuid in known:
            imagemap.absent(image_id, instance)
    return None


def need_holder(ctx: Context, found: imagemap.Found, typed: str = "") -> store.Instance:
    """A live instance holding the image ``typed`` resolved to; 404 when none does."""
    instance = holder(ctx, found.image_id)
    if instance is None:
        raise DockerError(404, f"No such image: {typed or found.image_id}")
    return instance


def live_holders(ctx: Context, image_id: str) -> list[store.Instance]:
    """The live instances the store knows to hold ``image_id``."""
    return [i for i in imagemap.holder_instances(image_id) if instances.is_live(i, ctx.settings)]


def tag_on(ctx: Context, instance: store.Instance, image_id: str, daemon_name: str) -> int:
    """Give ``image_id`` the daemon tag ``daemon_name`` on ``instance``; the daemon's status."""
    if not daemon_name or "@" in daemon_name:
        return 200
    repo, tag = split(daemon_name)
    status, payload = call(
        ctx, instance, "POST", image_path(image_id, "/tag"), query=urlencode({"repo": repo, "tag": tag})
    )
    if status >= 400:
        log.warning("tagging %s as %s on %s failed: %s", image_id, daemon_name, instance.uuid, payload)
    return status


def copy_image(ctx: Context, source: store.Instance, target: store.Instance, image_id: str) -> None:
    """Stream ``image_id`` from ``source`` to ``target`` (save → load), never held whole."""
    src = send(ctx, source, method="GET", path=image_path(image_id, "/get"), query="", body=b"", timeout=None)
    check_agent(source, src)
    if src.status != 200:
        raw = src.read()
        raise DockerError(
            500,
            f"copying image {short(image_id)} from instance {source.uuid} failed: "
            f"{raw.decode(errors='replace').strip()}",
        )
    dst = send(
        ctx,
        target,
        method="POST",
        path="/images/load",
        query="quiet=1",
        body=src.iter_body(),
        content_type="application/x-tar",
        timeout=None,
    )
    check_agent(target, dst)
    raw = dst.read()
    errors = [m.get("error") for m in json_lines(raw) if m.get("error")]
    if dst.status != 200 or errors:
        raise DockerError(
            500,
            f"copying image {short(image_id)} to instance {target.uuid} failed: "
            f"{errors or raw.decode(errors='replace').strip()}",
        )
    imagemap.present(image_id, target)


def ensure_on(ctx: Context, instance: store.Instance, image_id: str) -> None:
    """Make sure ``instance`` holds ``image_id`` and the daemon tags the store gives it (copied
    as a stream from an instance that has it)."""
    if not has(ctx, instance, image_id):
        source = holder(ctx, image_id)
        if source is None:
            raise DockerError(
                404, f"No such image: {image_id} (no instance holds it any more; pull or build it again)"
            )
        copy_image(ctx, source, instance, image_id)
    imagemap.present(image_id, instance)
    # An instance of one project's (dedicated tenancy) gets that project's names only.
    for daemon_name in imagemap.project_daemon_tags(image_id, instance.project):
        tag_on(ctx, instance, image_id, daemon_name)
