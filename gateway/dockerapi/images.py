"""Images: docker images, inspect, history, tag, rmi, image prune, search.

Thin handlers over gateway/services/images.py and gateway/services/image_removal.py: every
image a project reaches goes through gateway/imagemap.py there. Pull, push, save, load and
import are in gateway/dockerapi/image_transfer.py; builds in gateway/dockerapi/build.py.
"""

from __future__ import annotations

from gateway.context import Context
from gateway.routing import Route
from gateway.services import image_removal
from gateway.services import images as image_service
from gateway.services.common import parse_filters, to_home


def _flag(ctx: Context, name: str) -> bool:
    return (ctx.query(name) or "").lower() in ("1", "true")


def list_(ctx: Context) -> None:
    ctx.answer_json(image_service.list_images(ctx, parse_filters(ctx)))


def inspect(ctx: Context) -> None:
    payload = image_service.inspect(ctx, ctx.params["name"])
    if payload is not None:
        ctx.answer_json(payload)


def history(ctx: Context) -> None:
    payload = image_service.history(ctx, ctx.params["name"])
    if payload is not None:
        ctx.answer_json(payload)


def tag(ctx: Context) -> None:
    if image_service.tag(ctx, ctx.params["name"], ctx.query("repo") or "", ctx.query("tag") or ""):
        ctx.resp.status = 201


def delete(ctx: Context) -> None:
    records = image_removal.delete(ctx, ctx.params["name"], _flag(ctx, "force"), _flag(ctx, "noprune"))
    if records is not None:
        ctx.answer_json(records)


def prune(ctx: Context) -> None:
    filters = parse_filters(ctx)
    if filters is None or not image_removal.prune_filters_ok(filters):
        to_home(ctx)  # dockerd's own refusal
        return
    ctx.answer_json(image_removal.prune(ctx, filters))


IMG = "/images/{name*}"
ROUTES = [
    Route("GET", "/images/json", "ImageList", list_),
    Route("GET", "/images/search", "ImageSearch", to_home),
    Route("POST", "/images/prune", "ImagePrune", prune),
    Route("GET", IMG + "/json", "ImageInspect", inspect),
    Route("GET", IMG + "/history", "ImageHistory", history),
    Route("POST", IMG + "/tag", "ImageTag", tag),
    Route("DELETE", IMG, "ImageDelete", delete),
    Route("GET", "/distribution/{name*}/json", "DistributionInspect", to_home),
]
