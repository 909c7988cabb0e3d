"""The daemon's answers about images, as the tenant must see them.

Every name in them is the tenant's (gateway/imagemap.py rewrites daemon references back), and an
image the tenant may not see answers exactly as a missing one: the daemon is asked about a decoy
of the same shape, and its own words come back about what the tenant typed.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway import imagemap, instances, store
from gateway.context import Context
from gateway.errors import DockerError, scrub_paths, scrubbed_body
from gateway.forward import ERROR_BODY_LIMIT, check_agent, send
from gateway.services import buildkit
from gateway.services.common import home_instance
from gateway.services.image_moves import image_path
from gateway.services.jsonlines import rewrite_lines


def names_back(project: str, replace: dict[str, str] | None = None) -> Callable[[bytes], bytes]:
    """An edit for gateway/services/jsonlines.py: ``replace``'s words first (a decoy's), then
    every daemon reference of ``project`` back to the tenant's name, and none of the daemon's
    own paths (a load's or an import's error line quotes its temporary directory)."""
    roots = instances.daemon_roots()

    def edit(data: bytes) -> bytes:
        for old, new in (replace or {}).items():
            data = data.replace(old.encode(), new.encode())
        if b"/" in data:
            data = scrub_paths(data.decode("utf-8", errors="surrogateescape"), roots).encode(
                "utf-8", errors="surrogateescape"
            )
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
    length = upstream.content_length
    if upstream.status >= 400 and upstream.has_body and length is not None and length <= ERROR_BODY_LIMIT:
        # A whole error answer: read, so that a path-only error (a missing image's file) can
        # answer with the status dockerd gives a missing image.
        try:
            text = names_back(ctx.project, replace)(upstream.read()).decode("utf-8", "replace")
            resp.status, text = scrubbed_body(upstream.status, text)
            extra = finish() if finish else None
            resp.data = text.encode() + (extra or b"")
        finally:
            if always:
                always()
        return
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
    found = buildkit.resolve(ctx, typed)
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
