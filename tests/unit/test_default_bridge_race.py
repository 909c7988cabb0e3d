"""Racing creates can each make the project's default bridge (dockerd's duplicate check is not
atomic); every racer keeps the same one and removes the others."""

from types import SimpleNamespace

from gateway.services import networks


def test_keep_one_keeps_the_bridge_in_use_else_the_oldest(monkeypatch):
    name = "bridge.mabc"
    daemon = {
        "n2": {"Id": "n2", "Name": name, "Created": "2026-01-01T00:00:02Z", "Containers": {}},
        "n1": {"Id": "n1", "Name": name, "Created": "2026-01-01T00:00:01Z", "Containers": {}},
        "n3": {"Id": "n3", "Name": name, "Created": "2026-01-01T00:00:03Z", "Containers": {"c": {}}},
        "x": {"Id": "x", "Name": "other", "Created": "2026-01-01T00:00:00Z", "Containers": {}},
    }
    deleted = []

    def fake_call(ctx, instance, method, path, *, query="", body=None, timeout=60):
        if method == "GET" and path == "/networks":
            return 200, [{"Id": n["Id"], "Name": n["Name"]} for n in daemon.values()]
        if method == "GET":
            return 200, daemon[path.rsplit("/", 1)[1]]
        deleted.append(path.rsplit("/", 1)[1])
        return 204, None

    monkeypatch.setattr(networks, "call", fake_call)
    networks.keep_one(SimpleNamespace(), SimpleNamespace(uuid="i1"), name)
    assert sorted(deleted) == ["n1", "n2"]  # n3 has a container: it stays

    deleted.clear()
    del daemon["n3"]
    networks.keep_one(SimpleNamespace(), SimpleNamespace(uuid="i1"), name)
    assert deleted == ["n2"]  # none in use: the oldest stays


def test_keep_one_leaves_a_single_bridge_alone(monkeypatch):
    calls = []

    def fake_call(ctx, instance, method, path, **kw):
        calls.append((method, path))
        return 200, [{"Id": "n1", "Name": "bridge.mabc"}]

    monkeypatch.setattr(networks, "call", fake_call)
    networks.keep_one(SimpleNamespace(), SimpleNamespace(uuid="i1"), "bridge.mabc")
    assert calls == [("GET", "/networks")]
