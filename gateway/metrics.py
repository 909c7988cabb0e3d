"""The gateway's Prometheus metrics (prometheus-client), served on ``[gateway] metrics_bind``.

Every module that counts something imports its metric from here; gateway/server.py serves
them. Under gunicorn the workers are separate processes, so ``moorage serve`` with a
metrics_bind uses prometheus_client's multiprocess mode: it makes a fresh directory, names it
in PROMETHEUS_MULTIPROC_DIR before this module is first imported (gateway/server.py
``prepare_metrics``), every worker
writes its values to files there, and the master's metrics server adds them up at scrape
time. Without metrics_bind (unit tests, ``moorage`` commands) the values live in the process.

    moorage_requests_total{operation,status}        Docker (and agent) API requests answered
    moorage_request_duration_seconds{operation}     time to the answer's start (a hijacked
                                                    session: its whole life)
    moorage_streams_in_flight                       streamed or hijacked answers now open
    moorage_instances{state}                        instances by state (up, draining, down,
                                                    silent: up but not heard from), counted
                                                    at every agent heartbeat
    moorage_placement_duration_seconds{outcome}     placement decisions (placed, refused,
                                                    error) and their time
    moorage_quota_refusals_total{resource}          403s for a full quota
    moorage_agent_heartbeats_total{result}          agent heartbeats received (ok, refused)
    moorage_agent_heartbeats_missed{instance}       heartbeats an up or draining instance has
                                                    missed in a row once it is silent past the
                                                    heartbeat timeout (0: heard from in time),
                                                    counted at every agent heartbeat and by each
                                                    worker every heartbeat interval
    moorage_rate_refusals_total{kind}               429s of the fair shares (requests, streams)
    moorage_notifications_dropped_total             notifications dropped: the outbox was full
    moorage_notifications_sent_total                notifications handed to the broker
    moorage_greenlets                               greenlets alive in the replica's workers,
                                                    counted by each worker every heartbeat
                                                    interval (gateway/upkeep.py): flat under a
                                                    steady load, back to its baseline after
                                                    (bench/soak); a climb is a leak

Recording is a few in-memory (or mmap-file) writes: nothing on the request path asks the store.
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram, values


def use_files() -> None:
    """Values made from now on live in PROMETHEUS_MULTIPROC_DIR's files, one file per process
    (multiprocess mode; gateway/server.py prepare_metrics). prometheus_client's own choice
    asks os.getpid() at every increment, to notice a fork: a system call (glibc caches no
    PID), three per request (the count, the duration's sum and its bucket), 2.7% of the
    gateway's CPU for a `ps` (py-spy). The PID is kept here instead and renewed in a forked
    child before any code of its runs (os.register_at_fork), the rule a process_identifier
    must keep."""
    if not getattr(values.ValueClass, "_moorage_files", False):
        values.ValueClass = values.MultiProcessValue(process_identifier=_own_pid)
        values.ValueClass._moorage_files = True  # pyright: ignore[reportAttributeAccessIssue]


def _own_pid() -> int:
    return _PID[0]


_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # set before this import: as prometheus_client chose
    use_files()

REQUESTS = Counter(
    "moorage_requests", "API requests answered, by Docker operation ID and status", ["operation", "status"]
)
REQUEST_SECONDS = Histogram(
    "moorage_request_duration_seconds",
    "Time to the answer's start, by Docker operation ID (a hijacked session: its whole life)",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
# livesum: the open streams of live workers only; a dead worker's are gone with it.
STREAMS = Gauge(
    "moorage_streams_in_flight", "Streamed or hijacked answers now open", multiprocess_mode="livesum"
)
# mostrecent: whichever worker counted last says how many there are.
INSTANCES = Gauge(
    "moorage_instances",
    "Instances by state, counted at agent heartbeats",
    ["state"],
    multiprocess_mode="mostrecent",
)
PLACEMENT_SECONDS = Histogram(
    "moorage_placement_duration_seconds",
    "Placement decisions by outcome (placed, refused, error) and their time",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
REPLAYS = Counter(
    "moorage_replayed_answers",
    "Answers sent again to a repeated read while nothing they were made of changed (also counted "
    "in moorage_requests), by Docker operation ID",
    ["operation"],
)
QUOTA_REFUSALS = Counter("moorage_quota_refusals", "Requests refused (403) for a full quota", ["resource"])
HEARTBEATS_MISSED = Gauge(
    "moorage_agent_heartbeats_missed",
    "Heartbeats missed in a row by an up or draining instance silent past the heartbeat timeout",
    ["instance"],
    multiprocess_mode="mostrecent",
)
RATE_REFUSALS = Counter(
    "moorage_rate_refusals", "Requests refused (429) for a project's fair share", ["kind"]
)
NOTIFICATIONS_DROPPED = Counter(
    "moorage_notifications_dropped", "Notifications dropped because the outbox was full"
)
NOTIFICATIONS_SENT = Counter("moorage_notifications_sent", "Notifications handed to the broker")
HEARTBEATS = Counter("moorage_agent_heartbeats", "Agent heartbeats received, by result", ["result"])
# livesum: the live workers' counts added up; a dead worker's greenlets are gone with it.
GREENLETS = Gauge(
    "moorage_greenlets",
    "Greenlets alive in the workers, counted every heartbeat interval",
    multiprocess_mode="livesum",
)


def serve(host: str, port: int, path: str):
    """The master's metrics server, adding up the workers' files in ``path``. Returns
    (server, thread)."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return start_http_server(port, addr=host, registry=registry)


def worker_exited(pid: int) -> None:
    """A worker is gone: its live gauges (open streams) no longer count."""
    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
