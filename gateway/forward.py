"""Forwarding: the one path by which a Docker API request reaches an instance's daemon.

The client's request goes to the instance's agent with its body piped as it arrives; the
daemon's answer comes back the same way. A hijacked answer (attach, exec start, `run -it`)
turns the client's connection into a raw splice through the relay.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import inspect
import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from gunicorn.http.body import ChunkedReader, LengthReader
from gunicorn.http.errors import ParseException

from gateway import generations, instances, jsonbody, logs, store, versions
from gateway.agentclient import AgentClient
from gateway.context import Context
from gateway.errors import DockerError, scrubbed_body
from gateway.tenancy import names
from gateway.wire import (
    AGENT_SECRET_HEADER,
    BOOTSTRAP_SECRET_HEADER,
    PROJECT_HEADER,
    REGISTRATION_SECRET_HEADER,
    REQUEST_ID_HEADER,
    TOKEN_HEADER,
)
from relay import Framed, UpstreamError, UpstreamResponse, splice
from relay.framing import BodyEnd, FramingError
from relay.upstream import relay_buffer

log = logging.getLogger("moorage.gateway")

# Never forwarded down: hop-by-hop headers, and the tenant's credentials (a token must
# never reach an instance).
_DROP_REQUEST = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
    TOKEN_HEADER.lower(),
    PROJECT_HEADER.lower(),
    AGENT_SECRET_HEADER.lower(),
    REGISTRATION_SECRET_HEADER.lower(),
    BOOTSTRAP_SECRET_HEADER.lower(),
    REQUEST_ID_HEADER.lower(),  # the agent client sends the request's own (gateway/logs.py)
}
_DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}

# Headers the gateway sets on every answer itself (as one daemon would).
_GATEWAY_STATED = {"api-version", "docker-experimental", "ostype"}

_KEEP = object()
BUFFER = 256 * 1024
# Request bodies are read in large pieces: gunicorn's body readers copy their read-ahead
# buffer on every read, so small reads make uploads (cp in, load, build) CPU-bound.
BODY_READ = 1024 * 1024
ERROR_BODY_LIMIT = 64 * 1024


# Headers a client repeats, one value each, that WSGI joins into one with commas: sent again
# as the client sent them. BuildKit's session lists its gRPC methods so, and dockerd reads
# each line as one method (a joined line names none, and the build finds no local sources).
_REPEATED_REQUEST = {"x-docker-expose-session-grpc-method"}


def _client_headers(ctx: Context) -> list[tuple[str, str]]:
    out = []
    for name, value in ctx.req.env.items():
        if not name.startswith("HTTP_"):
            continue
        header = name[5:].replace("_", "-").title()
        if header.lower() in _REPEATED_REQUEST:
            out += [(header, part.strip()) for part in value.split(",") if part.strip()]
        elif header.lower() not in _DROP_REQUEST:
            out.append((header, value))
    if ctx.req.content_type:
        out.append(("Content-Type", ctx.req.content_type))
    return out


def wants_upgrade(ctx: Context) -> bool:
    return "upgrade" in (ctx.req.get_header("Connection") or "").lower() and bool(
        ctx.req.get_header("Upgrade")
    )


class _Idle:
    """While a body is read, the client's socket gives up after ``seconds`` of silence, so a
    client that stops sending cannot hold the request (and its upstream connection) forever."""

    def __init__(self, sock, seconds: float | None):
        self.sock = sock if seconds else None
        self.seconds = seconds
        self.before = None

    def __enter__(self):
        if self.sock is not None:
            self.before = self.sock.gettimeout()
            self.sock.settimeout(self.seconds)

    def __exit__(self, *_):
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.settimeout(self.before)


def _read_stream(stream, remaining: int | None, sock=None, idle: float | None = None) -> Iterator[bytes]:
    """The client's body, read in large pieces: the one place a request body is read.

    gunicorn's readers raise ``ParseException`` subclasses (InvalidChunkSize,
    ChunkMissingTerminator, ...) for a malformed chunked body, and ``NoMoreData`` (an
    OSError, like a reset or an idle timeout) when the client goes away inside it; a body
    shorter than its Content-Length just ends early. Each is the client's fault: a 400 here,
    raised into whatever consumes the body, so that a request being relayed upstream is aborted
    rather than left waiting for bytes that never come."""
    declared = remaining
    while remaining is None or remaining > 0:
        try:
            with _Idle(sock, idle):
                data = stream.read(BODY_READ if remaining is None else min(BODY_READ, remaining))
        except ParseException as exc:
            raise DockerError(400, f"malformed request body: {exc}; send a well-formed request") from exc
        except OSError as exc:
            raise _body_error(exc) from exc
        if not data:
            if remaining is not None:
                raise DockerError(
                    400,
                    f"request body ended after {declared - remaining} of its {declared} bytes "
                    "(unexpected EOF); send the whole body",
                )
            return
        if remaining is not None:
            remaining -= len(data)
        yield data


def client_body(ctx: Context) -> tuple[Iterable[bytes] | None, int | None]:
    """The client's body as an iterator of buffers, and its length if known."""
    length = ctx.req.content_length
    sock = ctx.req.env.get("gunicorn.socket")
    idle = ctx.settings.gateway.body_idle_timeout
    chunked = "chunked" in (ctx.req.get_header("Transfer-Encoding") or "").lower()
    if (length or chunked) and sock is not None:
        direct = _socket_body(ctx.req.env.get("wsgi.input"), sock, idle)
        if direct is not None:
            return direct
    if length:
        return _read_stream(ctx.req.stream, length, sock, idle), length
    if chunked:
        return _read_stream(ctx.req.stream, None, sock, idle), None
    return None, None


def _socket_body(body, sock, idle: float | None) -> tuple[Iterator[bytes], int | None] | None:
    """The body read from the client's socket here, not through gunicorn's readers, when
    nothing of it has been read yet: those copy every byte several times over (their read-ahead
    buffers are rebuilt on every read), which made an upload's relay CPU-bound. gunicorn's
    reader is kept told how much is left (a body of known length) or that the body is done,
    so that its keep-alive finds the next request where it starts; a chunked body left unread
    halfway marks the request's body failed, and the connection is closed after the answer."""
    reader = getattr(body, "reader", None)
    held = getattr(body, "buf", None)
    if held is None or held.tell():
        return None
    if isinstance(reader, LengthReader) and reader.length:
        return _length_body(body, reader, sock, idle), reader.length
    if (
        isinstance(reader, ChunkedReader)
        and reader.parser is not None
        and inspect.getgeneratorstate(reader.parser) == inspect.GEN_CREATED
        and not reader.buf.tell()
    ):
        return _chunked_body(body, reader, sock, idle), None
    return None


def _body_error(exc: OSError) -> DockerError:
    why = "timed out" if isinstance(exc, TimeoutError) else "unexpected EOF"
    return DockerError(
        400, f"cannot read the request body: {why} ({type(exc).__name__}); send the whole body"
    )


def _length_body(body, reader: LengthReader, sock, idle: float | None) -> Iterator[bytes]:
    declared = reader.length
    try:
        held = reader.unreader.take_buffered()  # read ahead with the head
        if len(held) > reader.length:
            reader.unreader.unread(held[reader.length :])
            held = held[: reader.length]
        if held:
            reader.length -= len(held)
            yield held
        while reader.length > 0:
            with _Idle(sock, idle):
                data = sock.recv(min(BODY_READ, reader.length))
            if not data:
                raise DockerError(
                    400,
                    f"request body ended after {declared - reader.length} of its {declared} bytes "
                    "(unexpected EOF); send the whole body",
                )
            reader.length -= len(data)
            yield data
    except OSError as exc:
        body.failed = True
        raise _body_error(exc) from exc
    except DockerError:
        body.failed = True
        raise


def _chunked_body(body, reader: ChunkedReader, sock, idle: float | None) -> Iterator[bytes]:
    end = BodyEnd(chunked=True)
    unreader = reader.req.unreader
    finished = False
    try:
        held = unreader.take_buffered()  # read ahead with the head
        with relay_buffer() as buf, memoryview(buf) as view:
            while not end.done:
                spans: list[tuple[int, int]] = []
                if held:
                    data, n, held = held, len(held), b""
                    used = end.feed(data, n, spans)
                else:
                    with _Idle(sock, idle):
                        n = sock.recv_into(buf)
                    if not n:
                        raise DockerError(
                            400, "request body ended inside its chunks (unexpected EOF); send the whole body"
                        )
                    used = end.feed(buf, n, spans)
                    data = view
                if used < n:
                    unreader.unread(bytes(data[used:n]))  # the next request's
                piece = b"".join([data[a:b] for a, b in spans])
                if piece:
                    yield piece
        reader.parser = None  # gunicorn's reader: the body is over
        finished = True
    except FramingError as exc:
        raise DockerError(400, f"malformed request body: {exc}; send a well-formed request") from None
    except OSError as exc:
        raise _body_error(exc) from exc
    finally:
        if not finished:
            body.failed = True  # where the next request starts is unknown: the connection ends


def _client_path(ctx: Context) -> str:
    """The request's path without its /vX.Y prefix."""
    path = ctx.req.path
    if path.startswith("/v") and "/" in path[1:]:
        head, rest = path[1:].split("/", 1)
        if head[1:].replace(".", "").isdigit():
            path = "/" + rest
    return path


def target(ctx: Context, path: str | None = None, query: str | None = None, version: str = "") -> str:
    """The upstream request target, always with an explicit API version (the daemon's)."""
    if path is None:
        path = _client_path(ctx)
    query = ctx.req.query_string if query is None else query
    return f"/v{version or ctx.version}{quote(path, safe='/:@!$&()*+,;=-._~')}" + (
        f"?{query}" if query else ""
    )


def daemon_version(ctx: Context, instance: store.Instance) -> str:
    """The version this request speaks to ``instance``'s daemon, noted for the answer's
    translation (Context.translated)."""
    spoken = versions.for_daemon(ctx.version, instance.api_version or "", instance.min_api_version or "")
    if spoken not in ctx.spoken:
        ctx.spoken.append(spoken)
    return spoken


def _carries_the_clients_request(ctx: Context, method: str, path: str) -> bool:
    """Whether a daemon call is the client's own request (the route's operation, on the
    daemon's object): only what the client sent is translated, never the gateway's own calls,
    which it writes in the oldest shape."""
    return method == ctx.req.method and bool(ctx.route.regex.match(path))


def _translated(
    ctx: Context, spoken: str, method: str, path: str | None, query: str | None, body
) -> tuple[str | None, Any, versions.Call | None]:
    """The client's request as the daemon at ``spoken`` must receive it (gateway/versions)."""
    if spoken == ctx.version or not _carries_the_clients_request(ctx, method, path or _client_path(ctx)):
        return query, body, None
    # A copy: a service may send the same body again (a create retried), translated afresh.
    parsed = copy.deepcopy(body) if isinstance(body, dict | list) else None
    pairs = parse_qsl(ctx.req.query_string if query is None else query, keep_blank_values=True)
    call = versions.translate_request(ctx.route.operation, ctx.version, spoken, parsed, pairs)
    if call.query_changed:
        query = urlencode(call.query)
    return query, (call.body if parsed is not None else body), call


def send(
    ctx: Context,
    instance: store.Instance,
    *,
    method: str | None = None,
    path: str | None = None,
    query: str | None = None,
    body=_KEEP,
    content_type: str | None = None,
    timeout: float | None = None,
) -> UpstreamResponse:
    """Send the request (or a variant of it) to ``instance`` and return the response head."""
    return _send(
        ctx,
        instance,
        method=method,
        path=path,
        query=query,
        body=body,
        content_type=content_type,
        timeout=timeout,
    )[0]


def _send(
    ctx: Context,
    instance: store.Instance,
    *,
    method: str | None = None,
    path: str | None = None,
    query: str | None = None,
    body=_KEEP,
    content_type: str | None = None,
    timeout: float | None = None,
) -> tuple[UpstreamResponse, versions.Call | None]:
    spoken = daemon_version(ctx, instance)
    method = method or ctx.req.method
    query, body, translated = _translated(ctx, spoken, method, path, query, body)
    headers = _client_headers(ctx)
    length = None
    if body is _KEEP:
        body, length = client_body(ctx)
    elif isinstance(body, dict | list):
        body = json.dumps(body).encode()
        content_type = content_type or "application/json"
    if content_type:
        headers = [(k, v) for k, v in headers if k.lower() != "content-type"] + [
            ("Content-Type", content_type)
        ]
    if wants_upgrade(ctx):
        headers += [("Connection", "Upgrade"), ("Upgrade", ctx.req.get_header("Upgrade"))]
    try:
        upstream = AgentClient(instance).send(
            method,
            target(ctx, path, query, spoken),
            headers,
            body,
            content_length=length,
            timeout=timeout,
        )
    except UpstreamError as exc:
        log.warning("instance %s unreachable: %s", instance.uuid, exc)
        raise DockerError(
            503,
            f"instance {instance.uuid} is not answering ({exc}); try again shortly, "
            "or ask the operator to check its agent",
        ) from exc
    return upstream, translated


def check_agent(instance: store.Instance, upstream: UpstreamResponse) -> None:
    """An agent that refuses us (rotated secret) is as good as down for this request."""
    if upstream.status == 401 and upstream.header("Content-Type", "").startswith("application/json"):
        body = upstream.read()
        raise DockerError(
            503,
            f"instance {instance.uuid} refused the gateway ({body.decode(errors='replace').strip()}); "
            "its agent is re-registering, try again shortly",
        )


def call(
    ctx: Context,
    instance: store.Instance,
    method: str,
    path: str,
    *,
    query: str = "",
    body=None,
    timeout: float | None = 60,
) -> tuple[int, Any]:
    """A gateway-originated call whose (small, JSON) answer the gateway reads itself. When it
    carries the client's request and the daemon needs several calls to do what the client's
    version does in one (gateway/versions rows EMULATED), they are made here: all of them, or
    the first is taken back and the failing one's error answered."""
    upstream, translated = _send(
        ctx,
        instance,
        method=method,
        path=path,
        query=query,
        body=body if body is not None else b"",
        timeout=timeout,
    )
    status, payload = _read(instance, upstream)
    if method not in ("GET", "HEAD"):
        generations.bump(instance.uuid)  # a body that ends with the change (wait): read it first
    if translated is None or not translated.followups or status >= 300 or not isinstance(payload, dict):
        return status, payload
    made = str(payload.get("Id", ""))
    for followup in translated.followups:
        step_status, step_payload = _followup(ctx, instance, followup, made, timeout)
        if step_status >= 300:
            if translated.undo is not None:
                _followup(ctx, instance, translated.undo, made, timeout, query="force=1&v=1")
            return step_status, step_payload
    return status, payload


def _followup(ctx: Context, instance, step, made: str, timeout, query: str = "") -> tuple[int, Any]:
    body = step.body
    if isinstance(body, dict):
        body = {key: made if value == "{id}" else value for key, value in body.items()}
    upstream = send(
        ctx,
        instance,
        method=step.method,
        path=step.path.replace("{id}", made),
        query=query,
        body=body if body is not None else b"",
        timeout=timeout,
    )
    return _read(instance, upstream)


def _read(instance: store.Instance, upstream: UpstreamResponse) -> tuple[int, Any]:
    check_agent(instance, upstream)
    raw = upstream.read()
    try:
        return upstream.status, jsonbody.decode(raw) if raw else None
    except ValueError:
        return upstream.status, raw.decode(errors="replace")


def raise_for(status: int, payload) -> None:
    """Turn a daemon's error answer into the same error for the client."""
    if status >= 400:
        message = payload.get("message") if isinstance(payload, dict) else str(payload or "").strip()
        raise DockerError(status, message or f"daemon answered {status}")


def respond(ctx: Context, instance: store.Instance, upstream: UpstreamResponse) -> None:
    """Answer the client with the daemon's response, streamed; hijack if the daemon did."""
    check_agent(instance, upstream)
    if upstream.is_raw_stream and ctx.route.streaming:
        hijack(ctx, upstream, instance)
        return
    if ctx.route.raw_errors and upstream.status >= 400:
        # dockerd refused on the connection it had taken over (bad detach keys): the same raw
        # answer goes to the client (gateway/app.py), with the tenant's names and no daemon path.
        raise DockerError(upstream.status, _bounded_text(upstream).strip() or upstream.reason)
    resp = ctx.resp
    resp.status = upstream.status
    for name, value in upstream.headers:
        lname = name.lower()
        if lname in _DROP_RESPONSE:
            continue
        if lname == "content-type":
            resp.content_type = value
        elif lname in _GATEWAY_STATED:
            continue  # the gateway states its own (see app.py)
        else:
            resp.append_header(name, value)
    if (
        upstream.status >= 400
        and upstream.has_body
        and (upstream.content_length or 0) <= ERROR_BODY_LIMIT
        and ctx.project
        and upstream.content_length is not None
    ):
        # An error quotes names as the daemon knows them; the tenant gets its own back, and
        # none of the daemon's own paths (gateway/errors.py scrub_paths).
        resp.status, text = scrubbed_body(
            upstream.status, upstream.read().decode("utf-8", "replace"), instances.daemon_roots()
        )
        resp.data = names.text_to_tenant(ctx.project, text).encode()
        return
    if (
        upstream.status < 300
        and upstream.has_body
        and upstream.content_length is not None
        and upstream.content_length <= ERROR_BODY_LIMIT
        and (upstream.header("Content-Type") or "").startswith("application/json")
        and versions.answers_change(ctx.route.operation, ctx.version, ctx.spoken)
    ):
        # The daemon's answer in the shape of the client's version (gateway/versions).
        payload = jsonbody.decode(upstream.read() or b"null")
        resp.data = jsonbody.encode(ctx.translated(payload)) + b"\n"
        return
    if upstream.content_length is not None:
        resp.content_length = upstream.content_length
    if upstream.has_body and upstream.chunked and ctx.req.method == "GET":
        resp.stream = ReadStream(upstream)
    elif upstream.has_body:
        chunks = upstream.iter_body()
        if ctx.req.method not in ("GET", "HEAD"):
            chunks = _changing(chunks, instance.uuid)
        resp.stream = _head_first(chunks)
    else:
        upstream.close()


class ReadStream:
    """A read's chunked answer (logs, an archive, a save) as ``resp.stream``. Iterated, it is
    the body's bytes, the framing taken off: what a service that reworks the stream reads
    (stats' names, services/containers.py). Handed to gunicorn as it is, unwrapped, the
    gateway sends its pieces framed as the agent framed them instead (``framed``, taken by
    Gateway.__call__ when the answer goes out chunked): no taking the chunks apart to frame
    them again; the agent joins a log's one-line chunks (agent/server.py)."""

    def __init__(self, upstream: UpstreamResponse):
        self.upstream = upstream

    def __iter__(self) -> Iterator[bytes]:
        return _head_first(self.upstream.iter_body())

    def framed(self) -> Iterator[bytes | Framed]:
        return _head_first(self.upstream.iter_framed())

    def close(self) -> None:
        self.upstream.close()


def _changing(chunks: Iterator[bytes], uuid: str) -> Iterator[bytes]:
    """A write's streamed answer (wait's end, a prune's, a pull's progress): the instance's
    generation changes before each piece and at the end reaches the client, so that a read the
    client makes once it has seen it misses any answer cached before (gateway/generations.py)."""
    for chunk in chunks:
        generations.bump(uuid)
        yield chunk
    generations.bump(uuid)


def _bounded_text(upstream: UpstreamResponse) -> str:
    """An error's body, up to ERROR_BODY_LIMIT (dockerd's is one line, then it closes)."""
    kept = bytearray()
    for chunk in upstream.iter_body():
        kept += chunk[: ERROR_BODY_LIMIT - len(kept)]
        if len(kept) >= ERROR_BODY_LIMIT:
            break
    upstream.close()
    return kept.decode("utf-8", "replace")


def _head_first(chunks: Iterator[bytes] | Iterator[Framed]) -> Iterator[bytes | Framed]:
    """Yield b"" first: gunicorn sends the response head on the first write, and a client
    waiting on a long poll (`wait?condition=next-exit`, events) needs the head at once, as
    dockerd sends it, before the body's first byte exists."""
    yield b""
    try:
        yield from chunks
    except UpstreamError as exc:
        # The daemon's answer broke off (its agent or daemon stopped) after the head was sent:
        # nothing can be said to the client but a cut connection, which it sees as a broken
        # body (never as a whole one). A socket error is what gunicorn cuts quietly; anything
        # else it would log as a traceback of the gateway's own.
        log.warning("the answer broke off after its head: %s", exc)
        raise ConnectionResetError(errno.ECONNRESET, f"upstream: {exc}") from exc


def forward(ctx: Context, instance: store.Instance, **kwargs) -> None:
    respond(ctx, instance, send(ctx, instance, **kwargs))


def hijack(ctx: Context, upstream: UpstreamResponse, instance: store.Instance | None = None) -> None:
    """Hand the client the daemon's hijack answer, then splice the two connections."""
    client = ctx.req.env.get("gunicorn.socket")
    if client is None:
        upstream.close()
        raise DockerError(500, "this server cannot hijack connections (run it with `moorage serve`)")
    lines = [f"HTTP/1.1 {upstream.status} {upstream.reason}"]
    # The gateway's own API version, as on every answer (app.py), not the daemon's.
    advertised = ctx.resp.get_header("Api-Version")
    lines += [
        f"{name}: {advertised if name.lower() == 'api-version' and advertised else value}"
        for name, value in upstream.headers
        if name.lower() not in ("server", "date")
    ]
    if logs.request_id():  # as on every answer (gateway/app.py)
        lines.append(f"{REQUEST_ID_HEADER}: {logs.request_id()}")
    ctx.req.env["moorage.hijacked"] = True
    try:
        client.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    except OSError:
        upstream.close()
        return
    try:
        splice(client, upstream.sock, from_upstream=upstream.reader.take_buffer())
    finally:
        # the session may have changed the container (an attached process that ended)
        generations.bump(instance.uuid if instance is not None else "")
