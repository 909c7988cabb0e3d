"""Removing images: docker rmi and docker image prune, within what the project references.

The store is the map: a project's image goes from the daemons only when no project (and no
public name) references it any more; until then only the project's rows and daemon tags go.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from gateway import imagemap, instances, store
from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import call
from gateway.services.image_answers import resolve_or_decoy
from gateway.services.image_moves import image_path, live_holders, short
from gateway.services.images import filter_values, labels_match, visible_list
from gateway.tenancy import PROJECT_LABEL


def _project_containers_query(project: str) -> str:
    return urlencode({"all": "1", "filters": json.dumps({"label": [f"{PROJECT_LABEL}={project}"]})})


def _containers_using(ctx: Context, image_id: str) -> list[tuple[str, bool]]:
    """The project's containers whose image is ``image_id``: (ID, running)."""
    query = _project_containers_query(ctx.project)
    out = []
    for instance in instances.live_instances(ctx.settings):
        status, payload = call(ctx, instance, "GET", "/containers/json", query=query)
        if status != 200:
            continue
        for c in payload or []:
            if c.get("ImageID") == image_id:
                out.append((c["Id"], c.get("State") == "running"))
    return out


def _untag_daemon(ctx: Context, row: store.ImageRef, force: bool = False, noprune: bool = True) -> list[dict]:
    """Take ``row``'s daemon tag off every holder, unless that would delete an image other
    rows still reference (an untag of a daemon's last tag deletes the image).

    Where it does delete the image (nothing else references it), that is the project's
    delete: dockerd's "Deleted" records (the image's and the layers' it released) are
    returned, from the first holder that gave them, and ``force``/``noprune`` are the user's,
    as dockerd would apply them to the last reference."""
    if not row.daemon_ref or "@" in row.daemon_ref:
        return []
    still = imagemap.referenced_besides(row)
    query = urlencode(
        {"force": "1" if force and not still else "0", "noprune": "1" if noprune or still else "0"}
    )
    deleted: list[dict] = []
    for instance in live_holders(ctx, row.image_id):
        status, info = call(ctx, instance, "GET", image_path(row.image_id, "/json"))
        if status != 200:
            continue
        tags = info.get("RepoTags") or []
        if row.daemon_ref not in tags:
            continue
        if still and len(tags) == 1:
            continue  # a stale daemon tag is harmless: the store is the map
        status, payload = call(ctx, instance, "DELETE", image_path(row.daemon_ref), query=query)
        gone = [r for r in payload or [] if "Deleted" in r] if status == 200 else []
        if gone:
            imagemap.absent(row.image_id, instance)
            deleted = deleted or gone
    return deleted


def _delete_everywhere(
    ctx: Context, image_id: str, force: bool, noprune: bool, deleted: list[dict]
) -> list[dict]:
    """Delete ``image_id`` from the holders where it is left; dockerd's records: ``deleted``
    (what the untag of its last daemon tag deleted already), else the first holder's."""
    records = deleted
    for instance in live_holders(ctx, image_id):
        status, payload = call(
            ctx,
            instance,
            "DELETE",
            image_path(image_id),
            query=urlencode({"force": "0", "noprune": "1" if noprune else "0"}),
        )
        if status == 200:
            imagemap.absent(image_id, instance)
            if not records:
                records = [r for r in payload or [] if "Deleted" in r]
        elif status == 404:
            imagemap.absent(image_id, instance)
    return records or [{"Deleted": image_id}]


def delete(ctx: Context, typed: str, force: bool, noprune: bool) -> list[dict] | None:
    """docker rmi ``typed``: dockerd's records (Untagged, Deleted), or None once a decoy's
    answer is relayed."""
    found = resolve_or_decoy(ctx, typed)
    if found is None:
        return None
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
    deleted: list[dict] = []  # what dockerd deleted with the image's last daemon tag
    if found.row is not None:
        # dockerd refuses to untag an image's only name while a container uses it (it would be
        # left dangling); a public name the project sees on it counts as a name, as on dockerd
        if not force and len(imagemap.visible_tags(project, image_id)) <= 1:
            using = _containers_using(ctx, image_id)
            if using:
                raise DockerError(
                    409,
                    f'conflict: unable to remove repository reference "{typed}" (must force) '
                    f"- container {using[0][0][:12]} is using its referenced image "
                    f"{short(image_id)}",
                )
        deleted = _untag_daemon(ctx, found.row, force, noprune)
        imagemap.forget(found.row)
        records.append({"Untagged": found.row.reference})
        if len(own) > 1 or public_too:
            return records
        removed_ref = True
    else:
        using = _containers_using(ctx, image_id)
        running = [c for c, up in using if up]
        if (len(tagged) > 1 or (public_too and tagged)) and not force:
            raise DockerError(
                409,
                f"conflict: unable to delete {short(image_id)} (must be forced) - image is "
                "referenced in multiple repositories",
            )
        if running:
            raise DockerError(
                409,
                f"conflict: unable to delete {short(image_id)} (cannot be forced) - image is "
                f"being used by running container {running[0][:12]}",
            )
        if using and not force:
            raise DockerError(
                409,
                f"conflict: unable to delete {short(image_id)} (must be forced) - image is "
                f"being used by stopped container {using[0][0][:12]}",
            )
        for row in own:
            deleted += _untag_daemon(ctx, row, force, noprune)
            imagemap.forget(row)
            if row.reference:
                records.append({"Untagged": row.reference})
        if public_too:
            return records
    # The project no longer names it: gone from its view, and from the daemons if nobody else
    # references it.
    for row in imagemap.project_rows(project, image_id):
        imagemap.forget(row)
    if removed_ref and not deleted and _containers_using(ctx, image_id):
        # a forced untag of an image a running container uses: dockerd keeps the image,
        # dangling (a stopped one's is deleted with the tag, and `deleted` says so)
        imagemap.record(project, "", image_id)
        return records
    if imagemap.referenced(image_id):
        records.append({"Deleted": image_id})
    else:
        records += _delete_everywhere(ctx, image_id, force, noprune, deleted)
    return records


def prune_filters_ok(filters: dict | None) -> bool:
    """Whether the gateway prunes with these filters itself (else dockerd refuses them)."""
    return filters is not None and all(k in ("dangling", "label", "label!", "until") for k in filters)


def prune(ctx: Context, filters: dict) -> dict:
    """docker image prune over the project's images (``filters`` passed prune_filters_ok)."""
    dangling_only = (filter_values(filters, "dangling") or ["true"])[-1] in ("true", "1")
    images = {i["Id"]: i for i in visible_list(ctx)}
    used = set()
    query = _project_containers_query(ctx.project)
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
        if not labels_match(image.get("Labels"), filter_values(filters, "label")):
            continue
        if any(labels_match(image.get("Labels"), [x]) for x in filter_values(filters, "label!")):
            continue
        gone: list[dict] = []
        for row in own:
            gone += _untag_daemon(ctx, row, False, False)
            imagemap.forget(row)
            if row.reference:
                deleted.append({"Untagged": row.reference})
        if imagemap.referenced(image_id):
            deleted.append({"Deleted": image_id})
        else:
            deleted += _delete_everywhere(ctx, image_id, False, False, gone)
        reclaimed += image.get("Size") or 0
    return {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed}
