"""The gateway's WSGI application: match the route, authenticate, negotiate, dispatch.

One request, end to end (docs/architecture.md): match the route (method + path, with or without
/vX.Y) → authenticate → check the API version → the route's handler, which resolves the
tenant's object or places a new one and forwards through the agent (gateway.forward).
"""

from __future__ import annotations

import contextlib
import logging
import time

import falcon

from gateway import (
    agentapi,
    certapi,
    fairshare,
    generations,
    health,
    instances,
    logs,
    metrics,
    noticeapi,
    notifications,
    policy,
    replay,
    store,
    upkeep,
    versions,
)
from gateway.context import Context
from gateway.errors import DockerError, page_not_found, scrubbed
from gateway.forward import ReadStream
from gateway.notifications import audit, recorder, sender, webhooks
from gateway.placement import reaper
from gateway.routing import Router
from gateway.services import notices
from gateway.tenancy import ClientCertificates, authenticate_request, make_provider, names
from gateway.wire import AGENTS_PATH, CERTS_PATH, NOTICES_PATH, REQUEST_ID_HEADER, SOCKET_CREDENTIAL_HEADER

log = logging.getLogger("moorage.gateway")
access_log = logging.getLogger("moorage.access")


class _ReleasingIterable:
    """A streamed answer whose end (a stream's callback may touch the store) returns the
    request's database connection to the pool, and ends the stream (``on_end``: its place in
    the in-flight gauge and its project's stream slot) when it was one."""

    def __init__(self, result, *, on_end=None):
        self._result = result
        self._on_end = on_end

    def __iter__(self):
        return iter(self._result)

    def close(self):
        try:
            if hasattr(self._result, "close"):
                self._result.close()
        finally:
            on_end, self._on_end = self._on_end, None
            if on_end is not None:
                on_end()
            store.release_connection()


def _goes_out_chunked(environ, headers) -> bool:
    """Whether gunicorn sends this answer chunked: no length, to an HTTP/1.1 client (a 1.0
    client gets the bare body to the connection's end)."""
    return environ.get("SERVER_PROTOCOL") == "HTTP/1.1" and all(
        name.lower() != "content-length" for name, _ in headers
    )


# (operation, status) -> the request counter's and the duration histogram's children.
_REQUEST_METRICS: dict[tuple[str, str], tuple] = {}


class Gateway:
    """The Falcon app plus what every request needs: settings, routes, identity, store."""

    def __init__(self, settings, routes, *, name: str = "gateway"):
        self.settings = settings
        self.name = name
        self.router = Router(routes)
        self.identity = make_provider(settings.identity)
        # Client certificates as identities, with [gateway] tls_client_ca (gateway/tenancy/certs.py).
        self.certs = ClientCertificates.from_settings(settings, self.identity)
        self.cert_router = Router(certapi.ROUTES)
        self.notice_router = Router(noticeapi.ROUTES)
        store.init(settings.gateway.database)
        self.agent_router = Router(agentapi.ROUTES)
        self.fairshare = fairshare.FairShare(settings)
        notifications.configure(settings)
        generations.configure(settings)  # the read cache's shared table (SQLite store only)
        if name == "gateway":
            # Loaded now rather than by each worker's first create or audited request, which
            # paid for it: oslo.policy and the policy file about 100 ms, pycadf about 70 ms
            # (bench/scale's one-at-a-time runs, whose p99 was those firsts).
            policy.checker(settings)
            audit.prepare()
            # Every agent's URL parsed once, here (1,000 are about 10 ms); if the store does
            # not answer yet, the first create parses them.
            with contextlib.suppress(Exception):
                instances.parse_agent_urls()
            replay.configure(self)  # the front's replays (gateway/server.py) answer for this app
            reaper.start_reaper(settings)  # only acts when the pool can grow (nova)
            upkeep.start(settings, self.fairshare)
            sender.start_sender(settings)  # only with [notifications]; one worker acts, by lease
            recorder.start_recorder(settings)  # the event journal; one worker acts, by lease
            webhooks.start_deliverer(settings)  # projects' webhooks; one worker acts, by lease
        self._api_cache: tuple[float, str, str] | None = None
        app = falcon.App(media_type=falcon.MEDIA_JSON)
        # No Content-Type unless one is stated: dockerd sends none on empty answers (204, resize,
        # tag), and forwarded answers carry the daemon's own.
        app.resp_options.default_media_type = None
        app.req_options.auto_parse_form_urlencoded = False
        app.req_options.strip_url_path_trailing_slash = False
        app.resp_options.secure_cookies_by_default = False
        app.add_sink(self.dispatch, prefix="/")
        for kind in (Exception, falcon.HTTPError, DockerError):
            app.add_error_handler(kind, self._on_exception)
        self.app = app

    # -- WSGI -----------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        started = time.monotonic()
        status = ["000"]
        answer_headers: list = [()]
        rid = logs.begin_request(environ.get("HTTP_X_REQUEST_ID"))
        replay.begin()  # what the answer is made of, if it may be replayed (gateway/replay.py)

        def recording_start_response(status_line, headers, exc_info=None):
            status[0] = status_line[:3]
            answer_headers[0] = headers
            return start_response(status_line, [*headers, (REQUEST_ID_HEADER, rid)], exc_info)

        def end_stream():
            metrics.STREAMS.dec()
            if environ.get("moorage.share"):
                self.fairshare.release(environ["moorage.share"])

        try:
            result = self.app(environ, recording_start_response)
        except BaseException:
            if environ.get("moorage.stream"):
                end_stream()
            raise
        finally:
            # The request's database connection goes back to the pool before any streaming
            # (PostgreSQL; a no-op on SQLite): none is held across network I/O.
            store.release_connection()
        # Counted when the answer starts: a stream's status is known then, and its length is
        # the client's. Labels are the route's operation ID, so their number stays bounded.
        hijacked = bool(environ.get("moorage.hijacked"))
        self.answered(environ, "101" if hijacked and status[0] == "000" else status[0], started)
        replay.finish(environ, status[0], bool(environ.get("moorage.replays")), result)
        if hijacked:
            # The connection was handed to the relay and is finished. Tell gunicorn to write
            # nothing more and close it: StopIteration is its "close this connection" signal.
            if environ.get("moorage.stream"):
                end_stream()
            if hasattr(result, "close"):
                result.close()
            store.release_connection()
            raise StopIteration("hijacked connection finished")
        if isinstance(result, ReadStream) and _goes_out_chunked(environ, answer_headers[0]):
            # The daemon's chunks as the agent framed them (forward.ReadStream): unwrapped, no
            # service reworks these bytes, and gunicorn frames this answer in chunks too.
            result = result.framed()
        streamed = not isinstance(result, list | tuple)
        if environ.get("moorage.stream"):
            if streamed:  # open until gunicorn closes the answer
                return _ReleasingIterable(result, on_end=end_stream)
            end_stream()  # answered at once (an error, an empty stream)
        if store.is_postgres() and streamed:
            return _ReleasingIterable(result)
        return result

    def answered(self, environ, status: str, started: float) -> None:
        """The request's metrics, log line and audit: for the app's answers and the replays."""
        self._record(environ, status, started)
        self._audit(environ, environ.get("moorage.operation", "Unknown"), int(status))

    @staticmethod
    def _record(environ, status: str, started: float) -> None:
        """The request's metrics and its line in the access log (gateway/logs.py); probes
        (/healthz, /readyz) are neither counted nor logged."""
        operation = environ.get("moorage.operation", "Unknown")
        if operation == "Health":
            return
        seconds = time.monotonic() - started
        counted = _REQUEST_METRICS.get((operation, status))
        if counted is None:
            # prometheus_client looks a labelled child up under a lock on every labels() call:
            # the request's two are kept, a few per operation (bounded: operations x statuses).
            counted = (metrics.REQUESTS.labels(operation, status), metrics.REQUEST_SECONDS.labels(operation))
            _REQUEST_METRICS[(operation, status)] = counted
        counted[0].inc()
        counted[1].observe(seconds)
        # The agents' own calls (a heartbeat per agent per interval) are routine: debug, unless
        # refused.
        level = logging.DEBUG if operation.startswith("Agent") and status < "400" else logging.INFO
        if access_log.isEnabledFor(level):
            method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
            project = environ.get("moorage.project", "")
            access_log.log(
                level,
                "%s %s %s %s %.1fms project=%s",
                method,
                path,
                status,
                operation,
                seconds * 1000,
                project or "-",
                extra={
                    "method": method,
                    "path": path,
                    "operation": operation,
                    "status": int(status) if status.isdigit() else status,
                    "duration_ms": round(seconds * 1000, 1),
                    "project": project,
                    "stream": bool(environ.get("moorage.stream") or environ.get("moorage.hijacked")),
                },
            )

    @staticmethod
    def _audit(environ, operation: str, status: int) -> None:
        """The request's CADF event, if it mutates or was refused (gateway/notifications/audit.py)."""
        method = environ.get("REQUEST_METHOD", "")
        if environ.get("PATH_INFO", "").startswith(AGENTS_PATH) or not audit.wanted(
            method, status, operation
        ):
            return  # the agents' registrations and heartbeats are the gateway's own traffic
        identity = environ.get("moorage.identity")
        if environ.get("HTTP_" + SOCKET_CREDENTIAL_HEADER.upper().replace("-", "_")):
            credential = "socket"  # a container's tenant socket (gateway/tenancy/sockets.py)
        elif environ.get("HTTP_X_AUTH_TOKEN"):
            credential = "token"
        elif environ.get("wsgi.url_scheme") == "https":
            credential = "certificate"
        else:
            credential = "none"
        try:
            audit.record(
                audit.Request(
                    method=method,
                    operation=operation,
                    status=status,
                    reference=environ.get("moorage.reference", ""),
                    project=identity.project_id if identity else "",
                    user=identity.user_id if identity else "",
                    user_name=identity.user_name if identity else "",
                    address=environ.get("REMOTE_ADDR", ""),
                    credential=credential,
                    reason=environ.get("moorage.refusal", "") if status >= 400 else "",
                    request_id=environ.get("moorage.request_id", ""),
                )
            )
        finally:
            # Answered, and its connection already returned (__call__): the audit's own goes back too.
            store.release_connection()

    # -- versions -------------------------------------------------------------------------
    def api_range(self) -> tuple[str, str]:
        """(maximum, minimum) API version to advertise: the gateway's own range, which
        gateway/versions translates to every live daemon's (gateway/versions advertised)."""
        now = time.monotonic()
        if self._api_cache and now - self._api_cache[0] < 5:
            return self._api_cache[1], self._api_cache[2]
        # The live daemons' versions, each once (a few rows): not every live instance's row
        # with its facts, which at 1,000 instances was 15 ms every 5 s in each worker.
        maximum, minimum = versions.advertised(list(instances.live_api_versions(self.settings)))
        self._api_cache = (now, maximum, minimum)
        return maximum, minimum

    # -- dispatch -------------------------------------------------------------------------
    def dispatch(self, req: falcon.Request, resp: falcon.Response, **_):
        if req.path in health.PATHS:
            # Probes carry no credentials, and these paths are no Docker route.
            req.env["moorage.operation"] = "Health"
            return health.answer(self, req, resp)
        if req.path.startswith(AGENTS_PATH):
            return self._agents(req, resp)
        route, params, version = self.router.match(req.method, req.path)
        if route is not None:
            req.env["moorage.operation"] = route.operation
        if req.path.startswith(CERTS_PATH):
            return self._certs(req, resp, self.cert_router, CERTS_PATH)
        if req.path.startswith(NOTICES_PATH):
            return self._certs(req, resp, self.notice_router, NOTICES_PATH)
        if route is not None and route.reference:
            req.env["moorage.reference"] = params.get(route.reference, "")  # the audit's target
        identity = self._authenticate(req)
        req.env["moorage.identity"] = identity
        replay.authenticated(req.headers, identity)
        if route is None:
            raise page_not_found()  # as dockerd: no version headers on an unknown route
        maximum, minimum = self.api_range()
        resp.set_header("Api-Version", maximum)
        resp.set_header("Ostype", "linux")
        if version is not None:
            versions.check(version, maximum, minimum)
        resp.set_header("Docker-Experimental", "false")
        req.context.project = identity.project_id if identity else ""
        req.env["moorage.project"] = req.context.project
        ctx = Context(self, req, resp, route, params, version or maximum, identity)
        if identity is not None and self.fairshare.admit(identity.project_id, route.streaming):
            req.env["moorage.share"] = identity.project_id  # a stream slot, given back at its end
        if route.streaming:
            # Open from here until the answer is closed (__call__) or the hijack ends.
            req.env["moorage.stream"] = True
            metrics.STREAMS.inc()
        if route.replays:
            req.env["moorage.replays"] = True
        if route.raw_errors:
            req.env["moorage.raw_errors"] = True  # from here on, as dockerd's handler (_on_exception)
        notices.around(ctx, route.handler)

    def _authenticate(self, req: falcon.Request):
        return self.authenticate_headers(req.headers, req.env.get("gunicorn.socket"))

    def authenticate_headers(self, headers: dict[str, str], sock):
        """The identity of a request with these headers on this connection (its certificate)."""
        return authenticate_request(self.identity, self.certs, headers, sock)

    def _certs(self, req: falcon.Request, resp: falcon.Response, router: Router, prefix: str):
        """The gateway's own APIs for a user (certapi, noticeapi): authenticated as Docker's."""
        route, params, _ = router.match(req.method, req.path[len(prefix) :].rstrip("/"))
        if route is None:
            raise page_not_found()
        req.env["moorage.operation"] = route.operation
        if req.get_header(SOCKET_CREDENTIAL_HEADER):
            # A container's tenant socket lasts as long as its container: no certificate of the
            # project (which would outlive it) is issued or shown through one.
            raise DockerError(
                403,
                "client certificates are not managed through a container's Docker socket: "
                "use `moorage certs` with your own credentials",
            )
        identity = self._authenticate(req)
        req.context.project = identity.project_id
        route.handler(req, resp, self, identity, params)

    def _agents(self, req: falcon.Request, resp: falcon.Response):
        route, params, _ = self.agent_router.match(req.method, req.path[len(AGENTS_PATH) :].rstrip("/"))
        if route is not None:
            req.env["moorage.operation"] = route.operation
        if route is None:
            raise page_not_found()
        route.handler(req, resp, self.settings, params)

    # -- errors ---------------------------------------------------------------------------
    def _on_exception(self, req, resp, exc, params):
        if isinstance(exc, DockerError):
            error = exc
        elif isinstance(exc, falcon.HTTPError):
            error = DockerError(exc.status_code, exc.description or exc.title or "bad request")
        elif isinstance(exc, store.BUSY):
            log.warning("no free database connection for %s %s: %s", req.method, req.path, exc)
            error = DockerError(
                503,
                "the gateway is overloaded: every connection to its database stayed busy; try again "
                "shortly (operators: more replicas, or a larger MOORAGE_PG_POOL within PostgreSQL's "
                "max_connections)",
            )
        elif isinstance(exc, store.UNAVAILABLE):
            log.warning("the store did not answer on %s %s: %s", req.method, req.path, exc)
            error = DockerError(
                503, "the gateway's database is not answering (it may be restarting); try again shortly"
            )
        else:
            log.exception("internal error on %s %s", req.method, req.path)
            error = DockerError(
                500,
                f"internal error in the Moorage gateway ({type(exc).__name__}); "
                "the operator can find the details in the gateway log",
            )
        # A daemon's message may quote its own paths (data root, temporary directories). The
        # store's own failures name none, and asking the store for the roots then would fail
        # again (or wait for a pooled connection again).
        if not isinstance(exc, store.BUSY + store.UNAVAILABLE):
            error = scrubbed(error, instances.daemon_roots())
        project = getattr(req.context, "project", "")
        if project:
            # A daemon's message may quote the project's daemon names: the tenant's own, please.
            error = DockerError(
                error.status, names.text_to_tenant(project, error.message), content_type=error.content_type
            )
        if isinstance(exc, DockerError):
            for name, value in getattr(exc, "headers", ()):  # Retry-After (gateway/fairshare.py)
                resp.set_header(name, value)
        req.env["moorage.refusal"] = error.message  # the audit's reason (gateway/notifications/audit.py)
        client = req.env.get("gunicorn.socket")
        if req.env.get("moorage.raw_errors") and client is not None and not req.env.get("moorage.hijacked"):
            # dockerd had taken the connection over already (routing.Route.raw_errors).
            req.env["moorage.hijacked"] = True
            with contextlib.suppress(OSError):  # a client gone already needs no answer
                client.sendall(error.raw_answer([(REQUEST_ID_HEADER, logs.request_id())]))
            resp.status = error.status  # what the metrics and the audit record (__call__)
            resp.data = b""
            return
        resp.status = error.status
        resp.content_type = error.content_type
        resp.stream = None
        resp.data = error.body()
