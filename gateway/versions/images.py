"""The table's transforms for images: list, inspect, history, save, load, push."""

from __future__ import annotations

import json

from gateway.errors import DockerError
from gateway.versions.rows import Call, Reply, obj, pop_empty, pop_keys, refuse


def _images(reply: Reply) -> list:
    payload = reply.payload
    return [i for i in payload if isinstance(i, dict)] if isinstance(payload, list) else [payload]


def no_none_tags(reply: Reply) -> None:
    """1.43: an untagged image lists no `<none>:<none>` / `<none>@<none>`, just empty arrays."""
    for image in _images(reply):
        for key, none in (("RepoTags", "<none>:<none>"), ("RepoDigests", "<none>@<none>")):
            if isinstance(image.get(key), list):
                image[key] = [v for v in image[key] if v != none]


def none_tags_older(reply: Reply) -> None:
    for image in _images(reply):
        for key, none in (("RepoTags", "<none>:<none>"), ("RepoDigests", "<none>@<none>")):
            if not image.get(key):
                image[key] = [none]


def no_virtual_size(reply: Reply) -> None:
    """1.44: VirtualSize is gone; Size holds the same."""
    for image in _images(reply):
        image.pop("VirtualSize", None)


def virtual_size_older(reply: Reply) -> None:
    for image in _images(reply):
        if "Size" in image:
            image.setdefault("VirtualSize", image["Size"])


def no_zero_created(reply: Reply) -> None:
    """1.44: inspect omits Created when the image config has none (it was Go's zero time)."""
    if isinstance(reply.payload, dict) and reply.payload.get("Created") == "0001-01-01T00:00:00Z":
        del reply.payload["Created"]


def no_container_config(reply: Reply) -> None:
    """1.45: inspect no longer has Container and ContainerConfig (use Config)."""
    pop_keys(reply.payload, ("Container", "ContainerConfig"))


_NOT_IMAGE_CONFIG = (
    "Hostname",
    "Domainname",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Image",
    "NetworkDisabled",
    "MacAddress",
    "StopTimeout",
)


def image_config_only(reply: Reply) -> None:
    """1.50: inspect's Config holds only what an image config holds."""
    pop_keys(obj(reply.payload, "Config"), _NOT_IMAGE_CONFIG)


def image_config_older(reply: Reply) -> None:
    config = obj(reply.payload, "Config")
    if config is None:
        return
    for key, empty in (
        ("Hostname", ""),
        ("Domainname", ""),
        ("AttachStdin", False),
        ("AttachStdout", False),
        ("AttachStderr", False),
        ("Tty", False),
        ("OpenStdin", False),
        ("StdinOnce", False),
        ("Image", ""),
    ):
        config.setdefault(key, empty)


def omit_empty_fields(reply: Reply) -> None:
    """1.52: inspect omits empty Config fields and empty Parent, Comment, DockerVersion, Author."""
    pop_empty(
        obj(reply.payload, "Config"),
        ("Cmd", "Entrypoint", "Env", "Labels", "OnBuild", "User", "Volumes", "WorkingDir"),
    )
    pop_empty(reply.payload, ("Parent", "Comment", "DockerVersion", "Author"))


def _wanted_platform(raw: str) -> dict:
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise DockerError(400, f"invalid platform {raw!r}: want a JSON-encoded OCI platform")
    return value


def platform_matches(reply: Reply) -> None:
    """1.49: inspect's `platform`. Each image of this daemon has one platform: the one asked for
    is it, or dockerd's 404 for an image that does not match."""
    for raw in reply.query.get("platform", []):
        if not raw:
            continue
        wanted = _wanted_platform(raw)
        image = reply.payload if isinstance(reply.payload, dict) else {}
        actual = {"os": image.get("Os", ""), "architecture": image.get("Architecture", "")}
        if image.get("Variant"):
            actual["variant"] = image["Variant"]
        if any(wanted.get(k) and wanted[k] != actual.get(k, "") for k in ("os", "architecture", "variant")):
            shown = "/".join(
                v for v in (wanted.get("os"), wanted.get("architecture"), wanted.get("variant")) if v
            )
            raise DockerError(
                404,
                f"image with reference {reply.reference} was found but does not match the "
                "specified platform: "
                f"wanted {shown}, actual: {'/'.join(actual.values())}",
            )


def manifests_refused_with_platform(call: Call) -> None:
    """1.49: `platform` and `manifests` together are refused, as dockerd refuses them."""
    if any(v for v in call.param("platform")) and any(
        v.lower() in ("1", "true") for v in call.param("manifests")
    ):
        raise DockerError(400, "conflicting options: manifests and platform options cannot both be set")


def platform_param(call: Call) -> None:
    """1.48: `platform` on history, save, load and push. This daemon keeps one platform per
    image and cannot select among them: a request that names one is refused."""
    if any(call.param("platform")):
        raise refuse(
            "the platform parameter", "1.48", "leave out --platform: each image here has exactly one platform"
        )
    call.drop_param("platform")


def push_platform(call: Call) -> None:
    if any(call.param("platform")):
        raise refuse(
            "the platform parameter", "1.46", "leave out --platform: each image here has exactly one platform"
        )
    call.drop_param("platform")
