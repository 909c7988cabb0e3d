"""Images in and out: pull and import (POST /images/create), push, save (get), load.

Thin handlers over gateway/services/image_transfer.py. Each of these routes streams, so they
are served by `moorage relay` too.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from gateway.context import Context
from gateway.errors import DockerError
from gateway.routing import Route
from gateway.services import image_transfer as transfer
from gateway.services.common import to_home


def _form_body(ctx: Context) -> bool:
    """A body dockerd would read parameters from (Go's ParseForm: a form body's values take
    precedence over the query's), which the gateway does not read."""
    media = (ctx.req.content_type or "").split(";")[0].strip().lower()
    chunked = "chunked" in (ctx.req.get_header("Transfer-Encoding") or "").lower()
    return media == "application/x-www-form-urlencoded" and bool(ctx.req.content_length or chunked)


def _first(pairs: list[tuple[str, str]], key: str) -> str:
    return next((v for k, v in pairs if k == key), "")


def create(ctx: Context) -> None:
    """POST /images/create: pull (fromImage) or, as dockerd decides, import (no fromImage)."""
    if _form_body(ctx):
        raise DockerError(
            400,
            "image create parameters must be sent in the query, and an image to import as a "
            "tar archive (Content-Type application/x-tar), not as a form",
        )
    # As dockerd reads the query: the first value of each key; no fromImage is an import.
    pairs = parse_qsl(ctx.req.query_string, keep_blank_values=True)
    from_image = _first(pairs, "fromImage")
    if not from_image:
        sources = [v for k, v in pairs if k == "fromSrc"]
        if any(sources):
            transfer.import_(ctx, sources, ctx.query("repo") or "", ctx.query("tag") or "")
            return
        to_home(ctx)  # dockerd's own answer (an import from the URL "http://", which fails)
        return
    transfer.pull(ctx, from_image, _first(pairs, "tag"))


def push(ctx: Context) -> None:
    if _form_body(ctx):
        raise DockerError(400, "push parameters must be sent in the query, not as a form")
    transfer.push(ctx, ctx.params["name"], ctx.query("tag") or "")


def get(ctx: Context) -> None:
    transfer.save(ctx, ctx.params["name"])


def get_all(ctx: Context) -> None:
    names = [v for k, v in parse_qsl(ctx.req.query_string, keep_blank_values=True) if k == "names"]
    transfer.save_many(ctx, names)


def load(ctx: Context) -> None:
    transfer.load(ctx)


IMG = "/images/{name*}"
ROUTES = [
    Route("POST", "/images/create", "ImageCreate", create, streaming=True),
    Route("GET", "/images/get", "ImageGetAll", get_all, streaming=True),
    Route("POST", "/images/load", "ImageLoad", load, streaming=True),
    Route("POST", IMG + "/push", "ImagePush", push, streaming=True),
    Route("GET", IMG + "/get", "ImageGet", get, streaming=True),
]
