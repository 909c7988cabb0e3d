"""compute.container_instance.{create,delete}.{start,end,error}: the instance pool's boots and
deletions, told from one decorator on each (gateway/placement/pool.py ``_boot``,
gateway/placement/reaper.py ``_delete_server``), so the pool's code stays the pool's. A boot or
deletion for a project is also the gateway's own event in that project's journal and a notice
to its webhooks (gateway/notifications/own_events.py), with or without [notifications]."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from gateway import store
from gateway.notifications import own_events, payloads
from gateway.notifications.outbox import emit, enabled

log = logging.getLogger("moorage.notifications")

# Deletions that failed and were told once: the reaper retries every pass, the error is told once.
_told_errors: set[str] = set()


def _member_facts(args: tuple) -> tuple[str, str, str, str]:
    """(provider, pool member, server UUID, project) from the hooked function's arguments:
    (provider, member_id, ...) for a boot, (provider, member) for a deletion."""
    provider = getattr(args[0], "name", "") if args else ""
    member: Any = args[1] if len(args) > 1 else None
    if isinstance(member, str):
        member = store.PoolMember.get_or_none(store.PoolMember.id == member)
    if member is None:
        return provider, "", "", ""
    project = getattr(member, "project", "") or ""  # dedicated instances name their project
    return provider, member.id, member.server_id or "", project


def _tell(action: str, phase: str, facts: tuple[str, str, str, str], fault: dict | None = None) -> None:
    provider, member, server, project = facts
    emit(
        f"compute.container_instance.{action}.{phase}",
        payloads.versioned(
            "ContainerInstancePayload",
            instance_uuid=server or None,
            project_id=project,
            provider=provider,
            pool_member=member,
            action=action,
            fault=fault,
        ),
        "ERROR" if phase == "error" else "INFO",
    )
    store.release_connection()  # the pool holds none across a boot's or deletion's network I/O


def instance_hook(action: str) -> Callable:
    """Decorate the pool's boot ("create") or deletion ("delete") of an instance."""

    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapped(*args, **kwargs):
            if not enabled():
                result = function(*args, **kwargs)
                if result is not False:
                    _journal(action, _facts(args))
                return result
            facts = _facts(args)
            if action == "create":
                _tell(action, "start", facts)
            try:
                result = function(*args, **kwargs)
            except Exception as exc:
                _tell(action, "error", _facts(args), _fault(exc))
                raise
            after = _facts(args)
            if action == "delete":
                # The reaper retries a deletion that failed (False) on its next pass.
                if result is False:
                    if after[1] not in _told_errors:
                        _told_errors.add(after[1])
                        _tell(action, "error", after, payloads.fault(500, "the provider did not delete it"))
                    return result
                _told_errors.discard(after[1])
                _tell(action, "start", facts)
            _tell(action, "end", after)
            _journal(action, after)
            return result

        return wrapped

    return decorate


def _journal(action: str, facts: tuple[str, str, str, str]) -> None:
    """The gateway's own event of the boot or deletion, for the project it serves."""
    provider, member, server, project = facts
    if project and server:
        own_events.record(
            project,
            server,
            "create" if action == "create" else "destroy",
            provider=provider,
            pool_member=member,
        )


def _facts(args: tuple) -> tuple[str, str, str, str]:
    try:
        return _member_facts(args)
    except Exception:  # a notification never breaks the pool
        log.exception("could not read the pool member for a notification")
        return "", "", "", ""


def _fault(exc: BaseException) -> dict:
    status = getattr(exc, "status", 500)
    message = getattr(exc, "message", "") or " ".join(str(exc).split())[:500] or type(exc).__name__
    return payloads.fault(status if isinstance(status, int) else 500, message)
