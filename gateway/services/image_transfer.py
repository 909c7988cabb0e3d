"""Images in and out of the cloud: pull, push, save, load and import.

Each streams: a registry's progress lines and the tars pass through as they arrive, with the
project's daemon names rewritten both ways (gateway/services/jsonlines.py for the progress
lines, gateway/tarstream.py for the names inside a saved tar, gateway/services/image_archive.py
for a loaded one, which is parsed and written anew). What a request adds to the project is
counted by its images quota (gateway/services/image_slot.py) and recorded once the daemon's
answer has been passed on whole.
"""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import urlencode

from gateway import imagemap, policy, store, tarstream
from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import call, check_agent, client_body, send
from gateway.services import image_archive
from gateway.services.common import home_instance, to_home, with_query
from gateway.services.image_answers import forward_decoy, resolve_or_decoy, respond_rewritten
from gateway.services.image_moves import ensure_on, holder, image_path, need_holder, split, tag_on
from gateway.services.image_slot import ImageSlot, discard, restore_tag
from gateway.services.jsonlines import error_line

_locks: dict[tuple[str, str], threading.Lock] = {}


def _lock(instance: store.Instance, name: str):
    """Serialise the gateway's use of a registry name on a daemon (pull, push): the tag is
    global there while it exists. Per worker process (see docs/divergences.md)."""
    return _locks.setdefault((instance.uuid, name), threading.Lock())


# -- save ------------------------------------------------------------------------------------------
def _save_rewriter(project: str):
    def edit(name: str, content: bytes) -> bytes:
        return imagemap.rewrite_bytes(project, content)

    return lambda name: name in ("manifest.json", "repositories"), edit


def _answer_save(ctx: Context, instance, upstream) -> None:
    if upstream.status != 200:
        respond_rewritten(ctx, instance, upstream)
        return
    check_agent(instance, upstream)
    ctx.resp.status = 200
    ctx.resp.content_type = upstream.header("Content-Type") or "application/x-tar"
    wanted, edit = _save_rewriter(ctx.project)
    ctx.resp.stream = tarstream.rewrite(upstream.iter_body(), wanted, edit)


def save(ctx: Context, typed: str) -> None:
    """docker save of one image (GET /images/NAME/get), its names inside the tar the tenant's."""
    found = resolve_or_decoy(ctx, typed, "/get")
    if found is None:
        return
    instance = need_holder(ctx, found, typed)
    _answer_save(ctx, instance, send(ctx, instance, path=image_path(found.daemon_name(), "/get"), query=""))


def save_many(ctx: Context, names: list[str]) -> None:
    """docker save of several images (GET /images/get?names=...), gathered on one instance."""
    resolved = [(n, imagemap.resolve(ctx.project, n)) for n in names]
    missing = [n for n, f in resolved if f is None]
    if missing or not names:
        query, replace = [], {}
        for n, f in resolved:
            if f is None:
                d, r = imagemap.decoy(ctx.project, n)
                replace.update(r)
                query.append(("names", d))
        instance = home_instance(ctx)
        upstream = send(ctx, instance, query=urlencode(query))
        respond_rewritten(ctx, instance, upstream, replace)
        return
    every = [found for _, found in resolved if found is not None]  # (none is missing here)
    instance = holder(ctx, every[0].image_id) or home_instance(ctx)
    for found in every:
        ensure_on(ctx, instance, found.image_id)
    query = urlencode([("names", found.daemon_name()) for found in every])
    _answer_save(ctx, instance, send(ctx, instance, query=query))


# -- pull ------------------------------------------------------------------------------------------
def _public_up_to_date(ctx: Context, ref: imagemap.Ref) -> None:
    """A pull of a public image: the operator's copy is this cloud's version of it, already on
    every instance, so the pull answers as dockerd answers a pull of an image that is up to
    date (``docker pull busybox && docker run busybox`` in a pipeline works as anywhere)."""
    tag = ref.tag or "latest"
    lines = [{"status": f"Pulling from {ref.path}", "id": tag}]
    status, info = call(ctx, home_instance(ctx), "GET", image_path(ref.familiar(), "/json"))
    digests = info.get("RepoDigests") if status == 200 and isinstance(info, dict) else None
    digest = next((d.split("@", 1)[1] for d in digests or [] if "@" in d), None)
    if digest:
        lines.append({"status": f"Digest: {digest}"})
    lines.append({"status": f"Status: Image is up to date for {ref.familiar()}"})
    ctx.resp.status = 200
    ctx.resp.content_type = "application/json"
    ctx.resp.data = b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\r\n" for line in lines)


def pull(ctx: Context, from_image: str, tag: str) -> None:
    """docker pull ``from_image`` (with ``tag``: a tag or a digest) into the project."""
    typed = from_image
    if tag:
        typed += ("@" if ":" in tag and tag.split(":", maxsplit=1)[0] in ("sha256", "sha512") else ":") + tag
    try:
        ref = imagemap.parse(typed)
    except imagemap.ReferenceError_:
        return to_home(ctx)  # dockerd refuses it in its own words, pulling nothing
    if not ref.tag and not ref.digest:
        raise DockerError(
            400,
            "pulling every tag of a repository (docker pull -a) is not supported by Moorage; "
            "pull the tags you need one by one",
        )
    imagemap.refuse_reserved(ref)
    real = ref.full_name + ref.suffix()
    if imagemap.is_public_name(ref.familiar()):
        return _public_up_to_date(ctx, ref)
    instance = home_instance(ctx, claim=True)
    # A pull of a name the project holds replaces an image it counts already (or adds the
    # one the tag moved to: settled after the pull); any other pull may add one.
    slot = ImageSlot(ctx, needed=not imagemap.holds_reference(ctx.project, ref.familiar()))
    lock = _lock(instance, real)
    held_lock = [lock.acquire()]

    def let_go():
        slot.release()
        if held_lock:
            held_lock.pop()
            lock.release()

    try:
        upstream = send(ctx, instance)
    except BaseException:
        let_go()
        raise
    failed = []

    def observe(obj):
        if obj.get("error"):
            failed.append(obj["error"])

    def finish() -> bytes | None:
        if failed:
            return None
        status, info = call(ctx, instance, "GET", image_path(real, "/json"))
        if status != 200:
            return error_line(f"the pulled image could not be found on instance {instance.uuid}")
        image_id = info["Id"]
        daemon = real if ref.digest else imagemap.daemon_ref(ctx.project, ref)
        if not ref.digest:
            if tag_on(ctx, instance, image_id, daemon) >= 400:
                return error_line(f"tagging the pulled image on instance {instance.uuid} failed")
            call(ctx, instance, "DELETE", image_path(real), query="noprune=1")

        def record():
            imagemap.record(
                ctx.project, ref.familiar(), image_id, instance, daemon=real if ref.digest else None
            )

        try:
            slot.settle([image_id], record)
        except DockerError as exc:
            discard(ctx, instance, image_id, [daemon])
            return error_line(exc.message)
        return None

    if upstream.status != 200:
        respond_rewritten(ctx, instance, upstream, always=let_go)
        return
    respond_rewritten(ctx, instance, upstream, observe=observe, finish=finish, always=let_go)


# -- import ----------------------------------------------------------------------------------------
def import_(ctx: Context, sources: list[str], repo: str, tag: str) -> None:
    """docker import: an image from a tar (the body, source "-"), named ``repo``:``tag``."""
    for source in sources:
        policy.image_import(ctx, source)  # anything but "-" (the body) is a URL the instance fetches
    reference, query, daemon = "", ctx.req.query_string, ""
    if repo:
        try:
            ref = imagemap.parse(f"{repo}:{tag}" if tag and ":" not in repo.rsplit("/", 1)[-1] else repo)
        except imagemap.ReferenceError_:
            return to_home(ctx)
        imagemap.refuse_reserved(ref)
        reference = ref.familiar()
        daemon = imagemap.daemon_ref(ctx.project, ref)
        drepo, dtag = split(daemon)
        query = with_query(ctx, repo=drepo, tag=dtag)
    instance = home_instance(ctx, claim=True)
    slot = ImageSlot(ctx)
    try:
        upstream = send(ctx, instance, query=query)
    except BaseException:
        slot.release()
        raise
    ids = []

    def observe(obj):
        status = obj.get("status") or ""
        if status.startswith("sha256:"):
            ids.append(status)

    def finish():
        if not ids:
            return None
        try:
            slot.settle([ids[-1]], lambda: imagemap.record(ctx.project, reference, ids[-1], instance))
        except DockerError as exc:
            discard(ctx, instance, ids[-1], [daemon])
            return error_line(exc.message)
        return None

    respond_rewritten(ctx, instance, upstream, observe=observe, finish=finish, always=slot.release)
    return None


# -- push ------------------------------------------------------------------------------------------
def push(ctx: Context, name: str, tag: str) -> None:
    """docker push ``name`` (one ``tag``, or every tag the project gives the repository)."""
    try:
        repo = imagemap.parse(name)
    except imagemap.ReferenceError_:
        return forward_decoy(ctx, name, lambda n: image_path(n, "/push"))
    if tag:
        wanted = [imagemap.parse(f"{repo.full_name}:{tag}").familiar()]
    else:
        wanted = sorted(
            {
                reference
                for reference in imagemap.project_references(ctx.project)
                if "@" not in reference and imagemap.parse(reference).full_name == repo.full_name
            }
        )
    rows = [
        (found.image_id, found.row.reference)
        for found in (imagemap.resolve(ctx.project, w) for w in wanted)
        if found is not None and found.row is not None and found.row.project == ctx.project
    ]
    if not rows:
        return forward_decoy(ctx, name, lambda n: image_path(n, "/push"))
    imagemap.refuse_reserved(repo)
    public = imagemap.public_names()
    instance = holder(ctx, rows[0][0])
    if instance is None:
        raise DockerError(404, f"No such image: {rows[0][1]}")
    real_tags = []
    for image_id, reference in rows:
        ensure_on(ctx, instance, image_id)
        real = imagemap.parse(reference)
        if real.familiar() in public:
            raise DockerError(
                409, f"{real.familiar()} is the name of a public image on this cloud: push under another name"
            )
        real_tags.append((image_id, real.familiar()))
    locks = [_lock(instance, t) for _, t in real_tags]
    for lock in locks:
        lock.acquire()

    def cleanup():
        try:
            for _, t in real_tags:
                call(ctx, instance, "DELETE", image_path(t), query="noprune=1")
        finally:
            for lock in locks:
                lock.release()

    try:
        for image_id, t in real_tags:
            if tag_on(ctx, instance, image_id, t) >= 400:
                raise DockerError(500, f"preparing the push on instance {instance.uuid} failed")
        upstream = send(ctx, instance)
    except BaseException:
        cleanup()
        raise
    respond_rewritten(ctx, instance, upstream, always=cleanup)
    return None


# -- load ------------------------------------------------------------------------------------------
def _load_tag(project: str, text: Any) -> str:
    """A name a load gives an image (a ``RepoTags`` entry, or ``repo:tag`` of ``repositories``)
    as the project's daemon name; a reserved or public name is refused: the daemon would
    otherwise move another project's tag or the public image everyone runs."""
    if not isinstance(text, str):
        raise image_archive.refused(f"the image name {text!r} is not a string")
    try:
        ref = imagemap.parse(text)
    except imagemap.ReferenceError_ as exc:
        raise image_archive.refused(f"the image name {text!r}: {exc}") from None
    imagemap.refuse_reserved(ref)
    if imagemap.is_public_name(ref.familiar()):
        raise DockerError(
            409,
            f"{ref.familiar()} is the name of a public image on this cloud, which a load cannot "
            "replace: load under another name (docker tag, docker save, then docker load)",
        )
    return imagemap.daemon_ref(project, ref)


def _load_edits(project: str):
    def manifest(data: Any) -> Any:
        if not isinstance(data, list):
            raise image_archive.refused("manifest.json is not a list of images")
        for entry in data:
            if not isinstance(entry, dict):
                raise image_archive.refused("manifest.json holds an entry that is not an image")
            tags = entry.get("RepoTags")
            if tags is None:
                continue  # an image without names: the project's untagged image
            if not isinstance(tags, list):
                raise image_archive.refused("an image's RepoTags in manifest.json is not a list")
            entry["RepoTags"] = [_load_tag(project, t) for t in tags]
        return data

    def repositories(data: Any) -> Any:
        if not isinstance(data, dict):
            raise image_archive.refused("repositories is not an object of repositories")
        out = {}
        for repo, tags in data.items():
            if not isinstance(tags, dict):
                raise image_archive.refused(f"the tags of {repo!r} in repositories are not an object")
            for tag, image in tags.items():
                d_repo, d_tag = split(_load_tag(project, f"{repo}:{tag}"))
                out.setdefault(d_repo, {})[d_tag] = image
        return out

    return manifest, repositories


def load(ctx: Context) -> None:
    """docker load: the tar's names become the project's daemon names as it streams through."""
    instance = home_instance(ctx, claim=True)
    slot = ImageSlot(ctx)
    try:
        body, _ = client_body(ctx)
        if body is not None:
            # Parsed and written anew (gateway/services/image_archive.py): the daemon unpacks
            # exactly the entries and names that were checked.
            body = image_archive.rewrite_load(body, *_load_edits(ctx.project))
        upstream = send(ctx, instance, body=body if body is not None else b"")
    except BaseException:
        slot.release()
        raise
    loaded: list[str] = []

    def observe(obj):
        stream = obj.get("stream")
        if isinstance(stream, str):
            if stream.startswith("Loaded image ID: "):
                loaded.append(stream[len("Loaded image ID: ") :].strip())
            elif stream.startswith("Loaded image: "):
                loaded.append(stream[len("Loaded image: ") :].strip())

    def finish():
        made: list[tuple[str, str, str]] = []  # (reference, image ID, daemon name)
        for item in loaded:
            if item.startswith("sha256:"):
                made.append(("", item, ""))
                continue
            try:
                daemon = imagemap.daemon_ref(ctx.project, item)
                reference = imagemap.normalize(item)
            except imagemap.ReferenceError_:
                continue
            status, info = call(ctx, instance, "GET", image_path(daemon, "/json"))
            if status == 200:
                made.append((reference, info["Id"], daemon))
        if not made:
            return None

        def record():
            for reference, image_id, _ in made:
                imagemap.record(ctx.project, reference, image_id, instance)

        try:
            slot.settle([image_id for _, image_id, _ in made], record)
        except DockerError as exc:
            # Nothing of the load is the project's: what it added goes, what it moved goes back.
            for image_id in {i for _, i, _ in made}:
                names = [d for _, i, d in made if i == image_id]
                if imagemap.holds(ctx.project, image_id):
                    for name in names:
                        restore_tag(ctx, instance, name, image_id)
                else:
                    discard(ctx, instance, image_id, names)
            return error_line(exc.message)
        return None

    respond_rewritten(ctx, instance, upstream, observe=observe, finish=finish, always=slot.release)
