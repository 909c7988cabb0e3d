"""The daemon's answers about images, as the tenant must see them.

Every name in them is the tenant's (gateway/imagemap.py rewrites daemon references back), and an
image the tenant may not see answers exactly as a missing one: the daemon is asked about a decoy
of the same shape, and its own words come back about what the tenant typed.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway import imagemap, store
from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import check_agent, send
from gateway.services.common import home_instance
from gateway.services.image_moves import image_path
from gateway.services.jsonlines import rewrite_lines


def names_back(project: str, replace: dict[str, str] | None = None) -> Callable[[bytes], bytes]:
    """An edit for gateway/services/jsonlines.py: ``replace``'s words first (a decoy's), then
    every daemon reference of ``project`` back to the tenant's name."""

    def edit(data: bytes) -> bytes:
        for old, new in (replace or {}).items():
            data = data.replace(old.encode(), new.encode())
        return imagemap.rewrite_bytes(project, data)

    return edit


def respond_rewritten(
    ctx: Context,
    instance: store.Instance,
    upstream,
    replace: dict[str, str] | None = None,
    observe=None,
    finish=None,
    always=None,
) -> None:
    """The daemon's answer, streamed, with daemon names (and decoys) rewritten back.

    ``finish()`` runs once the daemon's answer has been passed on whole (what it returns is a
    last line for the client); ``always()`` runs after that, or when the client goes away
    first, or the agent failed: what a request holds (a lock, a quota reservation) is let go."""
    try:
        check_agent(instance, upstream)
    except BaseException:
        if always:
            always()
        raise
    resp = ctx.resp
    resp.status = upstream.status
    for name, value in upstream.headers:
        if name.lower() == "content-type":
            resp.content_type = value
    if not upstream.has_body:
        try:
            upstream.close()
            if finish:
                finish()
        finally:
            if always:
                always()
        return
    stream = rewrite_lines(upstream.iter_body(), names_back(ctx.project, replace), observe)

    def body():
        try:
            yield b""
            yield from stream
            if finish:
                extra = finish()
                if extra:
                    yield extra
        finally:
            upstream.close()
            if always:
                always()

    resp.stream = body()


def forward_decoy(ctx: Context, typed: str, path_for, query: str | None = None) -> None:
    """The tenant named no image it may see: ask the daemon about a decoy of the same shape
    and answer its words (about what the tenant typed)."""
    name, replace = imagemap.decoy(ctx.project, typed)
    instance = home_instance(ctx)
    upstream = send(
        ctx, instance, path=path_for(name), query=query, body=b"" if ctx.req.method != "GET" else None
    )
    respond_rewritten(ctx, instance, upstream, replace)


def resolve_or_decoy(ctx: Context, typed: str, suffix: str = "") -> imagemap.Found | None:
    """The image ``typed`` names for the caller; None once the decoy's answer is relayed."""
    found = imagemap.resolve(ctx.project, typed)
    if found is None:
        forward_decoy(ctx, typed, lambda n: image_path(n, suffix))
    return found


def no_such_image(typed: str) -> DockerError:
    """dockerd's error for a reference that names no image the caller sees."""
    fid = imagemap.full_id(typed)
    if fid:
        return DockerError(404, f"No such image: {fid}")
    try:
        return DockerError(404, f"No such image: {imagemap.parse(typed).familiar()}")
    except imagemap.ReferenceError_ as exc:
        return DockerError(400, str(exc))
