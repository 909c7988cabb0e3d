"""Notices to the tenant: a project's own webhooks, told when an instance is booted or deleted
for it (and, if asked, of its containers' lifecycle), without access to the operator's broker.

A project subscribes a URL (gateway/noticeapi.py, `moorage notices subscribe URL`) and gets a
secret, shown once. Each notice is a JSON body POSTed to the URL with
``X-Moorage-Signature: sha256=HEX`` (HMAC-SHA256 of the body with the secret),
``X-Moorage-Event`` and ``X-Moorage-Delivery`` (the notice's ID, the same on every retry).

Queued, as notifications are, in the store (gateway/store/notices.py) where they happen; one
elected worker (lease ``notices``) posts them in order per webhook, deletes each once the
webhook answered 2xx, and otherwise tries again after 2, 4, 8, ... up to 300 s, at most
``[notices] max_attempts`` times. Nothing is lost across a gateway restart; a webhook that is
down does not hold up another's notices.

A webhook may name only public addresses, or those in ``[notices] allowed_networks``: the
gateway never posts into the operator's own networks for a tenant.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import socket
import time
import urllib.parse
import uuid

from gateway import store
from gateway.config import NoticesSettings
from gateway.errors import DockerError
from gateway.store import journal
from gateway.store import notices as queue
from gateway.wire import NOTICE_DELIVERY_HEADER, NOTICE_EVENT_HEADER, NOTICE_SIGNATURE_HEADER

log = logging.getLogger("moorage.notices")

# Every notice a project may subscribe to; the first two are what a subscription gets by default.
NOTICES = (
    "instance.create",
    "instance.delete",
    "container.create",
    "container.start",
    "container.die",
    "container.destroy",
)
DEFAULT_NOTICES = ("instance.create", "instance.delete")
LEASE_SECONDS = 15.0
PASS_SECONDS = 1.0
MAX_BACKOFF = 300.0

_settings = NoticesSettings()


def configure(settings) -> None:
    global _settings
    _settings = settings.notices


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: what a receiver computes to check a delivery."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# -- where a webhook may point ----------------------------------------------------------------------


def _allowed(address: str, networks: list[str]) -> bool:
    ip = ipaddress.ip_address(address)
    if any(ip in ipaddress.ip_network(n, strict=False) for n in networks):
        return True
    return ip.is_global


def check_url(url: str, settings: NoticesSettings) -> str:
    """Why the gateway may not post to ``url`` ("" when it may)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http:// or https:// URL"
    if parts.username or parts.password:
        return "a webhook URL carries no credentials: check the signature header instead"
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        return f"cannot resolve {parts.hostname}: {exc}"
    for info in infos:
        address = str(info[4][0])
        if not _allowed(address, settings.allowed_networks):
            return (
                f"{parts.hostname} resolves to {address}, which is not a public address; "
                "name a webhook reachable on the internet (the operator can allow networks with "
                "[notices] allowed_networks)"
            )
    return ""


# -- subscriptions ----------------------------------------------------------------------------------


def _row(sub: queue.NoticeSubscription) -> dict:
    return {
        "id": sub.id,
        "url": sub.url,
        "events": sub.events.split(","),
        "project_id": sub.project,
        "user_id": sub.user,
        "created": sub.created_at.isoformat(timespec="seconds") + "Z",
        "waiting": queue.waiting_count(sub.id),
    }


def subscribe(project: str, user: str, url: str, events: list[str] | None) -> dict:
    """A new webhook for ``project``; the answer holds its secret (never shown again)."""
    if not isinstance(url, str) or len(url) > 2048:
        raise DockerError(400, 'expected {"url": "https://...", "events": [...]}')
    wanted = list(dict.fromkeys(events or DEFAULT_NOTICES))
    unknown = [e for e in wanted if e not in NOTICES]
    if unknown:
        raise DockerError(400, f"unknown notice {', '.join(unknown)}; known: {', '.join(NOTICES)}")
    why = check_url(url, _settings)
    if why:
        raise DockerError(400, why)
    if len(queue.subscriptions(project)) >= _settings.per_project:
        raise DockerError(
            403,
            f"this project has {_settings.per_project} webhooks already ([notices] per_project): "
            "unsubscribe one first (`moorage notices list`, `moorage notices unsubscribe ID`)",
        )
    secret = secrets.token_urlsafe(32)
    sub = queue.add_subscription(uuid.uuid4().hex, project, url, secret, wanted, user)
    return {**_row(sub), "secret": secret}


def listing(project: str | None) -> list[dict]:
    return [_row(sub) for sub in queue.subscriptions(project)]


def unsubscribe(subscription_id: str, project: str | None) -> dict:
    sub = queue.subscription(subscription_id)
    if sub is None or (project is not None and sub.project != project):
        raise DockerError(404, f"no such webhook: {subscription_id} (`moorage notices list` shows yours)")
    row = _row(sub)
    queue.remove_subscription(subscription_id, project)
    return row


# -- queueing --------------------------------------------------------------------------------------


def subscribed(project: str) -> bool:
    """Whether ``project`` has any webhook: asked of the store on every event (an indexed
    read), so that a webhook hears what happens from the moment it is subscribed, whichever
    worker or replica records it."""
    return queue.has_subscription(project)


def notify(project: str, event: str, data: dict, when_nano: int | None = None) -> int:
    """Queue notice ``event`` for each of ``project``'s webhooks that want it; how many. Never
    raises: a notice is never worth a failed request or a stalled pool."""
    if not project:
        return 0
    try:
        if not subscribed(project):
            return 0
        when = journal.as_datetime(when_nano or time.time_ns())
        count = 0
        for sub in queue.subscriptions(project):
            if event not in sub.events.split(","):
                continue
            body = json.dumps(
                {
                    "id": uuid.uuid4().hex,
                    "event": event,
                    "project_id": project,
                    "time": when.isoformat(timespec="microseconds") + "Z",
                    "data": data,
                },
                separators=(",", ":"),
                sort_keys=True,
            )
            if queue.enqueue_delivery(sub.id, event, body, _settings.queue_limit):
                count += 1
            else:
                log.warning(
                    "webhook %s of project %s has %d notices waiting ([notices] queue_limit): dropped %s",
                    sub.id,
                    project,
                    _settings.queue_limit,
                    event,
                )
        return count
    except Exception:
        log.exception("could not queue notice %s for project %s", event, project)
        return 0
    finally:
        store.release_connection()


# -- delivering -------------------------------------------------------------------------------------


def deliver(delivery: queue.NoticeDelivery, sub: queue.NoticeSubscription, timeout: float) -> str:
    """POST one notice: "" when the webhook took it (2xx), else why not."""
    import requests

    why = check_url(sub.url, _settings)  # again: a name may resolve elsewhere by now
    if why:
        return why
    body = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "moorage-notices/1",
        NOTICE_SIGNATURE_HEADER: sign(sub.secret, body),
        NOTICE_EVENT_HEADER: delivery.event,
        NOTICE_DELIVERY_HEADER: json.loads(delivery.body).get("id", ""),
    }
    try:
        resp = requests.post(sub.url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return " ".join(str(exc).split())[:300]
    resp.close()
    if 200 <= resp.status_code < 300:
        return ""
    return f"the webhook answered {resp.status_code}"


def deliver_due(now: _dt.datetime | None = None) -> int:
    """One pass: every due notice, each webhook's in order, webhooks side by side; how many
    were taken."""
    import gevent

    now = now or store.utcnow()
    due = queue.due_deliveries(now, 100)
    subs = {s: queue.subscription(s) for s in {d.subscription for d in due}}
    store.release_connection()
    by_sub: dict[str, list[queue.NoticeDelivery]] = {}
    for delivery in due:
        by_sub.setdefault(delivery.subscription, []).append(delivery)

    def one_webhook(sub_id: str, deliveries: list[queue.NoticeDelivery]) -> int:
        sub, taken = subs.get(sub_id), 0
        for delivery in deliveries:
            if sub is None:  # unsubscribed meanwhile
                queue.delivered(delivery.id)
                continue
            failure = deliver(delivery, sub, _settings.timeout)
            if not failure:
                queue.delivered(delivery.id)
                taken += 1
                continue
            attempts = delivery.attempts + 1
            if attempts >= _settings.max_attempts:
                log.warning(
                    "webhook %s (project %s) did not take notice %s in %d attempts (%s): dropped",
                    sub.id,
                    sub.project,
                    delivery.event,
                    attempts,
                    failure,
                )
                queue.delivered(delivery.id)
                continue
            pause = min(MAX_BACKOFF, 2.0**attempts)
            log.info(
                "webhook %s (project %s) did not take notice %s (%s): trying again in %g s",
                sub.id,
                sub.project,
                delivery.event,
                failure,
                pause,
            )
            queue.retry_later(delivery.id, attempts, store.utcnow() + _dt.timedelta(seconds=pause), failure)
            break  # its later notices wait: a webhook hears them in order
        store.release_connection()
        return taken

    greenlets = [gevent.spawn(one_webhook, s, d) for s, d in by_sub.items()]
    gevent.joinall(greenlets)
    return sum(g.value or 0 for g in greenlets)


_deliverer = None


def start_deliverer(settings) -> None:
    """Run the deliverer in this worker (every worker does; one at a time acts, by lease)."""
    global _deliverer
    configure(settings)
    if _deliverer is not None:
        return
    import gevent

    holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    lease = journal.Lease("notices", holder, LEASE_SECONDS)

    def loop() -> None:
        while True:
            try:
                if lease.held():
                    deliver_due()
            except Exception:  # the deliverer must outlive any one failure
                log.exception("notice delivery pass failed")
            finally:
                store.release_connection()
            gevent.sleep(PASS_SECONDS)

    _deliverer = gevent.spawn(loop)
