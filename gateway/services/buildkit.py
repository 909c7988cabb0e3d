"""BuildKit: `POST /grpc` (its control API, over h2c) and `POST /session` (file sync, secrets,
ssh, auth), relayed to the project's own instance under dedicated tenancy.

What BuildKit reads and writes (the Dockerfile, the context, the cache, the images it names)
travels inside gRPC streams the gateway does not rewrite. On an instance that holds one
project's objects only, nothing there is another project's to reach, so the streams are
spliced as they are, and the build lands where the project's later `run` finds its image. On
shared instances the same streams could name other projects' images and cache: BuildKit is
refused there, and /_ping advertises the classic builder only.

An image BuildKit exports is named by the client's own words (`-t app:1`, compose's
`image:`), which are not the daemon names Moorage gives a project's images
(gateway/imagemap.py). When the /grpc connection ends, the names that appeared on the
instance are adopted: each becomes the project's (its daemon name tagged, the raw name
removed), within the project's images quota.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from urllib.parse import quote, urlencode

from gateway import imagemap, instances, store
from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import call, forward
from gateway.placement import dedicated
from gateway.services.common import home_instance
from gateway.services.image_moves import split
from gateway.services.image_slot import ImageSlot

log = logging.getLogger("moorage.gateway")

# How long after a BuildKit connection began its instance's exported names are looked for
# on every resolve of a name the project holds (a build may run that long).
RECENT_BUILDS = datetime.timedelta(minutes=30)

REFUSED = (
    "BuildKit is not available on shared instances (its sessions could reach other projects' "
    "images and build cache): build with the classic builder (DOCKER_BUILDKIT=0 docker build ...), "
    "or ask the operator for dedicated tenancy"
)


def available(ctx: Context) -> bool:
    """Whether this caller's builds may use BuildKit (/_ping's Builder-Version)."""
    return dedicated(ctx.settings) and not ctx.all_projects


def session(ctx: Context) -> None:
    """POST /session: hijacked and spliced to the project's instance."""
    if not available(ctx):
        raise DockerError(400, REFUSED)
    forward(ctx, home_instance(ctx, claim=True))


def grpc(ctx: Context) -> None:
    """POST /grpc: hijacked and spliced to the project's instance; when it ends, the image
    names the builds exported there become the project's."""
    if not available(ctx):
        raise DockerError(400, REFUSED)
    instance = home_instance(ctx, claim=True)
    store.Instance.update(buildkit_at=store.utcnow()).where(store.Instance.uuid == instance.uuid).execute()
    try:
        forward(ctx, instance)
    finally:
        try:
            adopt_exports(ctx, instance)
        except Exception:
            log.exception("adopting the images BuildKit exported on instance %s failed", instance.uuid)


def resolve(ctx: Context, typed: str) -> imagemap.Found | None:
    """imagemap.resolve, and when it finds nothing where BuildKit runs, the project's instances'
    exported names adopted first: a client that has just seen its build end (compose's `up
    --build`) may name the image before the /grpc connection's end is noticed here."""
    found = imagemap.resolve(ctx.project, typed)
    if not available(ctx) or (found is not None and found.public):
        # A public name is never adopted (foreign_names): an export cannot change what it is.
        return found
    own = instances.project_instances(ctx.settings, ctx.project)
    if found is None:
        building = own
    else:
        # A name the project holds may have been built again just now: its instances that
        # served BuildKit lately are looked at first.
        horizon = store.utcnow() - RECENT_BUILDS
        building = [i for i in own if i.buildkit_at is not None and i.buildkit_at >= horizon]
    if sum(adopt_exports(ctx, i) for i in building):
        found = imagemap.resolve(ctx.project, typed)
    return found


def adopt_listed(
    ctx: Context,
    instance: store.Instance,
    images: list,
    public: Callable[[], dict[str, set[str]]] | None = None,
) -> bool:
    """A list of the instance's images that shows names BuildKit exported: adopt them; True
    if any was. ``public``: the public images, read once for a listing of many instances
    (a `docker info` over 20 instances read them 20 times: imagemap.public_images)."""
    if not (available(ctx) and instance.project == ctx.project):
        return False
    if foreign_names(images, public() if public is not None else imagemap.public_images()):
        return adopt_exports(ctx, instance) > 0
    return False


def foreign_names(images: list, public: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(raw name, image ID) of the names on a daemon that are neither Moorage's daemon names
    nor an operator's public names: what a client's BuildKit export put there. A public name
    is never adopted, whatever it names: a daemon's seeded copy of a public image has an ID of
    its own, and an export that took a public name over stays the project's instance's own
    business (the project's references to that name mean the public image)."""
    public_refs = set().union(*public.values()) if public else set()
    found = []
    for image in images:
        image_id = image.get("Id", "")
        for tag in image.get("RepoTags") or []:
            if tag == "<none>:<none>" or tag.startswith(imagemap.DAEMON_PREFIX):
                continue
            if imagemap.familiar_tag(tag) in public_refs:
                continue
            found.append((tag, image_id))
    return found


def adopt_exports(ctx: Context, instance: store.Instance) -> int:
    """Make the names BuildKit exported on the project's instance the project's own: tag each
    image with the project's daemon name for it, record it, and remove the raw name. Returns
    how many were adopted."""
    if instance.project != ctx.project:
        # Only the project's own instance's exports are its: a project with no instance of
        # its own lists another's (gateway/services/common.fanout), and must adopt nothing there.
        return 0
    status, images = call(ctx, instance, "GET", "/images/json")
    if status != 200 or not isinstance(images, list):
        return 0
    adopted = 0
    for raw, image_id in foreign_names(images, imagemap.public_images()):
        try:
            ref = imagemap.parse(raw)
        except imagemap.ReferenceError_:
            continue
        reference = ref.familiar()
        daemon = imagemap.daemon_ref(ctx.project, ref)
        slot = ImageSlot(ctx, needed=not imagemap.holds(ctx.project, image_id))
        try:
            d_repo, d_tag = split(daemon)
            tagged, _ = call(
                ctx,
                instance,
                "POST",
                f"/images/{image_id}/tag",
                query=urlencode({"repo": d_repo, "tag": d_tag}),
            )
            if tagged >= 400:
                continue
            slot.settle(
                [image_id], lambda i=image_id, r=reference: imagemap.record(ctx.project, r, i, instance)
            )
            adopted += 1
        except DockerError as exc:
            log.info("BuildKit exported %s for project %s, refused: %s", reference, ctx.project, exc.message)
        finally:
            slot.release()
            call(ctx, instance, "DELETE", f"/images/{quote(raw, safe='')}", query="noprune=1")
    return adopted
