"""Serving the gateway (and the relay tier) with gunicorn's gevent workers.

Binds: ``tcp://HOST:PORT``, ``unix:///PATH``; with a certificate, TLS, and with a CA the
client certificate is verified as DOCKER_TLS_VERIFY clients expect.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import ssl
import sys
import tempfile

from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication


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


def gunicorn_bind(address: str) -> str:
    if address.startswith("unix://"):
        return "unix:" + address[len("unix://") :]
    if address.startswith("tcp://"):
        return address[len("tcp://") :]
    return address


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
    path = tempfile.mkdtemp(prefix="moorage-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    values = sys.modules.get("prometheus_client.values")
    if values is not None:  # imported already: metrics made from now on write to the files
        values.ValueClass = values.get_value_class()
    return path


def parse_metrics_bind(bind: str) -> tuple[str, int]:
    text = bind.removeprefix("tcp://")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"[gateway] metrics_bind: expected HOST:PORT, not {bind!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def cleanup_metrics(path: str) -> None:
    if path:
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


def _log_hooks(settings) -> dict:
    """gunicorn hook: once the master's error log is set up (``log_file``, else stderr), the
    gateway's own loggers write through the same handlers, in ``[gateway] log_format``
    (gateway/logs.py); the workers inherit it when they fork."""

    def on_starting(arbiter):
        import logging

        from gateway import logs

        level = logging.getLevelName(os.environ.get("MOORAGE_LOG_LEVEL", "info").upper())
        logs.use(
            logging.getLogger("gunicorn.error").handlers,
            settings.gateway.log_format,
            level if isinstance(level, int) else logging.INFO,
        )

    return {"on_starting": on_starting}


def run(settings, factory, *, name: str = "moorage-gateway", metrics_dir: str = "") -> None:
    """Run gunicorn in the foreground until it is told to stop."""
    options = {
        "bind": [gunicorn_bind(b) for b in settings.gateway.bind],
        "workers": int(settings.gateway.workers),
        "worker_class": "gevent",
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
        **_log_hooks(settings),
    }
    if settings.gateway.tls_cert:
        options.update(certfile=settings.gateway.tls_cert, keyfile=settings.gateway.tls_key)
        if settings.gateway.tls_ca:
            options.update(ca_certs=settings.gateway.tls_ca, cert_reqs=ssl.CERT_REQUIRED)
    _Server(factory, options).run()
