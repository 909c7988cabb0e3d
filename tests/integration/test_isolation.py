"""The isolation matrix: tenant beta against tenant alpha's objects, by every kind of reference,
on every object route. Each answer must be the 404 a missing object gets, and alpha's objects
must be untouched afterwards. Both tenants share the one instance, so the daemon really does
hold both projects' objects side by side."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.isolation

# (method, path template, body) for every route that names a container.
CONTAINER_ROUTES = [
    ("GET", "/containers/{}/json", None),
    ("GET", "/containers/{}/top", None),
    ("GET", "/containers/{}/logs?stdout=1", None),
    ("GET", "/containers/{}/changes", None),
    ("GET", "/containers/{}/export", None),
    ("GET", "/containers/{}/stats?stream=0", None),
    ("HEAD", "/containers/{}/archive?path=/", None),
    ("GET", "/containers/{}/archive?path=/etc", None),
    ("PUT", "/containers/{}/archive?path=/tmp", b""),
    ("POST", "/containers/{}/start", None),
    ("POST", "/containers/{}/stop?t=0", None),
    ("POST", "/containers/{}/restart?t=0", None),
    ("POST", "/containers/{}/kill", None),
    ("POST", "/containers/{}/pause", None),
    ("POST", "/containers/{}/unpause", None),
    ("POST", "/containers/{}/rename?name=stolen", None),
    ("POST", "/containers/{}/resize?h=10&w=10", None),
    ("POST", "/containers/{}/update", {"Memory": 64 << 20}),
    ("POST", "/containers/{}/wait", None),
    ("POST", "/containers/{}/attach?stream=1&stdout=1", None),
    ("POST", "/containers/{}/exec", {"Cmd": ["true"]}),
    ("DELETE", "/containers/{}?force=1", None),
    ("POST", "/commit?container={}", None),
]


@pytest.fixture(scope="module")
def alpha(stack):
    """alpha's objects: a running container, a network, a volume and an exec session."""
    tag = f"iso{int(time.time() * 1000) % 10**8}"
    ran = stack.docker("run", "-d", "--name", f"{tag}-c", "busybox", "sleep", "600")
    assert ran.returncode == 0, ran.stderr
    cid = ran.stdout.decode().strip()
    net = stack.docker("network", "create", f"{tag}-n")
    assert net.returncode == 0, net.stderr
    nid = net.stdout.decode().strip()
    vol = stack.docker("volume", "create", f"{tag}-v")
    assert vol.returncode == 0, vol.stderr
    exec_id = stack.http("POST", f"/containers/{cid}/exec", json={"Cmd": ["true"]}).json()["Id"]
    # beta holds objects too (so lists have something of its own), none sharing alpha's prefix
    mine = stack.docker("run", "-d", "--name", f"{tag}-b", "busybox", "sleep", "600", tenant="beta")
    assert mine.returncode == 0, mine.stderr
    beta_ids = [mine.stdout.decode().strip()]
    prefix_len = 4
    while any(b.startswith(cid[:prefix_len]) for b in beta_ids):
        prefix_len += 1
    yield {
        "tag": tag,
        "cid": cid,
        "cname": f"{tag}-c",
        "cprefix": cid[:prefix_len],
        "nid": nid,
        "nname": f"{tag}-n",
        "vname": f"{tag}-v",
        "exec": exec_id,
        "beta_cid": beta_ids[0],
    }
    for args in (("rm", "-f", cid), ("network", "rm", nid), ("volume", "rm", f"{tag}-v")):
        stack.docker(*args)
    stack.docker("rm", "-f", beta_ids[0], tenant="beta")


def _refs(alpha: dict) -> dict[str, str]:
    return {
        "name": alpha["cname"],
        "full ID": alpha["cid"],
        "short ID": alpha["cid"][:12],
        "ID prefix": alpha["cprefix"],
    }


def _body(body):
    if body is None:
        return {}
    if isinstance(body, bytes):
        return {"data": body, "headers": {"Content-Type": "application/x-tar"}}
    return {"json": body}


@pytest.mark.parametrize(
    "method,template,body", CONTAINER_ROUTES, ids=[f"{m} {t}" for m, t, _ in CONTAINER_ROUTES]
)
def test_beta_gets_404_on_alphas_container(stack, alpha, method, template, body):
    for kind, ref in _refs(alpha).items():
        answer = stack.http(method, template.format(ref), tenant="beta", **_body(body))
        missing = stack.http(method, template.format("nosuch" + ref[:3]), tenant="beta", **_body(body))
        assert answer.status_code == 404 == missing.status_code, (kind, answer.status_code, answer.text)
        if method == "HEAD":
            continue
        if answer.headers.get("Content-Type") == "application/vnd.docker.raw-stream":
            # POST attach: dockerd's raw form of an error (gateway/routing.py raw_errors)
            assert answer.text.startswith("No such container"), (kind, answer.text)
        else:
            assert "No such container" in answer.json()["message"], (kind, answer.text)
        assert alpha["cid"] not in answer.text or kind == "full ID"


def test_alphas_container_is_untouched(stack, alpha):
    info = stack.http("GET", f"/containers/{alpha['cid']}/json").json()
    assert info["Name"] == "/" + alpha["cname"]
    assert info["State"]["Running"] is True and info["State"]["Paused"] is False


def test_beta_gets_404_on_alphas_exec(stack, alpha):
    for method, path in (
        ("GET", "/exec/{}/json"),
        ("POST", "/exec/{}/start"),
        ("POST", "/exec/{}/resize?h=1&w=1"),
    ):
        answer = stack.http(method, path.format(alpha["exec"]), tenant="beta", json={"Detach": True})
        assert answer.status_code == 404, answer.text
        assert answer.json()["message"] == f"No such exec instance: {alpha['exec']}"
    assert stack.http("GET", f"/exec/{alpha['exec']}/json").status_code == 200


def test_beta_gets_404_on_alphas_network(stack, alpha):
    beta_net = stack.http(
        "POST", "/networks/create", tenant="beta", json={"Name": alpha["tag"] + "-bn"}
    ).json()["Id"]
    try:
        for ref in (alpha["nname"], alpha["nid"], alpha["nid"][:12], alpha["nid"][:6]):
            for method, path, body in (
                ("GET", f"/networks/{ref}", None),
                ("DELETE", f"/networks/{ref}", None),
                ("POST", f"/networks/{ref}/connect", {"Container": alpha["beta_cid"]}),
                ("POST", f"/networks/{ref}/disconnect", {"Container": alpha["beta_cid"]}),
            ):
                answer = stack.http(method, path, tenant="beta", **_body(body))
                assert answer.status_code == 404, (method, path, answer.text)
                assert answer.json()["message"] == f"network {ref} not found"
        # beta's own network, alpha's container: the container is the one that does not exist
        for ref in _refs(alpha).values():
            answer = stack.http(
                "POST", f"/networks/{beta_net}/connect", tenant="beta", json={"Container": ref}
            )
            assert answer.status_code == 404 and "No such container" in answer.text, answer.text
    finally:
        stack.http("DELETE", f"/networks/{beta_net}", tenant="beta")
    assert stack.http("GET", f"/networks/{alpha['nid']}").status_code == 200


def test_beta_gets_404_on_alphas_volume(stack, alpha):
    for method in ("GET", "DELETE"):
        answer = stack.http(method, f"/volumes/{alpha['vname']}", tenant="beta")
        assert answer.status_code == 404, answer.text
        assert answer.json()["message"] == f"get {alpha['vname']}: no such volume"
    assert stack.http("GET", f"/volumes/{alpha['vname']}").status_code == 200


@pytest.mark.parametrize(
    "option",
    [
        "--volumes-from {}",
        "--network container:{}",
        "--pid container:{}",
        "--ipc container:{}",
        "--link {}:x",
    ],
)
def test_create_references_do_not_reach_alphas_container(stack, alpha, option):
    for ref in _refs(alpha).values():
        args = option.format(ref).split()
        ours = stack.docker("run", "--rm", *args, "busybox", "true", tenant="beta")
        assert ours.returncode == 125, ours.stderr
        assert b"No such container" in ours.stderr, ours.stderr
        assert alpha["cid"][:12].encode() not in ours.stderr or ref.startswith(alpha["cid"][:12])


def test_create_with_alphas_volume_name_gets_betas_own(stack, alpha):
    stack.docker("run", "--rm", "-v", f"{alpha['vname']}:/d", "busybox", "sh", "-c", "echo alpha > /d/f")
    theirs = stack.docker(
        "run", "--rm", "-v", f"{alpha['vname']}:/d", "busybox", "cat", "/d/f", tenant="beta"
    )
    assert theirs.returncode == 1 and b"alpha" not in theirs.stdout
    stack.docker("volume", "rm", alpha["vname"], tenant="beta")
    mine = stack.docker("run", "--rm", "-v", f"{alpha['vname']}:/d", "busybox", "cat", "/d/f")
    assert mine.stdout == b"alpha\n"


def test_same_name_in_both_projects_on_one_instance(stack, alpha):
    name = alpha["tag"] + "-web"
    for tenant in ("alpha", "beta"):
        ran = stack.docker("run", "-d", "--name", name, "busybox", "sleep", "60", tenant=tenant)
        assert ran.returncode == 0, ran.stderr
    try:
        for tenant in ("alpha", "beta"):
            shown = stack.docker("ps", "--filter", f"name={name}", "--format", "{{.Names}}", tenant=tenant)
            assert shown.stdout.decode().split() == [name]
            inspected = stack.docker("inspect", "-f", "{{.Name}}", name, tenant=tenant)
            assert inspected.stdout.decode().strip() == "/" + name
        again = stack.docker("run", "-d", "--name", name, "busybox", "true")
        assert again.returncode == 125
        assert f'The container name "/{name}" is already in use'.encode() in again.stderr
    finally:
        for tenant in ("alpha", "beta"):
            stack.docker("rm", "-f", name, tenant=tenant)


def test_names_resolve_on_a_tenants_network(stack, alpha):
    net, db = alpha["tag"] + "-dns", alpha["tag"] + "-db"
    for tenant in ("alpha", "beta"):
        assert stack.docker("network", "create", net, tenant=tenant).returncode == 0
    try:
        assert (
            stack.docker("run", "-d", "--name", db, "--network", net, "busybox", "sleep", "60").returncode
            == 0
        )
        mine = stack.docker("run", "--rm", "--network", net, "busybox", "ping", "-c1", "-W2", db)
        assert mine.returncode == 0, mine.stderr
        theirs = stack.docker(
            "run", "--rm", "--network", net, "busybox", "ping", "-c1", "-W2", db, tenant="beta"
        )
        assert theirs.returncode != 0
    finally:
        stack.docker("rm", "-f", db)
        for tenant in ("alpha", "beta"):
            stack.docker("network", "rm", net, tenant=tenant)


@pytest.mark.shared  # its premise: a project uses an instance another project already has
def test_default_bridge_is_per_project(stack, alpha):
    """Containers that ask for no network share an instance but not a segment: alpha's own
    containers reach each other by address, beta's cannot reach alpha's; both see "bridge"
    as dockerd shows its default bridge (mode "default", the address at the top level)."""
    instance = stack.env["MOORAGE_INSTANCES"].split()[0]
    pin = ("--label", f"org.openstack.nova.instance={instance}")
    target, peer, stranger = (alpha["tag"] + suffix for suffix in ("-br", "-peer", "-stranger"))
    for name, tenant in ((target, "alpha"), (peer, "alpha"), (stranger, "beta")):
        ran = stack.docker("run", "-d", "--name", name, *pin, "busybox", "sleep", "120", tenant=tenant)
        assert ran.returncode == 0, ran.stderr
    try:
        shown = stack.docker(
            "inspect",
            "-f",
            "{{.HostConfig.NetworkMode}} {{.NetworkSettings.IPAddress}} "
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}}{{end}}",
            target,
        )
        mode, address, networks = shown.stdout.decode().split()
        assert mode == "default" and address and networks == f"bridge={address}"
        mine = stack.docker("exec", peer, "ping", "-c1", "-W2", address)
        assert mine.returncode == 0, mine.stdout
        linked = stack.docker(
            "run", "--rm", *pin, "--link", f"{target}:db", "busybox", "ping", "-c1", "-W2", "db"
        )
        assert linked.returncode == 0, linked.stderr  # a --link resolves on the project's bridge
        theirs = stack.docker("exec", stranger, "ping", "-c1", "-W2", address, tenant="beta")
        assert theirs.returncode != 0, theirs.stdout
        members = stack.http("GET", "/networks/bridge").json()["Containers"]
        assert {m["Name"] for m in members.values()} >= {target, peer}
        assert stranger not in {m["Name"] for m in members.values()}
        nets = stack.docker("network", "ls", "--format", "{{.Name}}").stdout.decode().split()
        assert nets.count("bridge") == 1
    finally:
        stack.docker("rm", "-f", target, peer)
        stack.docker("rm", "-f", stranger, tenant="beta")


def test_lists_show_only_the_callers_objects(stack, alpha):
    ps = stack.docker(
        "ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}", tenant="beta"
    ).stdout.decode()
    assert alpha["cid"] not in ps and alpha["cname"] not in ps
    assert alpha["beta_cid"] in ps
    nets = stack.docker("network", "ls", "--no-trunc", tenant="beta").stdout.decode()
    assert alpha["nid"] not in nets and alpha["nname"] not in nets and "bridge" in nets
    vols = stack.docker("volume", "ls", tenant="beta").stdout.decode()
    assert alpha["vname"] not in vols
    df = stack.http("GET", "/v1.41/system/df", tenant="beta").json()
    assert alpha["cid"] not in json.dumps(df["Containers"]) and alpha["vname"] not in json.dumps(
        df["Volumes"]
    )
    info = stack.http("GET", "/info", tenant="beta").json()
    listed = stack.http("GET", "/containers/json?all=1", tenant="beta").json()
    assert info["Containers"] == len(listed)
    bridge = stack.http("GET", "/networks/bridge", tenant="beta").json()
    assert alpha["cid"] not in bridge["Containers"] and alpha["beta_cid"] in bridge["Containers"]
    for answer in (ps, nets, vols, json.dumps(df), json.dumps(listed), json.dumps(bridge)):
        assert "org.openstack.moorage.project" not in answer


def test_events_carry_only_the_callers(stack, alpha):
    since = int(time.time()) - 1
    name = alpha["tag"] + "-ev"
    for tenant in ("alpha", "beta"):
        stack.docker("run", "--rm", "--name", name, "busybox", "true", tenant=tenant)
    stack.docker("network", "create", name + "-n")
    stack.docker("network", "rm", name + "-n")
    until = int(time.time()) + 1
    time.sleep(1.1)
    seen = {}
    for tenant in ("alpha", "beta"):
        answer = stack.http("GET", f"/events?since={since}&until={until}", tenant=tenant)
        seen[tenant] = [json.loads(line) for line in answer.text.splitlines() if line.strip()]
    alpha_ids = {e["Actor"]["ID"] for e in seen["alpha"] if e.get("Type") == "container"}
    beta_ids = {e["Actor"]["ID"] for e in seen["beta"] if e.get("Type") == "container"}
    assert alpha_ids and beta_ids and not alpha_ids & beta_ids
    assert any(
        e["Type"] == "network" and e["Actor"]["Attributes"].get("name") == name + "-n" for e in seen["alpha"]
    )
    assert not any(e["Type"] == "network" and name + "-n" in json.dumps(e) for e in seen["beta"])
    for tenant in ("alpha", "beta"):
        names = {e["Actor"]["Attributes"].get("name") for e in seen[tenant] if e["Type"] == "container"}
        assert name in names, names
        assert "org.openstack.moorage.project" not in json.dumps(seen[tenant])
