"""Images: /images/..., /build (pull, push, build, save, load, import, tag, history, ...)."""

from __future__ import annotations

from gateway.context import Context
from gateway.dockerapi.common import home_instance
from gateway.forward import forward
from gateway.routing import Route


def to_home(ctx: Context) -> None:
    forward(ctx, home_instance(ctx))


IMG = "/images/{name*}"
ROUTES = [
    Route("GET", "/images/json", "ImageList", to_home),
    Route("POST", "/build", "ImageBuild", to_home, streaming=True),
    Route("POST", "/build/prune", "BuildPrune", to_home),
    Route("POST", "/images/create", "ImageCreate", to_home, streaming=True),
    Route("GET", "/images/search", "ImageSearch", to_home),
    Route("POST", "/images/prune", "ImagePrune", to_home),
    Route("GET", "/images/get", "ImageGetAll", to_home, streaming=True),
    Route("POST", "/images/load", "ImageLoad", to_home, streaming=True),
    Route("GET", IMG + "/json", "ImageInspect", to_home),
    Route("GET", IMG + "/history", "ImageHistory", to_home),
    Route("POST", IMG + "/push", "ImagePush", to_home, streaming=True),
    Route("POST", IMG + "/tag", "ImageTag", to_home),
    Route("GET", IMG + "/get", "ImageGet", to_home, streaming=True),
    Route("DELETE", IMG, "ImageDelete", to_home),
    Route("GET", "/distribution/{name*}/json", "DistributionInspect", to_home),
]
