"""What scripts/api-fuzz (schemathesis with Docker's API specs) found, kept as regressions: each
request below once got an internal 500 from the gateway; now the gateway answers as dockerd
does (the same request straight at the daemon gives the same status and words)."""

import pytest


def _both(stack, method: str, path: str, **kw):
    via = stack.http(method, "/v1.41" + path, **kw)
    direct = stack.direct_http(method, "/v1.41" + path, **kw)
    return via, direct


@pytest.mark.parametrize("tag", ["\u00ff", "-x", "a b"])
def test_push_with_a_tag_dockerd_refuses(stack, tag):
    via, direct = _both(
        stack, "POST", "/images/containerd/push", params={"tag": tag}, headers={"X-Registry-Auth": "e30="}
    )
    assert (via.status_code, via.json()) == (direct.status_code, direct.json())
    assert via.json() == {"message": "invalid tag format"}


def test_auth_with_a_json_null(stack):
    """dockerd drops the connection without an answer on this body; the gateway answered
    503 "instance ... is not answering", blaming the instance. Now a 400 saying what to send."""
    resp = stack.http("POST", "/v1.41/auth", data=b"null", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert "JSON object" in resp.json()["message"]
    # A real object still reaches the daemon, which answers about the registry.
    wrong = stack.http(
        "POST",
        "/v1.41/auth",
        json={"username": "u", "password": "p", "serveraddress": "127.0.0.1:1"},
        timeout=60,
    )
    assert wrong.status_code == 500 and "connection refused" in wrong.json()["message"]  # as dockerd


def test_attach_refusals_in_dockerds_raw_form(stack):
    """dockerd answers POST attach's errors on the connection it has taken over: a raw head with
    the raw-stream type and no version headers, then the plain message. The docker CLI and
    docker-py read that form; the gateway gave JSON (its own 404) or added Api-Version."""
    name = "raw-attach-refusal"
    for direct in (False, True):
        made = stack.docker("run", "-d", "--name", name, "busybox", "sleep", "60", direct=direct)
        assert made.returncode == 0, made.stderr
    try:
        for ref, query in (
            (name, {"stream": "1", "stdout": "1", "detachKeys": "notakey"}),
            ("nothing-here", {}),
        ):
            via, direct = _both(stack, "POST", f"/containers/{ref}/attach", params=query)
            assert via.status_code == direct.status_code == (400 if query else 404)
            for resp in (via, direct):
                assert resp.headers["Content-Type"] == "application/vnd.docker.raw-stream"
                assert "Api-Version" not in resp.headers
            assert via.text == direct.text and via.text.endswith("\r\n")
    finally:
        for direct in (False, True):
            stack.docker("rm", "-f", name, direct=direct)
