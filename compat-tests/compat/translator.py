"""The direct daemon as a client of any API version from 1.24 to 1.55 sees it through the
documented translation (docs/divergences.md#api-versions).

The direct dockerd speaks 1.41 at most, so a client of 1.44 or 1.55 (docker-py pinned, the
docker CLI 28 negotiating 1.50, raw requests) cannot be compared with it as it is. The runner
puts this small proxy in front of it: a request at a version the daemon does not speak goes to
it at the nearest one it does, and the request and the daemon's answer go through the gateway's
own version table (gateway/versions), the translation Moorage documents. Parity at 1.44 and 1.55
is then: Moorage's answer equals the direct daemon's after that translation; at the versions the
daemon speaks the proxy changes nothing but the advertised range (`Api-Version`, `/version`).

One request per connection (the daemon is told `Connection: close`, and so is the client):
bodies and answers that need no translation, hijacked connections included, are spliced through
as bytes; only JSON answers the table changes are read whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import threading
from urllib.parse import parse_qs, parse_qsl, urlencode

from compat import spec, wire

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from gateway import versions  # noqa: E402 - the table is the documented translation
from gateway.errors import DockerError  # noqa: E402

_VERSION = re.compile(r"^/v(\d+(?:\.\d+)?)(/.*)$")
_GREEDY = ("/images/", "/distribution/", "/plugins/")


def _routes() -> list[tuple[str, re.Pattern, str]]:
    out = []
    for op in spec.operations(spec.find_spec(REPO)):
        param = ".+" if op.path.startswith(_GREEDY) else "[^/]+"
        pattern = "".join(
            f"(?P<{part[1:-1]}>{param})" if part.startswith("{") else re.escape(part)
            for part in re.split(r"(\{\w+\})", op.path)
        )
        out.append((op.method, re.compile(pattern + "$"), op.id))
    out.sort(key=lambda r: r[1].pattern.count("(?P"))  # literal paths first
    return out


class Translator:
    def __init__(self, daemon: str, listen: str):
        self.daemon = daemon
        self.routes = _routes()
        found = wire.request(daemon, "GET", "/version", timeout=10).json()
        self.daemon_max, self.daemon_min = found.get("ApiVersion", ""), found.get("MinAPIVersion", "")
        self.path = listen
        with contextlib.suppress(FileNotFoundError):
            os.unlink(listen)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(listen)
        self.sock.listen(64)
        threading.Thread(target=self._accept, name="translator", daemon=True).start()

    @property
    def endpoint(self) -> str:
        return "unix://" + self.path

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _match(self, method: str, path: str) -> tuple[str | None, dict]:
        for m, pattern, op in self.routes:
            found = pattern.match(path) if m == method else None
            if found:
                return op, found.groupdict()
        return None, {}

    # -- one request ----------------------------------------------------------------------------
    def _serve(self, client: socket.socket) -> None:
        try:
            self._one(client)
        except Exception:  # noqa: BLE001 - the client sees the connection end
            pass
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _one(self, client: socket.socket) -> None:
        buf = _Buffer(client)
        head = buf.until(b"\r\n\r\n")
        if head is None:
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)]
        path, _, query = target.partition("?")
        found = _VERSION.match(path)
        version, bare = (found.group(1), found.group(2)) if found else (None, path)
        op, params = self._match(method, bare)
        client_version = version or versions.MOORAGE_MAX_API
        spoken = client_version
        if op is not None:
            try:
                if version is not None:
                    versions.check(version, versions.MOORAGE_MAX_API, versions.MOORAGE_MIN_API)
            except DockerError as exc:
                self._error(client, exc, checked=False)
                return
            spoken = versions.for_daemon(client_version, self.daemon_max, self.daemon_min)
            target = f"/v{spoken}{bare}" + (f"?{query}" if query else "")
        elif version is not None:
            spoken = versions.for_daemon(version, self.daemon_max, self.daemon_min)
            target = f"/v{spoken}{bare}" + (f"?{query}" if query else "")
        translated = None
        body = None
        if op is not None and versions.requests_change(op, client_version, spoken):
            body = _read_body(buf, headers)
            ctype = (_header(headers, "Content-Type") or "").split(";")[0].strip().lower()
            parsed = None
            if body and ctype == "application/json":
                with contextlib.suppress(ValueError):
                    parsed = json.loads(body)
            try:
                translated = versions.translate_request(
                    op, client_version, spoken, parsed, parse_qsl(query, keep_blank_values=True)
                )
            except DockerError as exc:
                self._error(client, exc)
                return
            if translated.query_changed:
                target = f"/v{spoken}{bare}" + (f"?{urlencode(translated.query)}" if translated.query else "")
            if parsed is not None:
                body = json.dumps(translated.body).encode()
            headers = [(k, v) for k, v in headers if k.lower() not in ("content-length", "transfer-encoding")]
            headers.append(("Content-Length", str(len(body))))
        upgrade = "upgrade" in (_header(headers, "Connection") or "").lower()
        if not upgrade:
            headers = [(k, v) for k, v in headers if k.lower() != "connection"] + [("Connection", "close")]
        upstream = wire.connect(self.daemon, 30)
        upstream.settimeout(None)
        try:
            upstream.sendall(_head(f"{method} {target} HTTP/1.1", headers) + (body or b""))
            # an emulated request (several networks on create) has its follow-up calls made
            # once the answer is read, even where the answer itself needs no translation
            whole = op is not None and (
                op == "SystemVersion"
                or bool(translated is not None and translated.followups)
                or versions.answers_change(op, client_version, [spoken])
            )
            if op == "SystemEvents" and whole:
                _pump_in_background(buf.take(), client, upstream)
                self._translated_lines(client, upstream, op, client_version, spoken, query)
            elif whole and method != "HEAD":
                if body is None:
                    _pump_in_background(buf.take(), client, upstream)
                self._translated_answer(
                    client, upstream, op, client_version, spoken, query, params, translated
                )
            else:
                self._spliced_answer(client, upstream, buf.take() if body is None else b"")
        finally:
            with contextlib.suppress(OSError):
                upstream.close()

    def _translated_answer(self, client, upstream, op, client_version, spoken, query, params, translated):
        reply = _Buffer(upstream)
        head = reply.until(b"\r\n\r\n") or b""
        lines = head.decode("latin-1").split("\r\n")
        status_line = lines[0]
        status = int(status_line.split(" ", 2)[1])
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)]
        data = _read_body(reply, headers, until_eof=True)
        ctype = _header(headers, "Content-Type") or ""
        if status < 300 and ctype.startswith("application/json") and data:
            payload = json.loads(data)
            try:
                if translated is not None and translated.followups:
                    failed = self._followups(translated, payload)
                    if failed is not None:
                        status, payload = failed
                        status_line = f"HTTP/1.1 {status} {'OK' if status < 300 else 'Error'}"
                if status < 300:
                    payload = versions.translate_answer(
                        op,
                        client_version,
                        [spoken],
                        payload,
                        parse_qs(query, keep_blank_values=True),
                        reference=params.get("name", ""),
                    )
                    if op == "SystemVersion" and isinstance(payload, dict):
                        _advertise(payload)
            except DockerError as exc:
                self._error(client, exc)
                return
            data = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
        headers = [
            (k, v)
            for k, v in _advertised(headers)
            if k.lower() not in ("content-length", "transfer-encoding", "connection")
        ]
        headers += [("Content-Length", str(len(data))), ("Connection", "close")]
        client.sendall(_head(status_line, headers) + data)

    def _translated_lines(self, client, upstream, op, client_version, spoken, query):
        """A JSON-lines stream (events), each line translated as it comes, sent chunked."""
        reply = _Buffer(upstream)
        head = reply.until(b"\r\n\r\n") or b""
        lines = head.decode("latin-1").split("\r\n")
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)]
        chunked = "chunked" in (_header(headers, "Transfer-Encoding") or "").lower()
        if not lines[0].split(" ")[1].startswith("2") or not chunked:
            client.sendall(_head(lines[0], _advertised(headers)) + reply.take())
            _pump(upstream, client)
            return
        client.sendall(_head(lines[0], _advertised(headers)))
        pending = b""
        queries = parse_qs(query, keep_blank_values=True)
        while True:
            size = int((reply.until(b"\r\n") or b"0").split(b";")[0].strip() or b"0", 16)
            data = reply.exactly(size) if size else b""
            if size:
                reply.until(b"\r\n")
            pending += data
            *complete, pending = pending.split(b"\n")
            out = b""
            for line in complete:
                if line.strip():
                    event = versions.translate_answer(op, client_version, [spoken], json.loads(line), queries)
                    out += json.dumps(event, separators=(",", ":")).encode() + b"\n"
            if out:
                client.sendall(f"{len(out):x}\r\n".encode() + out + b"\r\n")
            if not size:
                client.sendall(b"0\r\n\r\n")
                return

    def _followups(self, translated, payload) -> tuple[int, object] | None:
        """What gateway/forward.call does for an emulated row: the follow-up calls, or the
        first failing one's answer once the first call is taken back."""
        made = str(payload.get("Id", "")) if isinstance(payload, dict) else ""
        for step in translated.followups:
            body = (
                {k: made if v == "{id}" else v for k, v in step.body.items()}
                if isinstance(step.body, dict)
                else step.body
            )
            resp = wire.request(
                self.daemon,
                step.method,
                f"/v{self.daemon_max}{step.path.replace('{id}', made)}",
                headers={"Content-Type": "application/json"},
                body=json.dumps(body).encode() if body is not None else b"",
                timeout=60,
            )
            if resp.status >= 300:
                if translated.undo is not None:
                    wire.request(
                        self.daemon,
                        translated.undo.method,
                        f"/v{self.daemon_max}{translated.undo.path.replace('{id}', made)}?force=1&v=1",
                        timeout=60,
                    )
                return resp.status, resp.json()
        return None

    def _spliced_answer(self, client, upstream, pending: bytes) -> None:
        inbound = _pump_in_background(pending, client, upstream)  # the body, as it comes
        reply = _Buffer(upstream)
        head = reply.until(b"\r\n\r\n")
        if head is None:
            return
        lines = head.decode("latin-1").split("\r\n")
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)]
        client.sendall(_head(lines[0], _advertised(headers)) + reply.take())
        _pump(upstream, client)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)
        inbound.join(2)

    def _error(self, client, exc: DockerError, *, checked: bool = True) -> None:
        """An error of the translation, with the headers dockerd has set by then (its
        version check comes before Docker-Experimental)."""
        body = exc.body()
        headers = [
            ("Api-Version", versions.MOORAGE_MAX_API),
            *([("Docker-Experimental", "false")] if checked else []),
            ("Ostype", "linux"),
            ("Content-Type", exc.content_type),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
        client.sendall(_head(f"HTTP/1.1 {exc.status} Error", headers) + body)


def _advertise(payload: dict) -> None:
    payload["ApiVersion"], payload["MinAPIVersion"] = versions.MOORAGE_MAX_API, versions.MOORAGE_MIN_API
    for component in payload.get("Components") or []:
        details = component.get("Details")
        if component.get("Name") == "Engine" and isinstance(details, dict):
            details["ApiVersion"], details["MinAPIVersion"] = (
                versions.MOORAGE_MAX_API,
                versions.MOORAGE_MIN_API,
            )


def _advertised(headers):
    return [(k, versions.MOORAGE_MAX_API if k.lower() == "api-version" else v) for k, v in headers]


def _header(headers, name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name.lower():
            return v
    return None


def _head(first: str, headers) -> bytes:
    return (first + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1")


class _Buffer:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.data = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.data += chunk
        return bool(chunk)

    def until(self, mark: bytes) -> bytes | None:
        while mark not in self.data:
            if not self._fill():
                return None
        head, self.data = self.data.split(mark, 1)
        return head

    def exactly(self, n: int) -> bytes:
        while len(self.data) < n and self._fill():
            pass
        out, self.data = self.data[:n], self.data[n:]
        return out

    def rest(self) -> bytes:
        while self._fill():
            pass
        return self.take()

    def take(self) -> bytes:
        out, self.data = self.data, b""
        return out


def _read_body(buf: _Buffer, headers, until_eof: bool = False) -> bytes:
    if "chunked" in (_header(headers, "Transfer-Encoding") or "").lower():
        parts = []
        while True:
            size = int((buf.until(b"\r\n") or b"0").split(b";")[0].strip() or b"0", 16)
            if size == 0:
                buf.until(b"\r\n")
                return b"".join(parts)
            parts.append(buf.exactly(size))
            buf.until(b"\r\n")
    length = _header(headers, "Content-Length")
    if length is not None:
        return buf.exactly(int(length))
    return buf.rest() if until_eof else b""


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass


def _pump_in_background(pending: bytes, client: socket.socket, upstream: socket.socket) -> threading.Thread:
    def run():
        try:
            if pending:
                upstream.sendall(pending)
            _pump(client, upstream)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
