"""Shared fixtures for the unit tests."""

from __future__ import annotations

import json
import uuid

import pytest

from gateway import config
from tests.pgserver import ThrowawayPostgres, server_bin


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL for this session (tests/pgserver.py)."""
    if server_bin() is None:
        pytest.skip(
            "PostgreSQL server binaries are absent (apt-get install postgresql; scripts/install-deps)"
        )
    server = ThrowawayPostgres().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the session's PostgreSQL."""
    return postgres_server.createdb("t" + uuid.uuid4().hex[:12])


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """Each test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/m.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def gateway_settings(tmp_path):
    """A gateway's settings for the Falcon test client: a scratch SQLite store, the embedded
    identity knowing one token (``tok-a``, a member of project ``pa``), and a policy file path
    (absent until a test writes it: every rule at its default)."""
    tokens = tmp_path / "identity.json"
    tokens.write_text(json.dumps({"tokens": {"tok-a": {"project_id": "pa", "roles": ["member"]}}}))
    return config.Settings(
        gateway=config.GatewaySettings(database=f"sqlite:///{tmp_path / 'db.sqlite'}"),
        identity=config.IdentitySettings(backend="embedded", token_file=str(tokens)),
        policy=config.PolicySettings(file=str(tmp_path / "policy.yaml")),
    )
