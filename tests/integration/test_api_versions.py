"""Clients of API 1.44 and 1.55 against a 1.41 daemon, through Moorage's version table
(gateway/versions/table.py; docs/divergences.md#api-versions)."""

from __future__ import annotations

import docker
import pytest


def client(stack, version: str) -> docker.APIClient:
    api = docker.APIClient(base_url=stack.env["DOCKER_HOST"], version=version, timeout=60)
    api.headers.update(stack.headers())
    return api


def test_docker_version_shows_1_55_and_no_downgrade(stack):
    result = stack.docker("version")
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "API version:      1.55 (minimum version 1.24)" in out, out
    assert "downgraded" not in out


def test_ping_and_version_advertise_the_gateways_range(stack):
    ping = stack.http("GET", "/_ping")
    assert ping.headers["Api-Version"] == "1.55"
    version = stack.http("GET", "/v1.55/version").json()
    assert (version["ApiVersion"], version["MinAPIVersion"]) == ("1.55", "1.24")
    too_new = stack.http("GET", "/v1.56/version")
    assert too_new.status_code == 400
    assert (
        too_new.json()["message"] == "client version 1.56 is too new. Maximum supported API version is 1.55"
    )
    assert stack.http("GET", "/v1.23/version").status_code == 400


@pytest.mark.parametrize("version", ["1.44", "1.55"])
def test_create_on_several_networks(stack, unique, version):
    api = client(stack, version)
    nets = [api.create_network(f"{unique}-{n}")["Id"] for n in ("a", "b")]
    try:
        config = api.create_networking_config(
            {
                f"{unique}-a": api.create_endpoint_config(aliases=["db"]),
                f"{unique}-b": api.create_endpoint_config(),
            }
        )
        host = api.create_host_config(network_mode=f"{unique}-a")
        made = api.create_container(
            "busybox:latest", "sleep 60", name=unique, host_config=host, networking_config=config
        )
        api.start(made["Id"])
        info = api.inspect_container(made["Id"])
        networks = info["NetworkSettings"]["Networks"]
        assert set(networks) == {f"{unique}-a", f"{unique}-b"}
        short = made["Id"][:12]
        assert networks[f"{unique}-a"]["DNSNames"][:2] == [unique, "db"]
        assert short in networks[f"{unique}-b"]["DNSNames"]
        if version == "1.55":
            assert networks[f"{unique}-a"]["Aliases"] == ["db"]
            assert "IPAddress" not in info["NetworkSettings"]
            assert networks[f"{unique}-a"]["GwPriority"] == 0
        else:
            assert networks[f"{unique}-a"]["Aliases"] == ["db", short]
            assert "IPAddress" in info["NetworkSettings"]
        # Reachable by its own name on both networks.
        for net in ("a", "b"):
            probe = stack.docker(
                "run", "--rm", "--network", f"{unique}-{net}", "busybox:latest", "ping", "-c1", "-W2", unique
            )
            assert probe.returncode == 0, probe.stdout + probe.stderr
    finally:
        api.remove_container(unique, force=True)
        for net in nets:
            api.remove_network(net)


def test_a_failed_connect_takes_the_create_back(stack, unique):
    api = client(stack, "1.55")
    api.create_network(f"{unique}-a")
    api.create_network(f"{unique}-b")
    try:
        config = api.create_networking_config(
            {
                f"{unique}-a": api.create_endpoint_config(),
                # An address only on a network with the user's own subnet: this connect fails.
                f"{unique}-b": api.create_endpoint_config(ipv4_address="198.18.251.9"),
            }
        )
        host = api.create_host_config(network_mode=f"{unique}-a")
        with pytest.raises(docker.errors.APIError) as exc:
            api.create_container(
                "busybox:latest", "true", name=unique, host_config=host, networking_config=config
            )
        assert exc.value.status_code >= 400
        assert api.containers(all=True, filters={"name": unique}) == []
    finally:
        api.remove_network(f"{unique}-a")
        api.remove_network(f"{unique}-b")


@pytest.mark.parametrize("version", ["1.44", "1.55"])
def test_images_info_and_df_in_the_newer_shapes(stack, version):
    api = client(stack, version)
    image = api.inspect_image("busybox:latest")
    assert "VirtualSize" not in image
    assert ("ContainerConfig" in image) == (version == "1.44")  # gone from 1.45
    assert all("VirtualSize" not in i for i in api.images())
    assert api.info()["CDISpecDirs"] == []
    df = api.df()
    if version == "1.55":
        assert set(df) == {"ImageUsage", "ContainerUsage", "VolumeUsage", "BuildCacheUsage"}
        assert df["ImageUsage"]["TotalCount"] >= 1
    else:
        assert "Images" in df and "BuilderSize" not in df


def test_what_the_daemon_cannot_do_is_refused_by_name(stack, unique):
    api = client(stack, "1.55")
    check = {
        "Test": ["CMD", "true"],
        "Interval": 30 * 10**9,
        "StartPeriod": 10 * 10**9,
        "StartInterval": 10**9,
    }
    resp = stack.http(
        "POST",
        f"/v1.55/containers/create?name={unique}",
        json={"Image": "busybox:latest", "Healthcheck": check},
    )
    assert resp.status_code == 400 and "Healthcheck.StartInterval" in resp.json()["message"]
    assert api.containers(all=True, filters={"name": unique}) == []
    # The same at 1.41: dockerd of that version knows no StartInterval and ignores it.
    old = stack.http(
        "POST",
        f"/v1.41/containers/create?name={unique}",
        json={"Image": "busybox:latest", "Healthcheck": check},
    )
    assert old.status_code == 201, old.text
    api.remove_container(unique, force=True)
