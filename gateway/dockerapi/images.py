"""Images: /images/..., /build, /commit (pull, push, build, save, load, import, tag, history, ...).

Every image a project reaches goes through gateway.imagemap: its tags map to daemon references
Moorage controls, its images are the ones the store says it references (plus public ones), and
another project's image answers exactly as a missing one (a decoy goes down instead, and
dockerd's own words about the decoy come back about what the tenant typed).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Iterator
from urllib.parse import parse_qsl, urlencode

from gateway import imagemap, instances, policy, quotas, store, tarstream
from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import call, check_agent, forward, raise_for, send
from gateway.routing import Route
from gateway.services.common import (
    every_instance,
    hide_project_label,
    home_instance,
    parse_filters,
    with_query,
)
from gateway.tenancy import PROJECT_LABEL, scope

log = logging.getLogger("moorage.gateway")


def to_home(ctx: Context) -> None:
    forward(ctx, home_instance(ctx))


def _hide_in_image(image: dict) -> None:
    # A committed image carries its container's labels, the project label among them.
    for key in ("Config", "ContainerConfig"):
        hide_project_label((image.get(key) or {}).get("Labels"))
    hide_project_label(image.get("Labels"))


def _short(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:12]


def _split(daemon_name: str) -> tuple[str, str]:
    """repo, tag of a tagged daemon reference."""
    colon = daemon_name.rfind(":")
    if colon > daemon_name.rfind("/"):
        return daemon_name[:colon], daemon_name[colon + 1 :]
    return daemon_name, "latest"


def _path(name: str, suffix: str = "") -> str:
    return f"/images/{name}{suffix}"


# -- where an image is, and moving it ------------------------------------------------------------
def _has(ctx: Context, instance: store.Instance, image_id: str) -> bool:
    status, _ = call(ctx, instance, "GET", _path(image_id, "/json"), timeout=30)
    return status == 200


def holder(ctx: Context, image_id: str, prefer: store.Instance | None = None) -> store.Instance | None:
    """A live instance that holds ``image_id`` (the store's presence first, then a probe)."""
    live = instances.live_instances(ctx.settings)
    known = set(imagemap.holders(image_id))
    ordered = sorted(live, key=lambda i: (prefer is None or i.uuid != prefer.uuid, i.uuid not in known))
    for instance in ordered:
        if _has(ctx, instance, image_id):
            imagemap.present(image_id, instance)
            return instance
        if instance.uuid in known:
            imagemap.absent(image_id, instance)
    return None


def _tag_on(ctx: Context, instance: store.Instance, image_id: str, daemon_name: str) -> int:
    if not daemon_name or "@" in daemon_name:
        return 200
    repo, tag = _split(daemon_name)
    status, payload = call(
        ctx, instance, "POST", _path(image_id, "/tag"), query=urlencode({"repo": repo, "tag": tag})
    )
    if status >= 400:
        log.warning("tagging %s as %s on %s failed: %s", image_id, daemon_name, instance.uuid, payload)
    return status


def copy_image(ctx: Context, source: store.Instance, target: store.Instance, image_id: str) -> None:
    """Stream ``image_id`` from ``source`` to ``target`` (save → load), never held whole."""
    src = send(ctx, source, method="GET", path=_path(image_id, "/get"), query="", body=b"", timeout=None)
    check_agent(source, src)
    if src.status != 200:
        raw = src.read()
        raise DockerError(
            500,
            f"copying image {_short(image_id)} from instance {source.uuid} failed: "
            f"{raw.decode(errors='replace').strip()}",
        )
    dst = send(
        ctx,
        target,
        method="POST",
        path="/images/load",
        query="quiet=1",
        body=src.iter_body(),
        content_type="application/x-tar",
        timeout=None,
    )
    check_agent(target, dst)
    raw = dst.read()
    errors = [m.get("error") for m in _json_lines(raw) if m.get("error")]
    if dst.status != 200 or errors:
        raise DockerError(
            500,
            f"copying image {_short(image_id)} to instance {target.uuid} failed: "
            f"{errors or raw.decode(errors='replace').strip()}",
        )
    imagemap.present(image_id, target)


def ensure_on(ctx: Context, instance: store.Instance, image_id: str) -> None:
    """Images follow containers: make sure ``instance`` holds ``image_id`` and the daemon tags
    the store gives it (copied as a stream from an instance that has it)."""
    if not _has(ctx, instance, image_id):
        source = holder(ctx, image_id)
        if source is None:
            raise DockerError(
                404, f"No such image: {image_id} (no instance holds it any more; pull or build it again)"
            )
        copy_image(ctx, source, instance, image_id)
    imagemap.present(image_id, instance)
    for row in store.ImageRef.select().where(store.ImageRef.image_id == image_id):
        if row.daemon_ref and row.project != imagemap.PUBLIC:
            _tag_on(ctx, instance, image_id, row.daemon_ref)


def _no_such_image(typed: str) -> DockerError:
    fid = imagemap.full_id(typed)
    if fid:
        return DockerError(404, f"No such image: {fid}")
    try:
        return DockerError(404, f"No such image: {imagemap.parse(typed).familiar()}")
    except imagemap.ReferenceError_ as exc:
        return DockerError(400, str(exc))


def container_image(ctx: Context, instance: store.Instance, image) -> object:
    """For containers.create, after placement on ``instance``: the daemon's name for the
    tenant's Image, made present there. Another project's image is a missing one (404)."""
    if not isinstance(image, str) or not image:
        return image  # dockerd says what is wrong with it
    found = imagemap.resolve(ctx.project, image)
    if found is None:
        raise _no_such_image(image)
    if found.public:
        # Public images are seeded per daemon (their IDs may differ): the daemon's own copy,
        # named as the tenant typed it (Config.Image and ps show what was typed, as on dockerd).
        status, info = call(ctx, instance, "GET", _path(found.daemon_name(), "/json"))
        if status == 200:
            imagemap.present(info["Id"], instance)
            return image
    ensure_on(ctx, instance, found.image_id)
    if found.row is not None and found.row.daemon_ref.startswith(imagemap.DAEMON_PREFIX):
        return imagemap.daemon_ref(ctx.project, imagemap.parse(image), default_tag=False)
    return found.daemon_name()


def tenant_image_name(project: str, daemon_image: str) -> str:
    """For container inspect (Config.Image) and list (Image): the tenant's name back."""
    if not isinstance(daemon_image, str):
        return daemon_image
    return imagemap.tenant_name(project, daemon_image) or daemon_image


def container_view(project: str, payload: dict) -> None:
    """For container inspect: Config.Image as the tenant named it."""
    config = payload.get("Config")
    if isinstance(config, dict) and "Image" in config:
        config["Image"] = tenant_image_name(project, config["Image"])


# -- answers rewritten -----------------------------------------------------------------------------
def _json_lines(raw: bytes) -> list[dict]:
    out = []
    for line in raw.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _rewrite_lines(
    chunks: Iterable[bytes], project: str, replace: dict[str, str] | None = None, observe=None
) -> Iterator[bytes]:
    """A JSON-lines stream with daemon names put back as the tenant's, line by line;
    ``observe(obj)`` sees each decoded line."""
    pending = b""
    for chunk in chunks:
        if not chunk:
            yield chunk
            continue
        pending += chunk
        if b"\n" not in pending:
            if len(pending) > 1 << 20:
                yield pending
                pending = b""
            continue
        complete, _, pending = pending.rpartition(b"\n")
        yield _rewrite_block(complete + b"\n", project, replace, observe)
    if pending:
        yield _rewrite_block(pending, project, replace, observe)


def _rewrite_block(data: bytes, project: str, replace, observe) -> bytes:
    for old, new in (replace or {}).items():
        data = data.replace(old.encode(), new.encode())
    data = imagemap.rewrite_bytes(project, data)
    if observe is not None:
        for obj in _json_lines(data):
            observe(obj)
    return data


def _respond_rewritten(
    ctx: Context,
    instance,
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
    stream = _rewrite_lines(upstream.iter_body(), ctx.project, replace, observe)

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


def _forward_decoy(ctx: Context, typed: str, path_for, query: str | None = None) -> None:
    """The tenant named no image it may see: ask the daemon about a decoy of the same shape
    and answer its words (about what the tenant typed)."""
    name, replace = imagemap.decoy(ctx.project, typed)
    instance = home_instance(ctx)
    upstream = send(
        ctx, instance, path=path_for(name), query=query, body=b"" if ctx.req.method != "GET" else None
    )
    _respond_rewritten(ctx, instance, upstream, replace)


def _resolve_or_decoy(ctx: Context, suffix: str = ""):
    typed = ctx.params["name"]
    found = imagemap.resolve(ctx.project, typed)
    if found is None:
        _forward_decoy(ctx, typed, lambda n: _path(n, suffix))
    return found


def _need_holder(ctx: Context, found) -> store.Instance:
    instance = holder(ctx, found.image_id)
    if instance is None:
        raise DockerError(404, f"No such image: {ctx.params.get('name') or found.image_id}")
    return instance


def _repo_digests(project: str, digests, tags: list[str]) -> list[str]:
    repos = set()
    for tag in tags:
        try:
            repos.add(imagemap.parse(tag).familiar_name)
        except imagemap.ReferenceError_:
            pass
    out = []
    for entry in digests or []:
        if entry.startswith(imagemap.DAEMON_PREFIX):
            name = imagemap.tenant_name(project, entry)
            if name:
                out.append(name)
        elif entry.split("@", 1)[0] in repos:
            out.append(entry)
    return sorted(set(out))


def _tenant_view(project: str, image: dict, rows: list[store.ImageRef]) -> dict:
    tags = imagemap.tenant_tags(project, rows)
    digests = _repo_digests(project, image.get("RepoDigests"), tags)
    digests += [r.reference for r in rows if "@" in r.reference and r.reference not in digests]
    image["RepoTags"] = tags
    image["RepoDigests"] = digests
    _hide_in_image(image)
    return json.loads(imagemap.rewrite_text(project, json.dumps(image)))


# -- routes ----------------------------------------------------------------------------------------
def inspect(ctx: Context) -> None:
    found = _resolve_or_decoy(ctx, "/json")
    if found is None:
        return
    instance = _need_holder(ctx, found)
    status, payload = call(ctx, instance, "GET", _path(found.image_id, "/json"))
    raise_for(status, payload)
    rows = imagemap.visible_images(ctx.project).get(found.image_id, [])
    ctx.answer_json(_tenant_view(ctx.project, payload, rows))


def history(ctx: Context) -> None:
    found = _resolve_or_decoy(ctx, "/history")
    if found is None:
        return
    instance = _need_holder(ctx, found)
    status, payload = call(ctx, instance, "GET", _path(found.image_id, "/history"))
    raise_for(status, payload)
    visible = imagemap.visible_images(ctx.project)
    for entry in payload or []:
        rows = visible.get(entry.get("Id"))
        entry["Tags"] = (imagemap.tenant_tags(ctx.project, rows) or None) if rows else None
    ctx.answer_json(payload)


def _image_filters_ok(filters: dict) -> bool:
    return all(k in ("before", "dangling", "label", "reference", "since") for k in filters)


def _values(filters: dict, key: str) -> list[str]:
    v = filters.get(key)
    if isinstance(v, dict):
        return [k for k, on in v.items() if on]
    if isinstance(v, list):
        return [str(x) for x in v]
    return []


def _labels_match(labels: dict | None, wanted: list[str]) -> bool:
    labels = labels or {}
    for item in wanted:
        key, eq, value = item.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


def _list_images(ctx: Context) -> list[dict]:
    """The project's view: its own and public images, from every live instance, one per ID."""
    visible = imagemap.visible_images(ctx.project)
    seen: dict[str, dict] = {}
    public_seen: set[str] = set()
    for instance, payload in every_instance(ctx, "GET", "/images/json"):
        for image in payload or []:
            image_id = image.get("Id")
            if image_id not in visible or image_id in seen:
                continue
            imagemap.present(image_id, instance)
            rows = visible[image_id]
            if all(r.project == imagemap.PUBLIC for r in rows):
                # A public image seeded on each daemon has an ID per daemon: list it once.
                names = {r.reference for r in rows}
                if names <= public_seen:
                    continue
                public_seen |= names
            seen[image_id] = _tenant_view(ctx.project, image, rows)
    return list(seen.values())


def list_(ctx: Context) -> None:
    filters = parse_filters(ctx)
    if (
        filters is None
        or not _image_filters_ok(filters)
        or any(v not in ("true", "false", "1", "0") for v in _values(filters, "dangling"))
    ):
        # Filters dockerd refuses: its own error (it refuses before listing anything).
        bad = with_query(ctx, filters=ctx.query("filters"))
        status, payload = call(ctx, home_instance(ctx), "GET", "/images/json", query=bad)
        if status >= 400:
            raise_for(status, payload)
        filters = {}
    images = _list_images(ctx)
    for image in images:
        if not image["RepoTags"]:
            if image["RepoDigests"]:
                image["RepoTags"] = None
            else:
                image["RepoTags"], image["RepoDigests"] = ["<none>:<none>"], ["<none>@<none>"]
    dangling = _values(filters, "dangling")
    if dangling:
        want = dangling[-1] in ("true", "1")
        images = [i for i in images if (i["RepoTags"] in (None, ["<none>:<none>"])) == want]
    labels = _values(filters, "label")
    if labels:
        images = [i for i in images if _labels_match(i.get("Labels"), labels)]
    refs = _values(filters, "reference")
    if refs:
        # As dockerd: only the matching references stay, and an image with none is left out.
        for image in images:
            image["RepoTags"] = [t for t in image["RepoTags"] or [] if _ref_match(refs, t)] or None
            image["RepoDigests"] = [d for d in image["RepoDigests"] or [] if _ref_match(refs, d)] or None
        images = [i for i in images if i["RepoTags"] or i["RepoDigests"]]
        for image in images:
            image["RepoTags"] = image["RepoTags"] or []
            image["RepoDigests"] = image["RepoDigests"] or []
    for key, newer in (("before", False), ("since", True)):
        for typed in _values(filters, key):
            found = imagemap.resolve(ctx.project, typed)
            if found is None:
                raise _no_such_image(typed)
            created = next((i["Created"] for i in images if i["Id"] == found.image_id), None)
            if created is None:
                status, info = call(ctx, _need_holder(ctx, found), "GET", _path(found.image_id, "/json"))
                raise_for(status, info)
                from datetime import datetime

                created = int(datetime.fromisoformat(info["Created"][:19]).timestamp())
            images = [i for i in images if (i["Created"] > created if newer else i["Created"] < created)]
    for image in images:
        # dockerd's list says null for an image without digests (inspect says []).
        image["RepoDigests"] = image.get("RepoDigests") or None
    images.sort(key=lambda i: i.get("Created", 0), reverse=True)
    ctx.answer_json(images)


def _glob(pattern: str, text: str) -> bool:
    """Go's path.Match: '*' and '?' never match '/'."""
    rx = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, text) is not None


def _ref_match(patterns: list[str], name: str) -> bool:
    """reference.FamiliarMatch: the familiar string, or its repository name alone."""
    if name.startswith("<none>"):
        return False
    repo = name.split("@", 1)[0]
    if "@" not in name and repo.rfind(":") > repo.rfind("/"):
        repo = repo[: repo.rfind(":")]
    return any(_glob(p, name) or _glob(p, repo) for p in patterns)


def tag(ctx: Context) -> None:
    found = _resolve_or_decoy(ctx, "/tag")
    if found is None:
        return
    repo, tag_ = ctx.query("repo") or "", ctx.query("tag") or ""
    try:
        target = imagemap.parse(repo)
        if target.tag or target.digest:
            if tag_:
                raise imagemap.ReferenceError_("invalid reference format")
        if target.digest:
            raise DockerError(400, "refusing to create a tag with a digest reference")
        target = imagemap.parse(f"{repo}:{tag_}" if tag_ else repo)
    except imagemap.ReferenceError_:
        # Nothing valid can be tagged: dockerd judges the tenant's own words, on the image's ID.
        forward(ctx, _need_holder(ctx, found), path=_path(found.image_id, "/tag"))
        return
    reference = target.familiar()
    daemon = imagemap.daemon_ref(ctx.project, target)
    instance = _need_holder(ctx, found)
    # A new name for an image the project holds adds none; for one it does not (a public
    # image's) it adds one.
    slot = _ImageSlot(ctx, needed=not _holds(ctx.project, found.image_id))
    tagged = []
    try:
        if daemon and "@" not in daemon:
            d_repo, d_tag = _split(daemon)
            status, payload = call(
                ctx,
                instance,
                "POST",
                _path(found.image_id, "/tag"),
                query=urlencode({"repo": d_repo, "tag": d_tag}),
            )
            if status >= 400:
                message = payload.get("message", "") if isinstance(payload, dict) else str(payload)
                raise DockerError(status, imagemap.rewrite_text(ctx.project, message) or "tagging failed")
            tagged.append(instance)
        for other in instances.live_instances(ctx.settings):
            if other.uuid != instance.uuid and other.uuid in imagemap.holders(found.image_id):
                _tag_on(ctx, other, found.image_id, daemon)
                tagged.append(other)
        try:
            slot.settle(
                [found.image_id], lambda: imagemap.record(ctx.project, reference, found.image_id, instance)
            )
        except DockerError:
            for where in tagged:
                _discard(ctx, where, found.image_id, [daemon])
            raise
    finally:
        slot.release()
    ctx.resp.status = 201


# -- rmi ---------------------------------------------------------------------------------------
def _containers_using(ctx: Context, image_id: str) -> list[tuple[str, bool]]:
    """The project's containers whose image is ``image_id``: (ID, running)."""
    query = urlencode({"all": "1", "filters": json.dumps({"label": [f"{PROJECT_LABEL}={ctx.project}"]})})
    out = []
    for instance in instances.live_instances(ctx.settings):
        status, payload = call(ctx, instance, "GET", "/containers/json", query=query)
        if status != 200:
            continue
        for c in payload or []:
            if c.get("ImageID") == image_id:
                out.append((c["Id"], c.get("State") == "running"))
    return out


def _untag_daemon(ctx: Context, row: store.ImageRef) -> None:
    """Take ``row``'s daemon tag off every holder, unless that would delete an image other
    rows still reference (an untag of a daemon's last tag deletes the image)."""
    if not row.daemon_ref or "@" in row.daemon_ref:
        return
    still = (
        store.ImageRef.select()
        .where((store.ImageRef.image_id == row.image_id) & (store.ImageRef.id != row.id))
        .exists()
    )
    for uuid in imagemap.holders(row.image_id):
        instance = store.Instance.get_or_none(store.Instance.uuid == uuid)
        if instance is None or not instances.is_live(instance, ctx.settings):
            continue
        status, info = call(ctx, instance, "GET", _path(row.image_id, "/json"))
        if status != 200:
            continue
        tags = info.get("RepoTags") or []
        if row.daemon_ref not in tags:
            continue
        if still and len(tags) == 1:
            continue  # a stale daemon tag is harmless: the store is the map
        call(ctx, instance, "DELETE", _path(row.daemon_ref), query="noprune=1")


def _delete_everywhere(ctx: Context, image_id: str, force: bool, noprune: bool) -> list[dict]:
    records: list[dict] = []
    for uuid in imagemap.holders(image_id):
        instance = store.Instance.get_or_none(store.Instance.uuid == uuid)
        if instance is None or not instances.is_live(instance, ctx.settings):
            continue
        status, payload = call(
            ctx,
            instance,
            "DELETE",
            _path(image_id),
            query=urlencode({"force": "0", "noprune": "1" if noprune else "0"}),
        )
        if status == 200:
            imagemap.absent(image_id, instance)
            if not records:
                records = [r for r in payload or [] if "Deleted" in r]
        elif status == 404:
            imagemap.absent(image_id, instance)
    return records or [{"Deleted": image_id}]


def delete(ctx: Context) -> None:
    typed = ctx.params["name"]
    found = _resolve_or_decoy(ctx)
    if found is None:
        return
    force = (ctx.query("force") or "").lower() in ("1", "true")
    noprune = (ctx.query("noprune") or "").lower() in ("1", "true")
    project, image_id = ctx.project, found.image_id
    own = imagemap.project_rows(project, image_id)
    tagged = [r for r in own if r.reference]
    # A public image keeps its public tag in every project's view: dropping a project's own
    # names for it is an untag, never a delete.
    public_too = imagemap.is_public(image_id)
    if found.public or (found.row is None and not own):
        name = found.row.reference if found.row is not None else typed
        raise DockerError(
            403,
            f"{name} is a public image that the operator of this cloud provides to every "
            f"project; a project cannot delete it (the operator can: `moorage images "
            f"unpublish {name}`). To drop a name of your own for it, remove that name.",
        )
    records: list[dict] = []
    removed_ref = False
    if found.row is not None:
        if not force and len(tagged) == 1:
            using = _containers_using(ctx, image_id)
            if using:
                raise DockerError(
                    409,
                    f'conflict: unable to remove repository reference "{typed}" (must force) '
                    f"- container {using[0][0][:12]} is using its referenced image "
                    f"{_short(image_id)}",
                )
        _untag_daemon(ctx, found.row)
        imagemap.forget(found.row)
        records.append({"Untagged": found.row.reference})
        if len(own) > 1 or public_too:
            ctx.answer_json(records)
            return
        removed_ref = True
    else:
        using = _containers_using(ctx, image_id)
        running = [c for c, up in using if up]
        if (len(tagged) > 1 or (public_too and tagged)) and not force:
            raise DockerError(
                409,
                f"conflict: unable to delete {_short(image_id)} (must be forced) - image is "
                "referenced in multiple repositories",
            )
        if running:
            raise DockerError(
                409,
                f"conflict: unable to delete {_short(image_id)} (cannot be forced) - image is "
                f"being used by running container {running[0][:12]}",
            )
        if using and not force:
            raise DockerError(
                409,
                f"conflict: unable to delete {_short(image_id)} (must be forced) - image is "
                f"being used by stopped container {using[0][0][:12]}",
            )
        for row in own:
            _untag_daemon(ctx, row)
            imagemap.forget(row)
            if row.reference:
                records.append({"Untagged": row.reference})
        if public_too:
            ctx.answer_json(records)
            return
    # The project no longer names it: gone from its view, and from the daemons if nobody else
    # references it.
    for row in imagemap.project_rows(project, image_id):
        imagemap.forget(row)
    if removed_ref and _containers_using(ctx, image_id):
        imagemap.record(project, "", image_id)  # still used: it stays, dangling, as on dockerd
        ctx.answer_json(records)
        return
    if imagemap.referenced(image_id):
        records.append({"Deleted": image_id})
    else:
        records += _delete_everywhere(ctx, image_id, force, noprune)
    ctx.answer_json(records)


def prune(ctx: Context) -> None:
    filters = parse_filters(ctx)
    if filters is None or not all(k in ("dangling", "label", "label!", "until") for k in filters):
        forward(ctx, home_instance(ctx))  # dockerd's own refusal
        return
    dangling_only = (_values(filters, "dangling") or ["true"])[-1] in ("true", "1")
    images = {i["Id"]: i for i in _list_images(ctx)}
    used = set()
    query = urlencode({"all": "1", "filters": json.dumps({"label": [f"{PROJECT_LABEL}={ctx.project}"]})})
    for instance in instances.live_instances(ctx.settings):
        status, payload = call(ctx, instance, "GET", "/containers/json", query=query)
        if status == 200:
            used.update(c.get("ImageID") for c in payload or [])
    deleted, reclaimed = [], 0
    for image_id, image in images.items():
        own = imagemap.project_rows(ctx.project, image_id)
        if not own or image_id in used or imagemap.is_public(image_id):
            continue
        if dangling_only and any(r.reference for r in own):
            continue
        if not _labels_match(image.get("Labels"), _values(filters, "label")):
            continue
        if any(_labels_match(image.get("Labels"), [x]) for x in _values(filters, "label!")):
            continue
        for row in own:
            _untag_daemon(ctx, row)
            imagemap.forget(row)
            if row.reference:
                deleted.append({"Untagged": row.reference})
        if imagemap.referenced(image_id):
            deleted.append({"Deleted": image_id})
        else:
            deleted += _delete_everywhere(ctx, image_id, False, False)
        reclaimed += image.get("Size") or 0
    ctx.answer_json({"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed})


# -- save ------------------------------------------------------------------------------------
def _save_rewriter(project: str):
    def edit(name: str, content: bytes) -> bytes:
        return imagemap.rewrite_bytes(project, content)

    return lambda name: name in ("manifest.json", "repositories"), edit


def _answer_save(ctx: Context, instance, upstream) -> None:
    if upstream.status != 200:
        _respond_rewritten(ctx, instance, upstream)
        return
    check_agent(instance, upstream)
    ctx.resp.status = 200
    ctx.resp.content_type = upstream.header("Content-Type") or "application/x-tar"
    wanted, edit = _save_rewriter(ctx.project)
    ctx.resp.stream = tarstream.rewrite(upstream.iter_body(), wanted, edit)


def get(ctx: Context) -> None:
    found = _resolve_or_decoy(ctx, "/get")
    if found is None:
        return
    instance = _need_holder(ctx, found)
    _answer_save(ctx, instance, send(ctx, instance, path=_path(found.daemon_name(), "/get"), query=""))


def get_all(ctx: Context) -> None:
    names = [v for k, v in parse_qsl(ctx.req.query_string, keep_blank_values=True) if k == "names"]
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
        _respond_rewritten(ctx, instance, upstream, replace)
        return
    instance = holder(ctx, resolved[0][1].image_id) or home_instance(ctx)
    for _, found in resolved:
        ensure_on(ctx, instance, found.image_id)
    query = urlencode([("names", f.daemon_name()) for _, f in resolved])
    _answer_save(ctx, instance, send(ctx, instance, query=query))


# -- pull, import, push ------------------------------------------------------------------------
_locks: dict[tuple[str, str], threading.Lock] = {}


def _lock(instance: store.Instance, name: str):
    """Serialise the gateway's use of a registry name on a daemon (pull, push): the tag is
    global there while it exists. Per worker process (see docs/divergences.md)."""
    return _locks.setdefault((instance.uuid, name), threading.Lock())


def _reserved(ref: imagemap.Ref) -> bool:
    return ref.path.startswith("moorage/") or ref.familiar_name.startswith("moorage/")


def _error_line(message: str) -> bytes:
    return json.dumps({"errorDetail": {"message": message}, "error": message}).encode() + b"\n"


def _form_body(ctx: Context) -> bool:
    """A body dockerd would read parameters from (Go's ParseForm: a form body's values take
    precedence over the query's), which the gateway does not read."""
    media = (ctx.req.content_type or "").split(";")[0].strip().lower()
    chunked = "chunked" in (ctx.req.get_header("Transfer-Encoding") or "").lower()
    return media == "application/x-www-form-urlencoded" and bool(ctx.req.content_length or chunked)


def _public_up_to_date(ctx: Context, ref: imagemap.Ref) -> None:
    """A pull of a public image: the operator's copy is this cloud's version of it, already on
    every instance, so the pull answers as dockerd answers a pull of an image that is up to
    date (``docker pull busybox && docker run busybox`` in a pipeline works as anywhere)."""
    tag = ref.tag or "latest"
    lines = [{"status": f"Pulling from {ref.path}", "id": tag}]
    status, info = call(ctx, home_instance(ctx), "GET", _path(ref.familiar(), "/json"))
    digests = info.get("RepoDigests") if status == 200 and isinstance(info, dict) else None
    digest = next((d.split("@", 1)[1] for d in digests or [] if "@" in d), None)
    if digest:
        lines.append({"status": f"Digest: {digest}"})
    lines.append({"status": f"Status: Image is up to date for {ref.familiar()}"})
    ctx.resp.status = 200
    ctx.resp.content_type = "application/json"
    ctx.resp.data = b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\r\n" for line in lines)


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
            return _import(ctx, sources)
        return to_home(ctx)  # dockerd's own answer (an import from the URL "http://", which fails)
    tag_ = _first(pairs, "tag")
    typed = from_image
    if tag_:
        typed += ("@" if ":" in tag_ and tag_.split(":")[0] in ("sha256", "sha512") else ":") + tag_
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
    if _reserved(ref):
        raise DockerError(
            403,
            "repositories under moorage/ are reserved for the gateway's own names; pull under another name",
        )
    real = ref.full_name + ref.suffix()
    if (
        store.ImageRef.select()
        .where((store.ImageRef.project == imagemap.PUBLIC) & (store.ImageRef.daemon_ref == ref.familiar()))
        .exists()
    ):
        return _public_up_to_date(ctx, ref)
    instance = home_instance(ctx)
    # A pull of a name the project holds replaces an image it counts already (or adds the
    # one the tag moved to: settled after the pull); any other pull may add one.
    held = (
        store.ImageRef.select()
        .where((store.ImageRef.project == ctx.project) & (store.ImageRef.reference == ref.familiar()))
        .exists()
    )
    slot = _ImageSlot(ctx, needed=not held)
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
        status, info = call(ctx, instance, "GET", _path(real, "/json"))
        if status != 200:
            return _error_line(f"the pulled image could not be found on instance {instance.uuid}")
        image_id = info["Id"]
        daemon = real if ref.digest else imagemap.daemon_ref(ctx.project, ref)
        if not ref.digest:
            if _tag_on(ctx, instance, image_id, daemon) >= 400:
                return _error_line(f"tagging the pulled image on instance {instance.uuid} failed")
            call(ctx, instance, "DELETE", _path(real), query="noprune=1")

        def record():
            imagemap.record(
                ctx.project, ref.familiar(), image_id, instance, daemon=real if ref.digest else None
            )

        try:
            slot.settle([image_id], record)
        except DockerError as exc:
            _discard(ctx, instance, image_id, [daemon])
            return _error_line(exc.message)
        return None

    if upstream.status != 200:
        _respond_rewritten(ctx, instance, upstream, always=let_go)
        return
    _respond_rewritten(ctx, instance, upstream, observe=observe, finish=finish, always=let_go)


def _first(pairs: list[tuple[str, str]], key: str) -> str:
    return next((v for k, v in pairs if k == key), "")


def _import(ctx: Context, sources: list[str]) -> None:
    for source in sources:
        policy.image_import(ctx, source)  # anything but "-" (the body) is a URL the instance fetches
    repo, tag_ = ctx.query("repo") or "", ctx.query("tag") or ""
    reference, query, daemon = "", ctx.req.query_string, ""
    if repo:
        try:
            ref = imagemap.parse(f"{repo}:{tag_}" if tag_ and ":" not in repo.rsplit("/", 1)[-1] else repo)
        except imagemap.ReferenceError_:
            return to_home(ctx)
        reference = ref.familiar()
        daemon = imagemap.daemon_ref(ctx.project, ref)
        drepo, dtag = _split(daemon)
        query = with_query(ctx, repo=drepo, tag=dtag)
    instance = home_instance(ctx)
    slot = _ImageSlot(ctx)
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
            _discard(ctx, instance, ids[-1], [daemon])
            return _error_line(exc.message)
        return None

    _respond_rewritten(ctx, instance, upstream, observe=observe, finish=finish, always=slot.release)


def push(ctx: Context) -> None:
    if _form_body(ctx):
        raise DockerError(400, "push parameters must be sent in the query, not as a form")
    name, tag_ = ctx.params["name"], ctx.query("tag") or ""
    try:
        repo = imagemap.parse(name)
    except imagemap.ReferenceError_:
        return _forward_decoy(ctx, name, lambda n: _path(n, "/push"))
    if tag_:
        wanted = [imagemap.parse(f"{repo.full_name}:{tag_}").familiar()]
    else:
        wanted = sorted(
            {
                r.reference
                for r in store.ImageRef.select().where(
                    (store.ImageRef.project == ctx.project) & (store.ImageRef.reference != "")
                )
                if "@" not in r.reference and imagemap.parse(r.reference).full_name == repo.full_name
            }
        )
    rows = [imagemap.resolve(ctx.project, w) for w in wanted]
    rows = [f for f in rows if f is not None and f.row is not None and f.row.project == ctx.project]
    if not rows:
        return _forward_decoy(ctx, name, lambda n: _path(n, "/push"))
    if _reserved(repo):
        raise DockerError(
            403,
            "repositories under moorage/ are reserved for the gateway's own names; push "
            "under another name (docker tag, then docker push)",
        )
    public = {r.daemon_ref for r in store.ImageRef.select().where(store.ImageRef.project == imagemap.PUBLIC)}
    instance = holder(ctx, rows[0].image_id)
    if instance is None:
        raise DockerError(404, f"No such image: {rows[0].row.reference}")
    real_tags = []
    for found in rows:
        ensure_on(ctx, instance, found.image_id)
        real = imagemap.parse(found.row.reference)
        if real.familiar() in public:
            raise DockerError(
                409, f"{real.familiar()} is the name of a public image on this cloud: push under another name"
            )
        real_tags.append((found.image_id, real.familiar()))
    locks = [_lock(instance, t) for _, t in real_tags]
    for lock in locks:
        lock.acquire()

    def cleanup():
        try:
            for _, t in real_tags:
                call(ctx, instance, "DELETE", _path(t), query="noprune=1")
        finally:
            for lock in locks:
                lock.release()

    try:
        for image_id, t in real_tags:
            if _tag_on(ctx, instance, image_id, t) >= 400:
                raise DockerError(500, f"preparing the push on instance {instance.uuid} failed")
        upstream = send(ctx, instance)
    except BaseException:
        cleanup()
        raise
    _respond_rewritten(ctx, instance, upstream, always=cleanup)


# -- build, load, commit -----------------------------------------------------------------------
def _from_rewriter(ctx: Context, instance: store.Instance, stages: set[str]):
    """Rewrite a Dockerfile's FROM lines: the tenant's own images to their daemon names, made
    present on the building instance; names it may not see to a decoy the daemon lacks."""

    def rewrite_line(line: str) -> str:
        stripped = line.lstrip()
        if not stripped[:5].upper() == "FROM ":
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


def build(ctx: Context) -> None:
    # The query's settings (the context streams through unread), its resource limits given
    # the project's defaults.
    pairs = policy.build(ctx)
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
    instance = home_instance(ctx)
    dockerfile = ctx.query("dockerfile") or "Dockerfile"
    slot = _ImageSlot(ctx)
    try:
        body, length = _client_body(ctx)
        if body is not None and "://" not in (ctx.query("remote") or ""):
            edit = _from_rewriter(ctx, instance, set())
            body = _build_context(body, dockerfile, edit)
            length = None
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
                ctx, instance, "GET", _path(imagemap.daemon_ref(ctx.project, tags[0]), "/json")
            )
            if status == 200:
                ids.append(info["Id"])
        if not ids:
            return None
        image_id = ids[-1]
        if not image_id.startswith("sha256:"):
            status, info = call(ctx, instance, "GET", _path(image_id, "/json"))
            if status != 200:
                return None
            image_id = info["Id"]

        def record():
            for reference in tags or [""]:
                imagemap.record(ctx.project, reference, image_id, instance)

        try:
            slot.settle([image_id], record)
        except DockerError as exc:
            _discard(ctx, instance, image_id, [imagemap.daemon_ref(ctx.project, t) for t in tags])
            return _error_line(exc.message)
        return None

    del length
    _respond_rewritten(ctx, instance, upstream, observe=observe, finish=finish, always=slot.release)


_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"(\xb5/\xfd")


def _build_context(body, dockerfile: str, edit) -> Iterator[bytes]:
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


def _client_body(ctx: Context):
    from gateway.forward import client_body

    return client_body(ctx)


def _load_rewriter(project: str):
    def edit(name: str, content: bytes) -> bytes:
        try:
            data = json.loads(content)
        except ValueError:
            return content
        if name == "manifest.json" and isinstance(data, list):
            for entry in data:
                if isinstance(entry, dict) and isinstance(entry.get("RepoTags"), list):
                    entry["RepoTags"] = [_to_daemon(project, t) for t in entry["RepoTags"]]
        elif name == "repositories" and isinstance(data, dict):
            data = {_to_daemon_repo(project, repo): tags for repo, tags in data.items()}
        return json.dumps(data).encode()

    return lambda name: name in ("manifest.json", "repositories"), edit


def _to_daemon(project: str, tag: str) -> str:
    try:
        return imagemap.daemon_ref(project, tag)
    except imagemap.ReferenceError_:
        return tag


def _to_daemon_repo(project: str, repo: str) -> str:
    try:
        return imagemap.daemon_repo(project, imagemap.parse(repo))
    except imagemap.ReferenceError_:
        return repo


def load(ctx: Context) -> None:
    instance = home_instance(ctx)
    slot = _ImageSlot(ctx)
    try:
        body, _ = _client_body(ctx)
        if body is not None:
            wanted, edit = _load_rewriter(ctx.project)
            body = tarstream.rewrite(body, wanted, edit)
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
            status, info = call(ctx, instance, "GET", _path(daemon, "/json"))
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
                if _holds(ctx.project, image_id):
                    for name in names:
                        _restore_tag(ctx, instance, name, image_id)
                else:
                    _discard(ctx, instance, image_id, names)
            return _error_line(exc.message)
        return None

    _respond_rewritten(ctx, instance, upstream, observe=observe, finish=finish, always=slot.release)


def commit(ctx: Context, container) -> None:
    """POST /commit, for containers.commit once it has resolved the tenant's container."""
    repo, tag_ = ctx.query("repo") or "", ctx.query("tag") or ""
    changes = {"container": container.id}
    reference = ""
    if repo:
        try:
            ref = imagemap.parse(f"{repo}:{tag_}" if tag_ else repo)
        except imagemap.ReferenceError_:
            # dockerd judges the tenant's own words (it refuses before committing anything).
            forward(ctx, container.instance, query=with_query(ctx, container=container.id))
            return
        reference = ref.familiar()
        changes["repo"], changes["tag"] = _split(imagemap.daemon_ref(ctx.project, ref))
    body = _body_bytes(ctx)
    slot = _ImageSlot(ctx)
    try:
        status, payload = call(
            ctx, container.instance, "POST", "/commit", query=with_query(ctx, **changes), body=body
        )
        raise_for(status, payload)
        image_id = payload["Id"]
        try:
            slot.settle(
                [image_id], lambda: imagemap.record(ctx.project, reference, image_id, container.instance)
            )
        except DockerError:
            daemon = f"{changes['repo']}:{changes['tag']}" if repo else ""
            _discard(ctx, container.instance, image_id, [daemon])
            raise
    finally:
        slot.release()
    ctx.answer_json(payload, status)


def _body_bytes(ctx: Context) -> bytes:
    from gateway.dockerapi.common import read_json

    return read_json(ctx)[1]


def search(ctx: Context) -> None:
    to_home(ctx)


class _ImageSlot:
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


def _holds(project: str, image_id: str) -> bool:
    return (
        store.ImageRef.select()
        .where((store.ImageRef.project == project) & (store.ImageRef.image_id == image_id))
        .exists()
    )


def _discard(ctx: Context, instance: store.Instance, image_id: str, daemon_names: list[str]) -> None:
    """What a request made that its project's images quota refused: its daemon names off
    ``instance`` (a tag that moved goes back to the image the store gives it), and the image
    itself when no project references it. Best effort: the store is the map, and a stale
    daemon tag names nothing any project sees."""
    referenced = imagemap.referenced(image_id)
    for name in [n for n in daemon_names if n and "@" not in n]:
        if referenced:
            status, info = call(ctx, instance, "GET", _path(image_id, "/json"))
            tags = (info.get("RepoTags") or []) if status == 200 and isinstance(info, dict) else []
            if name not in tags or len(tags) == 1:
                continue  # untagging the last tag would delete an image others reference
        call(ctx, instance, "DELETE", _path(name), query="noprune=1" if referenced else "noprune=0")
    if not referenced:
        call(ctx, instance, "DELETE", _path(image_id), query="force=0&noprune=0")
    for name in daemon_names:
        _restore_tag(ctx, instance, name, image_id)


def _restore_tag(ctx: Context, instance: store.Instance, daemon_name: str, image_id: str) -> None:
    """A daemon tag a refused request moved onto ``image_id``: back on the image the store
    gives it, if the store gives it another."""
    if not daemon_name:
        return
    row = store.ImageRef.get_or_none(
        (store.ImageRef.project == ctx.project) & (store.ImageRef.daemon_ref == daemon_name)
    )
    if row is not None and row.image_id != image_id:
        _tag_on(ctx, instance, row.image_id, daemon_name)


def visible_count(ctx: Context) -> int:
    """How many images the caller sees (docker info's Images)."""
    return len(_list_images(ctx))


def visible_in_df(ctx: Context, images: list[dict]) -> list[dict]:
    """The images of a daemon's /system/df answer that the caller sees, in its names."""
    visible = imagemap.visible_images(ctx.project)
    return [
        _tenant_view(ctx.project, image, visible[image.get("Id")])
        for image in images
        if image.get("Id") in visible
    ]


IMG = "/images/{name*}"
ROUTES = [
    Route("GET", "/images/json", "ImageList", list_),
    Route("POST", "/build", "ImageBuild", build, streaming=True),
    Route("POST", "/build/prune", "BuildPrune", to_home),
    Route("POST", "/images/create", "ImageCreate", create, streaming=True),
    Route("GET", "/images/search", "ImageSearch", search),
    Route("POST", "/images/prune", "ImagePrune", prune),
    Route("GET", "/images/get", "ImageGetAll", get_all, streaming=True),
    Route("POST", "/images/load", "ImageLoad", load, streaming=True),
    Route("GET", IMG + "/json", "ImageInspect", inspect),
    Route("GET", IMG + "/history", "ImageHistory", history),
    Route("POST", IMG + "/push", "ImagePush", push, streaming=True),
    Route("POST", IMG + "/tag", "ImageTag", tag),
    Route("GET", IMG + "/get", "ImageGet", get, streaming=True),
    Route("DELETE", IMG, "ImageDelete", delete),
    Route("GET", "/distribution/{name*}/json", "DistributionInspect", to_home),
]
