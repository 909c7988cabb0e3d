"""Projects' webhooks for notices (gateway/notifications/webhooks.py): who asked to be told, and
what is waiting to be told.

- ``NoticeSubscription``: one project's webhook: its URL, the HMAC secret its deliveries are
  signed with, and the notices it wants.
- ``NoticeDelivery``: one notice not yet taken by its webhook (a 2xx answer). Every worker
  writes; one elected deliverer reads in id order, posts, and deletes it or sets when to try
  again (``next_at``, with a back-off). Bounded per subscription (``[notices] queue_limit``).
"""

from __future__ import annotations

import datetime as _dt

import peewee

from gateway.store.models import BaseModel, utcnow


class NoticeSubscription(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=32)
    project = peewee.CharField(max_length=64, index=True)
    url = peewee.CharField(max_length=2048)
    secret = peewee.CharField(max_length=128)
    events = peewee.CharField(max_length=512)  # comma-separated notice names
    user = peewee.CharField(max_length=64, default="")
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "notice_subscription"


class NoticeDelivery(BaseModel):
    id = peewee.BigAutoField()
    subscription = peewee.CharField(max_length=32, index=True)
    event = peewee.CharField(max_length=64)
    body = peewee.TextField()  # the JSON posted, exactly as signed
    attempts = peewee.IntegerField(default=0)
    next_at = peewee.DateTimeField(default=utcnow, index=True)
    last_error = peewee.CharField(max_length=300, default="")
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "notice_delivery"


NOTICE_MODELS = [NoticeSubscription, NoticeDelivery]


def create_notices(db: peewee.Database) -> None:
    """The migration: the two tables (gateway/store/schema.py MIGRATIONS)."""
    db.create_tables(NOTICE_MODELS, safe=True)


def add_subscription(
    subscription_id: str, project: str, url: str, secret: str, events: list[str], user: str
) -> NoticeSubscription:
    return NoticeSubscription.create(
        id=subscription_id, project=project, url=url, secret=secret, events=",".join(events), user=user
    )


def subscriptions(project: str | None) -> list[NoticeSubscription]:
    """A project's subscriptions (None: every project's), oldest first."""
    query = NoticeSubscription.select().order_by(NoticeSubscription.created_at, NoticeSubscription.id)
    if project is not None:
        query = query.where(NoticeSubscription.project == project)
    return list(query)


def has_subscription(project: str) -> bool:
    return NoticeSubscription.select().where(NoticeSubscription.project == project).exists()


def remove_subscription(subscription_id: str, project: str | None) -> bool:
    """Delete the subscription (of ``project``; None: any) and what waits for it."""
    query = NoticeSubscription.delete().where(NoticeSubscription.id == subscription_id)
    if project is not None:
        query = query.where(NoticeSubscription.project == project)
    if not query.execute():
        return False
    NoticeDelivery.delete().where(NoticeDelivery.subscription == subscription_id).execute()
    return True


def enqueue_delivery(subscription_id: str, event: str, body: str, limit: int) -> bool:
    """Queue one notice for one webhook; False (nothing written) when ``limit`` wait for it."""
    if limit > 0:
        waiting = NoticeDelivery.select().where(NoticeDelivery.subscription == subscription_id).count()
        if waiting >= limit:
            return False
    NoticeDelivery.insert(subscription=subscription_id, event=event, body=body).execute()
    return True


def due_deliveries(now: _dt.datetime, count: int) -> list[NoticeDelivery]:
    """The oldest waiting notices of each subscription whose first waiting one is due: a
    webhook hears its notices in the order they happened, so a later one never overtakes."""
    rows = list(NoticeDelivery.select().order_by(NoticeDelivery.id).limit(count * 4))
    blocked: set[str] = set()
    due = []
    for row in rows:
        if row.subscription in blocked:
            continue
        if row.next_at > now:
            blocked.add(row.subscription)
            continue
        due.append(row)
        if len(due) >= count:
            break
    return due


def delivered(delivery_id: int) -> None:
    NoticeDelivery.delete().where(NoticeDelivery.id == delivery_id).execute()


def retry_later(delivery_id: int, attempts: int, next_at: _dt.datetime, error: str) -> None:
    NoticeDelivery.update(attempts=attempts, next_at=next_at, last_error=error[:300]).where(
        NoticeDelivery.id == delivery_id
    ).execute()


def subscription(subscription_id: str) -> NoticeSubscription | None:
    return NoticeSubscription.get_or_none(NoticeSubscription.id == subscription_id)


def waiting_count(subscription_id: str) -> int:
    return NoticeDelivery.select().where(NoticeDelivery.subscription == subscription_id).count()
