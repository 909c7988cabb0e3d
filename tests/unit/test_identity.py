import json

import pytest

from gateway.errors import DockerError
from gateway.tenancy import EmbeddedIdentity, authenticate


@pytest.fixture
def provider(tmp_path):
    path = tmp_path / "identity.json"
    path.write_text(
        json.dumps(
            {
                "development_only": True,
                "tokens": {
                    "tok-a": {"project_id": "pa", "project_name": "alpha", "roles": ["member"]},
                    "tok-adm": {"project_id": "padm", "project_name": "admin", "roles": ["admin"]},
                },
            }
        )
    )
    return EmbeddedIdentity(str(path))


def headers(token=None, project=None):
    out = {}
    if token is not None:
        out["X-AUTH-TOKEN"] = token
    if project is not None:
        out["X-AUTH-PROJECT-ID"] = project
    return out


@pytest.mark.parametrize(
    "token,project,missing",
    [
        (None, None, "X-Auth-Token and X-Auth-Project-Id"),
        ("tok-a", None, "X-Auth-Project-Id"),
        (None, "pa", "X-Auth-Token"),
        ("", "pa", "X-Auth-Token"),
    ],
)
def test_missing_headers_are_401_saying_how_to_log_in(provider, token, project, missing):
    with pytest.raises(DockerError) as exc:
        authenticate(provider, headers(token, project))
    assert exc.value.status == 401
    assert f"missing {missing} header" in exc.value.message
    assert "moorage login" in exc.value.message


def test_valid_token_gives_the_identity(provider):
    identity = authenticate(provider, headers("tok-a", "pa"))
    assert identity.project_id == "pa" and identity.project_name == "alpha" and not identity.is_admin
    assert authenticate(provider, headers("tok-adm", "padm")).is_admin


def test_unknown_token_is_401(provider):
    with pytest.raises(DockerError) as exc:
        authenticate(provider, headers("nope", "pa"))
    assert exc.value.status == 401


def test_token_of_another_project_is_401(provider):
    with pytest.raises(DockerError) as exc:
        authenticate(provider, headers("tok-a", "padm"))
    assert exc.value.status == 401
    assert "another project" in exc.value.message


def test_token_file_edits_apply_without_restart(provider, tmp_path):
    import os
    import time

    path = tmp_path / "identity.json"
    time.sleep(0.01)
    path.write_text(json.dumps({"tokens": {"tok-new": {"project_id": "pn"}}}))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert authenticate(provider, headers("tok-new", "pn")).project_id == "pn"
    with pytest.raises(DockerError):
        authenticate(provider, headers("tok-a", "pa"))
