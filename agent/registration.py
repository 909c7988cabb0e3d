"""Registration and heartbeats: how an agent makes its instance known to the gateway.

At start the agent registers (instance UUID, capacity, daemon version, its address) with the
registration secret the operator gave it, and receives its own agent secret. It then
heartbeats; a gateway that no longer knows it (401/404) makes it register again.

An instance the gateway's pool booted (nova) registers instead with the one-time bootstrap
secret from its user-data; the gateway answers with the instance's UUID (its server's).

A registration also reports the instance's underlay: the address other instances reach it on
(its advertised address when that is one of its own, else the source of its route to the
gateway) and that interface's MTU. Spanning networks take their VXLAN peers and their MTU
(the smallest underlay MTU minus VXLAN's 50 bytes) from it (gateway/services/spans.py).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import socket
import ssl
import subprocess
import urllib.parse

import gevent

from gateway.wire import (
    AGENT_SECRET_HEADER,
    AGENTS_PATH,
    BOOTSTRAP_SECRET_HEADER,
    PROJECT_LABEL,
    REGISTRATION_SECRET_HEADER,
)
from relay.upstream import Endpoint, UpstreamError, request

log = logging.getLogger("moorage.agent")


def daemon_facts(docker: Endpoint) -> dict:
    """What the gateway needs to know of the daemon: versions and capacity."""
    facts = {}
    for path in ("/version", "/info"):
        resp = request(docker, "GET", path, [], connect_timeout=3, timeout=10)
        if resp.status != 200:
            raise UpstreamError(f"dockerd answered {resp.status} to {path}")
        facts[path.strip("/")] = json.loads(resp.read())
    version, info = facts["version"], facts["info"]
    return {
        "daemon_version": version.get("Version", ""),
        "api_version": version.get("ApiVersion", ""),
        "min_api_version": version.get("MinAPIVersion", ""),
        "facts": {
            "NCPU": info.get("NCPU"),
            "MemTotal": info.get("MemTotal"),
            "Name": info.get("Name"),
            "OperatingSystem": info.get("OperatingSystem"),
            "KernelVersion": info.get("KernelVersion"),
            # The gateway removes this path from the daemon's error messages (gateway/errors.py).
            "DockerRootDir": info.get("DockerRootDir"),
        },
    }


def moorage_containers(docker: Endpoint) -> list[dict]:
    """Every container on this daemon that carries a Moorage project label: the truth the
    gateway reconciles its map against."""
    query = "all=1&filters=" + urllib.parse.quote(json.dumps({"label": [PROJECT_LABEL]}))
    resp = request(docker, "GET", "/containers/json?" + query, [], connect_timeout=3, timeout=30)
    if resp.status != 200:
        raise UpstreamError(f"dockerd answered {resp.status} to the container list")
    return [
        {
            "id": c["Id"],
            "name": (c.get("Names") or [""])[0].lstrip("/"),
            "project": (c.get("Labels") or {}).get(PROJECT_LABEL, ""),
            "labels": c.get("Labels") or {},
        }
        for c in json.loads(resp.read())
    ]


def _ip(*argv: str) -> str:
    try:
        proc = subprocess.run(["ip", *argv], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout.decode(errors="replace") if proc.returncode == 0 else ""


def _mtu(device: str) -> int | None:
    try:
        with open(f"/sys/class/net/{device}/mtu") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def underlay(agent_url: str, gateway_url: str) -> dict:
    """{"address", "mtu"} of this instance between instances, or {} when neither is found:
    the agent's advertised address if it is one of this host's, else the source address of
    the route to the gateway; the MTU of the interface that holds it."""
    own = {}  # address -> device, from `ip -o -4 addr show`: "2: eth0    inet 198.18.3.11/24 ..."
    for line in _ip("-o", "-4", "addr", "show").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "inet":
            own[parts[3].split("/")[0]] = parts[1]
    advertised = urllib.parse.urlparse(agent_url).hostname or ""
    address = advertised if advertised in own and not advertised.startswith("127.") else ""
    if not address:
        host = urllib.parse.urlparse(gateway_url).hostname or ""
        try:
            target = str(ipaddress.IPv4Address(socket.gethostbyname(host)))
        except (OSError, ValueError):
            return {}
        route = _ip("-o", "route", "get", target).split()
        address = route[route.index("src") + 1] if "src" in route[:-1] else ""
    if address not in own:
        return {}
    found: dict = {"address": address}
    mtu = _mtu(own[address])
    if mtu:
        found["mtu"] = mtu
    return found


class GatewayLink:
    """An HTTP connection to the gateway: the heartbeats' is kept from one to the next; a
    registration takes one of its own (``once``).

    A heartbeat on a fresh connection cost the gateway a TCP accept (and over https a TLS
    handshake), a greenlet and gunicorn's connection setup, every interval, for every instance.
    The gateway keeps an idle connection for 75 s (gateway/server.py ``keepalive``), longer
    than a heartbeat interval. A heartbeat sent on a kept connection that the gateway closed
    meanwhile (a restart, a replica gone, its idle limit) fails before any answer; it is then
    sent once more on a new connection: a heartbeat (PUT) may be sent twice."""

    RETRIED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)

    def __init__(self, gateway_url: str, timeout: float = 10):
        url = urllib.parse.urlsplit(gateway_url)
        self.https = url.scheme == "https"
        self.host, self.port = url.hostname or "", url.port
        self.prefix = url.path.rstrip("/")
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None
        self.connections = 0  # opened so far (the tests count them)

    def _connect(self) -> http.client.HTTPConnection:
        self.connections += 1
        if self.https:  # as urllib verifies: the system's certificate authorities
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def call(self, method: str, path: str, payload: dict, headers: dict) -> tuple[int, dict]:
        """(status, JSON body or {}); OSError when the gateway cannot be reached or answers
        no HTTP."""
        data = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", **headers}
        kept, self.conn = self.conn, None
        if kept is not None:
            try:
                return self._exchange(kept, method, path, data, headers)
            except self.RETRIED:
                pass  # the gateway closed it while it was idle: once more, on a new one
        return self._exchange(self._connect(), method, path, data, headers)

    def _exchange(self, conn, method: str, path: str, data: bytes, headers: dict) -> tuple[int, dict]:
        try:
            conn.request(method, self.prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except self.RETRIED:
            conn.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise OSError(f"{type(exc).__name__}: {exc}") from exc
        if resp.will_close:
            conn.close()
        else:
            self.conn = conn
        try:
            return resp.status, json.loads(body or b"{}")
        except ValueError:
            return resp.status, {}

    @classmethod
    def once(cls, gateway_url: str, method: str, path: str, payload: dict, headers: dict) -> tuple[int, dict]:
        """One call on a connection of its own, closed after: nothing to send twice (a
        registration sent again with the secret it replaced would be refused)."""
        link = cls(gateway_url)
        try:
            return link.call(method, path, payload, headers)
        finally:
            link.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Registrar:
    def __init__(
        self,
        gateway_url: str,
        registration_secret: str,
        uuid: str,
        agent_url: str,
        capacity: int,
        docker: Endpoint,
        on_secret,
        provider: str = "static",
        bootstrap_secret: str = "",
        public_address: str = "",
        on_segments=None,
        on_underlay=None,
    ):
        self.gateway_url = gateway_url.rstrip("/")
        self.registration_secret = registration_secret
        self.bootstrap_secret = bootstrap_secret
        self.public_address = public_address
        self.uuid = uuid
        self.agent_url = agent_url
        self.capacity = capacity
        self.docker = docker
        self.on_secret = on_secret
        # The spanning networks' segments this instance carries, as the gateway's registration
        # answer lists them (agent/segments.py Segments.replace_all).
        self.on_segments = on_segments
        # Told the underlay address once it is known (agent/segments.py serve_names_at).
        self.on_underlay = on_underlay
        self.provider = provider
        self.secret: str | None = None
        # The secret of this instance's last registration (the state directory keeps it across
        # restarts): presented when registering again, it shows the gateway this is the same
        # agent, not another one claiming a live instance's UUID.
        self.previous_secret = ""
        self.interval = 10.0
        self.link = GatewayLink(gateway_url)  # the heartbeats' kept connection
        # Facts of the agent's own, in every registration and heartbeat (TenantSocketDir; and
        # PublicAddress, which a heartbeat's facts would otherwise replace with the daemon's alone).
        self.agent_facts: dict[str, str] = {"PublicAddress": public_address} if public_address else {}

    def register_once(self) -> bool:
        try:
            facts = daemon_facts(self.docker)
        except (UpstreamError, OSError, ValueError) as exc:
            log.warning("dockerd at %s not ready: %s", self.docker, exc)
            return False
        if self.public_address:  # where clients reach published ports (gateway.instances.published_address)
            facts["facts"]["PublicAddress"] = self.public_address
        facts["facts"].update(self.agent_facts)
        payload = {
            "uuid": self.uuid,
            "agent_url": self.agent_url,
            "capacity": self.capacity,
            "provider": self.provider,
            "underlay": underlay(self.agent_url, self.gateway_url),
            **facts,
        }
        if self.bootstrap_secret:
            headers = {BOOTSTRAP_SECRET_HEADER: self.bootstrap_secret}
        else:
            headers = {REGISTRATION_SECRET_HEADER: self.registration_secret}
            if self.secret or self.previous_secret:
                headers[AGENT_SECRET_HEADER] = self.secret or self.previous_secret
        try:
            status, body = GatewayLink.once(self.gateway_url, "POST", AGENTS_PATH, payload, headers)
        except OSError as exc:
            log.warning("gateway %s unreachable: %s", self.gateway_url, exc)
            return False
        if status not in (200, 201):
            log.error("registration refused (%s): %s", status, body.get("message"))
            return False
        self.secret = self.previous_secret = body["agent_secret"]
        if self.bootstrap_secret and body.get("uuid"):
            self.uuid = str(body["uuid"])  # the one-time secret is spent: keep what it bought
        self.interval = float(body.get("heartbeat_interval", self.interval))
        self.on_secret(self.secret)
        if self.on_underlay is not None and payload["underlay"].get("address"):
            self.on_underlay(payload["underlay"]["address"])
        if self.on_segments is not None and isinstance(body.get("segments"), list):
            self.on_segments(body["segments"])
        log.info("registered instance %s with %s", self.uuid, self.gateway_url)
        return True

    def heartbeat_once(self) -> bool:
        # Only a daemon that cannot be reached is "down": a slow answer under load is not,
        # and must not take the instance out of placement.
        payload = {"capacity": self.capacity, "daemon": "up"}
        try:
            payload.update(daemon_facts(self.docker))
            payload["facts"].update(self.agent_facts)
            payload["containers"] = moorage_containers(self.docker)
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            payload = {"capacity": self.capacity, "daemon": "down", "error": str(exc)}
        except (UpstreamError, OSError, ValueError) as exc:
            if "cannot connect" in str(exc):
                payload = {"capacity": self.capacity, "daemon": "down", "error": str(exc)}
            else:
                log.warning("heartbeat: dockerd slow or odd (%s); reporting it up without fresh facts", exc)
        try:
            status, _ = self.link.call(
                "PUT",
                f"{AGENTS_PATH}/{self.uuid}/heartbeat",
                payload,
                {AGENT_SECRET_HEADER: self.secret or ""},
            )
        except OSError as exc:
            log.warning("heartbeat: gateway unreachable: %s", exc)
            return True  # keep our secret; the gateway may come back
        return status not in (401, 404)

    def run(self) -> None:
        backoff = 0.5
        while True:
            if self.secret is None:
                if not self.register_once():
                    gevent.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.5
            gevent.sleep(self.interval)
            if not self.heartbeat_once():
                log.warning("gateway no longer knows this agent; registering again")
                self.secret = None
