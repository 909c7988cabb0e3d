"""Fair shares between projects: a limit per project on requests per second and on
concurrent streams, across every worker of every gateway replica, refused with 429 and
``Retry-After`` in Docker's error shape.

The limits: ``[rate_limits]`` in the settings file (``requests_per_second``, ``burst``,
``streams``; 0 is no limit), and per project ``moorage quota set PROJECT rate=N streams=N``
(rows of the quota table under the resources ``rate`` and ``streams``; -1 lifts a limit).

How it holds across workers and replicas without touching the store on each request:

- Each worker admits requests from a token bucket per project, in memory. The bucket fills
  at the worker's *share* of the project's rate, and holds its share of the burst.
- Once per ``sync_interval`` (1 s) each worker writes, in one statement, one row per project
  it served (``share_report``: the requests it was asked in the interval, refused ones too,
  and the streams it holds open) and reads the other workers' fresh rows for those projects.
  Its share of a project's rate is its part of that project's demand: a worker that gets most
  of a project's requests (one keep-alive client lands on one worker) gets most of its rate,
  and the sum of the shares is the project's limit wherever its requests land. A worker's
  open streams plus the others' last reported ones must stay under the stream limit.
- It reads the per-project limits from the quota table in the same exchange.
- A refused request waits (``refusal_delay``, 1 s, at most the Retry-After it gets) before its 429:
  a client that retries at once would otherwise turn cheap refusals into a busy loop that
  takes the CPU the other projects need (bench/README.md, the fairness figure).

So the store sees two statements per worker per interval, whatever the request rate. What
this costs in exactness: a worker that has not yet exchanged for a project (its first second
of the project's traffic) admits up to the project's whole burst, and the shares follow a
change of where the traffic lands one interval late; so a project can briefly exceed its rate
by up to one burst per newly busy worker, and its streams by what several workers admit in
the same interval. A token bucket per worker at rate / workers would be exact per worker but
wrong twice over: the number of replicas is not known to a worker, and a client's keep-alive
connection lands on one worker, which would hold it to a fraction of its rate.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import secrets
import socket
import time
from dataclasses import dataclass

import peewee

from gateway import metrics, store
from gateway.errors import DockerError

log = logging.getLogger("moorage.fairshare")

KEYS = ("rate", "streams")  # the quota table's resources for per-project overrides
# A report older than this many intervals is a gone worker's.
FRESH_INTERVALS = 3
# Reports older than this are deleted (by whichever worker exchanges next after it).
FORGET_AFTER = _dt.timedelta(minutes=1)
# A project idle on this worker for this long is forgotten here.
IDLE_SECONDS = 60.0


class TooManyRequests(DockerError):
    """429 with ``Retry-After`` (whole seconds, at least 1)."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(429, message)
        self.headers = (("Retry-After", str(max(1, math.ceil(retry_after)))),)


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    demand: int = 0  # requests asked since the last exchange, refused ones too
    streams: int = 0  # streams open on this worker now
    reported: bool = False  # the last exchange wrote a row for it


def parse_value(key: str, value) -> int:
    """A per-project override as stored: requests per second or streams; -1 lifts the limit."""
    text = str(value).strip().lower()
    if text in ("-1", "unlimited", "none"):
        return -1
    if not text.isdigit():
        raise ValueError(f"{key}: expected a whole number (-1 or 'unlimited' lifts it), not {value!r}")
    return int(text)


def report(project: str, settings) -> dict:
    """`moorage quota show`: the project's rate and streams limits, where each comes from, and
    what the workers last reported (requests per second asked, streams open)."""
    own = {
        key: value
        for key, value in store.Quota.select(store.Quota.resource, store.Quota.value)
        .where((store.Quota.project == project) & store.Quota.resource.in_(KEYS))
        .tuples()
    }
    default = {"rate": settings.rate_limits.requests_per_second, "streams": settings.rate_limits.streams}
    S = store.ShareReport
    interval = settings.rate_limits.sync_interval or 1.0
    horizon = store.utcnow() - _dt.timedelta(seconds=interval * FRESH_INTERVALS)
    demand, streams = (
        S.select(
            peewee.fn.COALESCE(peewee.fn.SUM(S.demand), 0), peewee.fn.COALESCE(peewee.fn.SUM(S.streams), 0)
        )
        .where((S.project == project) & (S.seen_at >= horizon))
        .tuples()
        .get()
    )
    used = {"rate": round(int(demand) / interval, 1), "streams": int(streams)}
    out = {}
    for key in KEYS:
        if key in own:
            limit, source = (own[key] if own[key] >= 0 else None), "project"
        else:
            limit, source = (default[key] or None), ("default" if default[key] else "none")
        out[key] = {"limit": limit, "in_use": used[key], "source": source}
    return out


class FairShare:
    """One worker's view of every project's fair share (see the module's docstring)."""

    def __init__(self, settings):
        self.settings = settings.rate_limits
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.buckets: dict[str, _Bucket] = {}
        self.overrides: dict[str, dict[str, int]] = {}  # project -> {"rate": n, "streams": n}
        self.shares: dict[str, float] = {}  # project -> this worker's part of its rate
        self.others_streams: dict[str, int] = {}
        self.last_forget = 0.0

    # -- limits -------------------------------------------------------------------------------
    def limit(self, project: str, key: str) -> int:
        """The project's limit (0: none)."""
        own = self.overrides.get(project, {}).get(key)
        if own is not None:
            return max(own, 0)
        return int(self.settings.requests_per_second if key == "rate" else self.settings.streams)

    # -- the hot path: memory only ------------------------------------------------------------
    def admit(self, project: str, streaming: bool) -> bool:
        """Count one request of ``project``; raise TooManyRequests over its share. True when
        it took a stream slot, which :meth:`release` must give back when the stream ends."""
        rate, streams = self.limit(project, "rate"), self.limit(project, "streams") if streaming else 0
        if not rate and not streams:
            return False
        now = time.monotonic()
        bucket = self.buckets.get(project)
        if bucket is None:
            bucket = self.buckets[project] = _Bucket(tokens=self._burst(project, rate), stamp=now)
        bucket.demand += 1
        if rate:
            share = self.shares.get(project, 1.0)
            bucket.tokens = min(
                self._burst(project, rate), bucket.tokens + (now - bucket.stamp) * rate * share
            )
            bucket.stamp = now
            if bucket.tokens < 1:
                metrics.RATE_REFUSALS.labels("requests").inc()
                retry_after = (1 - bucket.tokens) / (rate * share)
                self._hold(retry_after)
                raise TooManyRequests(
                    f"too many requests for project {project}: its limit is {rate} per second across "
                    "the gateway; wait as Retry-After says and retry, send fewer requests at once, or "
                    f"ask your operator to raise it (moorage quota set {project} rate=N)",
                    retry_after,
                )
            bucket.tokens -= 1
        if streams:
            if bucket.streams + self.others_streams.get(project, 0) >= streams:
                metrics.RATE_REFUSALS.labels("streams").inc()
                if rate:
                    bucket.tokens += 1  # not served: the token goes back
                self._hold(1.0)
                raise TooManyRequests(
                    f"too many open streams for project {project}: its limit is {streams} at once "
                    "(logs -f, attach, events, exec, wait, build, pull, push...); end one you no longer "
                    "need and retry, or ask your operator to raise it "
                    f"(moorage quota set {project} streams=N)",
                    1,
                )
            bucket.streams += 1
            return True
        return False

    def _hold(self, retry_after: float) -> None:
        """Wait before refusing (``refusal_delay``, at most the Retry-After sent): a client that
        ignores Retry-After and asks again at once would otherwise spend the gateway's CPU on
        refusals as fast as it can send, at the other projects' expense. Under gevent the wait
        is a sleeping greenlet: it costs the worker nothing but the open connection."""
        delay = min(self.settings.refusal_delay, max(1, math.ceil(retry_after)))  # Retry-After's
        if delay > 0:
            store.release_connection()  # a pooled PostgreSQL connection is not held while it waits
            time.sleep(delay)

    def release(self, project: str) -> None:
        """A stream admitted by :meth:`admit` has ended."""
        bucket = self.buckets.get(project)
        if bucket is not None and bucket.streams > 0:
            bucket.streams -= 1

    def _burst(self, project: str, rate: int) -> float:
        burst = self.settings.burst or rate
        return max(1.0, burst * self.shares.get(project, 1.0))

    # -- once per interval: the exchange with the store ---------------------------------------
    def exchange(self) -> None:
        """Report this worker's demand and streams, and learn the shares and the overrides."""
        S = store.ShareReport
        now = store.utcnow()
        rows, active = [], []
        for project, bucket in list(self.buckets.items()):
            if bucket.demand or bucket.streams or bucket.reported:
                rows.append(
                    {
                        S.worker: self.worker,
                        S.project: project,
                        S.demand: bucket.demand,
                        S.streams: bucket.streams,
                        S.seen_at: now,
                    }
                )
                bucket.reported = bool(bucket.demand or bucket.streams)
                if bucket.demand or bucket.streams:
                    active.append((project, bucket.demand))
                bucket.demand = 0
            elif time.monotonic() - bucket.stamp > IDLE_SECONDS:
                del self.buckets[project]
                self.shares.pop(project, None)
        if rows:
            with store.write_transaction():
                S.insert_many(rows).on_conflict(
                    conflict_target=[S.worker, S.project],
                    update={
                        S.demand: peewee.EXCLUDED.demand,
                        S.streams: peewee.EXCLUDED.streams,
                        S.seen_at: peewee.EXCLUDED.seen_at,
                    },
                ).execute()
        if active:
            self._learn_shares(dict(active), now)
        self._learn_streams(now)
        self.overrides = {}
        Q = store.Quota
        for project, key, value in (
            Q.select(Q.project, Q.resource, Q.value).where(Q.resource.in_(KEYS)).tuples()
        ):
            self.overrides.setdefault(project, {})[key] = value
        if time.monotonic() - self.last_forget > FORGET_AFTER.total_seconds():
            self.last_forget = time.monotonic()
            S.delete().where(S.seen_at < now - FORGET_AFTER).execute()

    def _learn_shares(self, mine: dict[str, int], now: _dt.datetime) -> None:
        S = store.ShareReport
        horizon = now - _dt.timedelta(seconds=self.settings.sync_interval * FRESH_INTERVALS)
        totals: dict[str, int] = {}
        query = S.select(S.project, S.demand).where(S.project.in_(sorted(mine)) & (S.seen_at >= horizon))
        for project, demand in query.tuples():
            totals[project] = totals.get(project, 0) + demand
        for project, demand in mine.items():
            total = totals.get(project, 0)
            self.shares[project] = demand / total if total and demand else 1.0

    def _learn_streams(self, now: _dt.datetime) -> None:
        """The streams the other workers hold open, for every project that holds any: a worker
        that has not served a project lately must still count them at its first stream."""
        S = store.ShareReport
        horizon = now - _dt.timedelta(seconds=self.settings.sync_interval * FRESH_INTERVALS)
        query = (
            S.select(S.project, peewee.fn.SUM(S.streams))
            .where((S.seen_at >= horizon) & (S.streams > 0) & (S.worker != self.worker))
            .group_by(S.project)
        )
        self.others_streams = {project: int(n) for project, n in query.tuples()}
