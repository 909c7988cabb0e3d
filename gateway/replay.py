"""Replayed answers: a client's read answered again, before the WSGI stack, with the gateway's
own answer to the same request of a moment ago, while nothing it was made of has changed.

A `docker ps` or `inspect` the read cache answers (gateway/services/readcache.py) still costs
the gateway about 0.33 ms of CPU: gunicorn's parsing, the WSGI environ and response, Falcon,
authentication, the tenant's rewrite and the translation, the JSON. Clients repeat the same
request byte for byte (a CI runner's or a compose's polling, testcontainers' waits, the
same `docker ps` from a shell), so the worker keeps the answer it sent and sends it again
(gateway/server.py reads the request's head before gunicorn does) when

- the request's head is the same bytes, on the same listener: its method, path, query,
  credentials and every header it carries, so whatever the answer depended on in the
  request is the same; a request with a body never replays;
- its route declares it (``Route.replays``: ps and inspect) and the answer was a whole
  200 (no stream, no hijack);
- everything the gateway read to make it is unchanged: the store's generation read before the
  request, and each instance's generation read before its daemon was asked (the read cache's
  own rule: a write through the gateway to that instance, or an event of its daemon, changes
  it, and an instance whose events are not followed is never kept); a call to an agent that
  the read cache did not cover makes the answer unkept;
- every daemon answer in it is still young enough for the read cache (its MAX_AGE);
- the credentials still authenticate, now, as the same user of the same project (the token's
  check is the identity provider's, with its own cache and expiry), and the project's
  request rate still admits it (gateway/fairshare.py).

A replay is counted, logged and audited as any answer, with its own request ID and Date.
Off with ``[gateway] read_cache = false`` and with the PostgreSQL store, as the read cache is
(no generations: ``generations.store_generation`` is None).
"""

from __future__ import annotations

import contextvars
import email.utils
import time
from dataclasses import dataclass, field
from typing import Any

from gateway import generations, logs, metrics
from gateway.budgeted import Budgeted
from gateway.errors import DockerError
from relay.upstream import send_parts

MAX_HEAD = 8192  # a request head larger than this is left to gunicorn
MAX_ENTRIES = 512
# An answer is kept from the second time its request comes within this long: a request seen
# once (one with a request ID of its own, say) costs a note, not an answer kept for nothing.
SEEN_WITHIN = 5.0  # seconds
MAX_SEEN = 8192
MAX_BYTES = 1 << 20  # a larger answer is made every time
BUDGET = 16 << 20  # bytes of answers one worker keeps at most


@dataclass
class Recording:
    """What one request's answer was made of, gathered while the app makes it."""

    key: tuple
    store_generation: int
    # (instance UUID, its generation, until when the read cache would use its daemon's answer)
    reads: list[tuple[str, int, float]] = field(default_factory=list)
    agent_calls: int = 0  # every request to an agent (gateway/agentclient.py)
    covered_calls: int = 0  # of those, the read cache's own asks (a miss it keeps)
    headers: dict[str, str] | None = None  # as the app authenticated them
    identity: Any = None
    spoiled: bool = False


@dataclass
class Answer:
    """A kept answer: its head around the two values each replay makes anew, and its body."""

    before_date: bytes
    between: bytes  # from the end of the Date value to the start of the request ID's
    after_id: bytes
    body: bytes
    closes: bool  # its head says Connection: close
    store_generation: int
    reads: tuple[tuple[str, int], ...]
    expires: float
    headers: dict[str, str]
    identity: Any  # as the app authenticated the request (project, user, roles)
    environ: dict[str, str]  # what the request's metrics, log line and audit read
    presented_id: str | None  # the client's own X-Request-Id, which the answer repeats
    counted: Any = None  # its operation's child of metrics.REPLAYS

    @property
    def size(self) -> int:
        return len(self.before_date) + len(self.between) + len(self.after_id) + len(self.body)


_CANDIDATE: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("moorage_replay_key", default=None)
_RECORDING: contextvars.ContextVar[Recording | None] = contextvars.ContextVar("moorage_replay", default=None)
_PENDING: contextvars.ContextVar[tuple[Recording, dict] | None] = contextvars.ContextVar(
    "moorage_replay_pending", default=None
)

_answers: Budgeted[Answer] = Budgeted(MAX_ENTRIES, BUDGET, lambda entry: entry.size)
_seen: dict[int, float] = {}  # hash of a request's key -> when it last came
_gateway: Any = None  # the gateway.app.Gateway this worker serves (configure)


def configure(gateway) -> None:
    """Replays answer for this app (its identity provider, certificates, fair share, metrics)."""
    global _gateway
    _gateway = gateway
    clear()


def enabled() -> bool:
    return _gateway is not None and generations.store_generation() is not None


# -- the front: gateway/server.py ----------------------------------------------------------


def head_key(local: Any, head: bytes) -> tuple | None:
    """The key of a request whose head is ``head`` (its blank line included), if it may
    replay at all: a GET with no body."""
    if not head.startswith(b"GET "):
        return None
    lowered = head.lower()
    if b"\ncontent-length:" in lowered and b"\ncontent-length: 0\r" not in lowered:
        return None
    if b"\ntransfer-encoding:" in lowered or b"\nupgrade:" in lowered:
        return None
    return (local, head)


def candidate(key: tuple | None) -> None:
    """The head of the request gunicorn parses next (None: not one that may replay)."""
    _CANDIDATE.set(key)


def answer(key: tuple, sock, worker=None) -> bool | None:
    """Send the kept answer to the request whose head made ``key``, if it may be: True when
    sent and the connection stays open, False when sent and it must close, None when the
    request goes to the app."""
    entry = _answers.get(key)
    if entry is None or _gateway is None or (worker is not None and not worker.alive):
        return None  # (a worker that is stopping answers through gunicorn, which closes)
    started = time.monotonic()
    if not _fresh(entry, started) or not _same_user(entry, sock):
        _answers.drop(key)
        return None
    try:
        _gateway.fairshare.admit(entry.identity.project_id, False)
    except DockerError:  # over the project's rate: the app refuses it, in its words
        return None
    rid = logs.begin_request(entry.presented_id)
    head = (entry.before_date, _http_date(), entry.between, rid.encode(), entry.after_id)
    send_parts(sock, (*head, entry.body))  # one sendmsg, no joined copy (server.py's write)
    if worker is not None:
        worker.nr += 1
    _gateway.answered(entry.environ, "200", started)
    entry.counted.inc()
    return not entry.closes


def _fresh(entry: Answer, now: float) -> bool:
    if now >= entry.expires or generations.store_generation() != entry.store_generation:
        return False
    current = generations.current
    return all(current(uuid) == generation for uuid, generation in entry.reads)


def _same_user(entry: Answer, sock) -> bool:
    """The credentials authenticate now as they did (a revoked or expired token does not)."""
    try:
        identity = _gateway.authenticate_headers(entry.headers, sock)
    except DockerError:  # refused now: the app says why
        return False
    return identity == entry.identity


_date_cache: tuple[int, str, bytes] = (0, "", b"")


def http_date() -> str:
    """gunicorn's Date value (util.http_date), made once a second: for the replays' heads and
    for gunicorn's own (gateway/server.py puts it in gunicorn's place; formatting it for every
    answer was 2% of the CPU of a small one)."""
    return _date()[1]


def _http_date() -> bytes:
    return _date()[2]


def _date() -> tuple[int, str, bytes]:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        text = email.utils.formatdate(now, usegmt=True)
        _date_cache = (now, text, text.encode())
    return _date_cache


# -- the app: gateway/app.py, the read cache, the agent client ------------------------------


def begin() -> Recording | None:
    """A request starts: record what its answer is made of, if its head may replay."""
    _PENDING.set(None)
    key = _CANDIDATE.get()
    if key is None:
        _RECORDING.set(None)
        return None
    _CANDIDATE.set(None)
    store_generation = generations.store_generation()  # before any read of the store
    recording = None if store_generation is None or _gateway is None else Recording(key, store_generation)
    _RECORDING.set(recording)
    return recording


def authenticated(headers: dict[str, str], identity: Any) -> None:
    """The app authenticated the request as ``identity`` from ``headers``."""
    recording = _RECORDING.get()
    if recording is not None:
        recording.headers, recording.identity = headers, identity


def daemon_read(uuid: str, generation: int, good_until: float) -> None:
    """The read cache answered with (or kept) a daemon's answer asked for while the instance's
    generation was ``generation``, which it would use until ``good_until`` (monotonic)."""
    recording = _RECORDING.get()
    if recording is not None:
        recording.reads.append((uuid, generation, good_until))


def read_cache_asked() -> None:
    """The read cache's miss asked the agent (one call, covered by its daemon_read)."""
    recording = _RECORDING.get()
    if recording is not None:
        recording.covered_calls += 1


def agent_called() -> None:
    """A request went to an agent (gateway/agentclient.py)."""
    recording = _RECORDING.get()
    if recording is not None:
        recording.agent_calls += 1


def spoil() -> None:
    """Something the answer depends on is not tracked: do not keep it."""
    recording = _RECORDING.get()
    if recording is not None:
        recording.spoiled = True


def finish(environ: dict, status: str, replays: bool, result: Any) -> None:
    """The app answered: if the answer may replay, it is kept when gunicorn sends it (sent)."""
    recording = _RECORDING.get()
    _RECORDING.set(None)
    _PENDING.set(None)
    if (
        recording is None
        or not replays
        or recording.spoiled
        or status != "200"
        or recording.identity is None
        or recording.headers is None
        or recording.agent_calls != recording.covered_calls
        or not isinstance(result, list)
        or len(result) != 1
        or environ.get("moorage.hijacked")
        or environ.get("moorage.stream")
        or not _seen_before(recording.key)
    ):
        return
    _PENDING.set((recording, environ))


def _seen_before(key: tuple) -> bool:
    """Whether the same request came within SEEN_WITHIN (and note that it came now)."""
    now = time.monotonic()
    digest = hash(key)
    last = _seen.get(digest)
    if last is None and len(_seen) >= MAX_SEEN:
        _seen.clear()
    _seen[digest] = now
    return last is not None and now - last < SEEN_WITHIN


def sent(head: bytes, body: bytes) -> None:
    """gunicorn sent the answer's head and whole body in one write: keep them, if pending."""
    pending = _PENDING.get()
    if pending is None:
        return
    _PENDING.set(None)
    recording, environ = pending
    if len(body) > MAX_BYTES or not head.startswith(b"HTTP/1.1 200 "):
        return
    parts = _split_head(head)
    if parts is None:
        return
    expires = min((until for _, _, until in recording.reads), default=time.monotonic())
    presented = recording.headers.get("X-REQUEST-ID")
    _answers.keep(
        recording.key,
        Answer(
            *parts,
            body=body,
            closes=b"\r\nconnection: close\r\n" in head.lower(),
            store_generation=recording.store_generation,
            reads=tuple((uuid, generation) for uuid, generation, _ in recording.reads),
            expires=expires,
            headers=recording.headers,
            identity=recording.identity,
            environ={
                "moorage.operation": environ.get("moorage.operation", "Unknown"),
                "REQUEST_METHOD": "GET",
                "PATH_INFO": environ.get("PATH_INFO", ""),
                "moorage.project": environ.get("moorage.project", ""),
                "REMOTE_ADDR": environ.get("REMOTE_ADDR", ""),
            },
            presented_id=presented if presented and presented == logs.request_id() else None,
            counted=metrics.REPLAYS.labels(environ.get("moorage.operation", "Unknown")),
        ),
    )


def _split_head(head: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(up to the Date value, from its end to the request ID's value, from its end): the
    answer's head with the two values each replay makes anew cut out. None when either is
    missing or they come the other way round."""
    lowered = head.lower()
    date = lowered.find(b"\r\ndate: ")
    rid = lowered.find(b"\r\nx-request-id: ")
    if date < 0 or rid < 0 or rid < date:
        return None
    date_start = date + len(b"\r\ndate: ")
    date_end = head.index(b"\r\n", date_start)
    rid_start = rid + len(b"\r\nx-request-id: ")
    rid_end = head.index(b"\r\n", rid_start)
    return head[:date_start], head[date_end:rid_start], head[rid_end:]


def clear() -> None:
    _answers.clear()
    _seen.clear()
