"""The tenant socket's policy and credentials (gateway/policy/mounts.py, gateway/tenancy/sockets.py,
gateway/services/tenantsocket.py); the socket itself runs on a stack in
tests/integration/test_tenant_socket.py."""

from __future__ import annotations

import datetime

import pytest

from gateway import config, store
from gateway.errors import DockerError
from gateway.policy import Checker
from gateway.services.tenantsocket import _socket_binds
from gateway.store import sockets as socket_store
from gateway.tenancy import Identity, sockets
from gateway.tenancy.certs import authenticate_request
from gateway.wire import SOCKET_CREDENTIAL_HEADER

ALPHA = Identity(
    project_id="alpha-id", project_name="alpha", user_id="u1", user_name="ann", roles=("member",)
)
ON = Checker(config.PolicySettings(), config.LimitsSettings())
OFF = Checker(config.PolicySettings(tenant_socket=False), config.LimitsSettings())


def refusal(call, *args, **kwargs) -> DockerError:
    with pytest.raises(DockerError) as caught:
        call(*args, **kwargs)
    return caught.value


SOCKET_BODIES = [
    {"HostConfig": {"Binds": ["/var/run/docker.sock:/var/run/docker.sock"]}},
    {"HostConfig": {"Binds": ["/run/docker.sock:/var/run/docker.sock:rw"]}},
    {"HostConfig": {"Binds": ["//var/run/../run/docker.sock:/s"]}},
    {"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/d.sock"}]}},
    {"Binds": ["/var/run/docker.sock:/var/run/docker.sock"]},  # the pre-1.24 top-level shape
]


@pytest.mark.parametrize("body", SOCKET_BODIES, ids=[str(i) for i in range(len(SOCKET_BODIES))])
def test_the_sockets_usual_paths_are_the_tenant_socket_unless_it_is_off(body):
    ON.container_create(ALPHA, dict(body), version="1.23" if "Binds" in body else "1.41")
    err = refusal(OFF.container_create, ALPHA, dict(body), version="1.23")
    assert err.status == 403 and "container:create:docker_socket" in err.message
    # What policy lets through is what the service rewrites: every one of them is found.
    assert _socket_binds(body)


@pytest.mark.parametrize(
    "fields",
    [
        {"Binds": ["/run/containerd/containerd.sock:/c.sock"]},
        {"Binds": ["/var/run:/r"]},  # a directory holding the socket is still the instance's
        {"Binds": ["/var/run/docker.sock.d/x.sock:/s"]},
        {
            "Mounts": [
                {
                    "Type": "volume",
                    "Source": "v",
                    "Target": "/x",
                    "VolumeOptions": {
                        "DriverConfig": {
                            "Name": "local",
                            "Options": {"o": "bind", "device": "/var/run/docker.sock"},
                        }
                    },
                }
            ]
        },
    ],
)
def test_every_other_socket_path_stays_refused(fields):
    with pytest.raises(DockerError) as err:
        ON.container_create(ALPHA, {"HostConfig": fields})
    assert err.value.status == 403
    assert not _socket_binds({"HostConfig": fields})


@pytest.fixture
def db(tmp_path):
    store.init(f"sqlite:///{tmp_path}/m.db")
    store.Instance.create(uuid="i1", agent_url="tcp://198.18.0.11:2376", agent_secret="s")
    yield
    store.close()


def _container(container_id: str, project: str = "alpha-id") -> None:
    store.Container.create(id=container_id, name="c-" + container_id, project=project, instance="i1")


def test_a_credential_counts_while_its_container_exists(db):
    issued = sockets.issue(ALPHA, "i1", "/var/run/docker.sock", 3600)
    headers = {SOCKET_CREDENTIAL_HEADER.upper(): issued.credential}
    # Not yet: its container is not created.
    assert "not (or no longer)" in refusal(sockets.identify, issued.credential).message
    _container("c1")
    sockets.bind(issued.id, "c1")
    identity = authenticate_request(None, None, headers)  # type: ignore[arg-type]
    assert (identity.project_id, identity.user_name, identity.roles) == ("alpha-id", "ann", ("member",))
    row = socket_store.credential(issued.id)
    assert row is not None and issued.credential.split(".")[1] not in row.secret_hash  # kept hashed
    wrong = issued.credential[:-2] + ("AA" if not issued.credential.endswith("AA") else "BB")
    assert refusal(sockets.identify, wrong).status == 401
    store.forget_container("c1")  # removed, or removed by its daemon (--rm)
    err = refusal(sockets.identify, issued.credential)
    assert err.status == 401 and "no longer" in err.message


def test_a_credential_ends_when_revoked_or_expired(db):
    _container("c2")
    revoked = sockets.issue(ALPHA, "i1", "/run/docker.sock", 3600)
    sockets.bind(revoked.id, "c2")
    sockets.revoke(revoked.id)
    assert "closed" in refusal(sockets.identify, revoked.credential).message
    expiring = sockets.issue(ALPHA, "i1", "/run/docker.sock", 3600)
    sockets.bind(expiring.id, "c2")
    sockets.identify(expiring.credential)
    socket_store.SocketCredential.update(expires_at=store.utcnow() - datetime.timedelta(seconds=1)).where(
        socket_store.SocketCredential.id == expiring.id
    ).execute()
    with pytest.raises(DockerError, match="expired"):
        sockets.identify(expiring.credential)


def test_another_projects_container_is_no_credentials_container(db):
    _container("c3", project="beta-id")
    issued = sockets.issue(ALPHA, "i1", "/var/run/docker.sock", 3600)
    sockets.bind(issued.id, "c3")
    with pytest.raises(DockerError, match="not \\(or no longer\\) in its project"):
        sockets.identify(issued.credential)
