"""BuildKit's relay (gateway/services/buildkit.py): who may use it, and which exported names a
project adopts (its own instance's only, never a public name)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gateway import config
from gateway.errors import DockerError
from gateway.services import buildkit


def ctx(tenancy="dedicated", project="p", all_projects=False):
    return SimpleNamespace(
        settings=config.Settings(placement=config.PlacementSettings(tenancy=tenancy)),
        project=project,
        all_projects=all_projects,
    )


def test_available_on_dedicated_instances_only():
    assert buildkit.available(ctx())
    assert not buildkit.available(ctx("shared"))
    assert not buildkit.available(ctx(all_projects=True))


@pytest.mark.parametrize("route", [buildkit.session, buildkit.grpc])
def test_shared_instances_refuse_naming_the_classic_builder(route):
    with pytest.raises(DockerError) as exc:
        route(ctx("shared"))
    assert exc.value.status == 400 and "DOCKER_BUILDKIT=0" in exc.value.message


def test_foreign_names_skip_daemon_names_and_public_names():
    images = [
        {"Id": "sha256:a", "RepoTags": ["app:1", "moorage/p-x/app:1"]},
        {"Id": "sha256:b", "RepoTags": ["busybox:latest"]},  # a seeded copy: its own ID
        {"Id": "sha256:c", "RepoTags": ["<none>:<none>"]},
        {"Id": "sha256:d", "RepoTags": ["docker.io/library/busybox:latest", "reg:5000/team/x:2"]},
    ]
    public = {"sha256:p": {"busybox:latest"}}
    assert buildkit.foreign_names(images, public) == [
        ("app:1", "sha256:a"),
        ("reg:5000/team/x:2", "sha256:d"),
    ]


def test_nothing_is_adopted_from_another_projects_instance(monkeypatch):
    """A project with no instance of its own lists another's: it adopts nothing there."""
    asked = []
    monkeypatch.setattr(buildkit, "call", lambda *a, **kw: asked.append(a) or (200, []))
    theirs = SimpleNamespace(uuid="i1", project="q")
    assert buildkit.adopt_exports(ctx(project="p"), theirs) == 0
    assert not buildkit.adopt_listed(ctx(project="p"), theirs, [{"Id": "sha256:a", "RepoTags": ["app:1"]}])
    assert asked == []
