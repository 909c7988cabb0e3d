"""The images quota of a request that may add images to its project, and undoing what such a
request made when the quota refuses it."""

from __future__ import annotations

from gateway import imagemap, quotas, store
from gateway.context import Context
from gateway.forward import call
from gateway.services.image_moves import image_path, tag_on


class ImageSlot:
    """The images quota of one request that may add images to the project (pull, import, build,
    load, commit, tag). An image is reserved before anything reaches a daemon (403 when the
    project has no room: concurrent requests cannot all start into its last free image); once
    the request knows what it made, :meth:`settle` checks again and records the rows in one
    transaction (quotas.settle_images), so the count is exact; :meth:`release` (idempotent)
    lets the reservation go when the request fails or the client goes away."""

    def __init__(self, ctx: Context, needed: bool = True):
        self.ctx = ctx
        self.reservation = quotas.reserve(ctx.project, "images", ctx.settings) if needed else None

    def settle(self, image_ids, record) -> None:
        reservation, self.reservation = self.reservation, None
        quotas.settle_images(reservation, self.ctx.project, image_ids, record, self.ctx.settings)

    def release(self) -> None:
        reservation, self.reservation = self.reservation, None
        quotas.release(reservation)


def discard(ctx: Context, instance: store.Instance, image_id: str, daemon_names: list[str]) -> None:
    """What a request made that its project's images quota refused: its daemon names off
    ``instance`` (a tag that moved goes back to the image the store gives it), and the image
    itself when no project references it. Best effort: the store is the map, and a stale
    daemon tag names nothing any project sees."""
    referenced = imagemap.referenced(image_id)
    for name in [n for n in daemon_names if n and "@" not in n]:
        if referenced:
            status, info = call(ctx, instance, "GET", image_path(image_id, "/json"))
            tags = (info.get("RepoTags") or []) if status == 200 and isinstance(info, dict) else []
            if name not in tags or len(tags) == 1:
                continue  # untagging the last tag would delete an image others reference
        call(ctx, instance, "DELETE", image_path(name), query="noprune=1" if referenced else "noprune=0")
    if not referenced:
        call(ctx, instance, "DELETE", image_path(image_id), query="force=0&noprune=0")
    for name in daemon_names:
        restore_tag(ctx, instance, name, image_id)


def restore_tag(ctx: Context, instance: store.Instance, daemon_name: str, image_id: str) -> None:
    """A daemon tag a refused request moved onto ``image_id``: back on the image the store
    gives it, if the store gives it another."""
    if not daemon_name:
        return
    row = imagemap.row_for_daemon_tag(ctx.project, daemon_name)
    if row is not None and row.image_id != image_id:
        tag_on(ctx, instance, row.image_id, daemon_name)
