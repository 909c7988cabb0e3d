"""Named queries: what the layers above ask of the store, so that no SQL or model query chain
sits in a handler or a service. Each function is one short statement or transaction."""

from __future__ import annotations

import datetime as _dt

from gateway.store.db import database, is_postgres
from gateway.store.models import Container, ProjectLock


def lock_project(project: str) -> None:
    """Inside a transaction: serialise with every other quota decision for ``project``.
    On PostgreSQL a row lock (SELECT ... FOR UPDATE) on the project's lock row, made on
    demand; SQLite's BEGIN IMMEDIATE (gateway/store/db.py serialized) already serialises writers."""
    if not is_postgres():
        return
    ProjectLock.insert(project=project).on_conflict_ignore().execute()
    ProjectLock.select().where(ProjectLock.project == project).for_update().get()


# -- containers ---------------------------------------------------------------------------------


def forget_container(container_id: str) -> None:
    """The daemon says it is gone: drop it from the map (its execs go with it)."""
    Container.delete().where(Container.id == container_id).execute()


def container_named(project: str, name: str) -> Container | None:
    """The project's container row (a reservation included) holding ``name``."""
    return Container.get_or_none((Container.project == project) & (Container.name == name))


def creation_times(ids: list[str]) -> dict[str, _dt.datetime]:
    """The map's creation time of each container ID, read in one statement per 500 IDs."""
    # Written out: peewee takes longer to build an IN of 500 values than the database to answer it.
    db, convert = database.obj, Container.created_at.python_value
    created: dict[str, _dt.datetime] = {}
    for chunk in range(0, len(ids), 500):
        part = ids[chunk : chunk + 500]
        marks = ", ".join([db.param] * len(part))
        rows = db.execute_sql(f'SELECT "id", "created_at" FROM "container" WHERE "id" IN ({marks})', part)
        created.update((cid, convert(at)) for cid, at in rows)
    return created
