"""Shared mode, closed (issue 14, item 5): beta, over raw HTTP with its own headers, tries every
form of load that once retagged alpha's image or the public busybox, names under moorage/, and
the requests whose errors quoted the daemon's data directory. After each, alpha's image and
busybox are the images they were, and no answer names the daemon's data root."""

import io
import json
import secrets
import tarfile
from urllib.parse import quote

import pytest

from gateway import imagemap

pytestmark = pytest.mark.isolation


def ok(result):
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")
    return result.stdout.decode().strip()


def layer(text: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("who")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text.encode()))
    return buf.getvalue()


@pytest.fixture
def alpha_app(stack, unique):
    tag = f"{unique}:1"
    ok(stack.docker("import", "-", tag, input=layer(f"alpha-{unique}")))
    yield tag, ok(stack.docker("image", "inspect", "-f", "{{.Id}}", tag))
    stack.docker("rmi", "-f", tag)


@pytest.fixture
def beta_saved(stack, unique):
    """A tar docker save wrote of an image of beta's (its content: "beta")."""
    tag = f"{unique}-b:1"
    ok(stack.docker("import", "-", tag, input=layer(f"beta-{unique}"), tenant="beta"))
    saved = stack.docker("save", tag, tenant="beta")
    ok(saved)
    stack.docker("rmi", "-f", tag, tenant="beta")
    return saved.stdout


@pytest.fixture
def watch(stack, alpha_app):
    """Checks that alpha's image and busybox are unchanged and a body names no data root."""
    tag, alpha_id = alpha_app
    project = stack.env["MOORAGE_PROJECT_alpha"]
    daemon_tag = imagemap.daemon_ref(project, tag)
    root = stack.direct_http("GET", "/info").json()["DockerRootDir"]
    busybox = stack.direct_http("GET", "/images/busybox:latest/json").json()["Id"]

    class Watch:
        alpha_daemon_tag = daemon_tag

        def unchanged(self, resp, what):
            assert root not in resp.text and "/var/lib/docker" not in resp.text, (what, resp.text)
            assert "docker-import-" not in resp.text, (what, resp.text)
            assert stack.direct_http("GET", f"/images/{daemon_tag}/json").json()["Id"] == alpha_id, what
            assert stack.direct_http("GET", "/images/busybox:latest/json").json()["Id"] == busybox, what
            assert ok(stack.docker("image", "inspect", "-f", "{{.Id}}", tag)) == alpha_id
            assert ok(stack.docker("run", "--rm", "busybox", "true", tenant="alpha")) == ""

    return Watch()


def rebuilt(saved: bytes, tags: list[str], form: str) -> bytes:
    """``saved`` with its manifest naming ``tags``, put in the archive in the way ``form`` says."""
    src = tarfile.open(fileobj=io.BytesIO(saved))  # noqa: SIM115 (in memory)
    manifest = json.loads(src.extractfile("manifest.json").read())
    manifest[0]["RepoTags"] = tags
    evil = json.dumps(manifest).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as out:
        for m in src.getmembers():
            if m.name in ("manifest.json", "repositories"):
                continue
            out.addfile(m, src.extractfile(m) if m.isreg() else None)

        def add(name, data=b"", kind=tarfile.REGTYPE, linkname="", pax=None):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, linkname
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            if pax:
                info.pax_headers = pax
            out.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        if form in ("./manifest.json", ".//manifest.json", "x/../manifest.json"):
            add(form, evil)
        elif form == "symlink":
            add("evil.json", evil)
            add("manifest.json", kind=tarfile.SYMTYPE, linkname="evil.json")
        elif form == "hardlink":
            add("evil.json", evil)
            add("manifest.json", kind=tarfile.LNKTYPE, linkname="evil.json")
        elif form == "duplicate":
            add("manifest.json", json.dumps([{**manifest[0], "RepoTags": []}]).encode())
            add("manifest.json", evil)
        elif form == "pax-path":
            add("notes.txt", evil, pax={"path": "manifest.json"})
        elif form == "plain":
            add("manifest.json", evil)
    return buf.getvalue()


FORMS = [
    "./manifest.json",
    ".//manifest.json",
    "x/../manifest.json",
    "symlink",
    "hardlink",
    "duplicate",
    "pax-path",
]


@pytest.mark.parametrize("form", FORMS)
def test_no_load_form_retags_alphas_image_or_busybox(stack, watch, beta_saved, form):
    for tag in (watch.alpha_daemon_tag, "busybox:latest"):
        resp = stack.http(
            "POST", "/images/load", tenant="beta", data=rebuilt(beta_saved, [tag], form), timeout=120
        )
        assert resp.status_code == 400, (form, tag, resp.text)
        assert "refusing to load this archive" in resp.json()["message"]
        watch.unchanged(resp, (form, tag))


def test_a_plain_load_may_not_name_busybox_or_a_daemon_name(stack, watch, beta_saved):
    resp = stack.http(
        "POST", "/images/load", tenant="beta", data=rebuilt(beta_saved, ["busybox:latest"], "plain")
    )
    assert resp.status_code == 409 and "public image" in resp.json()["message"], resp.text
    watch.unchanged(resp, "busybox")
    resp = stack.http(
        "POST", "/images/load", tenant="beta", data=rebuilt(beta_saved, [watch.alpha_daemon_tag], "plain")
    )
    assert resp.status_code == 400 and "reserved for the gateway's own names" in resp.json()["message"]
    watch.unchanged(resp, "daemon name")


def test_moorage_names_are_refused_to_tag_commit_import_and_pull(stack, watch, unique):
    repo, tag = watch.alpha_daemon_tag.rsplit(":", 1)
    q = f"repo={quote(repo, safe='')}&tag={tag}"
    answers = {
        "tag": stack.http("POST", f"/images/busybox:latest/tag?{q}", tenant="beta"),
        "import": stack.http(
            "POST", f"/images/create?fromSrc=-&{q}", tenant="beta", data=layer("x"), timeout=60
        ),
        "pull": stack.http(
            "POST", f"/images/create?fromImage={quote(repo, safe='')}&tag={tag}", tenant="beta"
        ),
    }
    container = ok(stack.docker("create", "--name", f"{unique}-c", "busybox", "true", tenant="beta"))
    try:
        answers["commit"] = stack.http("POST", f"/commit?container={container}&{q}", tenant="beta", json={})
    finally:
        stack.docker("rm", "-f", container, tenant="beta")
    for what, resp in answers.items():
        assert resp.status_code == 400, (what, resp.text)
        assert resp.json()["message"] == (
            f"repository name {repo} is reserved for the gateway's own names; use another repository name"
        ), what
        watch.unchanged(resp, what)


def test_errors_name_no_daemon_path(stack, watch, beta_saved):
    hexid = secrets.token_hex(32)
    resp = stack.http("GET", f"/images/get?names=sha256:{hexid}", tenant="beta")
    assert resp.status_code == 404, resp.text
    assert resp.json()["message"] == f"No such image: sha256:{hexid}"
    watch.unchanged(resp, "get")
    # A manifest naming a config the archive lacks.
    src = tarfile.open(fileobj=io.BytesIO(beta_saved))  # noqa: SIM115 (in memory)
    manifest = json.loads(src.extractfile("manifest.json").read())
    manifest[0]["Config"] = "missing.json"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as out:
        for m in src.getmembers():
            if m.name == "manifest.json":
                data = json.dumps(manifest).encode()
                m.size = len(data)
                out.addfile(m, io.BytesIO(data))
            else:
                out.addfile(m, src.extractfile(m) if m.isreg() else None)
    resp = stack.http("POST", "/images/load", tenant="beta", data=buf.getvalue(), timeout=120)
    assert resp.status_code in (200, 400, 500), resp.text
    assert "missing.json" in resp.text
    watch.unchanged(resp, "load with a missing config")


def test_save_and_load_round_trip_still_works(stack, beta_saved, unique):
    loaded = ok(stack.docker("load", tenant="beta", input=beta_saved, timeout=120))
    assert loaded == f"Loaded image: {unique}-b:1"
    stack.docker("rmi", f"{unique}-b:1", tenant="beta")
