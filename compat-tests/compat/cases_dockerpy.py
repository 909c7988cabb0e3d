"""docker-py: the high-level DockerClient and the low-level APIClient, with version="auto"
(negotiated from /version) and pinned "1.41". Each case is a list of calls; the observation
is each call's normalized return value or error (class, HTTP status, explanation)."""

from __future__ import annotations

import io
import os
import time

from compat.harness import SUITE_LABEL, Ctx, make_tar, register
from compat.normalize import shape

VERSIONS = ("auto", "1.41", "1.44", "1.55")


class Steps:
    def __init__(self, ctx: Ctx):
        self.ctx = ctx
        self.out: list = []

    def __call__(self, label: str, fn, how: str = "json", keep: bool = True):
        try:
            value = fn()
            if how == "shape":
                value = shape(value)
            elif how == "none":
                value = None
            elif how == "bytes":
                value = self.ctx.norm.text(
                    value.decode(errors="replace") if isinstance(value, bytes) else str(value)
                )
            else:
                value = self.ctx.norm.json(_plain(value))
            result = {"ok": value}
        except Exception as exc:  # noqa: BLE001 - the error is the observation
            result = {
                "error": type(exc).__name__,
                "status": getattr(getattr(exc, "response", None), "status_code", None),
                "explanation": self.ctx.norm.text(str(getattr(exc, "explanation", "") or exc)),
            }
            value = None
        if keep:
            self.out.append({label: result})
        return value if "ok" in result else None


def _plain(value):
    """Model objects (Container, Image, ...) become their attrs; generators become lists."""
    import docker.models.resource as res

    if isinstance(value, res.Model):
        return value.attrs
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if hasattr(value, "__next__"):
        return [_plain(v) for v in value]
    return value


def py_case(case_id: str, ops, **kw):
    def wrap(fn):
        for version in VERSIONS:

            def scenario(ctx: Ctx, version=version):
                s = Steps(ctx)
                fn(ctx, s, version)
                return s.out

            register(f"{case_id}.{version}", scenario, ops, **kw)
        return fn

    return wrap


LABELS = {SUITE_LABEL: "dockerpy"}


def _own(ctx: Ctx, client, name: str):
    ctx.on_cleanup(
        lambda: (
            client.api.remove_container(name, force=True, v=True)
            if hasattr(client, "api")
            else client.remove_container(name, force=True, v=True)
        )
    )


# == high level ========================================================================
@py_case(
    "dockerpy.high.containers",
    (
        "ContainerCreate",
        "ContainerStart",
        "ContainerLogs",
        "ContainerWait",
        "ContainerList",
        "ContainerInspect",
        "ContainerDelete",
    ),
)
def _high_containers(ctx, s, version):
    dc = ctx.dockerpy(version)
    name = ctx.name()
    _own(ctx, dc, name)
    _own(ctx, dc, name + "-d")
    s(
        "run",
        lambda: dc.containers.run(
            "busybox",
            ["sh", "-c", "echo out; sleep 0.2; echo err >&2"],
            name=name,
            labels=LABELS,
            stderr=True,
        ),
        how="bytes",
    )
    c = dc.containers.get(name)
    s("attrs", lambda: {k: c.attrs[k] for k in ("Name", "Path", "Args", "Config")})
    s("logs", c.logs, how="bytes")
    s("logs-stdout", lambda: c.logs(stderr=False, timestamps=True), how="bytes")
    s("wait", c.wait)
    s("remove", c.remove)
    s("get-missing", lambda: dc.containers.get(name))
    d = dc.containers.run(
        "busybox",
        ["sleep", "300"],
        name=name + "-d",
        detach=True,
        labels=LABELS,
        environment={"A": "1"},
        working_dir="/tmp",
        ports={"80/tcp": None},
    )
    s("detached", lambda: {"status": dc.containers.get(d.id).status, "name": d.name})
    s(
        "list",
        lambda: [(x.name, x.status, x.labels) for x in dc.containers.list(all=True, filters={"name": name})],
    )
    s("list-sparse", lambda: [x.id for x in dc.containers.list(sparse=True, filters={"name": name})])
    s("top", lambda: dc.containers.get(d.id).top()["Titles"])
    s("stats", lambda: dc.containers.get(d.id).stats(stream=False), how="shape")
    s("exec", lambda: tuple(d.exec_run(["sh", "-c", "echo x; sleep 0.2; echo y >&2; exit 3"])))
    s("exec-demux", lambda: d.exec_run(["sh", "-c", "echo x; sleep 0.2; echo y >&2"], demux=True).output)
    s("exec-stream", lambda: list(d.exec_run(["sh", "-c", "echo a; sleep 0.3; echo b"], stream=True).output))
    s(
        "exec-env",
        lambda: d.exec_run("sh -c 'echo $Z; pwd'", environment={"Z": "zz"}, workdir="/etc").output,
        how="bytes",
    )
    s("put-archive", lambda: d.put_archive("/tmp", make_tar({"f.txt": "data\n"})))
    s(
        "get-archive",
        lambda: (b"".join(d.get_archive("/tmp/f.txt")[0])[:0], d.get_archive("/tmp/f.txt")[1]),
        how="json",
    )
    s("diff", lambda: sorted(map(str, d.diff())))
    s("pause", lambda: (d.pause(), dc.containers.get(d.id).status))
    s("unpause", lambda: (d.unpause(), dc.containers.get(d.id).status))
    s("rename", lambda: (d.rename(name + "-r"), dc.containers.get(d.id).name))
    s("update", lambda: d.update(cpu_shares=512))
    s("restart", lambda: (d.restart(timeout=1), dc.containers.get(d.id).status))
    s("kill", lambda: (d.kill(), d.wait(timeout=20)))
    s("kill-again", d.kill)
    s("start", lambda: (d.start(), dc.containers.get(d.id).status))
    s("stop", lambda: (d.stop(timeout=1), dc.containers.get(d.id).status))
    s("remove-d", lambda: d.remove(force=True))


@py_case("dockerpy.high.run-errors", ("ContainerCreate", "ContainerWait"))
def _high_errors(ctx, s, version):
    dc = ctx.dockerpy(version)
    s(
        "exit-code",
        lambda: dc.containers.run(
            "busybox", ["sh", "-c", "echo bad >&2; exit 3"], remove=True, labels=LABELS
        ),
    )
    s("no-image", lambda: dc.containers.create(f"{ctx.prefix}-nosuch:1", labels=LABELS))
    s("bad-name", lambda: dc.containers.create("busybox", name="bad name!", labels=LABELS))
    s("missing", lambda: dc.containers.get(ctx.name("missing")))


@py_case(
    "dockerpy.high.images",
    (
        "ImageBuild",
        "ImageList",
        "ImageInspect",
        "ImageTag",
        "ImageDelete",
        "ImageHistory",
        "ImageGet",
        "ImageLoad",
    ),
    timeout=120,
    serial=True,
)
def _high_images(ctx, s, version):
    dc = ctx.dockerpy(version)
    tag = f"{ctx.prefix}-img:1"
    ctx.track_image(tag)
    ctx.track_image(f"{ctx.prefix}-img:2")
    dockerfile = f'FROM busybox\nENV CASE={ctx.prefix}\nRUN echo built > /b\nCMD ["cat", "/b"]\n'
    img = s("build", lambda: _build(dc, dockerfile, tag), how="none")
    img = dc.images.get(tag)
    s("run-built", lambda: dc.containers.run(tag, remove=True), how="bytes")
    s("get", lambda: {k: img.attrs[k] for k in ("RepoTags", "Config", "Os", "Architecture")})
    s("tag", lambda: (img.tag(f"{ctx.prefix}-img", "2"), sorted(dc.images.get(tag).tags)))
    s("list", lambda: sorted(t for i in dc.images.list(name=f"{ctx.prefix}-img") for t in i.tags))
    s("list-filter", lambda: len(dc.images.list(filters={"reference": f"{ctx.prefix}-*"})))
    s("history", lambda: [h["CreatedBy"] for h in img.history()])
    data = b"".join(img.save(named=True))
    s("save", lambda: len(data) > 1000)
    s("remove", lambda: dc.images.remove(f"{ctx.prefix}-img:2"))
    s("remove-tagged", lambda: dc.images.remove(tag))
    s("load", lambda: [i.tags for i in dc.images.load(data)])
    s("get-missing", lambda: dc.images.get(f"{ctx.prefix}-nosuch:1"))
    s("build-fails", lambda: _build(dc, f"FROM busybox\nENV CASE={ctx.prefix}\nRUN exit 7\n", None))
    s("prune", lambda: dc.images.prune(filters={"label": f"compat.case={ctx.prefix}"}))


def _build(dc, dockerfile: str, tag):
    image, _logs = dc.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, forcerm=True)
    return image


@py_case(
    "dockerpy.high.registry", ("ImagePush", "ImageCreate", "SystemAuth", "DistributionInspect"), timeout=120
)
def _high_registry(ctx, s, version):
    dc = ctx.dockerpy(version)
    reg = ctx.stack.registry
    repo = f"{reg}/{ctx.prefix}-img"
    c = dc.containers.run(
        "busybox", ["sh", "-c", f"echo {ctx.prefix} > /f"], detach=True, labels=LABELS, name=ctx.name()
    )
    ctx.on_cleanup(lambda: c.remove(force=True))
    c.wait(timeout=20)
    c.commit(repo, "1")
    ctx.track_image(f"{repo}:1")
    s("login", lambda: dc.login("compat", "compat", registry=reg))
    s(
        "push",
        lambda: [
            x.get("status")
            for x in dc.images.push(repo, "1", stream=True, decode=True)
            if "status" in x and ":" not in x.get("status", "")
        ],
        how="none",
    )
    s("remove", lambda: dc.images.remove(f"{repo}:1"), how="none")
    s("pull", lambda: dc.images.pull(repo, tag="1").tags)
    s("registry-data", lambda: dc.images.get_registry_data(f"{repo}:1").attrs, how="shape")
    s("pull-missing", lambda: dc.images.pull(f"{reg}/{ctx.prefix}-nosuch", tag="1"))


@py_case(
    "dockerpy.high.volumes-networks",
    (
        "VolumeCreate",
        "VolumeList",
        "VolumeInspect",
        "VolumeDelete",
        "NetworkCreate",
        "NetworkList",
        "NetworkInspect",
        "NetworkConnect",
        "NetworkDisconnect",
        "NetworkDelete",
        "VolumePrune",
        "NetworkPrune",
    ),
    serial=True,
)
def _high_vn(ctx, s, version):
    dc = ctx.dockerpy(version)
    lab = {**LABELS, "compat.case": ctx.prefix}
    v = s("volume-create", lambda: dc.volumes.create(ctx.name("vol"), labels=lab))
    ctx.on_cleanup(lambda: dc.api.remove_volume(ctx.name("vol"), force=True))
    s("volume-get", lambda: dc.volumes.get(ctx.name("vol")))
    s("volume-list", lambda: [x.name for x in dc.volumes.list(filters={"name": ctx.prefix})])
    s("volume-remove", lambda: dc.volumes.get(ctx.name("vol")).remove())
    s("volume-missing", lambda: dc.volumes.get(ctx.name("vol")))
    del v
    dc.volumes.create(ctx.name("vol2"), labels=lab)
    s("volume-prune", lambda: dc.volumes.prune(filters={"label": f"compat.case={ctx.prefix}"}))
    n = dc.networks.create(ctx.name("net"), labels=lab, check_duplicate=True)
    ctx.on_cleanup(lambda: dc.api.remove_network(n.id))
    s(
        "network-get",
        lambda: {k: dc.networks.get(n.id).attrs[k] for k in ("Name", "Driver", "Labels", "Scope")},
    )
    s("network-list", lambda: [x.name for x in dc.networks.list(names=[ctx.name("net")])])
    c = dc.containers.run("busybox", ["sleep", "300"], detach=True, name=ctx.name(), labels=LABELS)
    ctx.on_cleanup(lambda: c.remove(force=True))
    s(
        "connect",
        lambda: (
            n.connect(c, aliases=["web"]),
            sorted(dc.containers.get(c.id).attrs["NetworkSettings"]["Networks"]),
        ),
    )
    s("connected", lambda: [x.name for x in dc.networks.get(n.id).containers])
    s(
        "disconnect",
        lambda: (n.disconnect(c), sorted(dc.containers.get(c.id).attrs["NetworkSettings"]["Networks"])),
    )
    s("network-remove", n.remove)
    s("network-missing", lambda: dc.networks.get(ctx.name("net")))
    dc.networks.create(ctx.name("net2"), labels=lab)
    s("network-prune", lambda: dc.networks.prune(filters={"label": f"compat.case={ctx.prefix}"}))


@py_case(
    "dockerpy.high.system",
    ("SystemPing", "SystemVersion", "SystemInfo", "SystemDataUsage", "SystemEvents"),
    serial=True,
)
def _high_system(ctx, s, version):
    dc = ctx.dockerpy(version)
    s("ping", dc.ping)
    s("version", dc.version)
    s("api-version", lambda: dc.api.api_version)
    s("info", dc.info, how="shape")
    s("df", dc.df, how="shape")
    t0 = int(time.time()) - 1
    dc.containers.run("busybox", "true", name=ctx.name(), labels=LABELS, remove=True)
    time.sleep(1.1)
    t1 = int(time.time()) + 1
    s(
        "events",
        lambda: [
            (e["Type"], e["Action"])
            for e in dc.events(since=t0, until=t1, decode=True, filters={"container": ctx.name()})
        ],
    )


# == low level ============================================================================
@py_case(
    "dockerpy.low.containers",
    (
        "ContainerCreate",
        "ContainerStart",
        "ContainerAttach",
        "ContainerWait",
        "ContainerLogs",
        "ContainerExport",
        "ContainerChanges",
        "ContainerTop",
        "ContainerResize",
        "ContainerArchiveInfo",
        "ContainerPrune",
        "ImageCommit",
    ),
    serial=True,
)
def _low_containers(ctx, s, version):
    api = ctx.dockerpy(version, high=False)
    name = ctx.name()
    ctx.on_cleanup(lambda: api.remove_container(name, force=True))
    hc = api.create_host_config(port_bindings={80: None}, restart_policy={"Name": "no"})
    s(
        "create",
        lambda: api.create_container(
            "busybox",
            ["sh", "-c", "sleep 1; echo out; sleep 0.2; echo err >&2"],
            name=name,
            labels=LABELS,
            host_config=hc,
            ports=[80],
        ),
    )
    s("start", lambda: api.start(name))
    s("attach-stream", lambda: b"".join(api.attach(name, stream=True, logs=True)), how="bytes")
    s("wait", lambda: api.wait(name, timeout=20))
    s("logs", lambda: api.logs(name), how="bytes")
    s("logs-stream", lambda: list(api.logs(name, stream=True, follow=True)))
    s("logs-tail", lambda: api.logs(name, tail=1, stdout=True, stderr=False), how="bytes")
    s("inspect", lambda: api.inspect_container(name)["State"]["ExitCode"])
    s("diff", lambda: api.diff(name))
    s("export", lambda: len(b"".join(api.export(name))) > 100000)
    s("stat", lambda: api.get_archive(name, "/etc/hostname")[1])
    s(
        "commit",
        lambda: api.commit(name, repository=f"{ctx.prefix}-img", tag="1", changes=["LABEL a=b"]),
        how="shape",
    )
    ctx.track_image(f"{ctx.prefix}-img:1")
    s(
        "containers",
        lambda: [
            (c["Names"], c["Image"], c["Command"], c["Labels"])
            for c in api.containers(all=True, filters={"name": name})
        ],
    )
    s("containers-quiet", lambda: api.containers(all=True, quiet=True, filters={"name": name}))
    s("prune", lambda: api.prune_containers(filters={"label": f"compat.case={ctx.prefix}"}))
    tty = ctx.name("tty")
    ctx.on_cleanup(lambda: api.remove_container(tty, force=True))
    api.create_container("busybox", "sh", name=tty, tty=True, stdin_open=True, labels=LABELS)
    api.start(tty)
    s("resize", lambda: api.resize(tty, 30, 100))
    s("top", lambda: api.top(tty)["Titles"])
    s("top-missing", lambda: api.top(ctx.name("missing")))
    s("start-missing", lambda: api.start(ctx.name("missing")))
    s("create-malformed", lambda: api.create_container("busybox", name="bad name!"))


@py_case("dockerpy.low.attach-socket", ("ContainerAttach",), divergence="attach-socket-headers")
def _low_attach_socket(ctx, s, version):
    """APIClient.attach_socket() sends the request with requests' own post(), without the
    config's HttpHeaders: against Moorage it is refused (401) like any request without them."""
    api = ctx.dockerpy(version, high=False)
    name = ctx.name()
    ctx.on_cleanup(lambda: api.remove_container(name, force=True))
    api.create_container("busybox", ["sh", "-c", "cat; echo done"], name=name, stdin_open=True, labels=LABELS)
    data = b""

    def attach():
        nonlocal data
        sock = api.attach_socket(name, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        api.start(name)
        raw = sock._sock if hasattr(sock, "_sock") else sock
        raw.sendall(b"piped\n")
        import socket as _socket

        raw.shutdown(_socket.SHUT_WR)
        raw.settimeout(10)
        while True:
            chunk = raw.recv(65536)
            if not chunk:
                break
            data += chunk
        from compat.wire import demux

        return [[st, p.decode()] for st, p in demux(data)[0]]

    s("attach-socket", attach)


@py_case("dockerpy.low.exec", ("ContainerExec", "ExecStart", "ExecInspect", "ExecResize"))
def _low_exec(ctx, s, version):
    api = ctx.dockerpy(version, high=False)
    name = ctx.name()
    ctx.on_cleanup(lambda: api.remove_container(name, force=True))
    api.create_container("busybox", ["sleep", "300"], name=name, labels=LABELS)
    api.start(name)
    e = api.exec_create(name, ["sh", "-c", "echo out; sleep 0.2; echo err >&2; exit 3"])
    s("exec-create", lambda: e)
    s("exec-start", lambda: api.exec_start(e["Id"]), how="bytes")
    s(
        "exec-inspect",
        lambda: {k: api.exec_inspect(e["Id"])[k] for k in ("ExitCode", "Running", "ProcessConfig")},
    )
    e2 = api.exec_create(name, ["sh", "-c", "echo out; sleep 0.2; echo err >&2"])
    s("exec-demux", lambda: api.exec_start(e2["Id"], demux=True))
    e3 = api.exec_create(name, ["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done"])
    s("exec-stream", lambda: b"".join(api.exec_start(e3["Id"], stream=True)), how="bytes")
    e4 = api.exec_create(name, "cat", stdin=True)
    sock = api.exec_start(e4["Id"], socket=True)
    raw = sock._sock if hasattr(sock, "_sock") else sock
    raw.sendall(b"exec stdin\n")
    import socket as _socket

    raw.shutdown(_socket.SHUT_WR)
    raw.settimeout(10)
    data = b""
    try:
        while True:
            chunk = raw.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    from compat.wire import demux

    s("exec-socket-stdin", lambda: [[st, p.decode()] for st, p in demux(data)[0]])
    e5 = api.exec_create(name, ["sleep", "5"], tty=True)
    api.exec_start(e5["Id"], detach=True, tty=True)
    time.sleep(0.2)
    s("exec-resize", lambda: api.exec_resize(e5["Id"], height=30, width=90))
    s("exec-missing", lambda: api.exec_inspect(ctx.name("missing")))
    api.stop(name, timeout=0)
    s("exec-stopped", lambda: api.exec_create(name, "true"))


@py_case(
    "dockerpy.low.images",
    (
        "ImageList",
        "ImageInspect",
        "ImageTag",
        "ImageDelete",
        "ImageBuild",
        "ImageCreate",
        "ImageHistory",
        "BuildPrune",
    ),
    timeout=120,
    serial=True,
)
def _low_images(ctx, s, version):
    api = ctx.dockerpy(version, high=False)
    tag = f"{ctx.prefix}-img"
    ctx.track_image(f"{tag}:1")
    ctx.track_image(f"{tag}:imp")
    s("tag", lambda: api.tag("busybox:latest", tag, "1"))
    s("images", lambda: [i["RepoTags"] for i in api.images(name=tag)])
    s("images-quiet", lambda: len(api.images(name=tag, quiet=True)))
    s("inspect", lambda: api.inspect_image(f"{tag}:1")["RepoTags"])
    s("history", lambda: len(api.history(f"{tag}:1")) > 0)
    s("remove", lambda: api.remove_image(f"{tag}:1"))
    s("remove-missing", lambda: api.remove_image(f"{tag}:1"))
    ctxtar = make_tar({"Dockerfile": f"FROM busybox\nENV CASE={ctx.prefix}\nCOPY x /x\n", "x": "x"})
    s(
        "build-stream",
        lambda: [
            x
            for x in api.build(
                fileobj=io.BytesIO(ctxtar), custom_context=True, tag=f"{tag}:b", decode=True, rm=True
            )
            if "stream" not in x or "Successfully tagged" in x["stream"]
        ],
    )
    ctx.track_image(f"{tag}:b")
    s(
        "import",
        lambda: api.import_image_from_data(make_tar({"f": "1"}), repository=tag, tag="imp"),
        how="shape",
    )
    s("build-prune", api.prune_builds, how="shape")


@py_case("dockerpy.low.offline", ("ImageSearch", "ImageCreate"), timeout=200, isolated=True)
def _low_offline(ctx, s, version):
    """No internet here: Docker Hub searches and pulls fail, the same way on both sides."""
    api = ctx.dockerpy(version, high=False, timeout=120)
    s("search", lambda: api.search("busybox", limit=1))
    s("pull-hub-offline", lambda: api.pull(f"{ctx.prefix}-nosuch", tag="latest"))


@py_case("dockerpy.low.version-negotiation", ("SystemVersion", "SystemPing"))
def _low_negotiation(ctx, s, version):
    api = ctx.dockerpy(version, high=False)
    s("api_version", lambda: api.api_version)
    s("version", lambda: {k: api.version()[k] for k in ("ApiVersion", "MinAPIVersion", "Os", "Arch")})
    s("ping", api.ping)


# the docker-py environment variable path: DOCKER_HOST / DOCKER_CONFIG as docker.from_env() reads them
def _from_env(ctx: Ctx):
    import docker

    from compat.harness import _DOCKERPY_LOCK

    with _DOCKERPY_LOCK:
        saved = {k: os.environ.get(k) for k in ("DOCKER_HOST", "DOCKER_CONFIG")}
        os.environ["DOCKER_HOST"] = ctx.side.endpoint
        os.environ["DOCKER_CONFIG"] = ctx.side.config_dir
        try:
            dc = docker.from_env(timeout=30)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    ctx.on_cleanup(dc.close)
    s = Steps(ctx)
    s("version", lambda: dc.api.api_version)
    s(
        "run",
        lambda: dc.containers.run("busybox", "echo from-env", remove=True, labels=LABELS, name=ctx.name()),
        how="bytes",
    )
    return s.out


register("dockerpy.from-env", _from_env, ("SystemVersion", "ContainerCreate"))
