"""The image reference mapping, resolution within a project's view, and tar member rewriting."""

import io
import json
import tarfile

import pytest

from gateway import config, imagemap, store, tarstream

P, Q = "39d166f4ad304cf88806363660b9d3e6", "23106614e2f6461da27b3d19f6108e08"
ID_A, ID_B, ID_PUB = "sha256:" + "ab" * 32, "sha256:" + "ac" * 32, "sha256:" + "11" * 32


@pytest.mark.parametrize(
    "typed, familiar, daemon",
    [
        ("app", "app:latest", f"moorage/p-{P}/docker.io/library/app:latest"),
        ("app:1", "app:1", f"moorage/p-{P}/docker.io/library/app:1"),
        ("docker.io/library/app:1", "app:1", f"moorage/p-{P}/docker.io/library/app:1"),
        ("team/app:1", "team/app:1", f"moorage/p-{P}/docker.io/team/app:1"),
        (
            "198.18.0.1:5000/team/app:1",
            "198.18.0.1:5000/team/app:1",
            f"moorage/p-{P}/198.18.0.1__5000/team/app:1",
        ),
        ("localhost/x", "localhost/x:latest", f"moorage/p-{P}/localhost/x:latest"),
        (
            "reg.example.com/a/b/c:v1.2",
            "reg.example.com/a/b/c:v1.2",
            f"moorage/p-{P}/reg.example.com/a/b/c:v1.2",
        ),
    ],
)
def test_daemon_reference_scheme_round_trips(typed, familiar, daemon):
    assert imagemap.normalize(typed) == familiar
    assert imagemap.daemon_ref(P, typed) == daemon
    assert imagemap.tenant_name(P, daemon) == familiar
    assert imagemap.tenant_name(Q, daemon) is None  # another project's name is not this one's
    assert imagemap.parse(daemon).familiar() == daemon  # a valid reference for the daemon


def test_untagged_decoy_keeps_its_shape():
    assert imagemap.daemon_ref(P, "app", default_tag=False) == f"moorage/p-{P}/docker.io/library/app"
    assert imagemap.tenant_name(P, f"moorage/p-{P}/docker.io/library/app") == "app"


@pytest.mark.parametrize(
    "bad, message",
    [
        ("Bad", "must be lowercase"),
        ("a" * 64, "cannot specify 64-byte hexadecimal strings"),
        ("x:y:z", "invalid reference format"),
        ("", "invalid reference format"),
    ],
)
def test_references_dockerd_refuses(bad, message):
    with pytest.raises(imagemap.ReferenceError_, match=message):
        imagemap.parse(bad)


def test_rewrite_text_puts_tenant_names_back_and_leaves_others():
    text = (
        f"No such image: moorage/p-{P}/docker.io/library/nope:latest; "
        f"The push refers to repository [docker.io/moorage/p-{P}/docker.io/library/nope]; "
        f"Successfully tagged moorage/p-{P}/198.18.0.1__5000/t/app:1"
    )
    assert imagemap.rewrite_text(P, text) == (
        "No such image: nope:latest; The push refers to repository [docker.io/library/nope]; "
        "Successfully tagged 198.18.0.1:5000/t/app:1"
    )
    assert imagemap.rewrite_text(Q, text) == text


def test_decoys():
    name, replace = imagemap.decoy(P, "abcdef0")
    assert replace == {} and name.endswith("/docker.io/library/abcdef0")
    # never a project's daemon name (a daemon may still hold one the project dropped: its
    # request, a DELETE or a push, would act on that image) ...
    assert name not in {imagemap.daemon_ref(p, "abcdef0", default_tag=False) for p in (P, Q, "decoy")}
    assert name != imagemap.daemon_ref("decoy" + "0" * 60, "abcdef0", default_tag=False)
    # ... and the daemon's words about it come back as what the tenant typed, for any project
    assert imagemap.rewrite_text(P, f"No such image: {name}") == "No such image: abcdef0"
    assert imagemap.rewrite_text(Q, f"No such image: {name}:1") == "No such image: abcdef0:1"
    name, replace = imagemap.decoy(P, ID_A)
    assert name == "sha256:" + "0" * 64 and replace == {"0" * 64: "ab" * 32}
    assert imagemap.decoy(P, "ab" * 32)[0] == "0" * 64


@pytest.fixture
def db(tmp_path):
    store.init(
        config.Settings(
            gateway=config.GatewaySettings(database=f"sqlite:///{tmp_path}/m.db")
        ).gateway.database
    )
    store.Instance.create(uuid="i1", agent_url="tcp://127.0.0.1:1", agent_secret="s", position=1)
    imagemap.record(imagemap.PUBLIC, "busybox:latest", ID_PUB, "i1")
    imagemap.record(P, "app:1", ID_A, "i1")
    imagemap.record(Q, "app:1", ID_B, "i1")


def test_each_project_resolves_its_own_app_1(db):
    assert imagemap.resolve(P, "app:1").image_id == ID_A
    assert imagemap.resolve(Q, "app:1").image_id == ID_B
    assert imagemap.resolve(P, "docker.io/library/app:1").row.daemon_ref == imagemap.daemon_ref(P, "app:1")


@pytest.mark.parametrize("ref", [ID_A, ID_A[7:], ID_A[7:19], ID_A[7:11], "app:2"])
def test_another_projects_image_is_missing_by_every_form(db, ref):
    assert imagemap.resolve(P, ref) is not None or ref == "app:2"
    assert imagemap.resolve(Q, ref) is None


def test_ambiguous_prefix_is_missing_and_public_is_visible(db):
    imagemap.record(P, "other:1", "sha256:" + "ab" * 31 + "cd", "i1")
    assert imagemap.resolve(P, "abab") is None
    for project in (P, Q):
        assert imagemap.resolve(project, "busybox").public
        assert imagemap.resolve(project, ID_PUB[7:19]).image_id == ID_PUB
    assert imagemap.image_visible(Q, ID_PUB) == ID_PUB
    assert imagemap.image_visible(Q, ID_A) is None
    assert imagemap.image_visible(P, imagemap.daemon_ref(P, "app:1")) == "app:1"
    assert imagemap.image_visible(Q, imagemap.daemon_ref(P, "app:1")) is None


def test_a_moved_tag_leaves_its_old_image_dangling_to_the_project(db):
    imagemap.record(P, "app:1", ID_B, "i1")
    rows = {(r.reference, r.image_id) for r in store.ImageRef.select().where(store.ImageRef.project == P)}
    assert rows == {("app:1", ID_B), ("", ID_A)}
    assert imagemap.tenant_tags(P, imagemap.visible_images(P)[ID_B]) == ["app:1"]
    imagemap.record(P, "app:2", ID_A, "i1")  # tagged again: no longer dangling
    assert ("", ID_A) not in {(r.reference, r.image_id) for r in store.ImageRef.select()}


def test_own_tag_shadows_the_public_one(db):
    imagemap.record(P, "busybox:latest", ID_A, "i1")
    assert imagemap.resolve(P, "busybox").image_id == ID_A
    assert imagemap.resolve(Q, "busybox").image_id == ID_PUB


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tar_members_rewritten_as_they_stream():
    big = bytes(range(256)) * 4000
    raw = _tar({"layer/layer.tar": big, "manifest.json": json.dumps([{"RepoTags": ["app:1"]}]).encode()})
    chunks = [raw[i : i + 777] for i in range(0, len(raw), 777)]

    def edit(name, content):
        data = json.loads(content)
        data[0]["RepoTags"] = [imagemap.daemon_ref(P, t) for t in data[0]["RepoTags"]]
        return json.dumps(data).encode()

    out = b"".join(tarstream.rewrite(chunks, lambda n: n == "manifest.json", edit))
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        assert tar.extractfile("layer/layer.tar").read() == big
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert manifest[0]["RepoTags"] == [imagemap.daemon_ref(P, "app:1")]


def test_not_a_tar_passes_through():
    data = [b"\x1f\x8b\x08" + b"x" * 1000, b"y" * 10]
    assert b"".join(tarstream.rewrite(data, lambda n: True, lambda n, c: b"")) == b"".join(data)
