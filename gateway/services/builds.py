"""docker build (the classic builder): the build's settings and its Dockerfile in the project's
names, the image it makes counted and recorded.

The build context streams through the gateway unread except for its Dockerfile, whose FROM
lines are rewritten as the tar passes (gateway/tarstream.py): the tenant's own images become
their daemon names, made present on the building instance; names it may not see become a decoy
the daemon lacks, so the daemon's error is its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlencode

from gateway import imagemap, policy, store, tarstream
from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import call, client_body, send
from gateway.services.common import home_instance
from gateway.services.image_answers import respond_rewritten
from gateway.services.image_moves import ensure_on, image_path
from gateway.services.image_slot import ImageSlot, discard
from gateway.services.jsonlines import error_line
from gateway.tenancy import scope

# gzip, bzip2, xz and zstd: a compressed context passes unchanged (docs/divergences.md).
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"(\xb5/\xfd")


def from_rewriter(ctx: Context, instance: store.Instance, stages: set[str]):
    """Rewrite a Dockerfile's FROM lines: the tenant's own images to their daemon names, made
    present on the building instance; names it may not see to a decoy the daemon lacks."""

    def rewrite_line(line: str) -> str:
        stripped = line.lstrip()
        if stripped[:5].upper() != "FROM ":
            return line
        words = stripped.split()
        i = 1
        while i < len(words) and words[i].startswith("--"):
            i += 1
        if i >= len(words):
            return line
        image = words[i]
        if image.lower() == "scratch" or "$" in image or image.lower() in stages:
            if len(words) > i + 2 and words[i + 1].upper() == "AS":
                stages.add(words[i + 2].lower())
            return line
        if len(words) > i + 2 and words[i + 1].upper() == "AS":
            stages.add(words[i + 2].lower())
        found = imagemap.resolve(ctx.project, image)
        if found is None:
            new = imagemap.decoy(ctx.project, image)[0]
        elif found.public:
            return line  # every daemon has its own copy, under this name
        else:
            ensure_on(ctx, instance, found.image_id)
            new = found.daemon_name()
        indent = line[: len(line) - len(stripped)]
        return indent + stripped.replace(image, new, 1)

    def edit(name: str, content: bytes) -> bytes:
        text = content.decode("utf-8", errors="surrogateescape")
        return "".join(rewrite_line(line) for line in text.splitlines(keepends=True)).encode(
            "utf-8", errors="surrogateescape"
        )

    return edit


def build_context(body, dockerfile: str, edit) -> Iterator[bytes]:
    """The build context with its Dockerfile's FROM lines rewritten: a tar as it streams; a bare
    Dockerfile (`docker build - < Dockerfile`) whole (it is small). Compressed contexts pass
    unchanged (docs/divergences.md)."""
    it = iter(body)
    first = b""
    for chunk in it:
        first += chunk
        if len(first) >= tarstream.BLOCK:
            break
    if first.startswith(_COMPRESSED):
        yield first
        yield from it
    elif tarstream.looks_like_tar(first):
        yield from tarstream.rewrite(
            _chain(first, it), lambda n: n.lstrip("./") == dockerfile.lstrip("./"), edit
        )
    else:
        data = first  # a Dockerfile on its own: small by nature, else passed on unchanged
        for chunk in it:
            data += chunk
            if len(data) > tarstream.MEMBER_LIMIT:
                yield data
                yield from it
                return
        yield edit("Dockerfile", data)


def _chain(first: bytes, rest) -> Iterator[bytes]:
    yield first
    yield from rest


def _daemon_settings(ctx: Context, pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """The build's query in the project's daemon names, and the tags the tenant asked for."""
    tags, out = [], []
    for key, value in pairs:
        if key == "networkmode" and value.startswith("container:"):
            # The build's RUN steps join that container's network: the tenant's own, or nothing.
            out.append(
                (key, "container:" + scope.container_for_daemon(ctx.project, value[len("container:") :]))
            )
            continue
        if key == "t" and value:
            try:
                ref = imagemap.parse(value)
            except imagemap.ReferenceError_:
                out.append((key, value))  # dockerd refuses it before building anything
                continue
            if ref.digest:
                out.append((key, value))
                continue
            tags.append(ref.familiar())
            out.append((key, imagemap.daemon_ref(ctx.project, ref)))
        elif key == "cachefrom":
            try:
                names = json.loads(value)
            except ValueError:
                out.append((key, value))
                continue
            mapped = [
                f.daemon_name()
                for f in (imagemap.resolve(ctx.project, n) for n in names or [] if isinstance(n, str))
                if f is not None
            ]
            out.append((key, json.dumps(mapped)))
        else:
            out.append((key, value))
    return out, tags


def build(ctx: Context, dockerfile: str, remote: str) -> None:
    """POST /build: the client's context built on the home instance, the daemon's progress
    streamed back in the tenant's names."""
    # The query's settings (the context streams through unread), its resource limits given
    # the project's defaults.
    out, tags = _daemon_settings(ctx, policy.build(ctx))
    instance = home_instance(ctx)
    slot = ImageSlot(ctx)
    try:
        body, _ = client_body(ctx)
        if body is not None and "://" not in remote:
            body = build_context(body, dockerfile, from_rewriter(ctx, instance, set()))
        upstream = send(ctx, instance, query=urlencode(out), body=body if body is not None else b"")
    except BaseException:
        slot.release()
        raise
    ids: list[str] = []

    def observe(obj):
        aux = obj.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
            ids.append(aux["ID"])
        stream = obj.get("stream")
        if isinstance(stream, str) and stream.startswith("Successfully built "):
            ids.append(stream.split()[-1])
        elif isinstance(stream, str) and imagemap.full_id(stream.strip()):
            ids.append(stream.strip())  # quiet builds print the ID alone

    def finish():
        if not ids and tags:
            # Nothing said which image was built: ask the daemon what the first tag names now.
            status, info = call(
                ctx, instance, "GET", image_path(imagemap.daemon_ref(ctx.project, tags[0]), "/json")
            )
            if status == 200:
                ids.append(info["Id"])
        if not ids:
            return None
        image_id = ids[-1]
        if not image_id.startswith("sha256:"):
            status, info = call(ctx, instance, "GET", image_path(image_id, "/json"))
            if status != 200:
                return None
            image_id = info["Id"]

        def record():
            for reference in tags or [""]:
                imagemap.record(ctx.project, reference, image_id, instance)

        try:
            slot.settle([image_id], record)
        except DockerError as exc:
            discard(ctx, instance, image_id, [imagemap.daemon_ref(ctx.project, t) for t in tags])
            return error_line(exc.message)
        return None

    respond_rewritten(ctx, instance, upstream, observe=observe, finish=finish, always=slot.release)
