"""Authentication, version negotiation, and the routes Moorage answers itself."""

import pytest


def test_missing_headers_are_401_in_dockers_shape(stack):
    resp = stack.http("GET", "/v1.41/containers/json", tenant=None)
    assert resp.status_code == 401
    assert resp.headers["Content-Type"] == "application/json"
    assert "moorage login" in resp.json()["message"]


def test_bad_token_and_other_projects_token_are_401(stack):
    alpha, beta = stack.headers("alpha"), stack.headers("beta")
    bad = stack.http("GET", "/_ping", tenant=None, headers={**alpha, "X-Auth-Token": "garbage"})
    assert bad.status_code == 401
    crossed = stack.http(
        "GET",
        "/_ping",
        tenant=None,
        headers={"X-Auth-Token": alpha["X-Auth-Token"], "X-Auth-Project-Id": beta["X-Auth-Project-Id"]},
    )
    assert crossed.status_code == 401 and "another project" in crossed.json()["message"]


def test_cli_without_credentials_fails_and_says_how_to_log_in(stack):
    result = stack.docker("ps", tenant=None, env={"DOCKER_CONFIG": "/nonexistent-moorage-config"})
    assert result.returncode == 1
    assert b"moorage login" in result.stderr


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_ping_carries_the_negotiation_headers(stack, method):
    ours = stack.http(method, "/_ping")
    theirs = stack.direct_http(method, "/_ping")
    assert ours.status_code == theirs.status_code == 200
    for header in ("Docker-Experimental", "Ostype", "Cache-Control", "Pragma", "Content-Type"):
        assert ours.headers[header] == theirs.headers[header], header
    # The gateway's own range, translated to the daemon's (docs/divergences.md#api-versions).
    assert (ours.headers["Api-Version"], theirs.headers["Api-Version"]) == ("1.55", "1.41")
    assert ours.content == theirs.content


@pytest.mark.parametrize(
    "path",
    [
        "/v1.41/nope",
        "/nope",
        "/v1.41/swarm",
        "/v1.41/services",
        "/v1.41/nodes/x",
        "/v1.41/secrets",
    ],
)
def test_same_answer_as_dockerd(stack, path):
    ours, theirs = stack.http("GET", path), stack.direct_http("GET", path)
    assert ours.status_code == theirs.status_code
    assert ours.headers["Content-Type"] == theirs.headers["Content-Type"]
    if theirs.headers["Content-Type"] == "application/json":
        assert ours.json() == theirs.json()
    else:
        assert ours.text.strip() == theirs.text.strip()


def test_plugins_read_as_none_installed_and_changes_are_refused_with_a_reason(stack):
    for path in ("/v1.41/plugins", "/v1.41/plugins/nope/json"):
        ours, theirs = stack.http("GET", path), stack.direct_http("GET", path)
        assert (ours.status_code, ours.json()) == (theirs.status_code, theirs.json())
    refused = stack.http("POST", "/v1.41/plugins/pull?remote=x")
    assert refused.status_code == 403 and "plugins" in refused.json()["message"]


def test_cli_inspect_of_an_unknown_name_says_no_such_object(stack):
    ours, theirs = (
        stack.docker("inspect", "nothing-by-this-name"),
        stack.docker("inspect", "nothing-by-this-name", direct=True),
    )
    assert (ours.returncode, ours.stderr) == (theirs.returncode, theirs.stderr)


def test_ps_filters_in_the_clis_map_form(stack, unique):
    assert stack.docker("create", "--name", unique, "busybox", "true").returncode == 0
    try:
        listed = stack.docker("ps", "-a", "--filter", f"name={unique}", "--format", "{{.Names}}")
        assert (listed.returncode, listed.stdout) == (0, f"{unique}\n".encode())
    finally:
        stack.docker("rm", unique)


def test_version_states_the_gateways_range(stack):
    resp = stack.http("GET", "/v1.24/version")
    assert resp.status_code == 200
    body = resp.json()
    assert body["ApiVersion"] == resp.headers["Api-Version"] == "1.55"
    assert body["MinAPIVersion"] == "1.24"


@pytest.mark.parametrize(("path", "message"), [("/v1.99/version", "too new"), ("/v1.11/version", "too old")])
def test_versions_out_of_range_in_dockerds_words(stack, path, message):
    ours, theirs = stack.http("GET", path), stack.direct_http("GET", path)
    assert ours.status_code == theirs.status_code == 400
    assert ours.headers["Content-Type"] == theirs.headers["Content-Type"]
    # The words are dockerd's; the range is the gateway's (1.24-1.55), not the daemon's.
    assert message in ours.text and ("1.55" in ours.text or "1.24" in ours.text)


def test_malformed_bodies_get_dockerds_errors_and_create_nothing(stack):
    before = {c["Id"] for c in stack.http("GET", "/v1.41/containers/json?all=1").json()}
    for body, ctype in ((b"{bad", "application/json"), (b"{}", "text/plain"), (b"", "application/json")):
        ours = stack.http("POST", "/v1.41/containers/create", data=body, headers={"Content-Type": ctype})
        theirs = stack.direct_http(
            "POST", "/v1.41/containers/create", data=body, headers={"Content-Type": ctype}
        )
        assert (ours.status_code, ours.json()) == (theirs.status_code, theirs.json()), body
    after = {c["Id"] for c in stack.http("GET", "/v1.41/containers/json?all=1").json()}
    assert after - before == set()  # nothing created (earlier --rm containers may still be going)


def test_oversized_body_is_413(stack):
    resp = stack.http(
        "POST",
        "/v1.41/containers/create",
        data=b"{" + b" " * (11 * 1024 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 413 and "too large" in resp.json()["message"]


def test_unknown_container_is_dockers_404(stack):
    ours = stack.http("GET", "/v1.41/containers/doesnotexist/json")
    theirs = stack.direct_http("GET", "/v1.41/containers/doesnotexist/json")
    assert (
        (ours.status_code, ours.json())
        == (theirs.status_code, theirs.json())
        == (404, {"message": "No such container: doesnotexist"})
    )


def test_oversized_header_is_refused_in_dockers_shape(stack):
    resp = stack.http("GET", "/_ping", headers={"X-Big": "a" * 100000})
    assert resp.status_code == 431
    assert resp.headers["Content-Type"] == "application/json"
    assert "too large" in resp.json()["message"]
