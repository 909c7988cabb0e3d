"""Health checks on every gateway address, outside the Docker API's paths (dockerd has no
such routes, so a Docker client never meets them) and answered before authentication:

    GET /healthz   200 "ok": the process is alive and answering
    GET /readyz    200 "ready" when the store answers a trivial query, the identity backend
                   is reachable (gateway/tenancy: Keystone's, checked with a short timeout
                   and cached; the embedded one always) and at least one instance is live;
                   else 503 with one line per check that is not ready
"""

from __future__ import annotations

import logging

import falcon

from gateway import instances, store

log = logging.getLogger("moorage.health")

PATHS = ("/healthz", "/readyz")


def answer(gateway, req: falcon.Request, resp: falcon.Response) -> None:
    resp.content_type = falcon.MEDIA_TEXT
    if req.method not in ("GET", "HEAD"):
        resp.status = 405
        resp.set_header("Allow", "GET, HEAD")
        resp.text = "method not allowed\n"
        return
    if req.path == "/healthz":
        resp.text = "ok\n"
        return
    reasons = not_ready(gateway)
    resp.status = 503 if reasons else 200
    resp.text = "".join(f"not ready: {r}\n" for r in reasons) if reasons else "ready\n"


def not_ready(gateway) -> list[str]:
    """What is not ready, in a few words each (empty: ready)."""
    reasons = []
    try:
        store.database.execute_sql("SELECT 1").fetchall()
    except Exception as exc:  # noqa: BLE001 - any failure of the store is "not ready", in its words
        log.warning("readyz: the store does not answer: %s", exc)
        reasons.append(
            f"store: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
        )
        return [*reasons, "instances: unknown (the store does not answer)"]
    finally:
        store.release_connection()
    why = gateway.identity.unreachable()
    if why:
        reasons.append(f"identity: {why}")
    try:
        live = instances.live_instances(gateway.settings)
    except Exception as exc:  # noqa: BLE001 - the store failed between the two queries
        reasons.append(f"instances: {type(exc).__name__}")
    else:
        if not live:
            reasons.append("instances: none is live (no agent has sent a heartbeat recently)")
    finally:
        store.release_connection()
    return reasons
