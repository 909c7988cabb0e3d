"""The policy checks run in the handlers, before anything reaches an instance (Falcon test client,
no instance registered: a request that passes policy answers 503 or 404, never 403)."""

import json

import pytest
from falcon import testing

from gateway.app import Gateway
from gateway.dockerapi import ROUTES

HEADERS = {"X-Auth-Token": "tok-a", "X-Auth-Project-Id": "pa"}


@pytest.fixture
def client(tmp_path, monkeypatch, gateway_settings):
    settings = gateway_settings
    sent = []
    monkeypatch.setattr(
        "gateway.agentclient.request", lambda *a, **k: sent.append(a) or pytest.fail("forwarded")
    )
    gw = Gateway(settings, ROUTES)
    c = testing.TestClient(gw)
    c.sent = sent
    c.policy = tmp_path / "policy.yaml"
    return c


def post(client, path, body=None, *, raw=None, ctype="application/json", **kw):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    return client.simulate_post(path, body=data, headers={**HEADERS, "Content-Type": ctype}, **kw)


@pytest.mark.parametrize(
    "path,body,rule",
    [
        (
            "/v1.41/containers/create",
            {"Image": "busybox", "HostConfig": {"Privileged": True}},
            "container:create:privileged",
        ),
        (
            "/containers/create",
            {"Image": "busybox", "HostConfig": {"Binds": ["/:/host"]}},
            "container:create:bind_mount",
        ),
        ("/v1.24/containers/create", {"Image": "busybox", "Privileged": True}, "container:create:privileged"),
        (
            "/v1.41/containers/abc/update",
            {"Devices": [{"PathOnHost": "/dev/sda"}]},
            "container:update:devices",
        ),
        ("/v1.41/containers/abc/exec", {"Cmd": ["sh"], "Privileged": True}, "exec:create:privileged"),
        (
            "/v1.41/volumes/create",
            {"Name": "v", "DriverOpts": {"type": "none", "o": "bind", "device": "/etc"}},
            "volume:create:host_bind",
        ),
    ],
)
def test_refused_in_dockers_shape_before_anything_is_forwarded(client, path, body, rule):
    resp = post(client, path, body)
    assert resp.status_code == 403
    assert resp.headers["Content-Type"] == "application/json"
    assert f'policy rule "{rule}"' in resp.json["message"]
    assert client.sent == []


def test_a_start_body_is_refused_on_every_version(client):
    """Before 1.24 a start's HostConfig replaced the container's, unseen by tenancy and policy:
    those versions are refused outright, and a start body on every version the gateway speaks."""
    for version in ("v1.24", "v1.41", "v1.55"):
        resp = post(client, f"/{version}/containers/abc/start", {"Privileged": True})
        assert resp.status_code == 400 and "non-empty request body" in resp.json["message"]
    old = post(client, "/v1.23/containers/abc/start", {"Privileged": True})
    assert old.status_code == 400 and b"too old" in old.content
    assert client.sent == []


def test_build_with_host_networking_is_refused(client):
    resp = client.simulate_post(
        "/v1.41/build",
        query_string="t=x&networkmode=host",
        body=b"tar",
        headers={**HEADERS, "Content-Type": "application/x-tar"},
    )
    assert resp.status_code == 403 and "image:build:host_network" in resp.json["message"]


def test_allowed_requests_get_past_policy(client):
    # No instance is registered: past policy, a create answers 503 and a reference 404.
    assert post(client, "/v1.41/containers/create", {"Image": "busybox"}).status_code == 503
    assert post(client, "/v1.41/containers/abc/update", {"Memory": 1 << 30}).status_code == 404
    assert post(client, "/v1.41/containers/abc/exec", {"Cmd": ["sh"]}).status_code == 404
    assert post(client, "/v1.41/volumes/create", {"Name": "v"}).status_code == 503
    assert post(client, "/v1.41/containers/abc/start").status_code == 404
    assert post(client, "/v1.24/containers/abc/start").status_code == 404


def test_a_policy_file_allows_through_the_handlers(client):
    body = {"Image": "busybox", "HostConfig": {"Privileged": True}}
    assert post(client, "/v1.41/containers/create", body).status_code == 403
    client.policy.write_text('"container:create:privileged": "project_id:pa"\n')
    assert post(client, "/v1.41/containers/create", body).status_code == 503


def test_trailing_bytes_after_the_json_do_not_smuggle_a_body_past_policy(client):
    # dockerd's json.Decoder reads the first value and ignores the rest.
    resp = post(client, "/v1.41/containers/create", raw=b'{"HostConfig":{"Privileged":true}} trailing')
    assert resp.status_code == 403


def test_deeply_nested_bodies_are_a_400_not_a_crash(client):
    raw = b'{"Image":"busybox","X":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    resp = post(client, "/v1.41/containers/create", raw=raw)
    assert resp.status_code == 400 and "nested" in resp.json["message"]


def test_body_size_limit_is_413(client):
    raw = b'{"Image":"' + b"x" * (10 * 1024 * 1024) + b'"}'
    resp = post(client, "/v1.41/containers/create", raw=raw)
    assert resp.status_code == 413 and "too large" in resp.json["message"]


def test_oversize_name_and_malformed_query_are_400_or_judged_never_500(client):
    resp = post(client, "/v1.41/containers/create", {"Image": "busybox"}, query_string="name=" + "n" * 300)
    assert resp.status_code == 400 and "limits.max_name_length" in resp.json["message"]
    for query in ("name=%ff%fe", "name=%zz", "name=a&name=b", "name="):
        assert post(
            client, "/v1.41/containers/create", {"Image": "busybox"}, query_string=query
        ).status_code in (400, 503)
    resp = post(client, "/v1.41/containers/abc/rename", query_string="name=" + "n" * 300)
    assert resp.status_code == 400


@pytest.mark.parametrize(
    "query",
    [
        "fromSrc=http%3A%2F%2F169.254.169.254%2Flatest%2Fmeta-data%2F&repo=x",
        "fromSrc=169.254.169.254",
        "fromImage=&fromSrc=-&fromSrc=http%3A%2F%2F169.254.169.254%2F",  # dockerd: no fromImage is an import
    ],
)
def test_import_from_a_url_is_refused_before_anything_is_forwarded(client, query):
    resp = client.simulate_post(
        "/v1.41/images/create",
        query_string=query,
        body=b"",
        headers={**HEADERS, "Content-Type": "text/plain"},
    )
    assert resp.status_code == 403 and 'policy rule "image:import:url"' in resp.json["message"]
    assert client.sent == []


def test_import_from_the_body_gets_past_policy(client):
    resp = client.simulate_post(
        "/v1.41/images/create",
        query_string="fromSrc=-&repo=x",
        body=b"tar",
        headers={**HEADERS, "Content-Type": "application/x-tar"},
    )
    assert resp.status_code == 503  # no instance: past policy


def test_image_create_parameters_in_a_form_body_are_refused(client):
    # Go's ParseForm: a form body's fromSrc would take precedence over the query's "-"
    resp = client.simulate_post(
        "/v1.41/images/create",
        query_string="fromSrc=-",
        body=b"fromSrc=http%3A%2F%2F169.254.169.254%2F",
        headers={**HEADERS, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 400 and "not as a form" in resp.json["message"]
    assert client.sent == []


@pytest.mark.parametrize(
    "body,rule",
    [
        ({"Name": "n", "Driver": "macvlan", "Options": {"parent": "eth0"}}, "network:create:driver"),
        (
            {"Name": "n", "Options": {"com.docker.network.bridge.name": "docker0"}},
            "network:create:bridge_name",
        ),
        (
            {"name": "n", "options": {"com.docker.network.bridge.host_binding_ipv4": "127.0.0.1"}},
            "network:create:driver_opts",
        ),
    ],
)
def test_network_create_refused_before_anything_is_forwarded(client, body, rule):
    resp = post(client, "/v1.41/networks/create", body)
    assert resp.status_code == 403 and f'policy rule "{rule}"' in resp.json["message"]
    assert client.sent == []
    # Allowed, a bridge network is the gateway's own (services/spans.py): no daemon is asked.
    assert post(client, "/v1.41/networks/create", {"Name": "n"}).status_code == 201
    assert client.sent == []


@pytest.mark.parametrize(
    "bindings,text",
    [
        ({"80/tcp": [{"HostIp": "", "HostPort": "80"}]}, 'policy rule "container:create:privileged_ports"'),
        (
            {"80/tcp": [{"HostIp": "198.18.0.5", "HostPort": "8080"}]},
            'policy rule "container:create:host_ip"',
        ),
        ({"80/tcp": [{"HostPort": "2376"}]}, "reserved for Moorage"),
        ({"80/tcp": [{"HostPort": "7001"}]}, "reserved for Moorage"),  # a registered agent's port
    ],
)
def test_published_ports_refused_before_anything_is_forwarded(client, bindings, text):
    from gateway import store

    store.Instance.create(uuid="gone", agent_url="http://198.18.0.9:7001", agent_secret="s", daemon_down=True)
    for body in (
        {"Image": "busybox", "HostConfig": {"PortBindings": bindings}},
        {"Image": "busybox", "PortBindings": bindings},
    ):
        resp = post(client, "/v1.41/containers/create", body)
        assert resp.status_code == 403 and text in resp.json["message"], resp.json
    assert client.sent == []
    ok = {
        "Image": "busybox",
        "HostConfig": {
            "PortBindings": {"80/tcp": [{"HostPort": "8080"}, {"HostPort": ""}]},
            "PublishAllPorts": True,
        },
    }
    assert post(client, "/v1.41/containers/create", ok).status_code == 503
