"""Images: /images/..., /build (pull, push, build, save, load, import, tag, history, ...)."""

from __future__ import annotations

from gateway.context import Context
from gateway.dockerapi.common import hide_project_label, home_instance
from gateway.forward import call, forward, raise_for
from gateway.routing import Route
from gateway.tenancy import policy


def to_home(ctx: Context) -> None:
    forward(ctx, home_instance(ctx))


def build(ctx: Context) -> None:
    policy.build(ctx)  # the query's settings; the context streams through unread
    to_home(ctx)


def _hide_in_image(image: dict) -> None:
    # A committed image carries its container's labels, the project label among them.
    for key in ("Config", "ContainerConfig"):
        hide_project_label((image.get(key) or {}).get("Labels"))
    hide_project_label(image.get("Labels"))


def inspect(ctx: Context) -> None:
    status, payload = call(ctx, home_instance(ctx), "GET", f"/images/{ctx.params['name']}/json")
    raise_for(status, payload)
    _hide_in_image(payload)
    ctx.answer_json(payload)


def list_(ctx: Context) -> None:
    status, payload = call(ctx, home_instance(ctx), "GET", "/images/json", query=ctx.req.query_string)
    raise_for(status, payload)
    for image in payload:
        _hide_in_image(image)
    ctx.answer_json(payload)


def visible_count(ctx: Context) -> int:
    """How many images the caller sees (docker info's Images)."""
    status, payload = call(ctx, home_instance(ctx), "GET", "/images/json")
    raise_for(status, payload)
    return len(payload)


def visible_in_df(ctx: Context, images: list[dict]) -> list[dict]:
    """The images of a daemon's /system/df answer that the caller sees."""
    for image in images:
        _hide_in_image(image)
    return images


IMG = "/images/{name*}"
ROUTES = [
    Route("GET", "/images/json", "ImageList", list_),
    Route("POST", "/build", "ImageBuild", build, streaming=True),
    Route("POST", "/build/prune", "BuildPrune", to_home),
    Route("POST", "/images/create", "ImageCreate", to_home, streaming=True),
    Route("GET", "/images/search", "ImageSearch", to_home),
    Route("POST", "/images/prune", "ImagePrune", to_home),
    Route("GET", "/images/get", "ImageGetAll", to_home, streaming=True),
    Route("POST", "/images/load", "ImageLoad", to_home, streaming=True),
    Route("GET", IMG + "/json", "ImageInspect", inspect),
    Route("GET", IMG + "/history", "ImageHistory", to_home),
    Route("POST", IMG + "/push", "ImagePush", to_home, streaming=True),
    Route("POST", IMG + "/tag", "ImageTag", to_home),
    Route("GET", IMG + "/get", "ImageGet", to_home, streaming=True),
    Route("DELETE", IMG, "ImageDelete", to_home),
    Route("GET", "/distribution/{name*}/json", "DistributionInspect", to_home),
]
