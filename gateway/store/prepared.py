"""Selects whose SQL is compiled once per process, for the reads every request makes.

peewee builds a query's SQL anew each time it runs. For the reads on the hot path (a
container by ID or name, a project's instances), building the SQL takes several times as long
as the database takes to answer it: profiled on an inspect through the gateway, most of the
resolve step was peewee walking its query tree. A ``Prepared`` select is built once with
probe values standing for its arguments, its SQL kept, and each later call only puts the
arguments in the probes' places and runs that SQL, rows made by the same query's own row
wrapper (joined models included).

It checks itself before it trusts the SQL: the query built from the first call's real
arguments must give the same SQL, and the same parameters as the probes' places filled with
those arguments. A query whose shape or parameters depend on the values (an IN list of the
arguments, a LIKE pattern made from one) fails that check and is simply built each time.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable
from typing import Any

import peewee

from gateway.store.db import database

log = logging.getLogger("moorage.store")


def _probe(index: int, example: Any) -> Any:
    """A value of the argument's kind that no query constant can equal."""
    if isinstance(example, _dt.datetime):
        return _dt.datetime(1, 1, 1, 0, 0, 0, index + 1)
    if isinstance(example, int) and not isinstance(example, bool):
        return -7_345_000_001 - index
    return f"\x00prepared-probe-{index}\x00"


def _same(param: Any, probe: Any) -> bool:
    return type(param) is type(probe) and param == probe


class Prepared:
    """``Prepared(build)``: ``build(*args)`` returns a peewee select; calling the Prepared
    with the same arguments returns its rows as a list, with the SQL compiled once per
    database (SQLite and PostgreSQL spell parameters differently)."""

    def __init__(self, build: Callable[..., peewee.SelectBase]):
        self.build = build
        # The database's class (the SQL differs by dialect) -> (query, sql, places), or None
        # when the query cannot be prepared.
        self._compiled: dict[type, tuple[peewee.SelectBase, str, list[tuple[bool, Any]]] | None] = {}

    def __call__(self, *args: Any) -> list:
        db = database.obj
        key = type(db)
        if key not in self._compiled:
            self._compiled[key] = self._compile(args)
        compiled = self._compiled[key]
        if compiled is None:
            return list(self.build(*args))
        query, sql, places = compiled
        params = [args[value] if is_arg else value for is_arg, value in places]
        cursor = db.execute_sql(sql, params)
        # The query's own row wrapper: a private peewee method, but the one its execute uses.
        return list(query._get_cursor_wrapper(cursor))  # pyright: ignore[reportAttributeAccessIssue]

    def _compile(self, args: tuple) -> tuple[peewee.SelectBase, str, list[tuple[bool, Any]]] | None:
        probes = [_probe(i, arg) for i, arg in enumerate(args)]
        query = self.build(*probes)
        sql, probed = query.sql()
        places: list[tuple[bool, Any]] = []
        for param in probed:
            hit = next((i for i, probe in enumerate(probes) if _same(param, probe)), None)
            places.append((True, hit) if hit is not None else (False, param))
        real_sql, real = self.build(*args).sql()
        filled = [args[value] if is_arg else value for is_arg, value in places]
        if real_sql != sql or filled != list(real) or getattr(query, "_load_tree", None):
            log.debug("query of %s is built per call: its SQL depends on its values", self.build.__qualname__)
            return None
        return query, sql, places


class _Bound:
    """An UPDATE ready to run: what store.with_commit (or execute_sql) takes, as from a query."""

    def __init__(self, sql: str, params: list):
        self._sql, self._params = sql, params

    def sql(self) -> tuple[str, list]:
        return self._sql, self._params


class PreparedUpdate:
    """``PreparedUpdate(model, key)``: calling it with ``{field: value}`` and a key value gives
    the UPDATE of those fields on the row whose ``key`` is that value (``.sql()``, for
    store.with_commit), its SQL compiled once per database and set of fields, its parameters
    the fields' own database values. Checked as Prepared checks itself: the first call's
    parameters must be the ones peewee gives, or the update is built each time."""

    def __init__(self, model: type[peewee.Model], key: peewee.Field):
        self.model, self.key = model, key
        self._compiled: dict[tuple, str | None] = {}

    def __call__(self, fields: dict, key: Any) -> _Bound | peewee.Query:
        # peewee sets the fields in the model's order (its column sort key), whatever the dict's
        items = sorted(fields.items(), key=lambda kv: kv[0]._sort_key)
        shape = (type(database.obj), tuple(f.name for f, _ in items))
        params = [f.db_value(v) for f, v in items] + [self.key.db_value(key)]
        if shape not in self._compiled:
            self._compiled[shape] = self._compile(fields, key, params)
        sql = self._compiled[shape]
        if sql is None:
            return self.model.update(fields).where(self.key == key)
        return _Bound(sql, params)

    def _compile(self, fields: dict, key: Any, params: list) -> str | None:
        sql, real = self.model.update(fields).where(self.key == key).sql()
        # (element by element, types included: a peewee expression "equals" anything)
        if len(real) == len(params) and all(_same(r, p) for r, p in zip(real, params, strict=True)):
            return sql
        log.debug("update of %s is built per call: its parameters differ", [f.name for f in fields])
        return None
