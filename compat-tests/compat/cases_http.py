"""Raw HTTP scenarios: every non-swarm operation of v1.41 with good input and with each error
status that can be provoked, plus malformed bodies, wrong content types, unknown query
parameters, versioned and unversioned paths and HEAD requests.

Most cases are one request after a setup step; `req()` declares those as data. Cases that
need several steps are plain functions.
"""

from __future__ import annotations

import json
import re
import threading
import time

from compat.harness import SUITE_LABEL, Ctx, SetupError, make_tar, register

C_RUN = ("sleep", "300")
# stdout then stderr, far enough apart that their order is the same in every log read
OUT_ERR = ("sh", "-c", "echo out; sleep 0.2; echo err >&2")


# -- setups: each returns the substitutions its request template uses --------------------
def s_none(ctx: Ctx) -> dict:
    return {}


def s_missing(ctx: Ctx) -> dict:
    return {"id": ctx.name("missing"), "name": ctx.name("missing")}


def s_running(ctx: Ctx) -> dict:
    return {"id": ctx.running(ctx.name())}


def s_running_tty(ctx: Ctx) -> dict:
    return {"id": ctx.running(ctx.name(), cmd=("sh",), Tty=True, OpenStdin=True)}


def s_created(ctx: Ctx) -> dict:
    return {"id": ctx.create(ctx.name(), list(C_RUN))}


def s_exited(ctx: Ctx) -> dict:
    return {"id": ctx.exited(ctx.name(), cmd=OUT_ERR)}


def s_exited_tty(ctx: Ctx) -> dict:
    return {"id": ctx.exited(ctx.name(), cmd=("sh", "-c", "echo out; echo err >&2"), Tty=True)}


def s_paused(ctx: Ctx) -> dict:
    cid = ctx.running(ctx.name())
    ctx.api("POST", f"/containers/{cid}/pause")
    return {"id": cid}


def s_changed(ctx: Ctx) -> dict:
    return {
        "id": ctx.exited(
            ctx.name(),
            cmd=("sh", "-c", "mkdir /newdir && echo x > /newdir/f && rm /etc/shadow; touch /tmp/t"),
        )
    }


def s_two(ctx: Ctx) -> dict:
    a = ctx.running(ctx.name("a"))
    b = ctx.exited(ctx.name("b"))
    return {"id": a, "b": b}


def s_exec(ctx: Ctx) -> dict:
    cid = ctx.running(ctx.name())
    e = ctx.api(
        "POST",
        f"/containers/{cid}/exec",
        json_body={
            "Cmd": ["sh", "-c", "echo out; sleep 0.2; echo err >&2; exit 3"],
            "AttachStdout": True,
            "AttachStderr": True,
        },
    )
    return {"id": cid, "exec": e["Id"]}


def s_exec_tty(ctx: Ctx) -> dict:
    cid = ctx.running(ctx.name())
    e = ctx.api(
        "POST",
        f"/containers/{cid}/exec",
        json_body={"Cmd": ["sleep", "30"], "Tty": True, "AttachStdout": True, "Detach": True},
    )
    ctx.api("POST", f"/exec/{e['Id']}/start", json_body={"Detach": True, "Tty": True})
    time.sleep(0.2)
    return {"id": cid, "exec": e["Id"]}


def s_image(ctx: Ctx) -> dict:
    return {"img": ctx.image(f"{ctx.name('img')}:1")}


def s_committed(ctx: Ctx) -> dict:
    """An image of its own (not a tag of busybox), with a label."""
    # content unique to this side: layers are content-addressed and shared across the daemon
    cid = ctx.exited(ctx.name(), cmd=("sh", "-c", f"echo {ctx.prefix} > /hello"))
    repo = ctx.name("img")
    changes = f"LABEL compat.case={ctx.prefix}"
    ctx.api("POST", "/commit", {"container": cid, "repo": repo, "tag": "1", "changes": changes})
    ctx.track_image(f"{repo}:1")
    return {"id": cid, "img": f"{repo}:1"}


def s_volume(ctx: Ctx) -> dict:
    return {"vol": ctx.volume(ctx.name("vol"))}


def s_network(ctx: Ctx) -> dict:
    name = ctx.name("net")
    ctx.network(name)
    return {"net": name}


def s_net_and_container(ctx: Ctx) -> dict:
    d = s_network(ctx)
    d["id"] = ctx.running(ctx.name())
    d["cname"] = ctx.name()
    return d


def s_net_connected(ctx: Ctx) -> dict:
    d = s_net_and_container(ctx)
    ctx.api("POST", f"/networks/{d['net']}/connect", json_body={"Container": d["cname"]})
    return d


def s_pushed(ctx: Ctx) -> dict:
    if not ctx.stack.registry:
        raise SetupError("MOORAGE_REGISTRY is not set")
    ref = f"{ctx.stack.registry}/{ctx.name('img')}:1"
    ctx.image(ref)
    resp = ctx.http(
        "POST",
        f"/images/{ref.rsplit(':', 1)[0]}/push",
        {"tag": "1"},
        headers={"X-Registry-Auth": "e30="},
        timeout=60,
    )
    if resp.status != 200 or b'"error"' in resp.body:
        raise SetupError(f"push {ref}: {resp.status} {resp.body[-300:]!r}")
    return {"img": ref, "repo": ref.rsplit(":", 1)[0]}


_TOKEN = re.compile(r"\{(\w+)\}")


def _fmt(value, subs: dict):
    """Substitute {key} tokens of the setup's values (and only those: JSON braces stay)."""
    if isinstance(value, str):
        return _TOKEN.sub(lambda m: str(subs[m.group(1)]) if m.group(1) in subs else m.group(0), value)
    if isinstance(value, dict):
        return {_fmt(k, subs): _fmt(v, subs) for k, v in value.items()}
    if isinstance(value, list):
        return [_fmt(v, subs) for v in value]
    return value


def req(
    case_id: str,
    ops,
    setup,
    method: str,
    path: str,
    query=None,
    *,
    json_body=None,
    body: bytes | None = None,
    content_type: str | None = None,
    obs: str = "json",
    version: str | None = "1.41",
    auth: bool = True,
    then=None,
    stream_for: float | None = None,
    obs_kw: dict | None = None,
    divergence: str | None = None,
    timeout: float = 60,
    headers: dict | None = None,
    serial: bool | None = None,
    isolated: bool = False,
):
    """A case made of a setup, one request, and optionally a follow-up observation `then`."""

    def scenario(ctx: Ctx):
        subs = {
            "prefix": ctx.prefix,
            "name": ctx.name(),
            "registry": ctx.stack.registry,
            "label": f"{SUITE_LABEL}={ctx.stack.run_id}",
            **setup(ctx),
        }
        resp = ctx.http(
            method,
            _fmt(path, subs),
            _fmt(query, subs),
            json_body=_fmt(json_body, subs),
            body=body,
            content_type=content_type,
            version=version,
            auth=auth,
            stream_for=stream_for,
            headers=_fmt(headers, subs),
            timeout=min(timeout - 5, 45),
        )
        out = ctx.obs(resp, obs, **(obs_kw or {}))
        out["request"] = f"{method} {ctx.norm.text(ctx.target(_fmt(path, subs), _fmt(query, subs), version))}"
        if then is not None:
            out["then"] = then(ctx, subs)
        return out

    if serial is None:  # dockerd runs one prune / disk-usage walk at a time, and says so to a second one
        serial = "/prune" in path or "/system/df" in path
    register(case_id, scenario, ops, divergence=divergence, timeout=timeout, serial=serial, isolated=isolated)


def inspect_c(*keys):
    """Follow-up: inspect the container and keep some of its fields."""

    def then(ctx: Ctx, subs: dict):
        resp = ctx.http("GET", f"/containers/{subs['id']}/json")
        out = {}
        for key in keys:
            cur = resp.json() if resp.status == 200 else None
            for part in key.split("."):
                cur = cur.get(part) if isinstance(cur, dict) else None
            out[key] = ctx.norm.json(cur)
        return {"status": resp.status, **out}

    return then


def filters(**kw) -> str:
    return json.dumps({k: (v if isinstance(v, list) else [v]) for k, v in kw.items()})


# == System ===========================================================================
req(
    "http.SystemPing.get",
    "SystemPing",
    s_none,
    "GET",
    "/_ping",
    obs="text",
)
req(
    "http.SystemPing.unversioned",
    "SystemPing",
    s_none,
    "GET",
    "/_ping",
    obs="text",
    version=None,
)
req(
    "http.SystemPing.v1.24",
    "SystemPing",
    s_none,
    "GET",
    "/_ping",
    obs="text",
    version="1.24",
)
req(
    "http.SystemPing.no-auth",
    "SystemPing",
    s_none,
    "GET",
    "/_ping",
    obs="text",
    version=None,
    auth=False,
    divergence="auth-headers",
)
req(
    "http.SystemPingHead.head",
    "SystemPingHead",
    s_none,
    "HEAD",
    "/_ping",
    obs="none",
    version=None,
)
req(
    "http.SystemPingHead.versioned",
    "SystemPingHead",
    s_none,
    "HEAD",
    "/_ping",
    obs="none",
)
req("http.SystemVersion.get", "SystemVersion", s_none, "GET", "/version")
req("http.SystemVersion.unversioned", "SystemVersion", s_none, "GET", "/version", version=None)
req("http.SystemVersion.v1.24", "SystemVersion", s_none, "GET", "/version", version="1.24")
req("http.SystemVersion.too-new", "SystemVersion", s_none, "GET", "/version", version="1.99")
req("http.SystemVersion.too-old", "SystemVersion", s_none, "GET", "/version", version="1.5")
req("http.SystemVersion.unknown-query", "SystemVersion", s_none, "GET", "/version", {"nosuchparam": "1"})
req("http.SystemVersion.head", "SystemVersion", s_none, "HEAD", "/version", obs="none")
req(
    "http.SystemVersion.no-auth",
    "SystemVersion",
    s_none,
    "GET",
    "/version",
    auth=False,
    divergence="auth-headers",
)
req("http.SystemInfo.get", "SystemInfo", s_none, "GET", "/info", obs="shape")
req("http.SystemInfo.v1.24", "SystemInfo", s_none, "GET", "/info", obs="shape", version="1.24")
req("http.SystemDataUsage.get", "SystemDataUsage", s_none, "GET", "/system/df", obs="shape", serial=True)
req("http.SystemEvents.bad-filter", "SystemEvents", s_none, "GET", "/events", {"filters": "{bad"})
req(
    "http.SystemEvents.bad-since",
    "SystemEvents",
    s_none,
    "GET",
    "/events",
    {"since": "notatime", "until": "1"},
)
req(
    "http.SystemAuth.registry",
    "SystemAuth",
    s_none,
    "POST",
    "/auth",
    json_body={"username": "compat", "password": "compat", "serveraddress": "{registry}"},
)
req(
    "http.SystemAuth.malformed",
    "SystemAuth",
    s_none,
    "POST",
    "/auth",
    body=b"{not json",
    content_type="application/json",
)
req(
    "http.SystemAuth.unreachable",
    "SystemAuth",
    s_none,
    "POST",
    "/auth",
    json_body={"username": "u", "password": "p", "serveraddress": "127.0.0.1:1"},
    timeout=90,
)
req("http.Session.post", "Session", s_none, "POST", "/session", divergence="buildkit-session")
req("http.Route.unknown-path", (), s_none, "GET", "/nosuchroute")
req("http.Route.unknown-path-unversioned", (), s_none, "GET", "/nosuchroute", version=None)
req("http.Route.wrong-method", (), s_none, "DELETE", "/_ping")
req(
    "http.Route.trailing-slash",
    "ContainerList",
    s_none,
    "GET",
    "/containers/json/",
    {"filters": filters(name="{prefix}")},
)


def events_window(ctx: Ctx):
    since = ctx.api("GET", "/version")  # the daemon's clock is the host's: time.time() will do
    del since
    t0 = int(time.time()) - 1
    cid = ctx.create(ctx.name(), ["true"])
    ctx.api("POST", f"/containers/{cid}/start")
    ctx.api("POST", f"/containers/{cid}/wait")
    ctx.api("DELETE", f"/containers/{cid}")
    time.sleep(1.1)
    t1 = int(time.time()) + 1
    resp = ctx.http(
        "GET",
        "/events",
        {"since": str(t0), "until": str(t1), "filters": filters(container=ctx.name())},
        timeout=20,
    )
    out = ctx.obs(resp, "lines")
    out["body"] = [
        {k: e.get(k) for k in ("status", "Type", "Action", "scope", "from")}
        | {"attrs": {k: v for k, v in (e.get("Actor", {}).get("Attributes") or {}).items()}}
        for e in out["body"]
    ]
    return out


register("http.SystemEvents.since-until", events_window, "SystemEvents")
req(
    "http.SystemEvents.since-after-until",
    "SystemEvents",
    s_none,
    "GET",
    "/events",
    {"since": "2", "until": "1"},
)
req("http.SystemEvents.bad-until", "SystemEvents", s_none, "GET", "/events", {"until": "bogus"})


def events_stream(ctx: Ctx):
    """A live events stream: the head arrives at once, events as they happen."""
    box = {}

    def reader():
        box["resp"] = ctx.http(
            "GET",
            "/events",
            {"filters": filters(container=ctx.name(), event="start")},
            stream_for=4,
            timeout=10,
        )

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(1)
    ctx.running(ctx.name())
    t.join(12)
    resp = box.get("resp")
    if resp is None:
        return {"events": "no answer"}
    out = ctx.obs(resp, "lines")
    out["body"] = [(e.get("Type"), e.get("Action")) for e in out["body"]]
    return out


register("http.SystemEvents.stream", events_stream, "SystemEvents")

# == Containers ========================================================================
LIST = {"all": "1", "filters": filters(name="{prefix}")}
req("http.ContainerList.filtered", "ContainerList", s_two, "GET", "/containers/json", LIST)
req(
    "http.ContainerList.running-only",
    "ContainerList",
    s_two,
    "GET",
    "/containers/json",
    {"filters": filters(name="{prefix}")},
)
req("http.ContainerList.size", "ContainerList", s_two, "GET", "/containers/json", {**LIST, "size": "1"})
req("http.ContainerList.limit", "ContainerList", s_two, "GET", "/containers/json", {**LIST, "limit": "1"})
req(
    "http.ContainerList.status-filter",
    "ContainerList",
    s_two,
    "GET",
    "/containers/json",
    {"all": "1", "filters": filters(name="{prefix}", status="exited")},
)
req("http.ContainerList.bad-filter", "ContainerList", s_none, "GET", "/containers/json", {"filters": "{bad"})
req(
    "http.ContainerList.unknown-filter",
    "ContainerList",
    s_none,
    "GET",
    "/containers/json",
    {"filters": filters(nosuchfilter="x")},
)
req(
    "http.ContainerList.unknown-query",
    "ContainerList",
    s_two,
    "GET",
    "/containers/json",
    {**LIST, "nosuchparam": "yes"},
)
req("http.ContainerList.unversioned", "ContainerList", s_two, "GET", "/containers/json", LIST, version=None)
req("http.ContainerList.v1.24", "ContainerList", s_two, "GET", "/containers/json", LIST, version="1.24")
req(
    "http.ContainerList.no-auth",
    "ContainerList",
    s_none,
    "GET",
    "/containers/json",
    auth=False,
    divergence="auth-headers",
)

CREATE = {"Image": "busybox", "Cmd": ["sleep", "300"], "Labels": {SUITE_LABEL: "x"}}
FULL = {
    "Image": "busybox",
    "Cmd": ["sh", "-c", "sleep 300"],
    "Env": ["A=1", "B=two"],
    "WorkingDir": "/tmp",
    "User": "nobody",
    "Hostname": "h-{prefix}",
    "Labels": {SUITE_LABEL: "x", "k": "v"},
    "ExposedPorts": {"80/tcp": {}},
    "StopSignal": "SIGTERM",
    "Tty": False,
    "OpenStdin": False,
    "HostConfig": {
        "PortBindings": {"80/tcp": [{"HostPort": "0"}]},
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2},
        "Memory": 67108864,
        "Init": True,
    },
}


def _cleanup_created(name_key="name"):
    def then(ctx: Ctx, subs: dict):
        ref = subs.get(name_key) or ctx.name()
        ctx.on_cleanup(lambda: ctx.http("DELETE", f"/containers/{ref}", {"force": "1"}))

    return then


def created_then_inspect(ctx: Ctx, subs: dict):
    ref = ctx.name("new")
    ctx.on_cleanup(lambda: ctx.http("DELETE", f"/containers/{ref}", {"force": "1"}))
    resp = ctx.http("GET", f"/containers/{ref}/json")
    return ctx.obs(resp, "json")


req(
    "http.ContainerCreate.ok",
    ("ContainerCreate", "ContainerInspect"),
    s_none,
    "POST",
    "/containers/create",
    {"name": "{prefix}-new"},
    json_body=CREATE,
    then=created_then_inspect,
)
req(
    "http.ContainerCreate.full-config",
    ("ContainerCreate", "ContainerInspect"),
    s_none,
    "POST",
    "/containers/create",
    {"name": "{prefix}-new"},
    json_body=FULL,
    then=created_then_inspect,
)
req(
    "http.ContainerCreate.unnamed",
    "ContainerCreate",
    s_none,
    "POST",
    "/containers/create",
    json_body={**CREATE, "Labels": {SUITE_LABEL: "x", "compat.case": "{prefix}"}},
    then=lambda ctx, subs: [ctx.on_cleanup(lambda: _remove_labeled(ctx)), None][1],
)
req(
    "http.ContainerCreate.v1.24",
    "ContainerCreate",
    s_none,
    "POST",
    "/containers/create",
    {"name": "{prefix}-new"},
    json_body=CREATE,
    version="1.24",
    then=created_then_inspect,
)
req(
    "http.ContainerCreate.unversioned",
    "ContainerCreate",
    s_none,
    "POST",
    "/containers/create",
    {"name": "{prefix}-new"},
    json_body=CREATE,
    version=None,
    then=created_then_inspect,
)
req(
    "http.ContainerCreate.malformed-json",
    "ContainerCreate",
    s_none,
    "POST",
    "/containers/create",
    {"name": "{prefix}-new"},
    body=b'{"Image": "busybox",',
    content_type="application/json",
)
req(
    "http.ContainerCreate.empty-body",
    "ContainerCreate",
    s_none,
    "POST",
    "/containers/create",
    {"name": "{prefix}-new"},
    body=b"",
    content_type="application/json",
)
req(
    "http.ContainerCreate.wrong-content-type",
    "ContainerCreate",
    s_none,
    "POST",
    "/containers/create",
    {"name": "{prefix}-new"},
    body=json.dumps(CREATE).encode(),
    content_type="text/plain",
)
req(
    "http.ContainerCreate.no-content-type",
    "ContainerCreate",
    s_none,
    "POST",
    "/containers/create",
    {"name": "{prefix}-new"},
    body=json.dumps(CREATE).encode(),
    then=_cleanup_created(),
)
req(
    "http.ContainerCreate.not-an-object",
    "ContainerCreate",
    s_none,
    "POST",
    "/containers/create",
    {"name": "{prefix}-new"},
    body=b'["busybox"]',
    content_type="application/json",
)
req(
    "http.ContainerCreate.bad-field-type",
    "ContainerCreate",
    s_none,
    "POST",
    "/containers/create",
    {"name": "{prefix}-new"},
    json_body={"Image": "busybox", "Cmd": 5},
)
req(
    "http.ContainerCreate.bad-labels",
    "ContainerCreate",
    s_none,
    "POST",
    "/containers/create",
    {"name": "{prefix}-new"},
    json_body={"Image": "busybox", "Labels": ["a"]},
)
req(
    "http.ContainerCreate.no-such-image",
    "ContainerCreate",
    s_none,
    "POST",
    "/containers/create",
    {"name": "{prefix}-new"},
    json_body={**CREATE, "Image": "{prefix}-nosuchimage:1"},
)
req(
    "http.ContainerCreate.name-conflict",
    "ContainerCreate",
    s_running,
    "POST",
    "/containers/create",
    {"name": "{name}"},
    json_body=CREATE,
)
req(
    "http.ContainerCreate.bad-name",
    "ContainerCreate",
    s_none,
    "POST",
    "/containers/create",
    {"name": "bad name!"},
    json_body=CREATE,
)
req(
    "http.ContainerCreate.no-image",
    "ContainerCreate",
    s_none,
    "POST",
    "/containers/create",
    {"name": "{prefix}-new"},
    json_body={"Cmd": ["true"]},
)
req(
    "http.ContainerCreate.bad-restart-policy",
    "ContainerCreate",
    s_none,
    "POST",
    "/containers/create",
    {"name": "{prefix}-new"},
    json_body={**CREATE, "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}},
)


def _remove_labeled(ctx: Ctx):
    resp = ctx.http(
        "GET", "/containers/json", {"all": "1", "filters": filters(label=f"compat.case={ctx.prefix}")}
    )
    for c in resp.json() or []:
        ctx.http("DELETE", f"/containers/{c['Id']}", {"force": "1"})


def create_chunked(ctx: Ctx):
    resp = ctx.http(
        "POST",
        "/containers/create",
        {"name": ctx.name("new")},
        body=json.dumps(CREATE).encode(),
        content_type="application/json",
        chunked=True,
    )
    ctx.on_cleanup(lambda: ctx.http("DELETE", f"/containers/{ctx.name('new')}", {"force": "1"}))
    return ctx.obs(resp)


register("http.ContainerCreate.chunked-body", create_chunked, "ContainerCreate")

req("http.ContainerInspect.ok", "ContainerInspect", s_running, "GET", "/containers/{id}/json")
req("http.ContainerInspect.by-name", "ContainerInspect", s_running, "GET", "/containers/{name}/json")
req(
    "http.ContainerInspect.size",
    "ContainerInspect",
    s_exited,
    "GET",
    "/containers/{name}/json",
    {"size": "1"},
)
req(
    "http.ContainerInspect.v1.24",
    "ContainerInspect",
    s_running,
    "GET",
    "/containers/{id}/json",
    version="1.24",
)
req("http.ContainerInspect.404", "ContainerInspect", s_missing, "GET", "/containers/{id}/json")
req(
    "http.ContainerInspect.id-prefix",
    "ContainerInspect",
    lambda ctx: {"short": s_running(ctx)["id"][:12]},
    "GET",
    "/containers/{short}/json",
)


def top_obs(ctx: Ctx, resp):
    out = ctx.obs(resp, "json")
    body = resp.json() if resp.status == 200 else None
    if isinstance(body, dict):
        titles = body.get("Titles") or []
        last = len(titles) - 1
        out["body"] = {"Titles": titles, "cmds": sorted(p[last] for p in body.get("Processes") or [])}
    return out


def top_case(case_id, setup, query=None):
    def scenario(ctx: Ctx):
        subs = setup(ctx)
        resp = ctx.http("GET", f"/containers/{subs['id']}/top", query)
        return top_obs(ctx, resp)

    register(case_id, scenario, "ContainerTop")


top_case("http.ContainerTop.ok", s_running)
top_case("http.ContainerTop.ps-args", s_running, {"ps_args": "-o pid,comm"})
top_case("http.ContainerTop.404", s_missing)
top_case("http.ContainerTop.not-running", s_exited)

req(
    "http.ContainerLogs.both",
    "ContainerLogs",
    s_exited,
    "GET",
    "/containers/{id}/logs",
    {"stdout": "1", "stderr": "1"},
    obs="frames",
)
req(
    "http.ContainerLogs.stdout-only",
    "ContainerLogs",
    s_exited,
    "GET",
    "/containers/{id}/logs",
    {"stdout": "1"},
    obs="frames",
)
req(
    "http.ContainerLogs.timestamps",
    "ContainerLogs",
    s_exited,
    "GET",
    "/containers/{id}/logs",
    {"stdout": "1", "stderr": "1", "timestamps": "1"},
    obs="frames",
)
req(
    "http.ContainerLogs.tail",
    "ContainerLogs",
    s_exited,
    "GET",
    "/containers/{id}/logs",
    {"stdout": "1", "stderr": "1", "tail": "1"},
    obs="frames",
)
req(
    "http.ContainerLogs.since-future",
    "ContainerLogs",
    s_exited,
    "GET",
    "/containers/{id}/logs",
    {"stdout": "1", "stderr": "1", "since": "4102444800"},
    obs="frames",
)
req(
    "http.ContainerLogs.follow-exited",
    "ContainerLogs",
    s_exited,
    "GET",
    "/containers/{id}/logs",
    {"stdout": "1", "stderr": "1", "follow": "1"},
    obs="frames",
)
req(
    "http.ContainerLogs.tty",
    "ContainerLogs",
    s_exited_tty,
    "GET",
    "/containers/{id}/logs",
    {"stdout": "1", "stderr": "1"},
    obs="raw",
)
req("http.ContainerLogs.no-stream", "ContainerLogs", s_exited, "GET", "/containers/{id}/logs")
req("http.ContainerLogs.404", "ContainerLogs", s_missing, "GET", "/containers/{id}/logs", {"stdout": "1"})
req(
    "http.ContainerLogs.unversioned",
    "ContainerLogs",
    s_exited,
    "GET",
    "/containers/{id}/logs",
    {"stdout": "1", "stderr": "1"},
    obs="frames",
    version=None,
)


def logs_follow_live(ctx: Ctx):
    cid = ctx.running(ctx.name(), cmd=("sh", "-c", "echo one; sleep 1; echo two; sleep 1; echo three"))
    resp = ctx.http("GET", f"/containers/{cid}/logs", {"stdout": "1", "follow": "1"}, timeout=20)
    return ctx.obs(resp, "frames")


register("http.ContainerLogs.follow-live", logs_follow_live, "ContainerLogs")

req(
    "http.ContainerChanges.ok",
    "ContainerChanges",
    s_changed,
    "GET",
    "/containers/{id}/changes",
    obs_kw={"sort_lists": True},
)
req("http.ContainerChanges.404", "ContainerChanges", s_missing, "GET", "/containers/{id}/changes")
req("http.ContainerExport.ok", "ContainerExport", s_changed, "GET", "/containers/{id}/export", obs="tar")
req("http.ContainerExport.404", "ContainerExport", s_missing, "GET", "/containers/{id}/export")
req(
    "http.ContainerStats.no-stream",
    "ContainerStats",
    s_running,
    "GET",
    "/containers/{id}/stats",
    {"stream": "0"},
    obs="shape",
)
req(
    "http.ContainerStats.one-shot",
    "ContainerStats",
    s_running,
    "GET",
    "/containers/{id}/stats",
    {"stream": "0", "one-shot": "1"},
    obs="shape",
)
req("http.ContainerStats.404", "ContainerStats", s_missing, "GET", "/containers/{id}/stats", {"stream": "0"})


def stats_stream(ctx: Ctx):
    cid = ctx.running(ctx.name())
    resp = ctx.http("GET", f"/containers/{cid}/stats", stream_for=2.5, timeout=10)
    from compat.harness import json_lines
    from compat.normalize import shape

    items = json_lines(resp.body)
    return {
        "status": resp.status,
        "headers": ctx.obs_headers(resp),
        "first": shape(items[0]) if items else None,
        "several": len(items) >= 2,
    }


register("http.ContainerStats.stream", stats_stream, "ContainerStats")

req(
    "http.ContainerResize.ok",
    "ContainerResize",
    s_running_tty,
    "POST",
    "/containers/{id}/resize",
    {"h": "30", "w": "100"},
)
req(
    "http.ContainerResize.bad-size",
    "ContainerResize",
    s_running_tty,
    "POST",
    "/containers/{id}/resize",
    {"h": "abc", "w": "100"},
)
req(
    "http.ContainerResize.404",
    "ContainerResize",
    s_missing,
    "POST",
    "/containers/{id}/resize",
    {"h": "1", "w": "1"},
)
req(
    "http.ContainerStart.ok",
    "ContainerStart",
    s_created,
    "POST",
    "/containers/{id}/start",
    then=inspect_c("State.Running"),
)
req("http.ContainerStart.already-started", "ContainerStart", s_running, "POST", "/containers/{id}/start")
req("http.ContainerStart.404", "ContainerStart", s_missing, "POST", "/containers/{id}/start")
req(
    "http.ContainerStart.bad-detach-keys",
    "ContainerStart",
    s_created,
    "POST",
    "/containers/{id}/start",
    {"detachKeys": "notakey"},
)
req(
    "http.ContainerStart.body-hostconfig",
    "ContainerStart",
    s_created,
    "POST",
    "/containers/{id}/start",
    json_body={"Privileged": False},
)
req(
    "http.ContainerStart.unversioned",
    "ContainerStart",
    s_created,
    "POST",
    "/containers/{id}/start",
    version=None,
)
req(
    "http.ContainerStop.ok",
    "ContainerStop",
    s_running,
    "POST",
    "/containers/{id}/stop",
    {"t": "1"},
    then=inspect_c("State.Running", "State.ExitCode"),
    timeout=60,
)
req("http.ContainerStop.already-stopped", "ContainerStop", s_exited, "POST", "/containers/{id}/stop")
req("http.ContainerStop.404", "ContainerStop", s_missing, "POST", "/containers/{id}/stop")
req(
    "http.ContainerRestart.ok",
    "ContainerRestart",
    s_running,
    "POST",
    "/containers/{id}/restart",
    {"t": "1"},
    then=inspect_c("State.Running", "RestartCount"),
)
req(
    "http.ContainerRestart.exited",
    "ContainerRestart",
    s_exited,
    "POST",
    "/containers/{id}/restart",
    {"t": "0"},
)
req("http.ContainerRestart.404", "ContainerRestart", s_missing, "POST", "/containers/{id}/restart")
req(
    "http.ContainerKill.ok",
    "ContainerKill",
    s_running,
    "POST",
    "/containers/{id}/kill",
    then=inspect_c("State.Running"),
)
req(
    "http.ContainerKill.signal",
    "ContainerKill",
    s_running,
    "POST",
    "/containers/{id}/kill",
    {"signal": "SIGUSR1"},
)
req(
    "http.ContainerKill.bad-signal",
    "ContainerKill",
    s_running,
    "POST",
    "/containers/{id}/kill",
    {"signal": "SIGNOPE"},
)
req("http.ContainerKill.not-running", "ContainerKill", s_exited, "POST", "/containers/{id}/kill")
req("http.ContainerKill.404", "ContainerKill", s_missing, "POST", "/containers/{id}/kill")
req(
    "http.ContainerUpdate.ok",
    "ContainerUpdate",
    s_running,
    "POST",
    "/containers/{id}/update",
    json_body={"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}, "CpuShares": 512},
    then=inspect_c("HostConfig.RestartPolicy", "HostConfig.CpuShares"),
)
req(
    "http.ContainerUpdate.malformed",
    "ContainerUpdate",
    s_running,
    "POST",
    "/containers/{id}/update",
    body=b"{nope",
    content_type="application/json",
)
req(
    "http.ContainerUpdate.bad-value",
    "ContainerUpdate",
    s_running,
    "POST",
    "/containers/{id}/update",
    json_body={"Memory": 1},
)
req(
    "http.ContainerUpdate.404",
    "ContainerUpdate",
    s_missing,
    "POST",
    "/containers/{id}/update",
    json_body={"CpuShares": 512},
)
req(
    "http.ContainerRename.ok",
    "ContainerRename",
    s_running,
    "POST",
    "/containers/{id}/rename",
    {"name": "{prefix}-renamed"},
    then=inspect_c("Name"),
)
req(
    "http.ContainerRename.by-name",
    "ContainerRename",
    s_running,
    "POST",
    "/containers/{name}/rename",
    {"name": "{prefix}-renamed"},
    then=lambda ctx, s: ctx.obs(ctx.http("GET", f"/containers/{ctx.prefix}-renamed/json"), "json"),
)
req(
    "http.ContainerRename.conflict",
    "ContainerRename",
    s_two,
    "POST",
    "/containers/{id}/rename",
    {"name": "{prefix}-b"},
)
req(
    "http.ContainerRename.empty",
    "ContainerRename",
    s_running,
    "POST",
    "/containers/{id}/rename",
    {"name": ""},
)
req(
    "http.ContainerRename.404",
    "ContainerRename",
    s_missing,
    "POST",
    "/containers/{id}/rename",
    {"name": "{prefix}-renamed"},
)
req(
    "http.ContainerPause.ok",
    "ContainerPause",
    s_running,
    "POST",
    "/containers/{id}/pause",
    then=inspect_c("State.Paused", "State.Status"),
)
req("http.ContainerPause.not-running", "ContainerPause", s_exited, "POST", "/containers/{id}/pause")
req("http.ContainerPause.404", "ContainerPause", s_missing, "POST", "/containers/{id}/pause")
req(
    "http.ContainerUnpause.ok",
    "ContainerUnpause",
    s_paused,
    "POST",
    "/containers/{id}/unpause",
    then=inspect_c("State.Paused", "State.Status"),
)
req("http.ContainerUnpause.not-paused", "ContainerUnpause", s_running, "POST", "/containers/{id}/unpause")
req("http.ContainerUnpause.404", "ContainerUnpause", s_missing, "POST", "/containers/{id}/unpause")
req(
    "http.ContainerWait.ok",
    "ContainerWait",
    lambda ctx: {"id": ctx.create(ctx.name(), ["sh", "-c", "exit 3"], start=True)},
    "POST",
    "/containers/{id}/wait",
)
req(
    "http.ContainerWait.not-running",
    "ContainerWait",
    s_exited,
    "POST",
    "/containers/{id}/wait",
    {"condition": "not-running"},
)
req(
    "http.ContainerWait.bad-condition",
    "ContainerWait",
    s_exited,
    "POST",
    "/containers/{id}/wait",
    {"condition": "whenever"},
)
req("http.ContainerWait.404", "ContainerWait", s_missing, "POST", "/containers/{id}/wait")


def wait_next_exit(ctx: Ctx):
    cid = ctx.running(ctx.name())
    box = {}

    def waiter():
        box["resp"] = ctx.http("POST", f"/containers/{cid}/wait", {"condition": "next-exit"}, timeout=20)

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    time.sleep(0.7)
    ctx.api("POST", f"/containers/{cid}/kill")
    t.join(20)
    return ctx.obs(box["resp"]) if "resp" in box else {"wait": "no answer"}


def wait_removed(ctx: Ctx):
    cid = ctx.create(ctx.name(), ["sh", "-c", "sleep 1; exit 2"], HostConfig={"AutoRemove": True})
    box = {}

    def waiter():
        box["resp"] = ctx.http("POST", f"/containers/{cid}/wait", {"condition": "removed"}, timeout=20)

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    time.sleep(0.3)
    ctx.api("POST", f"/containers/{cid}/start")
    t.join(20)
    out = ctx.obs(box["resp"]) if "resp" in box else {"wait": "no answer"}
    out["after"] = ctx.http("GET", f"/containers/{cid}/json").status
    return out


register("http.ContainerWait.next-exit", wait_next_exit, "ContainerWait")
register("http.ContainerWait.removed", wait_removed, ("ContainerWait", "ContainerDelete"))

req(
    "http.ContainerDelete.ok",
    "ContainerDelete",
    s_exited,
    "DELETE",
    "/containers/{id}",
    then=lambda ctx, s: ctx.http("GET", f"/containers/{s['id']}/json").status,
)
req(
    "http.ContainerDelete.by-name",
    "ContainerDelete",
    s_exited,
    "DELETE",
    "/containers/{name}",
    then=lambda ctx, s: ctx.http("GET", f"/containers/{s['name']}/json").status,
)
req("http.ContainerDelete.running", "ContainerDelete", s_running, "DELETE", "/containers/{id}")
req(
    "http.ContainerDelete.force",
    "ContainerDelete",
    s_running,
    "DELETE",
    "/containers/{id}",
    {"force": "1", "v": "1"},
    then=lambda ctx, s: ctx.http("GET", f"/containers/{s['id']}/json").status,
)
req("http.ContainerDelete.404", "ContainerDelete", s_missing, "DELETE", "/containers/{id}")
req(
    "http.ContainerDelete.link-missing",
    "ContainerDelete",
    s_exited,
    "DELETE",
    "/containers/{id}",
    {"link": "1"},
)

req(
    "http.ContainerArchiveInfo.ok",
    "ContainerArchiveInfo",
    s_running,
    "HEAD",
    "/containers/{id}/archive",
    {"path": "/etc/passwd"},
    obs="none",
)
req(
    "http.ContainerArchiveInfo.dir",
    "ContainerArchiveInfo",
    s_running,
    "HEAD",
    "/containers/{id}/archive",
    {"path": "/etc"},
    obs="none",
)
req(
    "http.ContainerArchiveInfo.no-path",
    "ContainerArchiveInfo",
    s_running,
    "HEAD",
    "/containers/{id}/archive",
    {"path": "/nonexistent"},
    obs="none",
)
req(
    "http.ContainerArchiveInfo.missing-param",
    "ContainerArchiveInfo",
    s_running,
    "HEAD",
    "/containers/{id}/archive",
    obs="none",
)
req(
    "http.ContainerArchiveInfo.404",
    "ContainerArchiveInfo",
    s_missing,
    "HEAD",
    "/containers/{id}/archive",
    {"path": "/etc"},
    obs="none",
)
req(
    "http.ContainerArchive.ok",
    "ContainerArchive",
    s_running,
    "GET",
    "/containers/{id}/archive",
    {"path": "/etc/passwd"},
    obs="tar",
)
req(
    "http.ContainerArchive.dir",
    "ContainerArchive",
    s_exited,
    "GET",
    "/containers/{id}/archive",
    {"path": "/etc"},
    obs="tar",
)
req(
    "http.ContainerArchive.no-path",
    "ContainerArchive",
    s_running,
    "GET",
    "/containers/{id}/archive",
    {"path": "/nonexistent"},
)
req("http.ContainerArchive.missing-param", "ContainerArchive", s_running, "GET", "/containers/{id}/archive")
req(
    "http.ContainerArchive.404",
    "ContainerArchive",
    s_missing,
    "GET",
    "/containers/{id}/archive",
    {"path": "/"},
)

TAR = make_tar({"hello.txt": "hello from the suite\n", "sub/f": "x"})


def put_then_stat(ctx: Ctx, subs: dict):
    resp = ctx.http("HEAD", f"/containers/{subs['id']}/archive", {"path": "/tmp/hello.txt"})
    return {"status": resp.status, "stat": ctx.obs_headers(resp).get("x-docker-container-path-stat")}


req(
    "http.PutContainerArchive.ok",
    "PutContainerArchive",
    s_running,
    "PUT",
    "/containers/{id}/archive",
    {"path": "/tmp"},
    body=TAR,
    content_type="application/x-tar",
    then=put_then_stat,
)
req(
    "http.PutContainerArchive.exited",
    "PutContainerArchive",
    s_exited,
    "PUT",
    "/containers/{id}/archive",
    {"path": "/tmp"},
    body=TAR,
    content_type="application/x-tar",
    then=put_then_stat,
)
req(
    "http.PutContainerArchive.no-path",
    "PutContainerArchive",
    s_running,
    "PUT",
    "/containers/{id}/archive",
    {"path": "/nonexistent/dir"},
    body=TAR,
    content_type="application/x-tar",
)
req(
    "http.PutContainerArchive.not-a-dir",
    "PutContainerArchive",
    s_running,
    "PUT",
    "/containers/{id}/archive",
    {"path": "/etc/passwd"},
    body=TAR,
    content_type="application/x-tar",
)
req(
    "http.PutContainerArchive.missing-param",
    "PutContainerArchive",
    s_running,
    "PUT",
    "/containers/{id}/archive",
    body=TAR,
    content_type="application/x-tar",
)
req(
    "http.PutContainerArchive.bad-tar",
    "PutContainerArchive",
    s_running,
    "PUT",
    "/containers/{id}/archive",
    {"path": "/tmp"},
    body=b"this is not a tar archive" * 40,
    content_type="application/x-tar",
)
req(
    "http.PutContainerArchive.read-only",
    "PutContainerArchive",
    lambda ctx: {"id": ctx.running(ctx.name(), HostConfig={"ReadonlyRootfs": True})},
    "PUT",
    "/containers/{id}/archive",
    {"path": "/tmp"},
    body=TAR,
    content_type="application/x-tar",
)
req(
    "http.PutContainerArchive.404",
    "PutContainerArchive",
    s_missing,
    "PUT",
    "/containers/{id}/archive",
    {"path": "/tmp"},
    body=TAR,
    content_type="application/x-tar",
)


def prune_containers(ctx: Ctx):
    mark = {"compat.case": ctx.prefix}
    ids = [ctx.exited(ctx.name(f"p{i}"), Labels={**ctx.labels, **mark}) for i in range(2)]
    ctx.running(ctx.name("keep"), Labels={**ctx.labels, **mark})
    resp = ctx.http("POST", "/containers/prune", {"filters": filters(label=f"compat.case={ctx.prefix}")})
    out = ctx.obs(resp, volatile={"SpaceReclaimed"})
    deleted = (resp.json() or {}).get("ContainersDeleted") or []
    out["deleted-ours"] = sorted(ids) == sorted(deleted)
    out["body"] = {"ContainersDeleted": len(deleted)}
    return out


register("http.ContainerPrune.label", prune_containers, "ContainerPrune", serial=True)
req(
    "http.ContainerPrune.bad-filter", "ContainerPrune", s_none, "POST", "/containers/prune", {"filters": "{x"}
)
req(
    "http.ContainerPrune.nothing",
    "ContainerPrune",
    s_none,
    "POST",
    "/containers/prune",
    {"filters": filters(label="compat.case={prefix}")},
)

req(
    "http.ImageCommit.ok",
    ("ImageCommit", "ImageInspect"),
    s_changed,
    "POST",
    "/commit",
    {
        "container": "{id}",
        "repo": "{prefix}-img",
        "tag": "1",
        "comment": "c",
        "author": "a",
        "changes": 'CMD ["echo", "committed"]',
    },
    then=lambda ctx, s: [
        ctx.track_image(f"{ctx.prefix}-img:1"),
        ctx.obs(ctx.http("GET", f"/images/{ctx.prefix}-img:1/json")),
    ][1],
)
req(
    "http.ImageCommit.by-name",
    "ImageCommit",
    s_exited,
    "POST",
    "/commit",
    {"container": "{name}", "repo": "{prefix}-img", "tag": "2"},
    then=lambda ctx, s: [ctx.track_image(f"{ctx.prefix}-img:2"), None][1],
)
req("http.ImageCommit.404", "ImageCommit", s_missing, "POST", "/commit", {"container": "{id}"})
req(
    "http.ImageCommit.bad-repo",
    "ImageCommit",
    s_exited,
    "POST",
    "/commit",
    {"container": "{id}", "repo": "Bad Repo"},
)
req(
    "http.ImageCommit.bad-change",
    "ImageCommit",
    s_exited,
    "POST",
    "/commit",
    {"container": "{id}", "repo": "{prefix}-img", "changes": "NOTADIRECTIVE x"},
)
req("http.ImageCommit.no-container", "ImageCommit", s_none, "POST", "/commit")

# == Attach (hijacked) =================================================================


def attach_obs(ctx: Ctx, resp, kind: str = "frames"):
    out = ctx.obs(resp, kind)
    out["eof"] = resp.complete
    return out


def attach_logs(ctx: Ctx):
    cid = ctx.exited(ctx.name(), cmd=OUT_ERR)
    return attach_obs(
        ctx,
        ctx.hijack(
            "POST", f"/containers/{cid}/attach", {"logs": "1", "stream": "0", "stdout": "1", "stderr": "1"}
        ),
    )


def attach_stdin(ctx: Ctx):
    cid = ctx.create(
        ctx.name(),
        ["sh", "-c", "cat; sleep 0.2; echo done >&2"],
        OpenStdin=True,
        StdinOnce=True,
        AttachStdin=True,
        AttachStdout=True,
        AttachStderr=True,
    )
    box = {}

    def attacher():
        box["resp"] = ctx.hijack(
            "POST",
            f"/containers/{cid}/attach",
            {"stream": "1", "stdin": "1", "stdout": "1", "stderr": "1"},
            stdin=b"hello\nworld\n",
            stdin_delay=0.8,
            timeout=15,
        )

    t = threading.Thread(target=attacher, daemon=True)
    t.start()
    time.sleep(0.4)
    ctx.api("POST", f"/containers/{cid}/start")
    t.join(20)
    out = attach_obs(ctx, box["resp"]) if "resp" in box else {"attach": "no answer"}
    out["exit"] = ctx.api("POST", f"/containers/{cid}/wait", timeout=15)
    return out


def attach_tty(ctx: Ctx):
    cid = ctx.create(
        ctx.name(),
        ["sh", "-c", "read line; echo got:$line"],
        OpenStdin=True,
        StdinOnce=True,
        Tty=True,
        AttachStdin=True,
        AttachStdout=True,
    )
    ctx.api("POST", f"/containers/{cid}/start")
    time.sleep(0.3)
    resp = ctx.hijack(
        "POST",
        f"/containers/{cid}/attach",
        {"stream": "1", "stdin": "1", "stdout": "1"},
        stdin=b"abc\n",
        half_close=False,
        read_for=3,
        timeout=10,
    )
    out = attach_obs(ctx, resp, "raw")
    out["exit"] = ctx.api("POST", f"/containers/{cid}/wait", timeout=15)
    return out


def attach_no_upgrade(ctx: Ctx):
    cid = ctx.exited(ctx.name(), cmd=OUT_ERR)
    return attach_obs(
        ctx,
        ctx.hijack(
            "POST",
            f"/containers/{cid}/attach",
            {"logs": "1", "stream": "0", "stdout": "1", "stderr": "1"},
            upgrade="",
        ),
    )


def attach_404(ctx: Ctx):
    return attach_obs(ctx, ctx.hijack("POST", f"/containers/{ctx.name('missing')}/attach", {"stream": "1"}))


def attach_unversioned(ctx: Ctx):
    cid = ctx.exited(ctx.name(), cmd=OUT_ERR)
    return attach_obs(
        ctx,
        ctx.hijack(
            "POST", f"/containers/{cid}/attach", {"logs": "1", "stdout": "1", "stderr": "1"}, version=None
        ),
    )


register("http.ContainerAttach.logs", attach_logs, "ContainerAttach")
register("http.ContainerAttach.stdin", attach_stdin, "ContainerAttach")
register("http.ContainerAttach.tty", attach_tty, "ContainerAttach")
register("http.ContainerAttach.no-upgrade", attach_no_upgrade, "ContainerAttach")
register("http.ContainerAttach.404", attach_404, "ContainerAttach")
register(
    "http.ContainerAttach.bad-detach-keys",
    lambda ctx: attach_obs(
        ctx,
        ctx.hijack(
            "POST",
            f"/containers/{ctx.running(ctx.name())}/attach",
            {"stream": "1", "stdout": "1", "detachKeys": "notakey"},
            read_for=2,
        ),
    ),
    "ContainerAttach",
)
register("http.ContainerAttach.unversioned", attach_unversioned, "ContainerAttach")


def attach_ws(ctx: Ctx):
    from compat import wire

    cid = ctx.exited(ctx.name(), Tty=True)
    resp = wire.websocket(
        ctx.side.endpoint,
        ctx.target(f"/containers/{cid}/attach/ws", {"logs": "1", "stdout": "1", "stderr": "1"}),
        headers=ctx.headers(),
        read_for=2,
    )
    out = ctx.obs(resp, "raw")
    out["upgrade"] = (resp.header("Upgrade") or "").lower()
    return out


def attach_ws_404(ctx: Ctx):
    from compat import wire

    resp = wire.websocket(
        ctx.side.endpoint,
        ctx.target(f"/containers/{ctx.name('missing')}/attach/ws", {"stdout": "1"}),
        headers=ctx.headers(),
        read_for=2,
    )
    return ctx.obs(resp, "json")


register("http.ContainerAttachWebsocket.logs", attach_ws, "ContainerAttachWebsocket")
register("http.ContainerAttachWebsocket.404", attach_ws_404, "ContainerAttachWebsocket")


def attach_ws_bad_keys(ctx: Ctx):
    from compat import wire

    cid = ctx.running(ctx.name())
    resp = wire.websocket(
        ctx.side.endpoint,
        ctx.target(f"/containers/{cid}/attach/ws", {"stream": "1", "stdout": "1", "detachKeys": "notakey"}),
        headers=ctx.headers(),
        read_for=2,
    )
    return ctx.obs(resp, "json")


register("http.ContainerAttachWebsocket.bad-detach-keys", attach_ws_bad_keys, "ContainerAttachWebsocket")

# == Exec ===============================================================================
EXEC = {"Cmd": ["echo", "hi"], "AttachStdout": True}
req(
    "http.ContainerExec.ok",
    ("ContainerExec", "ExecInspect"),
    s_running,
    "POST",
    "/containers/{id}/exec",
    json_body=EXEC,
    then=lambda ctx, s: None,
)
req(
    "http.ContainerExec.by-name",
    "ContainerExec",
    s_running,
    "POST",
    "/containers/{name}/exec",
    json_body=EXEC,
)
req(
    "http.ContainerExec.not-running",
    "ContainerExec",
    s_exited,
    "POST",
    "/containers/{id}/exec",
    json_body=EXEC,
)
req("http.ContainerExec.paused", "ContainerExec", s_paused, "POST", "/containers/{id}/exec", json_body=EXEC)
req("http.ContainerExec.404", "ContainerExec", s_missing, "POST", "/containers/{id}/exec", json_body=EXEC)
req(
    "http.ContainerExec.malformed",
    "ContainerExec",
    s_running,
    "POST",
    "/containers/{id}/exec",
    body=b"{",
    content_type="application/json",
)
req(
    "http.ContainerExec.no-cmd",
    "ContainerExec",
    s_running,
    "POST",
    "/containers/{id}/exec",
    json_body={"AttachStdout": True},
)
req("http.ExecInspect.ok", "ExecInspect", s_exec, "GET", "/exec/{exec}/json")
req("http.ExecInspect.404", "ExecInspect", s_missing, "GET", "/exec/{id}/json")
req("http.ExecResize.ok", "ExecResize", s_exec_tty, "POST", "/exec/{exec}/resize", {"h": "40", "w": "120"})
req(
    "http.ExecResize.bad-size",
    "ExecResize",
    s_exec_tty,
    "POST",
    "/exec/{exec}/resize",
    {"h": "abc", "w": "1"},
)
req("http.ExecResize.no-size", "ExecResize", s_exec_tty, "POST", "/exec/{exec}/resize")
req("http.ExecResize.404", "ExecResize", s_missing, "POST", "/exec/{id}/resize", {"h": "40", "w": "120"})
req("http.ExecStart.404", "ExecStart", s_missing, "POST", "/exec/{id}/start", json_body={"Detach": False})


def exec_start(ctx: Ctx, config: dict, start: dict, stdin: bytes | None = None, kind="frames", **kw):
    cid = ctx.running(ctx.name())
    e = ctx.api("POST", f"/containers/{cid}/exec", json_body=config)
    resp = ctx.hijack("POST", f"/exec/{e['Id']}/start", json_body=start, stdin=stdin, **kw)
    out = attach_obs(ctx, resp, kind)
    insp = ctx.api("GET", f"/exec/{e['Id']}/json")
    for _ in range(20):
        if not insp.get("Running"):
            break
        time.sleep(0.1)
        insp = ctx.api("GET", f"/exec/{e['Id']}/json")
    out["inspect"] = {
        k: insp.get(k) for k in ("Running", "ExitCode", "OpenStdin", "OpenStdout", "OpenStderr")
    }
    return out


register(
    "http.ExecStart.multiplexed",
    lambda ctx: exec_start(
        ctx,
        {
            "Cmd": ["sh", "-c", "echo out; sleep 0.2; echo err >&2; exit 3"],
            "AttachStdout": True,
            "AttachStderr": True,
        },
        {"Detach": False, "Tty": False},
    ),
    ("ExecStart", "ExecInspect"),
)
register(
    "http.ExecStart.tty",
    lambda ctx: exec_start(
        ctx,
        {
            "Cmd": ["sh", "-c", "echo out; sleep 0.2; echo err >&2; exit 4"],
            "AttachStdout": True,
            "AttachStderr": True,
            "Tty": True,
        },
        {"Detach": False, "Tty": True},
        kind="raw",
    ),
    "ExecStart",
)
register(
    "http.ExecStart.stdin-eof",
    lambda ctx: exec_start(
        ctx,
        {
            "Cmd": ["sh", "-c", "cat; echo eof-seen"],
            "AttachStdin": True,
            "AttachStdout": True,
            "AttachStderr": True,
        },
        {"Detach": False},
        stdin=b"line1\nline2\n",
    ),
    "ExecStart",
)
register(
    "http.ExecStart.no-upgrade",
    lambda ctx: exec_start(
        ctx, {"Cmd": ["echo", "plain"], "AttachStdout": True}, {"Detach": False}, upgrade=""
    ),
    "ExecStart",
)


def exec_detach(ctx: Ctx):
    cid = ctx.running(ctx.name())
    e = ctx.api("POST", f"/containers/{cid}/exec", json_body={"Cmd": ["touch", "/tmp/detached"]})
    resp = ctx.http("POST", f"/exec/{e['Id']}/start", json_body={"Detach": True})
    out = ctx.obs(resp, "text")
    time.sleep(0.5)
    out["file"] = ctx.http("HEAD", f"/containers/{cid}/archive", {"path": "/tmp/detached"}).status
    return out


def exec_twice(ctx: Ctx):
    cid = ctx.running(ctx.name())
    e = ctx.api("POST", f"/containers/{cid}/exec", json_body={"Cmd": ["sleep", "5"]})
    ctx.api("POST", f"/exec/{e['Id']}/start", json_body={"Detach": True})
    resp = ctx.http("POST", f"/exec/{e['Id']}/start", json_body={"Detach": True})
    return ctx.obs(resp)


def exec_malformed(ctx: Ctx):
    cid = ctx.running(ctx.name())
    e = ctx.api("POST", f"/containers/{cid}/exec", json_body=EXEC)
    return ctx.obs(ctx.http("POST", f"/exec/{e['Id']}/start", body=b"{", content_type="application/json"))


register("http.ExecStart.detach", exec_detach, "ExecStart")
register("http.ExecStart.already-running", exec_twice, "ExecStart")
register("http.ExecStart.malformed", exec_malformed, "ExecStart")

# == Images =============================================================================
req(
    "http.ImageList.filtered",
    "ImageList",
    s_image,
    "GET",
    "/images/json",
    {"filters": filters(reference="{prefix}*")},
)
req(
    "http.ImageList.label",
    "ImageList",
    s_committed,
    "GET",
    "/images/json",
    {"filters": filters(label="compat.case={prefix}")},
)
req(
    "http.ImageList.digests",
    "ImageList",
    s_image,
    "GET",
    "/images/json",
    {"filters": filters(reference="{prefix}*"), "digests": "1"},
)
req("http.ImageList.bad-filter", "ImageList", s_none, "GET", "/images/json", {"filters": "[1"})
req(
    "http.ImageList.unknown-filter",
    "ImageList",
    s_none,
    "GET",
    "/images/json",
    {"filters": filters(nope="1")},
)
req(
    "http.ImageList.v1.24",
    "ImageList",
    s_image,
    "GET",
    "/images/json",
    {"filters": filters(reference="{prefix}*")},
    version="1.24",
)
req("http.ImageInspect.ok", "ImageInspect", s_committed, "GET", "/images/{img}/json")
req(
    "http.ImageInspect.busybox",
    "ImageInspect",
    s_none,
    "GET",
    "/images/busybox:latest/json",
    obs_kw={"volatile": {"RepoTags", "RepoDigests"}},
)  # other cases tag busybox meanwhile
req("http.ImageInspect.404", "ImageInspect", s_missing, "GET", "/images/{name}:1/json")
req("http.ImageInspect.bad-ref", "ImageInspect", s_none, "GET", "/images/UPPER:case/json")
req(
    "http.ImageHistory.ok",
    "ImageHistory",
    s_committed,
    "GET",
    "/images/{img}/history",
    obs_kw={"volatile": {"Tags"}},
)  # busybox's layer: other cases tag busybox meanwhile
req("http.ImageHistory.404", "ImageHistory", s_missing, "GET", "/images/{name}/history")
req(
    "http.ImageTag.ok",
    "ImageTag",
    s_committed,
    "POST",
    "/images/{img}/tag",
    {"repo": "{prefix}-other", "tag": "t"},
    then=lambda ctx, s: [
        ctx.track_image(f"{ctx.prefix}-other:t"),
        ctx.http("GET", f"/images/{ctx.prefix}-other:t/json").status,
    ][1],
)
req("http.ImageTag.404", "ImageTag", s_missing, "POST", "/images/{name}:1/tag", {"repo": "{prefix}-other"})
req("http.ImageTag.bad-repo", "ImageTag", s_committed, "POST", "/images/{img}/tag", {"repo": "Bad Repo!"})
req(
    "http.ImageTag.bad-tag",
    "ImageTag",
    s_committed,
    "POST",
    "/images/{img}/tag",
    {"repo": "{prefix}-x", "tag": "bad tag"},
)
req("http.ImageTag.no-repo", "ImageTag", s_committed, "POST", "/images/{img}/tag")
req("http.ImageDelete.untag", "ImageDelete", s_image, "DELETE", "/images/{img}")
req(
    "http.ImageDelete.ok",
    "ImageDelete",
    s_committed,
    "DELETE",
    "/images/{img}",
    then=lambda ctx, s: ctx.http("GET", f"/images/{s['img']}/json").status,
)
req("http.ImageDelete.404", "ImageDelete", s_missing, "DELETE", "/images/{name}:1")


def s_image_in_use(ctx: Ctx) -> dict:
    d = s_committed(ctx)
    ctx.create(ctx.name("user"), ["true"], image=d["img"])
    return d


req("http.ImageDelete.in-use", "ImageDelete", s_image_in_use, "DELETE", "/images/{img}")
req("http.ImageDelete.in-use-force", "ImageDelete", s_image_in_use, "DELETE", "/images/{img}", {"force": "1"})
req(
    "http.ImageSearch.offline",
    "ImageSearch",
    s_none,
    "GET",
    "/images/search",
    {"term": "busybox", "limit": "1"},
    timeout=120,
    isolated=True,
)
req("http.ImageSearch.no-term", "ImageSearch", s_none, "GET", "/images/search", timeout=120, isolated=True)
req("http.ImageGet.ok", "ImageGet", s_committed, "GET", "/images/{img}/get", obs="tar")
req("http.ImageGet.404", "ImageGet", s_missing, "GET", "/images/{name}:1/get")
req("http.ImageGetAll.ok", "ImageGetAll", s_committed, "GET", "/images/get", {"names": "{img}"}, obs="tar")
req("http.ImageGetAll.404", "ImageGetAll", s_missing, "GET", "/images/get", {"names": "{name}:1"})


def prune_images(ctx: Ctx):
    s_committed(ctx)
    resp = ctx.http(
        "POST",
        "/images/prune",
        {"filters": json.dumps({"dangling": ["false"], "label": [f"compat.case={ctx.prefix}"]})},
        timeout=40,
    )
    return ctx.obs(resp, "json", volatile={"SpaceReclaimed"})


register("http.ImagePrune.label", prune_images, "ImagePrune", serial=True)
req("http.ImagePrune.bad-filter", "ImagePrune", s_none, "POST", "/images/prune", {"filters": "nope"})
req(
    "http.BuildPrune.ok",
    "BuildPrune",
    s_none,
    "POST",
    "/build/prune",
    obs="json",
    obs_kw={"volatile": {"SpaceReclaimed"}},
    serial=True,  # not while a BuildKit case's cache mount waits for its second build
)


def load_image(ctx: Ctx, quiet: bool):
    d = s_committed(ctx)
    data = ctx.http("GET", f"/images/{d['img']}/get", timeout=30).body
    ctx.api("DELETE", f"/images/{d['img']}")
    resp = ctx.http(
        "POST",
        "/images/load",
        {"quiet": "1" if quiet else "0"},
        body=data,
        content_type="application/x-tar",
        timeout=40,
    )
    out = ctx.obs(resp, "lines")
    # Whether the daemon still had the image's layer decides whether it says "Loading layer":
    # the save just before holds the layer until its handler ends, which can be after the
    # client has read the whole tar and deleted the image (seen on a loaded CI machine, on
    # the direct side). The rest of the answer, "Loaded image" included, is compared.
    if isinstance(out["body"], list):
        out["body"] = [
            item
            for item in out["body"]
            if not (isinstance(item, dict) and item.get("status") == "Loading layer")
        ]
    out["after"] = ctx.http("GET", f"/images/{d['img']}/json").status
    return out


register("http.ImageLoad.ok", lambda ctx: load_image(ctx, False), ("ImageLoad", "ImageGet"))
register("http.ImageLoad.quiet", lambda ctx: load_image(ctx, True), "ImageLoad")
req(
    "http.ImageLoad.bad-tar",
    "ImageLoad",
    s_none,
    "POST",
    "/images/load",
    body=b"not a tar" * 100,
    content_type="application/x-tar",
    obs="lines",
)


def build_ctx(prefix: str, files: dict | None = None) -> bytes:
    """A build context; the prefix in every Dockerfile keeps one side's build cache from
    answering the other side's build (the prefix is normalized away in what is compared)."""
    files = dict(
        files
        or {
            "Dockerfile": "FROM busybox\nRUN echo built > /built\nCOPY hello.txt /hello.txt\nLABEL compat=1\n"
            'CMD ["cat", "/hello.txt"]\n',
            "hello.txt": "hello\n",
        }
    )
    files["Dockerfile"] = files["Dockerfile"].replace(
        "FROM busybox\n", f"FROM busybox\nENV CASE={prefix}\n", 1
    )
    return make_tar(files)


def build(ctx: Ctx, query: dict, files: dict | None = None, keep_lines=True):
    query = {k: v.replace("{prefix}", ctx.prefix) for k, v in query.items()}
    if "t" in query:
        ctx.track_image(query["t"])
    resp = ctx.http(
        "POST",
        "/build",
        query,
        body=build_ctx(ctx.prefix, files),
        content_type="application/x-tar",
        timeout=90,
    )
    out = ctx.obs(resp, "lines")
    # step IDs and "Using cache" depend on what ran before: keep the shape of the dialogue
    # (an error answer is one message, kept whole)
    if isinstance(out["body"], list):
        out["body"] = [_build_line(x) for x in out["body"]]
    return out


def _build_line(item):
    if isinstance(item, dict) and isinstance(item.get("stream"), str):
        s = item["stream"]
        s = s.replace(" ---> Using cache\n", "")
        return {"stream": s}
    return item


register(
    "http.ImageBuild.ok",
    lambda ctx: build(ctx, {"t": "{prefix}-built:1", "rm": "1"}),
    "ImageBuild",
    timeout=120,
)
register(
    "http.ImageBuild.quiet",
    lambda ctx: build(ctx, {"t": "{prefix}-built:1", "q": "1"}),
    "ImageBuild",
    timeout=120,
)
register(
    "http.ImageBuild.buildargs-labels",
    lambda ctx: build(
        ctx,
        {"t": "{prefix}-built:1", "buildargs": json.dumps({"V": "42"}), "labels": json.dumps({"l": "1"})},
        {"Dockerfile": "FROM busybox\nARG V\nRUN echo $V > /v\n"},
    ),
    "ImageBuild",
    timeout=120,
)
register(
    "http.ImageBuild.bad-instruction",
    lambda ctx: build(ctx, {"t": "{prefix}-built:1"}, {"Dockerfile": "FROM busybox\nNOPE x\n"}),
    "ImageBuild",
    timeout=120,
)
register(
    "http.ImageBuild.run-fails",
    lambda ctx: build(
        ctx, {"t": "{prefix}-built:1", "forcerm": "1"}, {"Dockerfile": "FROM busybox\nRUN exit 7\n"}
    ),
    "ImageBuild",
    timeout=120,
)
register(
    "http.ImageBuild.no-dockerfile", lambda ctx: build(ctx, {"dockerfile": "Nope"}), "ImageBuild", timeout=120
)
register("http.ImageBuild.bad-tag", lambda ctx: build(ctx, {"t": "Bad Tag!"}), "ImageBuild", timeout=120)
register(
    "http.ImageBuild.remote-unreachable",
    lambda ctx: build(ctx, {"remote": "http://127.0.0.1:1/ctx.tar"}),
    "ImageBuild",
    timeout=120,
    divergence="policy",
)


def pull_case(ctx: Ctx, src: str):
    if src == "registry":
        d = s_pushed(ctx)
        ctx.api("DELETE", f"/images/{d['img']}")
        ctx.track_image(d["img"])
        q = {"fromImage": d["repo"], "tag": "1"}
    elif src == "registry-missing":
        q = {"fromImage": f"{ctx.stack.registry}/{ctx.name('nosuch')}", "tag": "1"}
    elif src == "hub":
        q = {"fromImage": f"{ctx.name('nosuch')}", "tag": "latest"}
    elif src == "bad-ref":
        q = {"fromImage": "Bad Ref!"}
    resp = ctx.http("POST", "/images/create", q, headers={"X-Registry-Auth": "e30="}, timeout=80)
    return registry_lines(ctx.obs(resp, "lines"))


register(
    "http.ImageCreate.pull-registry",
    lambda ctx: pull_case(ctx, "registry"),
    ("ImageCreate", "ImagePush"),
    timeout=120,
)
register(
    "http.ImageCreate.pull-registry-missing",
    lambda ctx: pull_case(ctx, "registry-missing"),
    "ImageCreate",
    timeout=120,
)
register(
    "http.ImageCreate.pull-hub-offline",
    lambda ctx: pull_case(ctx, "hub"),
    "ImageCreate",
    timeout=150,
    isolated=True,
)
register("http.ImageCreate.bad-ref", lambda ctx: pull_case(ctx, "bad-ref"), "ImageCreate", timeout=120)


def import_case(ctx: Ctx, src: str):
    repo = ctx.name("imported")
    ctx.track_image(f"{repo}:1")
    if src == "-":
        body = make_tar({"bin/x": "x", "etc/y": "y"})
        resp = ctx.http(
            "POST",
            "/images/create",
            {"fromSrc": "-", "repo": repo, "tag": "1", "changes": 'CMD ["/bin/x"]'},
            body=body,
            content_type="application/x-tar",
            timeout=60,
        )
    else:
        resp = ctx.http("POST", "/images/create", {"fromSrc": src, "repo": repo, "tag": "1"}, timeout=60)
    out = ctx.obs(resp, "lines")
    out["after"] = ctx.http("GET", f"/images/{repo}:1/json").status
    return out


register("http.ImageCreate.import", lambda ctx: import_case(ctx, "-"), "ImageCreate", timeout=90)
register(
    "http.ImageCreate.import-url-unreachable",
    lambda ctx: import_case(ctx, "http://127.0.0.1:1/x.tar"),
    "ImageCreate",
    timeout=90,
    divergence="policy",
)


_LAYER_STATUS = re.compile(
    r"^(Pushed|Layer already exists|Mounted from \S+|Pull complete|Already exists|Preparing|"
    r"Waiting|Pushing|Downloading|Verifying Checksum|Download complete|Extracting)$"
)


def registry_lines(out: dict) -> dict:
    """Which layers the registry (or the daemon) already had depends on the cases that ran
    before: fold the per-layer verbs, keep each distinct line once, in order."""
    body = out.get("body")
    if isinstance(body, list):
        seen, folded = set(), []
        for item in body:
            if isinstance(item, dict):
                item = {k: v for k, v in item.items() if k not in ("progressDetail", "progress")}
                if isinstance(item.get("status"), str) and _LAYER_STATUS.match(item["status"]):
                    item["status"] = "<layer>"
            key = json.dumps(item, sort_keys=True)
            if key not in seen:
                seen.add(key)
                folded.append(item)
        out["body"] = folded
    return out


def push_case(ctx: Ctx, what: str):
    if what == "ok":
        ref = f"{ctx.stack.registry}/{ctx.name('img')}"
        ctx.image(f"{ref}:1")
        resp = ctx.http(
            "POST", f"/images/{ref}/push", {"tag": "1"}, headers={"X-Registry-Auth": "e30="}, timeout=80
        )
    elif what == "missing":
        resp = ctx.http(
            "POST",
            f"/images/{ctx.stack.registry}/{ctx.name('nosuch')}/push",
            {"tag": "1"},
            headers={"X-Registry-Auth": "e30="},
            timeout=80,
        )
    else:  # no auth header at all: dockerd 20.10 accepts it
        ref = f"{ctx.stack.registry}/{ctx.name('img')}"
        ctx.image(f"{ref}:1")
        resp = ctx.http("POST", f"/images/{ref}/push", {"tag": "1"}, timeout=80)
    return registry_lines(ctx.obs(resp, "lines"))


register("http.ImagePush.ok", lambda ctx: push_case(ctx, "ok"), "ImagePush", timeout=120)
register("http.ImagePush.404", lambda ctx: push_case(ctx, "missing"), "ImagePush", timeout=120)
register("http.ImagePush.no-registry-auth", lambda ctx: push_case(ctx, "noauth"), "ImagePush", timeout=120)


def distribution(ctx: Ctx, what: str):
    if what == "ok":
        d = s_pushed(ctx)
        ref = d["img"]
    else:
        ref = f"{ctx.stack.registry}/{ctx.name('nosuch')}:1"
    resp = ctx.http("GET", f"/distribution/{ref}/json", headers={"X-Registry-Auth": "e30="}, timeout=60)
    return ctx.obs(resp, "json")


register(
    "http.DistributionInspect.ok", lambda ctx: distribution(ctx, "ok"), "DistributionInspect", timeout=120
)
register(
    "http.DistributionInspect.missing",
    lambda ctx: distribution(ctx, "missing"),
    "DistributionInspect",
    timeout=120,
)

# == Volumes ============================================================================
req(
    "http.VolumeList.filtered",
    "VolumeList",
    s_volume,
    "GET",
    "/volumes",
    {"filters": filters(name="{prefix}")},
)
req("http.VolumeList.bad-filter", "VolumeList", s_none, "GET", "/volumes", {"filters": "{"})
req(
    "http.VolumeCreate.ok",
    ("VolumeCreate", "VolumeInspect"),
    s_none,
    "POST",
    "/volumes/create",
    json_body={"Name": "{prefix}-v", "Labels": {SUITE_LABEL: "x", "k": "v"}, "DriverOpts": {}},
    then=lambda ctx, s: [
        ctx.on_cleanup(lambda: ctx.http("DELETE", f"/volumes/{ctx.prefix}-v")),
        ctx.obs(ctx.http("GET", f"/volumes/{ctx.prefix}-v")),
    ][1],
)
req(
    "http.VolumeCreate.malformed",
    "VolumeCreate",
    s_none,
    "POST",
    "/volumes/create",
    body=b"{",
    content_type="application/json",
)
req(
    "http.VolumeCreate.bad-driver",
    "VolumeCreate",
    s_none,
    "POST",
    "/volumes/create",
    json_body={"Name": "{prefix}-v", "Driver": "nosuchdriver"},
    timeout=90,
    serial=True,  # dockerd looks plugins up one at a time (15 s each): not beside its variants
)
req(
    "http.VolumeCreate.bad-name",
    "VolumeCreate",
    s_none,
    "POST",
    "/volumes/create",
    json_body={"Name": "bad/name"},
)
req(
    "http.VolumeCreate.existing",
    "VolumeCreate",
    s_volume,
    "POST",
    "/volumes/create",
    json_body={"Name": "{vol}", "Labels": {SUITE_LABEL: "x"}},
)
req("http.VolumeInspect.ok", "VolumeInspect", s_volume, "GET", "/volumes/{vol}")
req("http.VolumeInspect.404", "VolumeInspect", s_missing, "GET", "/volumes/{name}")
req(
    "http.VolumeDelete.ok",
    "VolumeDelete",
    s_volume,
    "DELETE",
    "/volumes/{vol}",
    then=lambda ctx, s: ctx.http("GET", f"/volumes/{s['vol']}").status,
)
req("http.VolumeDelete.404", "VolumeDelete", s_missing, "DELETE", "/volumes/{name}")


def s_volume_in_use(ctx: Ctx) -> dict:
    d = s_volume(ctx)
    ctx.create(ctx.name(), ["true"], HostConfig={"Binds": [f"{d['vol']}:/data"]})
    return d


req("http.VolumeDelete.in-use", "VolumeDelete", s_volume_in_use, "DELETE", "/volumes/{vol}")


def prune_volumes(ctx: Ctx):
    ctx.volume(ctx.name("pv"), Labels={**ctx.labels, "compat.case": ctx.prefix})
    resp = ctx.http("POST", "/volumes/prune", {"filters": filters(label=f"compat.case={ctx.prefix}")})
    return ctx.obs(resp, volatile={"SpaceReclaimed"}, sort_lists=True)


register("http.VolumePrune.label", prune_volumes, "VolumePrune", serial=True)
req("http.VolumePrune.bad-filter", "VolumePrune", s_none, "POST", "/volumes/prune", {"filters": "x"})

# == Networks ===========================================================================
req(
    "http.NetworkList.filtered",
    "NetworkList",
    s_network,
    "GET",
    "/networks",
    {"filters": filters(name="{prefix}")},
)
req("http.NetworkList.bad-filter", "NetworkList", s_none, "GET", "/networks", {"filters": "{"})
req(
    "http.NetworkList.unknown-filter",
    "NetworkList",
    s_none,
    "GET",
    "/networks",
    {"filters": filters(nope="x")},
)
req(
    "http.NetworkCreate.ok",
    ("NetworkCreate", "NetworkInspect"),
    s_none,
    "POST",
    "/networks/create",
    json_body={
        "Name": "{prefix}-n",
        "Labels": {SUITE_LABEL: "x"},
        "CheckDuplicate": True,
        "Attachable": True,
    },
    then=lambda ctx, s: [
        ctx.on_cleanup(lambda: ctx.http("DELETE", f"/networks/{ctx.prefix}-n")),
        ctx.obs(ctx.http("GET", f"/networks/{ctx.prefix}-n")),
    ][1],
)
req(
    "http.NetworkCreate.malformed",
    "NetworkCreate",
    s_none,
    "POST",
    "/networks/create",
    body=b"{",
    content_type="application/json",
)
req(
    "http.NetworkCreate.no-name",
    "NetworkCreate",
    s_none,
    "POST",
    "/networks/create",
    json_body={"Driver": "bridge"},
)
req(
    "http.NetworkCreate.duplicate",
    "NetworkCreate",
    s_network,
    "POST",
    "/networks/create",
    json_body={"Name": "{net}", "CheckDuplicate": True},
)
req(
    "http.NetworkCreate.predefined",
    "NetworkCreate",
    s_none,
    "POST",
    "/networks/create",
    json_body={"Name": "host", "CheckDuplicate": True},
)
req(
    "http.NetworkCreate.bad-driver",
    "NetworkCreate",
    s_none,
    "POST",
    "/networks/create",
    json_body={"Name": "{prefix}-n", "Driver": "nosuchdriver"},
    timeout=90,
    serial=True,  # dockerd looks plugins up one at a time (15 s each): not beside its variants
    divergence="policy",
)
req("http.NetworkInspect.ok", "NetworkInspect", s_net_connected, "GET", "/networks/{net}")
req("http.NetworkInspect.verbose", "NetworkInspect", s_network, "GET", "/networks/{net}", {"verbose": "1"})
req("http.NetworkInspect.404", "NetworkInspect", s_missing, "GET", "/networks/{name}")
req(
    "http.NetworkDelete.ok",
    "NetworkDelete",
    s_network,
    "DELETE",
    "/networks/{net}",
    then=lambda ctx, s: ctx.http("GET", f"/networks/{s['net']}").status,
)
req("http.NetworkDelete.404", "NetworkDelete", s_missing, "DELETE", "/networks/{name}")
req("http.NetworkDelete.predefined", "NetworkDelete", s_none, "DELETE", "/networks/bridge")
req("http.NetworkDelete.in-use", "NetworkDelete", s_net_connected, "DELETE", "/networks/{net}")
req(
    "http.NetworkConnect.ok",
    "NetworkConnect",
    s_net_and_container,
    "POST",
    "/networks/{net}/connect",
    json_body={"Container": "{cname}", "EndpointConfig": {"Aliases": ["al"]}},
    then=inspect_c("NetworkSettings.Networks"),
)
req(
    "http.NetworkConnect.already",
    "NetworkConnect",
    s_net_connected,
    "POST",
    "/networks/{net}/connect",
    json_body={"Container": "{cname}"},
)
req(
    "http.NetworkConnect.404-network",
    "NetworkConnect",
    s_running,
    "POST",
    "/networks/{prefix}-nonet/connect",
    json_body={"Container": "{id}"},
)
req(
    "http.NetworkConnect.404-container",
    "NetworkConnect",
    s_network,
    "POST",
    "/networks/{net}/connect",
    json_body={"Container": "{prefix}-nocontainer"},
)
req(
    "http.NetworkConnect.malformed",
    "NetworkConnect",
    s_network,
    "POST",
    "/networks/{net}/connect",
    body=b"{",
    content_type="application/json",
)
req(
    "http.NetworkConnect.host-network",
    "NetworkConnect",
    s_running,
    "POST",
    "/networks/host/connect",
    json_body={"Container": "{id}"},
)
req(
    "http.NetworkDisconnect.ok",
    "NetworkDisconnect",
    s_net_connected,
    "POST",
    "/networks/{net}/disconnect",
    json_body={"Container": "{cname}"},
    then=inspect_c("NetworkSettings.Networks"),
)
req(
    "http.NetworkDisconnect.not-connected",
    "NetworkDisconnect",
    s_net_and_container,
    "POST",
    "/networks/{net}/disconnect",
    json_body={"Container": "{cname}"},
)
req(
    "http.NetworkDisconnect.404",
    "NetworkDisconnect",
    s_network,
    "POST",
    "/networks/{net}/disconnect",
    json_body={"Container": "{prefix}-nocontainer"},
)


def prune_networks(ctx: Ctx):
    ctx.network(ctx.name("pn"), Labels={**ctx.labels, "compat.case": ctx.prefix})
    resp = ctx.http("POST", "/networks/prune", {"filters": filters(label=f"compat.case={ctx.prefix}")})
    return ctx.obs(resp)


register("http.NetworkPrune.label", prune_networks, "NetworkPrune", serial=True)
req("http.NetworkPrune.bad-filter", "NetworkPrune", s_none, "POST", "/networks/prune", {"filters": "x"})

# == Plugins (refused by Moorage) ======================================================
# a registry that refuses at once, so dockerd's own answers come fast
PLUGIN = "127.0.0.1:1/{prefix}-plugin:latest"
for op, method, path, query, body in [
    ("PluginList", "GET", "/plugins", None, None),
    ("GetPluginPrivileges", "GET", "/plugins/privileges", {"remote": PLUGIN}, None),
    ("PluginPull", "POST", "/plugins/pull", {"remote": PLUGIN}, []),
    ("PluginInspect", "GET", "/plugins/" + PLUGIN + "/json", None, None),
    ("PluginDelete", "DELETE", "/plugins/" + PLUGIN, None, None),
    ("PluginEnable", "POST", "/plugins/" + PLUGIN + "/enable", None, None),
    ("PluginDisable", "POST", "/plugins/" + PLUGIN + "/disable", None, None),
    ("PluginUpgrade", "POST", "/plugins/" + PLUGIN + "/upgrade", {"remote": PLUGIN}, []),
    ("PluginCreate", "POST", "/plugins/create", {"name": PLUGIN}, None),
    ("PluginPush", "POST", "/plugins/" + PLUGIN + "/push", None, None),
    ("PluginSet", "POST", "/plugins/" + PLUGIN + "/set", None, ["DEBUG=1"]),
]:
    req(
        f"http.{op}.refused",
        op,
        s_none,
        method,
        path,
        query,
        json_body=body,
        divergence="plugins",
        timeout=90,
    )

# == Swarm (a node outside swarm mode: both sides answer 503) ===========================
for op, path in [
    ("SwarmInspect", "/swarm"),
    ("NodeList", "/nodes"),
    ("ServiceList", "/services"),
    ("TaskList", "/tasks"),
    ("SecretList", "/secrets"),
    ("ConfigList", "/configs"),
]:
    req(f"http.{op}.not-in-swarm", op, s_none, "GET", path)
