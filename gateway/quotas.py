"""Quotas: what a project may hold, checked and reserved in one transaction.

Resources and units (the settings file's [quotas] section and `moorage quota set` use the
same keys; a key left unset is unlimited):

    containers   count of the project's containers (running or not)
    memory       bytes: the sum of HostConfig.Memory over its containers ("512m", "8g" or bytes)
    cpus         CPUs: the sum of HostConfig.NanoCpus/1e9 (or CpuQuota/CpuPeriod) ("2", "0.5")
    volumes      count of its named volumes
    networks     count of its user-defined networks
    images       count of distinct images it holds

Usage is derived from the store's rows (containers, volumes, networks, image references),
never from a counter, so the reconciliation of those rows with the daemons (heartbeats) is
also the reconciliation of usage. Creates in flight count too: for containers their
placement reservation row (the check is folded into the placement transaction,
gateway.placement.scheduler.place), for the others a QuotaReservation row taken by
:func:`reserve` and dropped by :func:`release` or :func:`confirm`. The check and the
reservation happen in one transaction that no other decision for the same project can
interleave with (a row lock on PostgreSQL, BEGIN IMMEDIATE on SQLite): a project capped at
N never holds N+1, whatever the interleaving of requests across workers and replicas.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import re
import uuid as _uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import peewee

from gateway import metrics, store
from gateway.config import Settings
from gateway.errors import DockerError

RESOURCES = ("containers", "memory", "cpus", "volumes", "networks", "images")
UNLIMITED = -1
NANO = 1_000_000_000
# A reservation whose create never finished (the gateway died mid-request) stops counting
# after this long, and is deleted by the next reservation for its project.
RESERVATION_TTL = _dt.timedelta(minutes=30)

# What to do instead, per resource, in the refusal's message.
ADVICE = {
    "containers": "remove containers you no longer need (docker rm)",
    "memory": (
        "remove containers you no longer need (docker rm) or give this one less memory (docker run --memory)"
    ),
    "cpus": (
        "remove containers you no longer need (docker rm) or give this one fewer CPUs (docker run --cpus)"
    ),
    "volumes": "remove volumes you no longer need (docker volume rm)",
    "networks": "remove networks you no longer need (docker network rm)",
    "images": "remove images you no longer need (docker rmi)",
}

_MEMORY_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


class QuotaValueError(ValueError):
    """A limit that cannot be parsed; the message says what is expected."""


# -- values -------------------------------------------------------------------------------------
def parse_value(resource: str, value) -> int:
    """A limit as stored: a count, bytes (memory) or nano-CPUs (cpus); UNLIMITED for -1 or
    "unlimited". Accepts what TOML and a shell give: ints, floats (cpus), strings."""
    if resource not in RESOURCES:
        raise QuotaValueError(f"unknown quota {resource!r}; known: {', '.join(RESOURCES)}")
    if isinstance(value, bool):
        raise QuotaValueError(f"quota {resource}: expected a number, not {value!r}")
    text = str(value).strip().lower()
    if text in ("-1", "unlimited", "none"):
        return UNLIMITED
    if resource == "memory":
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmgtp]?)(?:i?b)?", text)
        if not m:
            raise QuotaValueError(f"quota memory: expected bytes or a size like 512m or 8g, not {value!r}")
        return int(float(m.group(1)) * _MEMORY_UNITS[m.group(2)])
    if resource == "cpus":
        try:
            cpus = float(text)
        except ValueError:
            raise QuotaValueError(
                f"quota cpus: expected a number of CPUs like 2 or 0.5, not {value!r}"
            ) from None
        if cpus < 0 or math.isnan(cpus) or math.isinf(cpus):
            raise QuotaValueError(f"quota cpus: expected 0 or more CPUs (-1: unlimited), not {value!r}")
        return round(cpus * NANO)
    if not re.fullmatch(r"\d+", text):
        raise QuotaValueError(f"quota {resource}: expected a whole number (-1: unlimited), not {value!r}")
    return int(text)


def format_value(resource: str, value: int | None) -> str:
    """A stored value as people read it: 5, 512MiB, 1.5 (CPUs), unlimited."""
    if value is None or value < 0:
        return "unlimited"
    if resource == "memory":
        return format_bytes(value)
    if resource == "cpus":
        return f"{value / NANO:.3f}".rstrip("0").rstrip(".")
    return str(value)


def format_bytes(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f}".rstrip("0").rstrip(".") + unit
    return f"{n}B"


def parse_assignment(text: str) -> tuple[str, int]:
    """`containers=5` (as given to `moorage quota set`) -> ("containers", 5)."""
    key, sep, value = text.partition("=")
    key = key.strip().lower()
    if not sep or not key:
        raise QuotaValueError(f"expected KEY=VALUE (e.g. containers=5), not {text!r}")
    return key, parse_value(key, value)


def defaults(settings: Settings) -> dict[str, int]:
    """The [quotas] section of the settings file, parsed: {resource: value}; unset = absent."""
    raw = vars(settings.quotas)
    return {key: parse_value(key, raw[key]) for key in RESOURCES if raw[key] is not None}


def container_request(host_config) -> tuple[int, int]:
    """(memory bytes, nano-CPUs) a create's HostConfig asks for; 0 where it sets no limit or
    sends something dockerd will refuse anyway."""
    if not isinstance(host_config, dict):
        return 0, 0

    def number(key: str) -> int:
        value = host_config.get(key)
        return (
            int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 0
        )

    memory, nano_cpus = number("Memory"), number("NanoCpus")
    if not nano_cpus and number("CpuQuota"):
        nano_cpus = number("CpuQuota") * NANO // (number("CpuPeriod") or 100_000)
    return memory, nano_cpus


# -- limits and usage ---------------------------------------------------------------------------
def limits(project: str, settings) -> dict[str, int | None]:
    """{resource: limit or None (unlimited)}: the project's own values over the defaults."""
    merged: dict[str, int | None] = {r: None for r in RESOURCES}
    merged.update(defaults(settings))
    for row in store.quota_rows(project):
        if row.resource in merged:
            merged[row.resource] = row.value
    return {r: (v if v is not None and v >= 0 else None) for r, v in merged.items()}


def _live_reservations(project: str, resource: str, besides: str | None = None) -> int:
    """Reservations in flight for ``project``'s ``resource`` (other than the one ``besides``)."""
    R = store.QuotaReservation
    horizon = store.utcnow() - RESERVATION_TTL
    where = (R.project == project) & (R.resource == resource) & (R.created_at >= horizon)
    if besides is not None:
        where &= R.id != besides
    return R.select().where(where).count()


def _counted_rows(project: str, resource: str) -> int:
    if resource == "volumes":
        return store.Volume.select().where(store.Volume.project == project).count()
    if resource == "networks":
        return store.Network.select().where(store.Network.project == project).count()
    if resource == "images":
        model = store.ImageRef
        return (
            model.select(peewee.fn.COUNT(model.image_id.distinct())).where(model.project == project).scalar()
            or 0
        )
    raise ValueError(resource)


def usage(project: str) -> dict[str, int]:
    """What the project holds now, reservations in flight included (containers: rows, with
    their placement reservations; memory bytes; cpus in nano-CPUs; the rest: rows + reservations)."""
    out = usage_containers(project)
    for resource in ("volumes", "networks", "images"):
        out[resource] = _counted_rows(project, resource) + _live_reservations(project, resource)
    return out


def exceeded(project: str, resource: str, limit: int, used: int, extra: str = "") -> DockerError:
    """The 403 for a full quota (every caller raises it): counted here, once per refusal."""
    metrics.QUOTA_REFUSALS.labels(resource).inc()
    return DockerError(
        403,
        f"quota exceeded for {resource} in project {project}: limit "
        f"{format_value(resource, limit)}, in use {format_value(resource, used)}{extra}; "
        f"{ADVICE[resource]} or ask your operator to raise it (moorage quota set)",
    )


# -- checks -------------------------------------------------------------------------------------
def check_container(project: str, memory: int, nano_cpus: int, settings) -> None:
    """Inside the placement transaction: refuse (403) a container the project's quotas do
    not leave room for. Its reservation row, inserted in the same transaction, then counts."""
    limit = limits(project, settings)
    if limit["containers"] is None and limit["memory"] is None and limit["cpus"] is None:
        return
    used = usage_containers(project)
    if limit["containers"] is not None and used["containers"] + 1 > limit["containers"]:
        raise exceeded(project, "containers", limit["containers"], used["containers"])
    for resource, asked, flag in (("memory", memory, "--memory"), ("cpus", nano_cpus, "--cpus")):
        cap = limit[resource]
        if cap is None:
            continue
        if asked <= 0:
            metrics.QUOTA_REFUSALS.labels(resource).inc()
            raise DockerError(
                403,
                f"project {project} has a {resource} quota ({format_value(resource, cap)}): "
                f"every container must set its {resource} limit; run it with {flag} "
                f"(docker run {flag} ...), or ask your operator to lift the quota "
                f"(moorage quota set {project} {resource}=unlimited)",
            )
        if used[resource] + asked > cap:
            raise exceeded(
                project,
                resource,
                cap,
                used[resource],
                f", this container asks {format_value(resource, asked)}",
            )


def usage_containers(project: str) -> dict[str, int]:
    C = store.Container
    # COUNT(*), not COUNT(id): the whole answer then comes from the container_project_usage
    # index (project, memory, nano_cpus), never from the rows.
    count, memory, nano = (
        C.select(
            peewee.fn.COUNT(peewee.SQL("*")),
            peewee.fn.COALESCE(peewee.fn.SUM(C.memory), 0),
            peewee.fn.COALESCE(peewee.fn.SUM(C.nano_cpus), 0),
        )
        .where(C.project == project)
        .tuples()
        .get()
    )
    return {"containers": int(count), "memory": int(memory), "cpus": int(nano)}


@dataclass
class Reservation:
    id: str
    project: str
    resource: str


def reserve(project: str, resource: str, settings, amount: int = 1) -> Reservation:
    """Check the project's ``resource`` quota (volumes, networks, images) and reserve one,
    in one transaction. 403 in Docker's shape when it is full. Hand the result to
    :func:`confirm` once the object's row is recorded, or to :func:`release` if the create failed."""
    if resource not in ("volumes", "networks", "images"):
        raise ValueError(f"reserve() counts volumes, networks or images, not {resource!r}")
    R = store.QuotaReservation
    reservation = Reservation("q-" + _uuid.uuid4().hex, project, resource)
    with _project_transaction(project):
        R.delete().where((R.project == project) & (R.created_at < store.utcnow() - RESERVATION_TTL)).execute()
        limit = limits(project, settings)[resource]
        if limit is not None:
            used = _counted_rows(project, resource) + _live_reservations(project, resource)
            if used + amount > limit:
                raise exceeded(project, resource, limit, used)
        R.create(id=reservation.id, project=project, resource=resource)
    return reservation


@contextlib.contextmanager
def _project_transaction(project: str) -> Iterator[None]:
    db = store.database.obj
    ctx = db.atomic("IMMEDIATE") if isinstance(db, peewee.SqliteDatabase) else db.atomic()
    with ctx:
        store.lock_project(project)
        yield


def release(reservation: Reservation | None) -> None:
    """The create failed (or its row is recorded): the reservation stops counting."""
    if reservation is not None:
        store.QuotaReservation.delete().where(store.QuotaReservation.id == reservation.id).execute()


def confirm(reservation: Reservation, record: Callable[[], object] | None = None):
    """Record the created object's row (``record()``) and drop the reservation in one
    transaction, so the object is never counted twice nor not at all. Returns record()'s value.

    Under the project's lock, as a reservation is taken: a check counts the rows and the
    reservations in two statements, and on PostgreSQL (READ COMMITTED, a snapshot per
    statement) a confirm committing between the two would be in neither count."""
    with _project_transaction(reservation.project):
        result = record() if record is not None else None
        release(reservation)
    return result


def settle_images(
    reservation: Reservation | None, project: str, image_ids, record: Callable[[], object], settings
):
    """An operation that may have added images to ``project`` (pull, import, build, load, commit,
    tag) is done and made ``image_ids``: check again that the ones the project does not hold yet
    fit its images quota, and record them (``record()``), dropping ``reservation``, in one
    transaction that no other quota decision for the project interleaves with. 403 in Docker's
    shape when they do not fit (nothing recorded; the reservation is released either way).

    The reservation taken before the operation (:func:`reserve`) is what keeps concurrent
    operations from all starting into the last free image; this check is what makes the count
    exact whatever happened meanwhile (a load that made several images, a reservation that
    outlived its TTL, a lowered quota)."""
    ids = {i if i.startswith("sha256:") else "sha256:" + i for i in image_ids if i}
    try:
        with _project_transaction(project):
            limit = limits(project, settings)["images"]
            if limit is not None and ids:
                IR = store.ImageRef
                held = {
                    row.image_id
                    for row in IR.select(IR.image_id).where(
                        (IR.project == project) & IR.image_id.in_(sorted(ids))
                    )
                }
                fresh = len(ids - held)
                if fresh:
                    used = _counted_rows(project, "images") + _live_reservations(
                        project, "images", besides=reservation.id if reservation else None
                    )
                    if used + fresh > limit:
                        raise exceeded(
                            project,
                            "images",
                            limit,
                            used,
                            f", this request adds {fresh}" if fresh > 1 or used < limit else "",
                        )
            result = record()
            release(reservation)
        return result
    except BaseException:
        release(reservation)
        raise


@contextlib.contextmanager
def reserving(project: str, resource: str, settings) -> Iterator[Reservation]:
    """``with quotas.reserving(ctx.project, "volumes", ctx.settings) as r: ...``: released if
    the body raises; on success, call ``quotas.confirm(r, record)`` inside the body."""
    reservation = reserve(project, resource, settings)
    try:
        yield reservation
    except BaseException:
        release(reservation)
        raise


# -- shown to the project -----------------------------------------------------------------------
def info_labels(project: str, settings) -> list[str]:
    """`docker info` Labels: one `moorage.quota.RESOURCE=IN_USE/LIMIT` per resource."""
    limit = limits(project, settings)
    used = usage(project)
    return [f"moorage.quota.{r}={format_value(r, used[r])}/{format_value(r, limit[r])}" for r in RESOURCES]


def report(project: str, settings) -> dict:
    """`moorage quota show`: per resource its limit, where the limit comes from, the usage."""
    own = {row.resource: row.value for row in store.Quota.select().where(store.Quota.project == project)}
    default = defaults(settings)
    limit = limits(project, settings)
    used = usage(project)
    out = {}
    for r in RESOURCES:
        source = "project" if r in own else ("default" if r in default else "none")
        out[r] = {"limit": limit[r], "in_use": used[r], "source": source}
    return out


def set_limits(project: str, values: dict[str, int]) -> None:
    with store.write_transaction():
        for resource, value in values.items():
            store.Quota.insert(project=project, resource=resource, value=value).on_conflict(
                conflict_target=[store.Quota.project, store.Quota.resource], update={store.Quota.value: value}
            ).execute()


def unset_limits(project: str, resources: list[str]) -> int:
    return (
        store.Quota.delete()
        .where((store.Quota.project == project) & (store.Quota.resource.in_(resources)))
        .execute()
    )
