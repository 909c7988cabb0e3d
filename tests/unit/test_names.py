"""Names per project: the daemon's suffix, and answers turned back into the tenant's."""

import json
from types import SimpleNamespace

import pytest

from gateway import jsonbody
from gateway.context import Context
from gateway.services.events import EventJudge
from gateway.tenancy import PROJECT_LABEL, names, scope

ALPHA, BETA = "518441b49028471aba11254fc0deab83", "2d82155ed82647c2936697dc582b4419"


def test_daemon_names_differ_per_project_and_round_trip():
    a, b = names.to_daemon(ALPHA, "web"), names.to_daemon(BETA, "web")
    assert a != b and names.VALID_NAME.match(a) and names.VALID_NAME.match(b)
    assert names.to_tenant(ALPHA, a) == "web" and names.to_tenant(ALPHA, "/" + a) == "/web"
    # another project's daemon name is not turned into this project's
    assert names.to_tenant(ALPHA, b) == b
    assert names.to_daemon(ALPHA, "") == ""


def test_links_and_messages_are_turned_back():
    db, web = names.to_daemon(ALPHA, "db"), names.to_daemon(ALPHA, "web")
    assert names.link_to_tenant(ALPHA, f"/{web}/{db}") == "/web/db"
    assert names.link_to_tenant(ALPHA, f"/{db}:/{web}/db") == "/db:/web/db"
    assert names.text_to_tenant(ALPHA, f'name "/{web}" is already in use') == 'name "/web" is already in use'


def test_strip_names_covers_keys_lists_and_nested_values():
    d = names.to_daemon(ALPHA, "app")
    answer = {
        "Names": ["/" + names.to_daemon(ALPHA, "web")],
        "HostConfig": {"NetworkMode": d, "Binds": [f"{d}:/x"]},
        "NetworkSettings": {"Networks": {d: {"Aliases": ["web"]}}},
        "Other": names.to_daemon(BETA, "web"),
    }
    out = scope.strip_names(ALPHA, answer)
    assert out["Names"] == ["/web"] and out["HostConfig"] == {"NetworkMode": "app", "Binds": ["app:/x"]}
    assert list(out["NetworkSettings"]["Networks"]) == ["app"]
    assert out["Other"] == names.to_daemon(BETA, "web")


def test_names_stripped_on_the_encoded_answer_equal_strip_names():
    """Context.answer_json(names_of=...) (the merged container list) strips on the encoded text:
    the same bytes as strip_names on every value, escapes and non-ASCII text included."""
    d, w = names.to_daemon(ALPHA, "app"), names.to_daemon(ALPHA, "web")
    answer = [
        {
            "Names": ["/" + w],
            "Labels": {f"k.{d}": 'v\n"' + w + '"', "é": f"ü/{d}\\{d}"},
            "HostConfig": {"NetworkMode": d},
            "Other": names.to_daemon(BETA, "web"),
            "Created": 1.5,
            "N": None,
            "NetworkSettings": {"Networks": {d: {"Aliases": [w, "x" + w + "y"]}}},
        }
    ]
    ctx = Context(gw=None, req=None, resp=SimpleNamespace(), route=None, params={}, version="1.41")
    ctx.answer_json(answer, names_of=ALPHA)
    assert ctx.resp.data == jsonbody.encode(scope.strip_names(ALPHA, answer)) + b"\n"
    ctx.answer_json(answer)
    assert json.loads(ctx.resp.data) == answer


def _event(kind, attributes, actor_id="x"):
    return {"Type": kind, "Action": "create", "Actor": {"ID": actor_id, "Attributes": attributes}}


def test_event_judge_keeps_only_the_projects_events():
    judge = EventJudge(ALPHA)
    assert judge.keep(_event("container", {PROJECT_LABEL: ALPHA, "name": names.to_daemon(ALPHA, "web")}))
    assert not judge.keep(_event("container", {PROJECT_LABEL: BETA, "name": "web"}))
    assert not judge.keep(_event("container", {"name": "unlabelled"}))
    assert judge.keep(_event("network", {"name": names.to_daemon(ALPHA, "app"), "type": "bridge"}))
    assert not judge.keep(_event("network", {"name": names.to_daemon(BETA, "app"), "type": "bridge"}))
    assert judge.keep(_event("volume", {"driver": "local"}, names.to_daemon(ALPHA, "data")))
    assert not judge.keep(_event("volume", {"driver": "local"}, names.to_daemon(BETA, "data")))
    assert not judge.keep(_event("daemon", {"name": "host"}))


def test_event_rewrite_drops_the_label_and_the_suffix():
    judge = EventJudge(ALPHA)
    event = judge.rewrite(_event("container", {PROJECT_LABEL: ALPHA, "name": names.to_daemon(ALPHA, "web")}))
    assert event["Actor"]["Attributes"] == {"name": "web"}


def test_fields_under_any_spelling_are_seen():
    """dockerd reads `hostconfig` as HostConfig: a reference hidden under it must be rewritten too."""
    import pytest

    from gateway.errors import DockerError

    body = {
        "image": "busybox",
        "hostconfig": {"volumesfrom": ["x"], "MOUNTS": [{"source": "v", "type": "volume"}]},
        "labels": {"a": "b"},
        "networkingconfig": {"endpointsconfig": {"n": {"aliases": ["y"]}}},
    }
    scope.canonical_create(body)
    assert set(body) == {"Image", "HostConfig", "Labels", "NetworkingConfig"}
    assert body["HostConfig"] == {"VolumesFrom": ["x"], "Mounts": [{"Source": "v", "Type": "volume"}]}
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"n": {"Aliases": ["y"]}}}
    with pytest.raises(DockerError) as refused:
        scope.canonical_create({"Labels": {}, "labels": {}})
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "patterns,name,expected",
    [
        (["^/web$"], "/web", True),
        (["^web$"], "/web", True),
        (["^/web$"], "/web2", False),
        (["web$"], "/myweb", True),
        (["^web"], "/webapp", True),
        (["eb"], "/web", True),
        (["/web"], "/web", True),
        (["nomatch", "^/w"], "/web", True),
        (["("], "/web", False),  # not an expression: matches nothing, as in dockerd
        (["db"], "/web", False),
    ],
)
def test_name_filter_is_dockerds(patterns, name, expected):
    """dockerd's `name` filter: regular expressions over the name, with or without its slash."""
    assert names.matches(patterns, name) is expected


def test_random_names_have_dockerd_s_shape_and_are_valid_names():
    """Containers created without a name get one from the gateway (gateway/tenancy/randomnames.py)."""
    import re

    from gateway.tenancy import names, randomnames

    first = {randomnames.random_name() for _ in range(200)}
    assert all(re.fullmatch(r"[a-z]+_[a-z_]+", n) and names.VALID_NAME.match(n) for n in first)
    assert len(first) > 150  # random, not one name
    later = randomnames.random_name(1)
    assert re.fullmatch(r"[a-z]+_[a-z_]+[0-9]", later)  # a retry appends a digit, as dockerd does
