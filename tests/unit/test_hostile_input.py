"""Hostile and unusual request bodies get a 4xx in Docker's shape, never a 500 of the gateway's
own (Falcon test client; the agent is faked at gateway.agentclient.request)."""

import io
import json
import socket
import types

import pytest
from falcon import testing
from gunicorn.http.errors import InvalidChunkSize

from gateway import store
from gateway.app import Gateway
from gateway.dockerapi import ROUTES
from gateway.services import common
from relay.upstream import SocketReader, UpstreamResponse, parse_head

HEADERS = {"X-Auth-Token": "tok-a", "X-Auth-Project-Id": "pa", "Content-Type": "application/json"}


def answer(method: str, status: int, payload) -> UpstreamResponse:
    """A daemon's answer, read from a socket as the relay reads it."""
    body = json.dumps(payload).encode()
    ours, theirs = socket.socketpair()
    theirs.sendall(
        b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (status, len(body))
        + body
    )
    theirs.close()
    reader = SocketReader(ours)
    return UpstreamResponse(ours, reader, *parse_head(reader.read_head()), method)


@pytest.fixture
def client(tmp_path, monkeypatch, gateway_settings):
    settings = gateway_settings
    settings.placement.tenancy = "shared"  # one fake instance, not in the store, serves every call
    sent = []
    daemon = {"answer": (400, {"message": "Invalid container name (!)"})}

    def fake_request(endpoint, method, target, headers, body=None, **kw):
        # Read the body as the relay would, so a body that cannot be read fails here.
        data = body if isinstance(body, bytes | None) else b"".join(body)
        sent.append((method, target, data))
        return answer(method, *daemon["answer"])

    instance = types.SimpleNamespace(
        uuid="i1",
        state=store.INSTANCE_UP,
        agent_url="tcp://127.0.0.1:9",
        agent_secret="s",
        api_version="1.41",
        min_api_version="1.12",
    )
    monkeypatch.setattr("gateway.agentclient.request", fake_request)
    monkeypatch.setattr(common.instances, "live_instances", lambda settings: [instance])
    c = testing.TestClient(Gateway(settings, ROUTES))
    c.sent, c.daemon = sent, daemon
    return c


class Chunked(io.RawIOBase):
    """A request body as gunicorn's chunked reader hands it over, or fails to."""

    def __init__(self, data: bytes = b"", error: Exception | None = None):
        self.data, self.error = io.BytesIO(data), error

    def read(self, size=-1):
        if self.error is not None:
            raise self.error
        return self.data.read(size)


def chunked(client, method, path, stream, **kw):
    # No Content-Length, as a chunked request arrives from gunicorn.
    headers = {**HEADERS, "Transfer-Encoding": "chunked", **kw.pop("headers", {})}
    return client.simulate_request(
        method, path, headers=headers, extras={"wsgi.input": stream, "CONTENT_LENGTH": ""}, **kw
    )


def test_a_chunked_json_body_is_read_whole(client):
    body = json.dumps({"Image": "busybox", "HostConfig": {"Privileged": True}}).encode()
    resp = chunked(client, "POST", "/v1.41/containers/create", Chunked(body))
    # Read as empty, it would have reached the daemon; read whole, policy refuses it.
    assert resp.status_code == 403, resp.text
    assert "container:create:privileged" in resp.json["message"]
    assert client.sent == []


def test_a_chunked_json_body_over_the_limit_is_413(client):
    big = b'{"Image":"' + b"a" * (11 * 1024 * 1024) + b'"}'
    resp = chunked(client, "POST", "/v1.41/containers/create", Chunked(big))
    assert resp.status_code == 413 and "too large" in resp.json["message"]


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/v1.41/containers/create"),
        ("POST", "/v1.41/images/load"),
        ("POST", "/v1.41/networks/create"),
    ],
)
def test_a_bad_chunk_size_is_400(client, method, path):
    resp = chunked(client, method, path, Chunked(error=InvalidChunkSize(b"zz")))
    assert resp.status_code == 400, resp.text
    assert resp.headers["Content-Type"] == "application/json"
    assert "Invalid chunk size" in resp.json["message"]


def test_a_body_shorter_than_its_length_is_400(client):
    resp = client.simulate_post(
        "/v1.41/images/load",
        headers={**HEADERS, "Content-Type": "application/x-tar"},
        extras={"wsgi.input": io.BytesIO(b"x" * 10), "CONTENT_LENGTH": "100"},
    )
    assert resp.status_code == 400, resp.text
    assert "ended after 10 of its 100 bytes" in resp.json["message"]


@pytest.mark.parametrize("field", ["Memory", "NanoCpus", "CpuQuota"])
@pytest.mark.parametrize("literal", ["1e30", "100000000000000000000000", "9223372036854775808"])
@pytest.mark.parametrize("daemon_status", [500, 400])  # dockerd 20.10 says 500; newer engines, 400
def test_numbers_beyond_64_bits_are_judged_by_the_daemon(client, field, literal, daemon_status):
    message = (
        f"json: cannot unmarshal number {literal} into Go struct field "
        f"HostConfig.HostConfig.{field} of type int64"
    )
    client.daemon["answer"] = (daemon_status, {"message": message})
    raw = f'{{"Image":"busybox","HostConfig":{{"{field}":{literal}}}}}'
    resp = client.simulate_post("/v1.41/containers/create", headers=HEADERS, body=raw)
    assert resp.status_code == daemon_status, (
        resp.text
    )  # the daemon's own answer, as dockerd's clients get it
    assert resp.json["message"] == message
    # The probe carries the body as written and a name no daemon accepts: nothing is created.
    [(_, target, data)] = client.sent
    assert target.endswith("/containers/create?name=%21") and data == raw.encode()


def test_a_body_the_daemon_decodes_gets_the_gateways_own_400(client):
    resp = client.simulate_post(
        "/v1.41/containers/create", headers=HEADERS, body='{"Image":"busybox","HostConfig":{"Memory":1.5e99}}'
    )
    assert resp.status_code == 400 and "cannot interpret" in resp.json["message"]


@pytest.mark.parametrize(
    "path,raw,probe",
    [
        ("/v1.41/containers/create", '{"Image":"busybox","NetworkingConfig":"x"}', None),
        ("/v1.41/networks/create", '{"Name":"n1","Labels":"x"}', '{"Name":"n1","Labels":"x","Name":""}'),
        ("/v1.41/volumes/create", '{"Name":"v1","Labels":"x"}', '{"Name":"v1","Labels":"x","Name":"!"}'),
        ("/v1.41/volumes/create", '{ "Labels" : "x" } ', '{ "Labels" : "x","Name":"!"}'),
    ],
)
def test_fields_of_the_wrong_type_are_refused_in_the_daemons_words(client, path, raw, probe):
    message = "json: cannot unmarshal string into Go struct field X.Labels of type map[string]string"
    client.daemon["answer"] = (400, {"message": message})
    resp = client.simulate_post(path, headers=HEADERS, body=raw)
    assert resp.status_code == 400 and resp.json["message"] == message
    [(_, _, data)] = client.sent
    assert data == (probe or raw).encode()


def test_deeply_nested_filters_are_400(client):
    filters = "[" * 100000 + "]" * 100000
    resp = client.simulate_get("/v1.41/containers/json", headers=HEADERS, params={"filters": filters})
    assert resp.status_code == 400, resp.text
    assert "nested too deeply" in resp.json["message"]
