"""A build context's build file as the daemon would read it: every spelling of the build file
and every form of image reference reaches the daemon resolved (gateway/buildfile.py,
gateway/tarstream.py rewrite_build_context, gateway/services/builds.py build_context)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile

import pytest

from gateway import buildfile
from gateway.errors import DockerError
from gateway.services import builds

ALPHA = "moorage/p-alpha/docker.io/library/secret:latest"
ALPHA_ID = "sha256:" + "a" * 64


def resolve(typed: str, line: int, stages: list[str]) -> str:
    """beta's view: busybox is public, its own app is its own, everything else a decoy."""
    if typed == "busybox":
        return typed
    if typed == "app":
        return "moorage/p-beta/docker.io/library/app:latest"
    if typed.startswith("sha256:"):
        return "sha256:" + "0" * 64
    return "moorage/p-beta/docker.io/library/decoy"  # a name of beta's own that no daemon holds


def edit(name: str, content: bytes) -> bytes:
    return buildfile.rewrite(content, {}, resolve)


def tar(*members: tuple, fmt=tarfile.GNU_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
        for m in members:
            name, kind = m[0], m[1]
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = m[2].encode()
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, m[2]
                t.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, m[2]
                t.addfile(info)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                t.addfile(info)
    return out.getvalue()


def daemon_view(data: bytes, dockerfile: str = "Dockerfile") -> dict[str, str]:
    """Every regular member of the context the gateway forwards, by its cleaned name."""
    body = b"".join(
        builds.build_context([data[i : i + 700] for i in range(0, len(data), 700)], dockerfile, edit)
    )
    out = {}
    with tarfile.open(fileobj=io.BytesIO(body)) as t:
        for m in t.getmembers():
            if m.isfile():
                f = t.extractfile(m)
                assert f is not None
                out[m.name.lstrip("./")] = f.read().decode()
    return out


def assert_clean(text: str) -> None:
    """No instruction names alpha's image (an ARG line may hold the text: it names nothing)."""
    for line in text.splitlines():
        if not line.startswith("ARG "):
            assert ALPHA not in line and ALPHA_ID not in line and "p-alpha" not in line, line


EVIL = [
    f"FROM\t{ALPHA}\nRUN cat /secret\n",
    f"FROM\t{ALPHA_ID}\n",
    f"from {ALPHA}\n",
    f"FROM busybox\nCOPY --from={ALPHA} /secret /\n",
    f"FROM busybox\nCOPY --from={ALPHA_ID} /secret /\n",
    f'FROM busybox\nCOPY --from="{ALPHA}" /secret /\n',
    f"FROM busybox\nADD --from={ALPHA} /secret /\n",
    f"ARG B={ALPHA}\nFROM $B\n",
    f"ARG B={ALPHA}\nFROM ${{B}}\n",
    f"FROM busybox\nARG B={ALPHA}\nCOPY --from=$B /secret /\n",
    f"FROM \\\n  {ALPHA}\n",
    f"FR\\\nOM {ALPHA}\n",
    f"FROM {ALPHA[:10]}\\\n{ALPHA[10:]}\n",
    f"# escape=`\nFROM busybox\nCOPY --from={ALPHA} `\n /secret /\n",
    f"FROM busybox\nONBUILD COPY --from={ALPHA} /secret /\n",
    f"FROM busybox\nonbuild copy --from={ALPHA} /secret /\n",
    f"FROM busybox AS {'x'}\nCOPY --from={ALPHA} /secret /\n",
]


@pytest.mark.parametrize("text", EVIL)
def test_every_form_of_reference_reaches_the_daemon_resolved(text):
    out = daemon_view(tar(("Dockerfile", "file", text)))["Dockerfile"]
    assert_clean(out)


def test_buildargs_resolve_before_the_daemon_sees_them():
    out = buildfile.rewrite(b"ARG B=busybox\nFROM $B\n", {"B": ALPHA}, resolve).decode()
    assert_clean(out)
    assert "FROM moorage/p-beta/" in out


@pytest.mark.parametrize(
    "text",
    [
        "FROM busybox\nRUN --mount=from=x,target=/m cat /m/secret\n",
        "FROM busybox\nRUN --mount=type=bind,from=x,target=/m cat /m/secret\n",
        "# syntax=docker/dockerfile:1\nFROM busybox\n",
        "FROM $NOPE\n",
        "FROM busybox\nCOPY --from=$NOPE /a /b\n",
        "FROM busybox\nONBUILD COPY --from=$X /a /b\n",
        "FROM busybox\nONBUILD FROM x\n",
        "FROM busybox\nBOGUS x\n",
        "# escape=x\nFROM busybox\n",
    ],
)
def test_what_cannot_be_checked_is_refused(text):
    with pytest.raises(buildfile.BuildfileError):
        buildfile.rewrite(text.encode(), {}, resolve)


@pytest.mark.parametrize(
    "members",
    [
        [("dockerfile", "file", f"FROM {ALPHA}\n")],
        [("./Dockerfile", "file", f"FROM {ALPHA}\n")],
        [("x/../Dockerfile", "file", f"FROM {ALPHA}\n")],
        [("x/./../Dockerfile", "file", f"FROM {ALPHA}\n")],
        [("Dockerfile", "file", "FROM busybox\n"), ("Dockerfile", "file", f"FROM {ALPHA}\n")],
        [("Dockerfile", "file", "FROM busybox\n"), ("dockerfile", "file", f"FROM {ALPHA}\n")],
        [("d", "symlink", "."), ("d/Dockerfile", "file", f"FROM {ALPHA}\n")],
        [("d", "symlink", "/"), ("d/Dockerfile", "file", f"FROM {ALPHA}\n")],
        [("e", "dir"), ("e/d", "symlink", ".."), ("e/d/Dockerfile", "file", f"FROM {ALPHA}\n")],
        [("../Dockerfile", "file", f"FROM {ALPHA}\n")],
        [("/Dockerfile", "file", f"FROM {ALPHA}\n")],
    ],
)
def test_every_spelling_of_the_build_file_is_rewritten(members):
    view = daemon_view(tar(*members))
    for text in view.values():
        assert_clean(text)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_names_are_read_as_the_daemon_reads_them(fmt):
    name = "a" * 120 + "/../Dockerfile"
    view = daemon_view(tar((name, "file", f"FROM {ALPHA}\n"), fmt=fmt))
    assert view and all(ALPHA not in v for v in view.values())


def test_a_pax_path_record_names_the_build_file():
    # A short ustar name, but a PAX path record saying Dockerfile: the reader takes the record.
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("innocent")
        data = f"FROM {ALPHA}\n".encode()
        info.size = len(data)
        info.pax_headers = {"path": "Dockerfile"}
        t.addfile(info, io.BytesIO(data))
    view = daemon_view(out.getvalue())
    assert_clean(view["Dockerfile"])


@pytest.mark.parametrize(
    "members",
    [
        [("real", "file", f"FROM {ALPHA}\n"), ("Dockerfile", "symlink", "real")],
        [("real", "file", f"FROM {ALPHA}\n"), ("Dockerfile", "hardlink", "real")],
        [("real/Dockerfile", "file", f"FROM {ALPHA}\n"), ("sub", "symlink", "real")],
        [("d", "symlink", "."), ("real", "file", "x"), ("d/Dockerfile", "symlink", "real")],
    ],
)
def test_links_at_the_build_file_are_refused(members):
    dockerfile = "sub/Dockerfile" if members[-1][0] == "sub" else "Dockerfile"
    with pytest.raises(DockerError) as exc:
        daemon_view(tar(*members), dockerfile)
    assert exc.value.status == 400


def test_the_dockerfile_parameter_is_cleaned_as_a_path():
    view = daemon_view(tar(("real/Dockerfile", "file", f"FROM {ALPHA}\n")), "sub/../real/Dockerfile")
    assert_clean(view["real/Dockerfile"])
    view = daemon_view(tar(("x", "file", f"FROM {ALPHA}\n")), "./x")
    assert_clean(view["x"])
    for bad in ("/etc/Dockerfile", "../Dockerfile", "."):
        with pytest.raises(DockerError):
            builds.build_file_targets(bad)


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_compressed_contexts_are_decompressed_and_rewritten(compress):
    data = compress(tar(("Dockerfile", "file", f"FROM {ALPHA}\n")))
    view = daemon_view(data)
    assert_clean(view["Dockerfile"])


def test_zstd_contexts_are_refused():
    with pytest.raises(DockerError):
        daemon_view(b"(\xb5/\xfd" + b"\0" * 600)


def test_a_bare_dockerfile_is_rewritten():
    out = b"".join(builds.build_context([f"FROM {ALPHA}\n".encode()], "Dockerfile", edit)).decode()
    assert_clean(out)


def test_ordinary_builds_keep_their_meaning():
    text = (
        "# a comment\nARG BASE=busybox\nFROM $BASE AS build\nRUN echo hi > /x \\\n && cat /x\n"
        "FROM app\nCOPY --from=build /x /x\nCOPY --from=0 /x /y\nENV A=1 B=2\n"
        'CMD ["sh", "-c", "echo $A"]\n'
    )
    out = daemon_view(tar(("Dockerfile", "file", text), ("src/main.c", "file", "int main;")))
    assert out["src/main.c"] == "int main;"
    assert out["Dockerfile"].splitlines() == [
        "ARG BASE=busybox",
        "FROM busybox AS build",
        "RUN echo hi > /x  && cat /x",
        "FROM moorage/p-beta/docker.io/library/app:latest",
        "COPY --from=build /x /x",
        "COPY --from=0 /x /y",
        "ENV A=1 B=2",
        'CMD ["sh", "-c", "echo $A"]',
    ]


def test_trigger_references():
    assert buildfile.trigger_references(f"COPY --from={ALPHA} /a /b") == [ALPHA]
    assert buildfile.trigger_references("RUN echo hi") == []
