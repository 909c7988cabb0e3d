"""Shared fixtures for the unit tests."""

from __future__ import annotations

import uuid

import pytest

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
