"""Serving the gateway (and the relay tier) with gunicorn's gevent workers.

Binds: ``tcp://HOST:PORT``, ``unix:///PATH``; with a certificate, TLS, and with a CA the
client certificate is verified as DOCKER_TLS_VERIFY clients expect. With ``[gateway] tls_bind``
only those listeners speak TLS (the others stay plain, for the headers): the worker class below
wraps their connections itself, and asks for a client certificate (optional: a client may still
send the headers) verified against ``tls_client_ca``; gateway/tenancy/certs.py makes it the
request's identity.
"""

from __future__ import annotations

import contextvars
import html
import json
import os
import shutil
import ssl
import tempfile

from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication

from gateway import replay
from relay import Framed
from relay.upstream import send_parts


def _docker_shaped_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn answers what it refuses before the app runs (a header or request line over
    its limits, a malformed request) with an HTML page; clients expect Docker's shape."""
    message = f"{reason.lower()}: {html.unescape(mesg)}; send a smaller or well-formed request"
    body = json.dumps({"message": message}, separators=(",", ":")).encode() + b"\n"
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    sock.sendall(head + body)


gunicorn_util.write_error = _docker_shaped_error

_gunicorn_http_date = gunicorn_util.http_date


def _http_date(timestamp: float | None = None) -> str:
    """gunicorn's Date header, formatted once a second (replay.http_date), not for every answer."""
    return replay.http_date() if timestamp is None else _gunicorn_http_date(timestamp)


gunicorn_util.http_date = _http_date


def gunicorn_bind(address: str) -> str:
    if address.startswith("unix://"):
        return "unix:" + address[len("unix://") :]
    if address.startswith("tcp://"):
        return address[len("tcp://") :]
    return address


# Set by run() in the master before the workers fork: the TLS listeners' ports and what their
# SSL context is made of (certificate, key, client CA). A listener is known by its port: a plain
# bind may not share one (run() refuses it), and a host name resolves to whatever address.
_TLS_PORTS: set[int] = set()
_TLS_FILES: dict[str, str] = {}
HANDSHAKE_TIMEOUT = 15.0  # seconds a client may take to finish its TLS handshake


def _tcp_port(address: str, key: str) -> int:
    """The port of a tcp://HOST:PORT bind; ValueError naming the setting otherwise."""
    _host, sep, port = gunicorn_bind(address).rpartition(":")
    if address.startswith("unix:") or not sep or not port.isdigit():
        raise ValueError(f"[gateway] {key}: expected tcp://HOST:PORT, not {address!r}")
    return int(port)


def tls_context(cert: str, key: str, client_ca: str) -> ssl.SSLContext:
    """The TLS listeners' context (made in the worker, after gevent patched ssl)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=client_ca or None)
    context.load_cert_chain(certfile=cert, keyfile=key)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Optional: a client without a certificate may still authenticate with the headers; one
    # that presents a certificate not of this CA (or expired) fails the handshake.
    context.verify_mode = ssl.CERT_OPTIONAL if client_ca else ssl.CERT_NONE
    return context


class _HeadCapture:
    """Stands for the client's socket while gunicorn writes an answer's head: keeps it."""

    def __init__(self):
        self.data = b""

    def sendall(self, data: bytes) -> None:
        self.data += data


def _coalescing_response():
    """gunicorn's Response, sending an answer's head and the first bytes of its body in one
    write. gunicorn writes the head, then each body chunk: two sends (two system calls, and
    two passes through gevent's socket) for every one-chunk JSON answer, measured at a tenth of
    the gateway's time per `ps`. Chunked answers (streams), an empty first chunk (a stream
    that shows its head before any data) and answers without a body keep gunicorn's order."""
    from gunicorn.http import wsgi

    class CoalescingResponse(wsgi.Response):
        framed = False  # the body is written framed as it came (relay Framed pieces)

        def write(self, arg):
            if type(arg) is Framed:
                # A daemon's chunked answer, its framing checked on the way and passed on as
                # it came (relay/upstream.py iter_framed), last chunk included: nothing to frame.
                if not self.chunked:
                    raise RuntimeError("a framed piece for an answer that is not chunked")
                self.send_headers()
                self.framed = True
                self.sent += len(arg.view)
                self.sock.sendall(arg.view)
                return None
            if self.headers_sent or not arg or not isinstance(arg, bytes) or self.chunked:
                return super().write(arg)
            if self._omits_body or (self.response_length is not None and len(arg) > self.response_length):
                return super().write(arg)
            sock, capture = self.sock, _HeadCapture()
            self.sock = capture  # gunicorn's own head, as it would send it
            try:
                self.send_headers()
            finally:
                self.sock = sock
            self.sent += len(arg)
            # head and body in one sendmsg, not joined into a copy first; nor gevent's sendall,
            # which asks getsockopt(SO_SNDBUF) on every call (1.6% of the CPU of a small answer)
            send_parts(sock, (capture.data, arg))
            if self.response_length == len(arg):
                replay.sent(capture.data, arg)  # the whole answer: kept if it may replay

        def close(self):
            if self.framed:  # its last chunk went with the body
                return None
            return super().close()

        def _emit_body(self, data):
            if self.chunked and data:
                # The chunk's size line, data and CRLF in one system call, not joined into a
                # copy of the data first (gunicorn's write_chunk) nor sent apart.
                send_parts(self.sock, (b"%X\r\n" % len(data), data, b"\r\n"))
                return None
            return super()._emit_body(data)

    return CoalescingResponse


# The keep-alive timeout gunicorn's gevent worker starts around each wait for a request
# (timeout_ctx), as the connection's greenlet sees it: replays answer requests within one
# such wait, and each re-arms it, so that it stays a limit on idleness.
_KEEPALIVE: contextvars.ContextVar = contextvars.ContextVar("moorage_keepalive", default=None)


def _rearm_keepalive() -> None:
    timeout = _KEEPALIVE.get()
    if timeout is not None and timeout.pending:
        timeout.cancel()
        timeout.start()


def _front_parser():
    """gunicorn's request parser, which first reads each request's head itself: a head the
    gateway answered a moment ago, while nothing that answer was made of changed, is answered
    again from there (gateway/replay.py) without gunicorn's parsing, the WSGI stack or the app.
    Any other request is given back to gunicorn's parser, its bytes unread, as it came."""
    from gunicorn.http.parser import RequestParser

    class FrontParser(RequestParser):
        worker = None  # the worker whose requests these are (its request count)

        def __init__(self, cfg, source, source_addr):
            super().__init__(cfg, source, source_addr)
            try:
                self._local = (source.getsockname(), isinstance(source, ssl.SSLSocket))
            except OSError:
                self._local = None

        def __next__(self):
            while True:
                if self.mesg and self.mesg.should_close():
                    raise StopIteration()
                if not self.finish_body():
                    raise StopIteration()
                head, rest = self._read_head()
                key = replay.head_key(self._local, head) if head and self._local is not None else None
                if key is not None:
                    self.unreader.unread(rest)
                    answered = replay.answer(key, self.unreader.sock, self.worker)
                    if answered is not None:
                        self.req_count += 1
                        if not answered:
                            raise StopIteration()  # its head said Connection: close
                        _rearm_keepalive()
                        continue
                    self.unreader.unread(head)
                else:
                    self.unreader.unread(head + rest)
                replay.candidate(key)
                return super().__next__()

        next = __next__

        def _read_head(self) -> tuple[bytes, bytes]:
            """(the next request's head with its blank line, what follows it), or (b"", what
            was read) when the head is not all there within MAX_HEAD bytes or the client ended."""
            data = b""
            while True:
                end = data.find(b"\r\n\r\n")
                if end >= 0:
                    return data[: end + 4], data[end + 4 :]
                if len(data) > replay.MAX_HEAD:
                    return b"", data
                more = self.unreader.read()
                if not more:
                    return b"", data
                data += more

    return FrontParser


def _gevent_worker():
    """gunicorn's gevent worker, wrapping the connections of the TLS listeners (only), and
    ending the relayed streams when it stops gracefully; its answers' heads go out with their
    bodies (_coalescing_response)."""
    from gunicorn import http
    from gunicorn.http import wsgi
    from gunicorn.workers.ggevent import GeventWorker

    # wsgi.create() makes every request's Response by this module name.
    wsgi.Response = _coalescing_response()
    front = _front_parser()
    gunicorn_parser = http.get_parser

    def get_parser(cfg, source, source_addr, http2_connection=False):
        """The front parser for HTTP/1 connections of a gateway that replays (gateway/replay.py)."""
        if http2_connection or getattr(cfg, "protocol", "http") != "http" or not replay.enabled():
            return gunicorn_parser(cfg, source, source_addr, http2_connection)
        return front(cfg, source, source_addr)

    # base_async.handle() makes each connection's parser by this module name.
    http.get_parser = get_parser

    class TLSListenerWorker(GeventWorker):
        _context = None

        def handle_exit(self, sig, frame):
            """SIGTERM: a graceful stop. No new connection is taken, calls in flight finish,
            and the streams that never end by themselves (logs -f, events, stats) are ended
            as dockerd would end them, so that clients see their end, not a broken body."""
            super().handle_exit(sig, frame)
            from relay.upstream import end_streams

            ended = end_streams()
            if ended:
                self.log.info("graceful stop: ended %d stream(s) being relayed", ended)

        def init_process(self):
            front.worker = self
            super().init_process()

        def timeout_ctx(self):
            timeout = super().timeout_ctx()
            _KEEPALIVE.set(timeout)
            return timeout

        def handle(self, listener, client, addr):
            try:
                here = listener.getsockname()
            except OSError:
                here = None
            if isinstance(here, tuple) and here[1] in _TLS_PORTS:
                if self._context is None:
                    self._context = tls_context(
                        _TLS_FILES["cert"], _TLS_FILES["key"], _TLS_FILES.get("client_ca", "")
                    )
                try:
                    client.settimeout(HANDSHAKE_TIMEOUT)
                    client = self._context.wrap_socket(client, server_side=True)
                    client.settimeout(None)
                except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                    self.log.info("TLS handshake with %s failed: %s", addr, exc)
                    client.close()
                    return
            super().handle(listener, client, addr)

    return TLSListenerWorker


class _Server(BaseApplication):
    def __init__(self, factory, options: dict):
        self._factory = factory
        self._options = options
        super().__init__()

    def load_config(self):
        for key, value in self._options.items():
            if value is not None and key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self):
        # In the worker, after gevent's monkey-patching and before the app opens any
        # database connection: psycopg2 must wait cooperatively (psycogreen).
        from gateway import store

        store.cooperative()
        return self._factory()


def prepare_metrics(settings) -> str:
    """With ``[gateway] metrics_bind``: a fresh, empty directory for prometheus_client's
    multiprocess mode, named in PROMETHEUS_MULTIPROC_DIR, which the workers inherit. It must
    be set before prometheus_client is imported (gateway/metrics.py): the library chooses
    where values live from it. "" without metrics_bind."""
    if not settings.gateway.metrics_bind:
        return ""
    parse_metrics_bind(settings.gateway.metrics_bind)  # refused before anything starts
    global _metrics_owner
    path = tempfile.mkdtemp(prefix="moorage-metrics-")
    _metrics_owner = os.getpid()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    from gateway import metrics

    metrics.use_files()  # imported already: metrics made from now on write to the files
    return path


def parse_metrics_bind(bind: str) -> tuple[str, int]:
    text = bind.removeprefix("tcp://")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"[gateway] metrics_bind: expected HOST:PORT, not {bind!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


# The process that made the metrics directory (the master): only it removes it.
_metrics_owner: int | None = None


def cleanup_metrics(path: str) -> None:
    """Remove the metrics directory, in the process that made it only. gunicorn ends a worker
    with sys.exit(), which unwinds through the frames the worker inherited from the master at
    the fork, ``moorage serve``'s cleanup among them: a worker that exits (recycled, timed out)
    must not take the directory every other worker still writes to."""
    if path and os.getpid() == _metrics_owner:
        shutil.rmtree(path, ignore_errors=True)


def _metrics_hooks(settings, metrics_dir: str) -> dict:
    """gunicorn hooks: the master serves the metrics (adding up every worker's files) once
    its listeners are bound, and forgets a dead worker's live gauges."""
    if not metrics_dir:
        return {}

    def when_ready(arbiter):
        from gateway import metrics

        try:
            metrics.serve(*parse_metrics_bind(settings.gateway.metrics_bind), metrics_dir)
        except OSError as exc:
            # Metrics are the operator's view, not the service: a taken port (another
            # process started on the same settings file) costs the metrics, not the gateway.
            arbiter.log.error("metrics not served on %s: %s", settings.gateway.metrics_bind, exc)
            return
        arbiter.log.info("metrics on http://%s/metrics", settings.gateway.metrics_bind.removeprefix("tcp://"))

    def child_exit(arbiter, worker):
        from gateway import metrics

        metrics.worker_exited(worker.pid)

    return {"when_ready": when_ready, "child_exit": child_exit}


# The garbage collector's thresholds in a worker (gen 0 allocations, gen 1 and gen 2 passes).
# Python's defaults (700, 10, 10) collect young objects every 700 allocations: a request that
# parses a daemon's list of 600 containers sees several young collections, which promote its
# short-lived dicts to the old generations, and full collections of a worker's heap followed
# every few seconds (py-spy and gc.callbacks under bench/scale at 1,000 instances: 76 full
# collections in two minutes over four workers, 161 ms each on average, up to 738 ms, with the
# CPUs shared; they were the p99 of `info`, `ps` and the creates). Collected less often, a
# request's garbage dies young, freed by reference counting, before any collection sees it.
GC_THRESHOLDS = (50_000, 20, 100)


def collect_less() -> None:
    """What a process has made so far is kept for its life: it is moved out of the collector's
    sight (gc.freeze) and never scanned again, and the thresholds are raised (GC_THRESHOLDS).
    Reference cycles are still collected."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _collect_less(worker) -> None:
    """gunicorn's post_worker_init: the worker has loaded the app (collect_less)."""
    collect_less()


def _release_leases(server, worker) -> None:
    """gunicorn's worker_exit: the worker stops (a restart, a reload, a scale-down); the
    leases it holds go now, not when they expire (gateway/store/journal.py Lease.release)."""
    from gateway.store import journal

    try:
        journal.release_leases()
    except Exception as exc:  # noqa: BLE001 - a store that is gone: the leases expire by themselves
        worker.log.info("leases not released: %s", exc)


def _logger_class(settings):
    """gunicorn's logger, which also sets up the gateway's: once gunicorn's error log has its
    handler (``log_file``, else stderr), every ``moorage.*`` logger writes through the same one,
    and gunicorn's own lines too, in ``[gateway] log_format`` (gateway/logs.py). gunicorn sets
    its logger up before its first line and again when told to reopen its files (SIGUSR1); the
    workers inherit it when they fork."""
    import logging

    from gunicorn.glogging import Logger

    from gateway import logs

    level = logging.getLevelName(os.environ.get("MOORAGE_LOG_LEVEL", "info").upper())

    class MoorageLogger(Logger):
        def setup(self, cfg):
            super().setup(cfg)
            logs.use(
                self.error_log.handlers,
                settings.gateway.log_format,
                level if isinstance(level, int) else logging.INFO,
            )

    return MoorageLogger


def run(settings, factory, *, name: str = "moorage-gateway", metrics_dir: str = "") -> None:
    """Run gunicorn in the foreground until it is told to stop."""
    options = {
        "bind": [gunicorn_bind(b) for b in settings.gateway.bind],
        "workers": int(settings.gateway.workers),
        # gunicorn's gevent worker, with the TLS listeners' handshake and a graceful stop
        # that ends the streams being relayed (_gevent_worker)
        "worker_class": _gevent_worker(),
        "worker_connections": 2000,
        # Streams and hijacked sessions live as long as the client wants; the gevent
        # worker's liveness is checked by its own heartbeat, not by request duration.
        "timeout": 60,
        "graceful_timeout": 10,
        "keepalive": 75,
        "proc_name": name,
        "errorlog": settings.gateway.log_file or "-",
        "loglevel": os.environ.get("MOORAGE_LOG_LEVEL", "info"),
        "control_socket_disable": True,
        "pidfile": settings.gateway.pid_file or None,
        # Docker clients send long headers (X-Registry-Auth carries base64 JSON).
        "limit_request_field_size": 65536,
        "limit_request_line": 16384,
        **_metrics_hooks(settings, metrics_dir),
        "post_worker_init": _collect_less,
        "worker_exit": _release_leases,
        "logger_class": _logger_class(settings),
    }
    gw = settings.gateway
    if gw.tls_bind:
        if not (gw.tls_cert and gw.tls_key):
            raise ValueError("[gateway] tls_bind needs tls_cert and tls_key (the gateway's certificate)")
        ports = {_tcp_port(b, "tls_bind") for b in gw.tls_bind}
        shared = [b for b in gw.bind if not b.startswith("unix:") and _tcp_port(b, "bind") in ports]
        if shared:
            raise ValueError(f"[gateway] bind {shared[0]!r} shares its port with a tls_bind listener")
        options["bind"] += [gunicorn_bind(b) for b in gw.tls_bind]
        _TLS_PORTS.clear()
        _TLS_PORTS.update(ports)
        _TLS_FILES.update(cert=gw.tls_cert, key=gw.tls_key, client_ca=gw.tls_client_ca)
        tls_context(gw.tls_cert, gw.tls_key, gw.tls_client_ca)  # refused now, not in every worker
    elif gw.tls_cert:
        options.update(certfile=gw.tls_cert, keyfile=gw.tls_key)
        if gw.tls_ca:
            options.update(ca_certs=gw.tls_ca, cert_reqs=ssl.CERT_REQUIRED)
    _Server(factory, options).run()
