"""Images as a tenant sees them: lists, inspect, history, tags, commits, and the image names of
containers.

Every image a project reaches goes through gateway/imagemap.py: its tags map to daemon
references Moorage controls, its images are the ones the store says it references (plus public
ones), and another project's image answers exactly as a missing one (a decoy goes down instead,
and dockerd's own words about the decoy come back about what the tenant typed:
gateway/services/image_answers.py).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Callable
from datetime import datetime
from urllib.parse import urlencode

from gateway import imagemap, instances, store
from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import call, forward, raise_for
from gateway.placement import dedicated
from gateway.services import buildkit
from gateway.services.common import every_instance, hide_project_label, home_instance, with_query
from gateway.services.image_answers import no_such_image, resolve_or_decoy
from gateway.services.image_moves import ensure_on, image_path, need_holder, split, tag_on
from gateway.services.image_slot import ImageSlot, discard


# -- the tenant's view of an image -----------------------------------------------------------------
def _hide_in_image(image: dict) -> None:
    # A committed image carries its container's labels, the project label among them.
    for key in ("Config", "ContainerConfig"):
        hide_project_label((image.get(key) or {}).get("Labels"))
    hide_project_label(image.get("Labels"))


def _repo_digests(project: str, digests, tags: list[str]) -> list[str]:
    repos = set()
    for tag_ in tags:
        with contextlib.suppress(imagemap.ReferenceError_):
            repos.add(imagemap.parse(tag_).familiar_name)
    out = []
    for entry in digests or []:
        if entry.startswith(imagemap.DAEMON_PREFIX):
            name = imagemap.tenant_name(project, entry)
            if name:
                out.append(name)
        elif entry.split("@", 1)[0] in repos:
            out.append(entry)
    return sorted(set(out))


def tenant_view(project: str, image: dict, rows: list[store.ImageRef]) -> dict:
    """A daemon's image (list entry or inspect) with the project's tags and digests, in its names."""
    tags = imagemap.tenant_tags(project, rows)
    digests = _repo_digests(project, image.get("RepoDigests"), tags)
    digests += [r.reference for r in rows if "@" in r.reference and r.reference not in digests]
    image["RepoTags"] = tags
    image["RepoDigests"] = digests
    _hide_in_image(image)
    return json.loads(imagemap.rewrite_text(project, json.dumps(image)))


def visible_list(ctx: Context) -> list[dict]:
    """The project's view: its own and public images, from every live instance, one per ID."""
    visible = imagemap.visible_images(ctx.project)
    seen: dict[str, dict] = {}
    public_seen: set[str] = set()
    public = functools.cache(imagemap.public_images)  # read once, if at all, for every instance
    for instance, payload in every_instance(ctx, "GET", "/images/json"):
        if isinstance(payload, list) and buildkit.adopt_listed(ctx, instance, payload, public):
            # names a BuildKit build exported there, adopted: the project's from now on
            visible = imagemap.visible_images(ctx.project)
            _, payload = call(ctx, instance, "GET", "/images/json")
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
            seen[image_id] = tenant_view(ctx.project, image, rows)
    return list(seen.values())


def visible_count(ctx: Context) -> int:
    """How many images the caller sees (docker info's Images)."""
    return len(visible_list(ctx))


def visible_in_df(ctx: Context, images: list[dict]) -> list[dict]:
    """The images of a daemon's /system/df answer that the caller sees, in its names."""
    visible = imagemap.visible_images(ctx.project)
    return [
        tenant_view(ctx.project, image, visible[image.get("Id", "")])
        for image in images
        if image.get("Id", "") in visible
    ]


# -- containers' images ----------------------------------------------------------------------------
def container_image(ctx: Context, instance: store.Instance, image) -> object:
    """For a container create, after placement on ``instance``: the daemon's name for the
    tenant's Image, made present there. Another project's image is a missing one (404)."""
    if not isinstance(image, str) or not image:
        return image  # dockerd says what is wrong with it
    found = buildkit.resolve(ctx, image)
    if found is None:
        raise no_such_image(image)
    if found.public:
        # Public images are seeded per daemon (their IDs may differ): the daemon's own copy,
        # named as the tenant typed it (Config.Image and ps show what was typed, as on dockerd).
        status, info = call(ctx, instance, "GET", image_path(found.daemon_name(), "/json"))
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


def commit(
    ctx: Context, container, repo: str, tag: str, read_body: Callable[[], bytes]
) -> tuple[dict, int] | None:
    """An image from the tenant's (resolved) ``container``, named ``repo``:``tag`` in the
    project: (answer, status), or None once dockerd's refusal of the name is relayed.

    ``read_body`` reads the request's body (the container's new config) only once the name is
    valid: a refused name is relayed with the body unread, for dockerd to judge."""
    changes = {"container": container.id}
    reference = ""
    if repo:
        try:
            ref = imagemap.parse(f"{repo}:{tag}" if tag else repo)
        except imagemap.ReferenceError_:
            # dockerd judges the tenant's own words (it refuses before committing anything).
            forward(ctx, container.instance, query=with_query(ctx, container=container.id))
            return None
        imagemap.refuse_reserved(ref)
        reference = ref.familiar()
        changes["repo"], changes["tag"] = split(imagemap.daemon_ref(ctx.project, ref))
    body = read_body()
    slot = ImageSlot(ctx)
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
            discard(ctx, container.instance, image_id, [daemon])
            raise
    finally:
        slot.release()
    return payload, status


# -- inspect, history, tag -------------------------------------------------------------------------
def inspect(ctx: Context, typed: str) -> dict | None:
    found = resolve_or_decoy(ctx, typed, "/json")
    if found is None:
        return None
    instance = need_holder(ctx, found, typed)
    status, payload = call(ctx, instance, "GET", image_path(found.image_id, "/json"))
    raise_for(status, payload)
    rows = imagemap.visible_images(ctx.project).get(found.image_id, [])
    return tenant_view(ctx.project, payload, rows)


def history(ctx: Context, typed: str) -> list | None:
    found = resolve_or_decoy(ctx, typed, "/history")
    if found is None:
        return None
    instance = need_holder(ctx, found, typed)
    status, payload = call(ctx, instance, "GET", image_path(found.image_id, "/history"))
    raise_for(status, payload)
    visible = imagemap.visible_images(ctx.project)
    for entry in payload or []:
        rows = visible.get(entry.get("Id"))
        entry["Tags"] = (imagemap.tenant_tags(ctx.project, rows) or None) if rows else None
    return payload


def tag(ctx: Context, typed: str, repo: str, tag_: str) -> bool:
    """The project's new name ``repo``:``tag_`` for the image ``typed``: True once tagged (201),
    False when the daemon's own answer (a decoy's, a refused name's) is relayed."""
    found = resolve_or_decoy(ctx, typed, "/tag")
    if found is None:
        return False
    try:
        target = imagemap.parse(repo)
        if (target.tag or target.digest) and tag_:
            raise imagemap.ReferenceError_("invalid reference format")
        if target.digest:
            raise DockerError(400, "refusing to create a tag with a digest reference")
        target = imagemap.parse(f"{repo}:{tag_}" if tag_ else repo)
    except imagemap.ReferenceError_:
        # Nothing valid can be tagged: dockerd judges the tenant's own words, on the image's ID.
        forward(ctx, need_holder(ctx, found, typed), path=image_path(found.image_id, "/tag"))
        return False
    imagemap.refuse_reserved(target)
    reference = target.familiar()
    daemon = imagemap.daemon_ref(ctx.project, target)
    own = dedicated(ctx.settings) and not ctx.all_projects
    instance = need_holder(ctx, found, typed)
    if own and instance.project != ctx.project:
        # The project's new name goes on its own instance (claimed now if it has none), with
        # the image copied there from wherever it is.
        instance = home_instance(ctx, claim=True)
        ensure_on(ctx, instance, found.image_id)
    # A new name for an image the project holds adds none; for one it does not (a public
    # image's) it adds one.
    slot = ImageSlot(ctx, needed=not imagemap.holds(ctx.project, found.image_id))
    tagged = []
    try:
        if daemon and "@" not in daemon:
            d_repo, d_tag = split(daemon)
            status, payload = call(
                ctx,
                instance,
                "POST",
                image_path(found.image_id, "/tag"),
                query=urlencode({"repo": d_repo, "tag": d_tag}),
            )
            if status >= 400:
                message = payload.get("message", "") if isinstance(payload, dict) else str(payload)
                raise DockerError(status, imagemap.rewrite_text(ctx.project, message) or "tagging failed")
            tagged.append(instance)
        others = (
            instances.project_instances(ctx.settings, ctx.project)
            if own
            else instances.live_instances(ctx.settings)
        )
        for other in others:
            if other.uuid != instance.uuid and other.uuid in imagemap.holders(found.image_id):
                tag_on(ctx, other, found.image_id, daemon)
                tagged.append(other)
        try:
            slot.settle(
                [found.image_id], lambda: imagemap.record(ctx.project, reference, found.image_id, instance)
            )
        except DockerError:
            for where in tagged:
                discard(ctx, where, found.image_id, [daemon])
            raise
    finally:
        slot.release()
    return True


# -- the list and its filters ----------------------------------------------------------------------
def _image_filters_ok(filters: dict) -> bool:
    return all(k in ("before", "dangling", "label", "reference", "since") for k in filters)


def filter_values(filters: dict, key: str) -> list[str]:
    """The values of one filter, in either of its two wire forms."""
    v = filters.get(key)
    if isinstance(v, dict):
        return [k for k, on in v.items() if on]
    if isinstance(v, list):
        return [str(x) for x in v]
    return []


def labels_match(labels: dict | None, wanted: list[str]) -> bool:
    """Whether ``labels`` has every ``key`` or ``key=value`` of ``wanted``."""
    labels = labels or {}
    for item in wanted:
        key, eq, value = item.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


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


def list_images(ctx: Context, filters: dict | None) -> list[dict]:
    """docker images: the project's view, filtered as dockerd filters (``filters`` None: they
    are not a JSON object)."""
    if (
        filters is None
        or not _image_filters_ok(filters)
        or any(v not in ("true", "false", "1", "0") for v in filter_values(filters, "dangling"))
    ):
        # Filters dockerd refuses: its own error (it refuses before listing anything).
        bad = with_query(ctx, filters=ctx.query("filters"))
        status, payload = call(ctx, home_instance(ctx), "GET", "/images/json", query=bad)
        if status >= 400:
            raise_for(status, payload)
        filters = {}
    images = visible_list(ctx)
    for image in images:
        if not image["RepoTags"]:
            if image["RepoDigests"]:
                image["RepoTags"] = None
            else:
                image["RepoTags"], image["RepoDigests"] = ["<none>:<none>"], ["<none>@<none>"]
    dangling = filter_values(filters, "dangling")
    if dangling:
        want = dangling[-1] in ("true", "1")
        images = [i for i in images if (i["RepoTags"] in (None, ["<none>:<none>"])) == want]
    labels = filter_values(filters, "label")
    if labels:
        images = [i for i in images if labels_match(i.get("Labels"), labels)]
    refs = filter_values(filters, "reference")
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
        for typed in filter_values(filters, key):
            found = imagemap.resolve(ctx.project, typed)
            if found is None:
                raise no_such_image(typed)
            created = next((i["Created"] for i in images if i["Id"] == found.image_id), None)
            if created is None:
                status, info = call(ctx, need_holder(ctx, found), "GET", image_path(found.image_id, "/json"))
                raise_for(status, info)
                created = int(datetime.fromisoformat(info["Created"][:19]).timestamp())
            images = [i for i in images if (i["Created"] > created if newer else i["Created"] < created)]
    for image in images:
        # dockerd's list says null for an image without digests (inspect says []).
        image["RepoDigests"] = image.get("RepoDigests") or None
    images.sort(key=lambda i: i.get("Created", 0), reverse=True)
    return images
