"""Loads parsed, never text-matched: every form of manifest.json the daemon would read is seen,
the archive reaching the daemon is written anew, and every name a load gives is checked."""

import bz2
import gzip
import io
import json
import lzma
import tarfile

import pytest

from gateway import errors, imagemap, store
from gateway.errors import DockerError
from gateway.services import image_archive
from gateway.services.image_transfer import _load_edits

P, Q = "39d166f4ad304cf88806363660b9d3e6", "23106614e2f6461da27b3d19f6108e08"
ID_A, ID_PUB = "sha256:" + "ab" * 32, "sha256:" + "11" * 32
CONFIG = "c" * 64 + ".json"


@pytest.fixture
def db(tmp_path):
    store.init(f"sqlite:///{tmp_path}/m.db")
    store.Instance.create(uuid="i1", agent_url="tcp://127.0.0.1:1", agent_secret="s", position=1)
    imagemap.record(imagemap.PUBLIC, "busybox:latest", ID_PUB, "i1")
    imagemap.record(Q, "app:1", ID_A, "i1")


def manifest(*tags):
    return json.dumps([{"Config": CONFIG, "RepoTags": list(tags), "Layers": ["l/layer.tar"]}]).encode()


def member(name, data=b"", kind=tarfile.REGTYPE, linkname="", pax=None):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, len(data) if kind == tarfile.REGTYPE else 0
    if pax:
        info.pax_headers = pax
    return info, data


def archive(*members, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def saved(*extra, tags=("app:1",)):
    """An archive shaped as docker save writes one (legacy layout)."""
    return archive(
        member("l", kind=tarfile.DIRTYPE),
        member("l/layer.tar", archive(member("hello", b"hi"))),
        member(CONFIG, b"{}"),
        member("manifest.json", manifest(*tags)),
        member("repositories", json.dumps({t.split(":")[0]: {t.split(":")[1]: "x"} for t in tags}).encode()),
        *extra,
    )


def load(data: bytes, project=P, chunk=1000) -> bytes:
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    return b"".join(image_archive.rewrite_load(chunks, *_load_edits(project)))


def read(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def content(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.extractfile(name).read()


def test_a_saved_image_loads_with_the_projects_daemon_names(db):
    out = load(saved())
    names = read(out)
    assert set(names) == {"l", "l/layer.tar", CONFIG, "manifest.json", "repositories"}
    assert json.loads(content(out, "manifest.json"))[0]["RepoTags"] == [imagemap.daemon_ref(P, "app:1")]
    repo, tag = imagemap.daemon_ref(P, "app:1").rsplit(":", 1)
    assert json.loads(content(out, "repositories")) == {repo: {tag: "x"}}
    assert content(out, "l/layer.tar") == content(saved(), "l/layer.tar")


def test_an_image_without_names_loads_untagged(db):
    data = archive(member(CONFIG, b"{}"), member("manifest.json", manifest()))
    assert json.loads(content(load(data), "manifest.json"))[0]["RepoTags"] == []
    data = archive(member("manifest.json", json.dumps([{"Config": CONFIG, "RepoTags": None}]).encode()))
    assert json.loads(content(load(data), "manifest.json"))[0]["RepoTags"] is None


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_a_compressed_archive_is_read_and_sent_plain(db, compress):
    out = load(compress(saved()))
    assert json.loads(content(out, "manifest.json"))[0]["RepoTags"] == [imagemap.daemon_ref(P, "app:1")]


@pytest.mark.parametrize(
    "name",
    ["./manifest.json", ".//manifest.json", "x/../manifest.json", "/manifest.json", "./repositories"],
)
def test_a_name_file_under_another_spelling_is_refused(db, name):
    evil = member(name, manifest(imagemap.daemon_ref(Q, "app:1")))
    with pytest.raises(DockerError) as err:
        load(archive(member(CONFIG, b"{}"), evil))
    assert err.value.status == 400
    assert "one regular file at the top" in err.value.message
    assert "send the archive docker save wrote" in err.value.message


@pytest.mark.parametrize(
    "evil",
    [
        member("manifest.json", kind=tarfile.SYMTYPE, linkname="evil.json"),
        member("manifest.json", kind=tarfile.LNKTYPE, linkname="evil.json"),
        member("manifest.json", kind=tarfile.DIRTYPE),
        member("manifest.json/x", b"[]"),
        member("repositories", kind=tarfile.SYMTYPE, linkname="evil.json"),
    ],
)
def test_a_name_file_that_is_no_plain_file_is_refused(db, evil):
    with pytest.raises(DockerError) as err:
        load(archive(member("evil.json", manifest("busybox:latest")), evil))
    assert err.value.status == 400


def test_a_second_manifest_is_refused(db):
    with pytest.raises(DockerError) as err:
        load(saved(member("manifest.json", manifest("busybox:latest"))))
    assert err.value.status == 400 and "twice" in err.value.message


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_a_name_file_named_by_a_pax_or_gnu_record_is_refused(db, fmt):
    # A name over 100 characters needs the PAX/GNU record: it cleans to manifest.json.
    long = "a/" * 60 + "../" * 60 + "manifest.json"
    with pytest.raises(DockerError) as err:
        load(archive(member(long, manifest("busybox:latest")), fmt=fmt))
    assert err.value.status == 400


def test_a_pax_path_record_differing_from_the_header_is_refused(db):
    # The header says "notes.txt"; the PAX record (which tar readers obey) says manifest.json.
    evil = member("notes.txt", manifest("busybox:latest"), pax={"path": "manifest.json"})
    with pytest.raises(DockerError) as err:
        load(archive(evil))
    assert err.value.status == 400 and "PAX" in err.value.message


def test_an_entry_through_a_symbolic_link_is_refused(db):
    with pytest.raises(DockerError) as err:
        load(archive(member("d", kind=tarfile.SYMTYPE, linkname="."), member("d/manifest.json", manifest())))
    assert err.value.status == 400 and "symbolic link" in err.value.message


def test_an_entry_outside_the_archive_is_refused(db):
    with pytest.raises(DockerError) as err:
        load(archive(member("../x", b"x")))
    assert err.value.status == 400


def test_file_symlinks_of_a_saved_image_still_load(db):
    # docker save links a layer it holds twice to the first copy.
    out = load(
        saved(
            member("m", kind=tarfile.DIRTYPE),
            member("m/layer.tar", kind=tarfile.SYMTYPE, linkname="../l/layer.tar"),
        )
    )
    assert read(out)["m/layer.tar"].linkname == "../l/layer.tar"


@pytest.mark.parametrize(
    "tag, status, words",
    [
        ("busybox:latest", 409, "public image"),
        ("docker.io/library/busybox:latest", 409, "public image"),
        (f"moorage/p-{Q}/docker.io/library/app:1", 400, "reserved for the gateway's own names"),
        ("moorage/anything:1", 400, "use another repository name"),
        ("app::1", 400, "refusing to load"),
    ],
)
def test_a_load_may_not_name_a_public_or_reserved_image(db, tag, status, words):
    with pytest.raises(DockerError) as err:
        load(archive(member("manifest.json", manifest("app:1", tag))))
    assert err.value.status == status and words in err.value.message
    repo, _, t = tag.rpartition(":")
    with pytest.raises(DockerError):
        load(archive(member("repositories", json.dumps({repo: {t: "x"}}).encode())))


def test_something_not_a_tar_reaches_the_daemon_as_its_first_block_only(db):
    data = b"not a tarball" * 100
    assert load(data) == data[:512]


def test_a_truncated_archive_is_refused(db):
    with pytest.raises(DockerError) as err:
        load(saved()[:1500])
    assert err.value.status == 400


def test_reserved_names():
    assert imagemap.reserved(imagemap.parse("moorage/x:1"))
    assert imagemap.reserved(imagemap.parse("docker.io/moorage/p-abc/docker.io/library/app:1"))
    assert not imagemap.reserved(imagemap.parse("moorageish/x:1"))
    with pytest.raises(DockerError) as err:
        imagemap.refuse_reserved(imagemap.parse("moorage/x:1"))
    assert err.value.status == 400
    assert err.value.message == (
        "repository name moorage/x is reserved for the gateway's own names; use another repository name"
    )


ROOT = "/tmp/stack/hosts/h1/docker"


@pytest.mark.parametrize(
    "message, status, expected",
    [
        (
            f"open {ROOT}/image/vfs/imagedb/content/sha256/{'ab' * 32}: no such file or directory",
            500,
            (404, f"No such image: sha256:{'ab' * 32}"),
        ),
        (
            f"failed to get digest sha256:{'ab' * 32}: "
            f"open {ROOT}/image/vfs/imagedb/content/sha256/{'ab' * 32}: no such file or directory",
            500,
            (404, f"No such image: sha256:{'ab' * 32}"),
        ),
        (
            f"open {ROOT}/tmp/docker-import-123456/{'cd' * 32}.json: no such file or directory",
            500,
            (500, f"open {'cd' * 32}.json: no such file or directory"),
        ),
        (
            "mkdir /var/lib/docker/overlay2/x/merged: read-only file system",
            500,
            (500, f"mkdir {errors.NEUTRAL}: read-only file system"),
        ),
        (f"stat {ROOT}/volumes/v: denied", 500, (500, f"stat {errors.NEUTRAL}: denied")),
        (
            'exec: "/bin/nope": stat /bin/nope: no such file or directory',
            400,
            (400, 'exec: "/bin/nope": stat /bin/nope: no such file or directory'),
        ),
    ],
)
def test_error_messages_carry_no_daemon_path(message, status, expected):
    error = errors.scrubbed(DockerError(status, message), [ROOT])
    assert (error.status, error.message) == expected
    assert ROOT not in error.message and "/var/lib/docker" not in error.message
    body_status, body = errors.scrubbed_body(status, json.dumps({"message": message}), [ROOT])
    assert (body_status, json.loads(body)["message"]) == expected


@pytest.mark.parametrize("chunk", [1, 511, 512, 4096, 1 << 20, 3 << 20])
def test_the_rewrite_is_the_same_however_the_client_cut_its_body(db, chunk):
    """The client's pieces are read as they came (image_archive._Reader): a piece smaller than
    a tar block, a block exactly, larger than tarfile's reads, all give the same archive."""
    layer = archive(member("big", bytes(range(256)) * 9000), member("hello", b"hi"))
    data = saved(member("l2/layer.tar", layer))
    expected = load(data, chunk=len(data))
    assert load(data, chunk=chunk) == expected
    assert content(expected, "l2/layer.tar") == layer
