"""docker build (the classic builder): the build's settings and its Dockerfile in the project's
names, the image it makes counted and recorded.

The build context streams through the gateway unread except for its build file. The tar is
read as the daemon's unpacker reads it (gateway/tarstream.py rewrite_build_context), so every
member that lands where the daemon looks for the build file is found, whatever its spelling
(`./Dockerfile`, `x/../Dockerfile`, a PAX or GNU long name, through a symlinked directory);
links and special files there are refused. Each such file is parsed as the builder parses it
and written out again with every image reference resolved in the tenant's names
(gateway/buildfile.py): the tenant's own images become their daemon names, made present on
the building instance; names it may not see become a decoy the daemon lacks, so the daemon's
error is its own.
"""

from __future__ import annotations

import bz2
import functools
import json
import lzma
import posixpath
import zlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

from gateway import buildfile, imagemap, policy, store, tarstream
from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import call, client_body, send
from gateway.services.common import home_instance
from gateway.services.image_answers import respond_rewritten
from gateway.services.image_moves import ensure_on, image_path
from gateway.services.image_slot import ImageSlot, discard
from gateway.services.jsonlines import error_line
from gateway.tenancy import scope

# The compressions the daemon detects by their first bytes (moby's DecompressStream): the
# context is decompressed here so that its build file is checked; zstd has no decoder in the
# standard library and is refused.
_GZIP, _BZIP2, _XZ, _ZSTD = b"\x1f\x8b\x08", b"BZh", b"\xfd7zXZ\x00", b"(\xb5/\xfd"
DEFAULT_BUILD_FILE = "Dockerfile"


def build_file_targets(dockerfile: str) -> set[str]:
    """Where, inside the context, the daemon reads the build file: the `dockerfile` parameter
    cleaned as a path, and for the default name its lower-case fallback (the daemon reads
    `dockerfile` when `Dockerfile` is absent, which only the whole tar decides, so both are
    checked)."""
    if dockerfile in ("", DEFAULT_BUILD_FILE):
        return {"/Dockerfile", "/dockerfile"}
    if dockerfile.startswith("/"):
        raise DockerError(
            400,
            f"the dockerfile parameter {dockerfile!r} is absolute; give its path inside the build context",
        )
    clean = posixpath.normpath(dockerfile)
    if clean in (".", "..") or clean.startswith("../"):
        raise DockerError(
            400, f"the dockerfile parameter {dockerfile!r} is not a file inside the build context"
        )
    return {"/" + clean}


def buildargs_of(ctx: Context) -> dict[str, str | None]:
    """The request's build args (None: given without a value, the ARG's default applies)."""
    try:
        given = json.loads(ctx.query("buildargs") or "{}")
    except ValueError:
        return {}
    if not isinstance(given, dict):
        return {}
    return {str(k): v if isinstance(v, str) else None for k, v in given.items()}


def from_rewriter(
    ctx: Context, instance: store.Instance, buildargs: dict[str, str | None]
) -> Callable[[str, bytes], bytes]:
    """Rewrite a build file: every image reference resolved in the tenant's names, the tenant's
    own images present on the building instance (gateway/buildfile.py)."""
    cache: dict[str, str] = {}

    def resolve(typed: str, line: int, stages: list[str]) -> str:
        if typed in cache:
            return cache[typed]
        found = imagemap.resolve(ctx.project, typed)
        if found is None:
            new = imagemap.decoy(ctx.project, typed)[0]
            if new == typed and not imagemap.full_id(typed):
                raise buildfile.BuildfileError(f"Dockerfile line {line}: invalid reference format: {typed!r}")
        elif found.public:
            new = typed  # every daemon has its own copy, under this name
        else:
            ensure_on(ctx, instance, found.image_id)
            new = found.daemon_name()
            _check_triggers(ctx, instance, typed, new, line, stages)
        cache[typed] = new
        return new

    def edit(name: str, content: bytes) -> bytes:
        try:
            return buildfile.rewrite(content, buildargs, resolve)
        except buildfile.ParseError as exc:
            raise DockerError(400, str(exc)) from None  # dockerd's own refusal, in its words
        except buildfile.BuildfileError as exc:
            raise DockerError(400, f"{name}: {exc}") from None

    return edit


def _check_triggers(
    ctx: Context, instance: store.Instance, typed: str, daemon_name: str, line: int, stages: list[str]
) -> None:
    """An image's ONBUILD triggers run in the build that uses it, and a tenant can give its
    image any triggers (commit --change, import, load): each image they name must be one the
    project may use."""
    status, info = call(ctx, instance, "GET", image_path(daemon_name, "/json"))
    if status != 200 or not isinstance(info, dict):
        return
    for trigger in (info.get("Config") or {}).get("OnBuild") or []:
        for ref in buildfile.trigger_references(str(trigger)):
            if not _usable_in_trigger(ctx.project, ref, stages):
                raise buildfile.BuildfileError(
                    f"Dockerfile line {line}: {typed} has an ONBUILD trigger naming an image this "
                    f"project cannot use ({imagemap.rewrite_text(ctx.project, ref)}); rebuild it without "
                    "that trigger"
                )


def _usable_in_trigger(project: str, ref: str, stages: list[str]) -> bool:
    if "$" in ref or ref.startswith("--"):
        return False
    if ref.lower() in stages or (ref.isdigit() and int(ref) < len(stages)):
        return True
    if imagemap.tenant_name(project, ref) is not None:
        return True  # the project's own daemon names
    fid = imagemap.full_id(ref)
    if fid:
        return imagemap.holds(project, fid) or imagemap.is_public(fid)
    found = imagemap.resolve(project, ref)
    return found is not None and found.public


def _read_first(it: Iterator[bytes], n: int) -> bytes:
    first = b""
    for chunk in it:
        first += chunk
        if len(first) >= n:
            break
    return first


def _decompressed(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    """A gzip/bzip2/xz stream decompressed (concatenated streams too, as the daemon reads them)."""
    make: Callable[[], Any]
    if first.startswith(_GZIP):
        make = functools.partial(zlib.decompressobj, 47)
    elif first.startswith(_BZIP2):
        make = bz2.BZ2Decompressor
    else:
        make = functools.partial(lzma.LZMADecompressor, format=lzma.FORMAT_XZ)
    decoder = make()
    try:
        for chunk in _chain(first, rest):
            data = chunk
            while data:
                out = decoder.decompress(data)
                if out:
                    yield out
                if not decoder.eof:
                    break
                data = decoder.unused_data
                decoder = make()
    except (zlib.error, OSError, lzma.LZMAError, EOFError) as exc:
        raise tarstream.ContextError(f"the compressed build context cannot be read ({exc})") from None


def build_context(body, dockerfile: str, edit: Callable[[str, bytes], bytes]) -> Iterator[bytes]:
    """The build context with its build file rewritten: a tar as it streams (a compressed one
    decompressed first, so that the daemon reads the file that was checked); a bare Dockerfile
    whole (it is small)."""
    targets = build_file_targets(dockerfile)
    try:
        it = iter(body)
        first = _read_first(it, tarstream.BLOCK)
        if first.startswith(_ZSTD):
            raise tarstream.ContextError(
                "a zstd-compressed build context cannot be checked; send an uncompressed tar "
                "(docker build sends one unless --compress is given) or a gzip one"
            )
        if first.startswith((_GZIP, _BZIP2, _XZ)):
            it = _decompressed(first, it)
            first = _read_first(it, tarstream.BLOCK)
        if tarstream.is_tar(first):
            yield from tarstream.rewrite_build_context(_chain(first, it), targets, edit)
            return
        data = first  # a Dockerfile on its own: small by nature
        for chunk in it:
            data += chunk
            if len(data) > tarstream.MEMBER_LIMIT:
                raise tarstream.ContextError(
                    f"the build context is neither a tar archive nor a Dockerfile of at most "
                    f"{tarstream.MEMBER_LIMIT} bytes; send a tar archive"
                )
        yield edit(DEFAULT_BUILD_FILE, data)
    except tarstream.ContextError as exc:
        raise DockerError(400, str(exc)) from None


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
            imagemap.refuse_reserved(ref)
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
    instance = home_instance(ctx, claim=True)
    slot = ImageSlot(ctx)
    try:
        body, _ = client_body(ctx)
        if body is not None and "://" not in remote:
            body = build_context(body, dockerfile, from_rewriter(ctx, instance, buildargs_of(ctx)))
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


def prune(ctx: Context) -> None:
    """POST /build/prune: the classic builder's cache on an instance is every project's, and the
    BuildKit cache a prune empties is nobody's (BuildKit is not run), so nothing is pruned and
    nothing forwarded (docs/divergences.md#build-prune)."""
    ctx.answer_json({"CachesDeleted": None, "SpaceReclaimed": 0})
