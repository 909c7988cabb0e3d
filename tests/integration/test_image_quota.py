"""The images quota through the docker CLI: every way a project gets a new image (import, pull,
build, load, commit, a tag of a public image) is refused before any work when the project is
full, a new name for an image it holds is not, and what a request made beyond the quota is not
kept (the exact check when the request ends). The races across replicas are in
test_postgres_replicas.py."""

from __future__ import annotations

import io
import json
import tarfile

import pytest


def layer(text: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = text.encode()
        info = tarfile.TarInfo("f")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def in_use(stack, project: str) -> int:
    proc = stack.admin("quota", "show", project, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["quotas"]["images"]["in_use"]


@pytest.fixture
def quota(stack):
    project = stack.env["MOORAGE_PROJECT_alpha"]

    def set_room(room: int) -> str:
        limit = in_use(stack, project) + room
        assert stack.admin("quota", "set", project, f"images={limit}").returncode == 0
        return (
            f"quota exceeded for images in project {project}: limit {limit}, in use {limit}; "
            f"remove images you "
            "no longer need (docker rmi) or ask your operator to raise it (moorage quota set)"
        )

    yield set_room
    stack.admin("quota", "unset", project, "images")


def test_a_full_project_gets_no_new_image_by_any_route(stack, quota, unique):
    expected = quota(1)
    registry = stack.env["MOORAGE_REGISTRY"]
    made = []
    try:
        assert stack.docker("import", "-", f"{unique}:1", input=layer("one")).returncode == 0
        made.append(f"{unique}:1")
        # full: each of these would add an image
        refused = {
            "import": stack.docker("import", "-", f"{unique}:2", input=layer("two")),
            "tag-public": stack.docker("tag", "busybox:latest", f"{unique}-bb:1"),
            "build": stack.docker(
                "build",
                "-t",
                f"{unique}:3",
                "-",
                input=b"FROM busybox:latest\nRUN true\n",
                env={"DOCKER_BUILDKIT": "0"},
                timeout=120,
            ),
        }
        stack.docker("run", "--name", unique, "busybox:latest", "true")
        refused["commit"] = stack.docker("commit", unique, f"{unique}:4")
        stack.docker("rm", unique)
        # a new name for an image the project holds adds none
        assert stack.docker("tag", f"{unique}:1", f"{registry}/{unique}:1").returncode == 0
        made.append(f"{registry}/{unique}:1")
        assert stack.docker("push", f"{registry}/{unique}:1", timeout=120).returncode == 0
        assert stack.docker("rmi", f"{registry}/{unique}:1").returncode == 0
        made.remove(f"{registry}/{unique}:1")
        refused["pull"] = stack.docker("pull", f"{registry}/{unique}:1", timeout=120)
        for route, result in refused.items():
            assert result.returncode != 0 and expected.encode() in result.stderr, (route, result.stderr)
        listed = stack.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode().split()
        assert [name for name in listed if unique in name] == [f"{unique}:1"]
        # room again after rmi
        assert stack.docker("rmi", f"{unique}:1").returncode == 0
        made.remove(f"{unique}:1")
        pulled = stack.docker("pull", f"{registry}/{unique}:1", timeout=120)
        assert pulled.returncode == 0, pulled.stderr
        made.append(f"{registry}/{unique}:1")
    finally:
        if made:
            stack.docker("rmi", *made)


def test_a_load_beyond_the_quota_keeps_nothing(stack, quota, unique):
    for i in (1, 2):
        assert stack.docker("import", "-", f"{unique}:{i}", input=layer(f"load {i}")).returncode == 0
    ids = [
        stack.docker("image", "inspect", "--format", "{{.Id}}", f"{unique}:{i}").stdout.decode().strip()
        for i in (1, 2)
    ]
    saved = stack.docker("save", f"{unique}:1", f"{unique}:2").stdout
    assert stack.docker("rmi", f"{unique}:1", f"{unique}:2").returncode == 0
    quota(1)  # room for one of the two
    project = stack.env["MOORAGE_PROJECT_alpha"]
    loaded = stack.docker("load", input=saved)
    assert loaded.returncode != 0
    assert f"quota exceeded for images in project {project}".encode() in loaded.stderr, loaded.stderr
    assert b"this request adds 2" in loaded.stderr
    listed = stack.docker("images", "--format", "{{.Repository}}").stdout.decode().split()
    assert unique not in listed
    for image_id in ids:  # not kept on the daemon either
        assert stack.docker("image", "inspect", image_id, direct=True).returncode != 0
    quota(2)
    assert stack.docker("load", input=saved).returncode == 0
    assert stack.docker("rmi", f"{unique}:1", f"{unique}:2").returncode == 0
