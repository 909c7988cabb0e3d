"""Projects' webhooks for notices, under gateway/wire.py NOTICES_PATH on every listener. Not
part of the Docker API: the caller is authenticated as for Docker requests and acts on its own
project's webhooks only (gateway/notifications/webhooks.py says what is delivered, and how).

    POST   /moorage/v1/notices       subscribe: {"url": URL, "events": [...]} -> the webhook, with
                                     its secret (shown this once)
    GET    /moorage/v1/notices       the project's webhooks (no secrets)
    DELETE /moorage/v1/notices/{id}  unsubscribe

`moorage notices subscribe|list|unsubscribe --host` (gateway/cli/notices.py) calls it.
"""

from __future__ import annotations

import json

import falcon

from gateway.errors import DockerError
from gateway.notifications import webhooks
from gateway.routing import Route
from gateway.tenancy import Identity

BODY_LIMIT = 16 * 1024


def subscribe(req: falcon.Request, resp: falcon.Response, gw, identity: Identity, params: dict) -> None:
    if (req.content_length or 0) > BODY_LIMIT:
        raise DockerError(413, "request body too large")
    try:
        body = json.loads(req.bounded_stream.read(BODY_LIMIT + 1) or b"{}")
    except ValueError as exc:
        raise DockerError(400, f"invalid JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("events", []), list | None):
        raise DockerError(400, 'expected {"url": "https://...", "events": ["instance.create", ...]}')
    resp.status = 201
    resp.content_type = "application/json"
    resp.media = webhooks.subscribe(
        identity.project_id, identity.user_id, body.get("url"), body.get("events")
    )


def listing(req: falcon.Request, resp: falcon.Response, gw, identity: Identity, params: dict) -> None:
    resp.content_type = "application/json"
    resp.media = webhooks.listing(identity.project_id)


def unsubscribe(req: falcon.Request, resp: falcon.Response, gw, identity: Identity, params: dict) -> None:
    resp.content_type = "application/json"
    resp.media = webhooks.unsubscribe(params["id"], identity.project_id)


ROUTES = [
    Route("POST", "", "NoticeSubscribe", subscribe),
    Route("GET", "", "NoticeList", listing),
    Route("DELETE", "/{id}", "NoticeUnsubscribe", unsubscribe),
]
