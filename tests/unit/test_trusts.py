"""Keystone trusts of the nova provider (dedicated tenancy): sealed at rest, one per project,
reused. The provider acting in each project through its own trust: tests/unit/test_pool.py (with
its Nova double); against the real Keystone and Nova: the nova lane (tests/nova/test_pool.py)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from gateway import config, store
from gateway.tenancy.trusts import Delegation, Sealer, TrustKeyError, TrustStore


def key_file(tmp_path, *keys: bytes, name="trust.key"):
    path = tmp_path / name
    path.write_bytes(b"\n".join(keys) + b"\n")
    return str(path)


# -- sealing -------------------------------------------------------------------------------------


def test_a_trust_id_is_sealed_at_rest_and_opens_again(tmp_path, db_url):
    store.init(db_url)
    try:
        trusts = TrustStore(Sealer.from_file(key_file(tmp_path, Fernet.generate_key())))
        trusts.put("proj-a", "0123456789abcdef-trust-a", "user-a", "moorage", ["member"])
        row = store.trust_of("proj-a")
        assert row is not None and "0123456789abcdef-trust-a" not in row.sealed_id
        got = trusts.get("proj-a")
        assert got is not None and got.trust_id == "0123456789abcdef-trust-a"
        assert got.trustor_user_id == "user-a" and got.roles == ("member",)
        assert "0123456789abcdef" not in repr(got), "a trust ID never reaches a log line"
    finally:
        store.close()


def test_the_clear_trust_id_is_nowhere_in_the_database_file(tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    store.init(url)
    trusts = TrustStore(Sealer.from_file(key_file(tmp_path, Fernet.generate_key())))
    trusts.put("proj-a", "b7d3f0c9a1e84d2a9c6b5e4f3a2d1c0b", "user-a", "moorage", ["member"])
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("m.db*"))
    assert b"b7d3f0c9a1e84d2a9c6b5e4f3a2d1c0b" not in raw
    assert b"proj-a" in raw  # (the file was read: the row is there)


def test_a_new_key_goes_first_and_the_old_one_still_opens(tmp_path, db_url):
    old, new = Fernet.generate_key(), Fernet.generate_key()
    store.init(db_url)
    try:
        TrustStore(Sealer.from_file(key_file(tmp_path, old))).put("p", "trust-1", "u", "m", ["member"])
        rotated = TrustStore(Sealer.from_file(key_file(tmp_path, new, old, name="rotated.key")))
        assert rotated.get("p").trust_id == "trust-1"  # type: ignore[union-attr]
        without_old = TrustStore(Sealer.from_file(key_file(tmp_path, new, name="new.key")))
        with pytest.raises(TrustKeyError, match="keep the old key on a later line"):
            without_old.get("p")
    finally:
        store.close()


@pytest.mark.parametrize(
    ("content", "why"),
    [(None, "No such file"), (b"", "no Fernet key"), (b"not-a-key\n", "not a Fernet key")],
)
def test_an_unusable_key_file_is_refused_naming_it(tmp_path, content, why):
    path = tmp_path / "trust.key"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TrustKeyError, match=why) as exc:
        Sealer.from_file(str(path))
    assert "[nova] trust_key_file" in str(exc.value)
    with pytest.raises(TrustKeyError, match="not set"):
        Sealer.from_file("")


# -- one per project, reused --------------------------------------------------------------------


def test_one_trust_per_project_the_first_kept_is_reused(tmp_path, db_url):
    store.init(db_url)
    try:
        trusts = TrustStore(Sealer.from_file(key_file(tmp_path, Fernet.generate_key())))
        first = trusts.put("p", "trust-p-1", "alice", "moorage", ["member"])
        # another worker made one at the same moment: the one kept first wins
        second = trusts.put("p", "trust-p-2", "bob", "moorage", ["member"])
        assert first.trust_id == second.trust_id == "trust-p-1"
        trusts.put("q", "trust-q", "carol", "moorage", ["member"])
        assert trusts.projects() == ["p", "q"]
        assert trusts.get("q").trust_id == "trust-q"  # type: ignore[union-attr]
        assert trusts.get("r") is None
        # forgetting is of that trust only: a newer one of the project stays
        trusts.forget(first)
        assert trusts.get("p") is None
        newer = trusts.put("p", "trust-p-3", "alice", "moorage", ["member"])
        trusts.forget(first)
        assert trusts.get("p") == newer
    finally:
        store.close()


def test_migration_adds_the_trust_table_to_a_database_of_dedicated_tenancy(tmp_path):
    from gateway.store import schema

    store.init(f"sqlite:///{tmp_path}/old.db", migrate=False)
    db = store.database.obj
    before = store.MIGRATIONS.index(schema._m_trusts)
    with db.atomic():
        db.create_tables([store.SchemaVersion], safe=True)
        for step in store.MIGRATIONS[:before]:
            step(db)
        store.SchemaVersion.create(version=before)
    assert not db.table_exists("trust")
    assert store.upgrade() == (before, store.SCHEMA_VERSION)
    assert db.table_exists("trust")
    store.close()


# -- how the caller's token reaches placement -----------------------------------------------------


def _ctx(backend: str, headers: dict):
    import falcon
    import falcon.testing

    from gateway.context import Context
    from gateway.routing import Route
    from gateway.services.common import delegation
    from gateway.tenancy import Identity

    settings = config.Settings(identity=config.IdentitySettings(backend=backend))
    gw = type("Gateway", (), {"settings": settings})()
    ctx = Context(
        gw=gw,
        req=falcon.testing.create_req(headers=headers),
        resp=falcon.Response(),
        route=Route("POST", "/containers/create", "ContainerCreate", lambda ctx: None),
        params={},
        version="1.41",
        identity=Identity(project_id="p1", project_name="alpha", user_id="u1", user_name="alice"),
    )
    return delegation(ctx)


def test_a_keystone_callers_token_is_its_delegation_and_an_embedded_one_is_none():
    got = _ctx("keystone", {"X-Auth-Token": "gAAAA-the-token", "X-Auth-Project-Id": "p1"})
    assert got == Delegation(
        token="gAAAA-the-token", user_id="u1", project_id="p1", user_name="alice", project_name="alpha"
    )
    assert "gAAAA" not in repr(got), "a token never reaches a log line"
    assert got.describe() == "project alpha (p1)"
    assert _ctx("embedded", {"X-Auth-Token": "tok-a", "X-Auth-Project-Id": "p1"}) is None
    assert _ctx("keystone", {"X-Auth-Project-Id": "p1"}) is None
