"""Beta tries every way of naming alpha's image in a build (raw POST /build with a hand-made
tar, as a client could send it) and reads no secret: the build fails as for a missing image, or
is refused 400. Alpha's own builds in the same forms keep working."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import tempfile

import pytest

from gateway import imagemap

pytestmark = pytest.mark.isolation

BUILD = {"DOCKER_BUILDKIT": "0"}


def ok(result):
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")
    return result.stdout.decode().strip()


def tar(*members, fmt=tarfile.GNU_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = value.encode()
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, value
                t.addfile(info)
            elif kind == "pax-path":  # a PAX path record naming the member
                data = value.encode()
                info.name = "innocent.txt"
                info.size = len(data)
                info.pax_headers = {"path": "Dockerfile"}
                t.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture(scope="module")
def secret(stack):
    import uuid

    unique = uuid.uuid4().hex[:8]
    tag = f"it-build-secret-{unique}:1"
    word = f"alpha-secret-{unique}"
    with tempfile.TemporaryDirectory() as ctx:
        with open(f"{ctx}/Dockerfile", "w") as fh:
            fh.write(f"FROM busybox\nRUN echo {word} > /secret\n")
        ok(stack.docker("build", "-q", "-t", tag, ctx, env=BUILD, timeout=120))
    image_id = ok(stack.docker("image", "inspect", "-f", "{{.Id}}", tag))
    name = imagemap.daemon_ref(stack.env["MOORAGE_PROJECT_alpha"], tag)
    yield {"tag": tag, "word": word, "name": name, "id": image_id}
    stack.docker("rmi", "-f", tag)


def post_build(stack, tenant, data, **params):
    return stack.http(
        "POST",
        "/v1.41/build",
        tenant=tenant,
        params={"rm": "1", "forcerm": "1", **params},
        data=data,
        headers={"Content-Type": "application/x-tar"},
        timeout=180,
    )


def forms(s):
    name, iid = s["name"], s["id"]
    run = "RUN cat /secret\n"
    cp = "RUN cat /s\n"
    return {
        "from-tab": (tar(("Dockerfile", "file", f"FROM\t{name}\n{run}")), {}),
        "from-tab-id": (tar(("Dockerfile", "file", f"FROM\t{iid}\n{run}")), {}),
        "from-short-id": (tar(("Dockerfile", "file", f"FROM {iid[:19]}\n{run}")), {}),
        "from-lower": (tar(("Dockerfile", "file", f"from {name}\n{run}")), {}),
        "copy-from": (tar(("Dockerfile", "file", f"FROM busybox\nCOPY --from={name} /secret /s\n{cp}")), {}),
        "copy-from-id": (
            tar(("Dockerfile", "file", f"FROM busybox\nCOPY --from={iid} /secret /s\n{cp}")),
            {},
        ),
        "arg-default": (tar(("Dockerfile", "file", f"ARG B={name}\nFROM $B\n{run}")), {}),
        "arg-buildargs": (
            tar(("Dockerfile", "file", f"ARG B=busybox\nFROM $B\n{run}")),
            {"buildargs": json.dumps({"B": name})},
        ),
        "continuation": (tar(("Dockerfile", "file", f"FROM \\\n {name}\n{run}")), {}),
        "continuation-inside": (tar(("Dockerfile", "file", f"FR\\\nOM {name}\n{run}")), {}),
        "escape": (
            tar(("Dockerfile", "file", f"# escape=`\nFROM busybox\nCOPY --from={name} `\n /secret /s\n{cp}")),
            {},
        ),
        "run-mount": (
            tar(("Dockerfile", "file", f"FROM busybox\nRUN --mount=from={name},target=/m cat /m/secret\n")),
            {},
        ),
        "lowercase-file": (tar(("dockerfile", "file", f"FROM {name}\n{run}")), {}),
        "symlink": (tar(("real", "file", f"FROM {name}\n{run}"), ("Dockerfile", "symlink", "real")), {}),
        "param-dotdot": (
            tar(("real/Dockerfile", "file", f"FROM {name}\n{run}")),
            {"dockerfile": "sub/../real/Dockerfile"},
        ),
        "entry-dotdot": (tar(("x/../Dockerfile", "file", f"FROM {name}\n{run}")), {}),
        "entry-dot": (tar(("./Dockerfile", "file", f"FROM {name}\n{run}")), {}),
        "dir-symlink": (tar(("d", "symlink", "."), ("d/Dockerfile", "file", f"FROM {name}\n{run}")), {}),
        "pax-path": (tar(("x", "pax-path", f"FROM {name}\n{run}"), fmt=tarfile.PAX_FORMAT), {}),
        "gnu-longname": (tar(("a" * 120 + "/../Dockerfile", "file", f"FROM {name}\n{run}")), {}),
        "gzip": (gzip.compress(tar(("Dockerfile", "file", f"FROM {name}\n{run}"))), {}),
    }


FORMS = list(forms({"name": "n", "id": "sha256:" + "0" * 64}))


@pytest.mark.parametrize("form", FORMS)
def test_beta_cannot_build_on_alphas_image(stack, secret, form):
    data, params = forms(secret)[form]
    r = post_build(stack, "beta", data, **params)
    assert secret["word"] not in r.text
    if r.status_code == 200:
        assert '"error"' in r.text or "errorDetail" in r.text, r.text
    else:
        assert r.status_code in (400, 404), r.text
        assert "message" in r.json()


def test_alpha_builds_on_its_own_image_in_those_forms(stack, secret):
    tag = secret["tag"]
    for text in (
        f"FROM\t{tag}\nRUN cat /secret\n",
        f"ARG B={tag}\nFROM $B\nRUN cat /secret\n",
        f"FROM busybox AS b\nFROM busybox\nCOPY --from={tag} /secret /s\n"
        "COPY --from=b /bin/true /t\nRUN cat /s\n",
    ):
        r = post_build(stack, "alpha", tar(("Dockerfile", "file", text)), nocache="1")
        assert r.status_code == 200 and secret["word"] in r.text, r.text


def test_build_prune_answers_without_forwarding(stack):
    r = stack.http("POST", "/v1.41/build/prune", tenant="beta")
    assert r.status_code == 200
    assert r.json() == {"CachesDeleted": None, "SpaceReclaimed": 0}
