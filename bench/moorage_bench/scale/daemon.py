"""A minimal Docker Engine API answered from memory: what one simulated instance's daemon says.

Enough for what the gateway asks of a daemon for `docker info`, `docker ps` and `docker run -d`
(create, start, wait, remove; the image and network lookups a create makes), in the shapes
dockerd 1.41 gives. Every answer is made from a few Python objects: the figures bench/scale takes
measure the gateway and its store, not a daemon. Anything else is dockerd's 404 for a route it
does not have.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import secrets
import time
from urllib.parse import parse_qs, unquote

API_VERSION = "1.41"
# The one image every simulated daemon holds (bench/scale publishes it, as devstack publishes
# its seeded busybox).
IMAGE = "busybox:latest"
IMAGE_ID = "sha256:" + hashlib.sha256(b"moorage-bench-scale-busybox").hexdigest()
PROJECT_LABEL = "org.openstack.moorage.project"  # gateway/wire.py's, spelt out: no gateway import here
SEQ_LABEL = "org.openstack.moorage.bench.seq"  # a create's number, for its scheduling time
ROOT_DIR = "/var/lib/docker"


def container_id(instance: str, k: int) -> str:
    return hashlib.sha256(f"{instance}/{k}".encode()).hexdigest()


def container_name(instance: str, k: int) -> str:
    return f"c{k}-{instance[:8]}"


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


class Container:
    __slots__ = ("cmd", "created", "exit_code", "id", "labels", "name", "state")

    def __init__(self, cid: str, name: str, created: float, labels: dict, cmd: list, state: str):
        self.id, self.name, self.created, self.labels = cid, name, created, labels
        self.cmd, self.state, self.exit_code = cmd, state, 0

    def summary(self) -> dict:
        """As GET /containers/json lists it."""
        running = self.state == "running"
        return {
            "Id": self.id,
            "Names": ["/" + self.name],
            "Image": IMAGE,
            "ImageID": IMAGE_ID,
            "Command": " ".join(self.cmd),
            "Created": int(self.created),
            "Ports": [],
            "Labels": self.labels,
            "State": self.state,
            "Status": "Up 2 hours" if running else "Exited (0) 2 hours ago",
            "HostConfig": {"NetworkMode": "bridge"},
            "NetworkSettings": {"Networks": {"bridge": _endpoint(self.id, running)}},
            "Mounts": [],
        }

    def inspect(self) -> dict:
        """As GET /containers/{id}/json answers (the fields the gateway and the CLI read)."""
        running = self.state == "running"
        return {
            "Id": self.id,
            "Created": _iso(self.created),
            "Path": self.cmd[0] if self.cmd else "",
            "Args": self.cmd[1:],
            "State": {
                "Status": self.state,
                "Running": running,
                "Paused": False,
                "Restarting": False,
                "OOMKilled": False,
                "Dead": False,
                "Pid": 4242 if running else 0,
                "ExitCode": self.exit_code,
                "Error": "",
                "StartedAt": _iso(self.created),
                "FinishedAt": "0001-01-01T00:00:00Z",
            },
            "Image": IMAGE_ID,
            "Name": "/" + self.name,
            "RestartCount": 0,
            "Driver": "overlay2",
            "HostConfig": {"NetworkMode": "bridge", "Binds": None, "PortBindings": {}, "Memory": 0},
            "Mounts": [],
            "Config": {"Image": IMAGE, "Cmd": self.cmd, "Labels": self.labels, "Env": [], "Tty": False},
            "NetworkSettings": {"Ports": {}, "Networks": {"bridge": _endpoint(self.id, running)}},
        }


def _endpoint(cid: str, running: bool) -> dict:
    return {
        "NetworkID": "b" * 64,
        "EndpointID": cid[:32] * 2 if running else "",
        "Gateway": "198.18.0.1" if running else "",
        "IPAddress": "198.18.0.2" if running else "",
        "IPPrefixLen": 16 if running else 0,
        "MacAddress": "02:42:c6:12:00:02" if running else "",
    }


def _matches(c: Container, filters: dict) -> bool:
    """The label, id, name and status filters of GET /containers/json (others are ignored)."""
    checks = {
        "label": lambda v: _has_label(c, str(v)),
        "id": lambda v: c.id.startswith(str(v)),
        "name": lambda v: str(v).lstrip("/") in c.name,
        "status": lambda v: c.state == v,
    }
    for key, wanted in filters.items():
        values = list(wanted) if isinstance(wanted, (list, dict)) else [wanted]
        if key not in checks or not values:
            continue
        # Every label must match; for the others, any of the values.
        test = all if key == "label" else any
        if not test(checks[key](v) for v in values):
            return False
    return True


def _has_label(c: Container, spec: str) -> bool:
    k, eq, val = spec.partition("=")
    return k in c.labels and (not eq or c.labels[k] == val)


class Daemon:
    """One simulated instance's daemon: its containers, and the time each numbered create came."""

    def __init__(self, uuid: str, project: str, containers: int, started: float):
        self.uuid = uuid
        self.containers: dict[str, Container] = {}
        self.by_name: dict[str, str] = {}
        self.creates: dict[str, float] = {}  # SEQ_LABEL -> time.time() the create arrived
        self.networks = [
            {"Name": n, "Id": ch * 64, "Driver": d, "Scope": "local", "Labels": {}, "Containers": {}}
            for n, ch, d in (("bridge", "b", "bridge"), ("host", "c", "host"), ("none", "d", "null"))
        ]
        for k in range(containers):
            cid = container_id(uuid, k)
            labels = {PROJECT_LABEL: project} if project else {}
            self._add(
                Container(
                    cid, container_name(uuid, k), started - 3600 + k, labels, ["sleep", "1d"], "running"
                )
            )

    def _add(self, c: Container) -> None:
        self.containers[c.id] = c
        self.by_name[c.name] = c.id

    def find(self, ref: str) -> Container | None:
        if ref in self.containers:
            return self.containers[ref]
        if ref.lstrip("/") in self.by_name:
            return self.containers[self.by_name[ref.lstrip("/")]]
        hits = [c for cid, c in self.containers.items() if cid.startswith(ref)] if len(ref) >= 3 else []
        return hits[0] if len(hits) == 1 else None

    def labelled(self) -> list[dict]:
        """What an agent's heartbeat reports (agent/registration.py moorage_containers)."""
        return [
            {"id": c.id, "name": c.name, "project": c.labels[PROJECT_LABEL], "labels": c.labels}
            for c in self.containers.values()
            if PROJECT_LABEL in c.labels
        ]

    def facts(self) -> dict:
        """Registration's and heartbeats' daemon facts (agent/registration.py daemon_facts)."""
        return {
            "daemon_version": "20.10.24",
            "api_version": API_VERSION,
            "min_api_version": "1.12",
            "facts": {
                "NCPU": 2,
                "MemTotal": 4 << 30,
                "Name": "sim-" + self.uuid[:8],
                "OperatingSystem": "Debian GNU/Linux 12 (bookworm)",
                "KernelVersion": "6.1.0",
                "DockerRootDir": ROOT_DIR,
            },
        }

    # -- the API -------------------------------------------------------------------------------

    def answer(self, method: str, target: str, body: bytes) -> tuple[int, object, dict]:
        """(status, JSON-able payload or text, extra headers) for one request."""
        path, _, query = target.partition("?")
        q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        parts = [unquote(p) for p in path.split("/") if p]
        if parts and parts[0].startswith("v1."):
            parts = parts[1:]
        head = parts[0] if parts else ""
        if method in ("GET", "HEAD") and head == "_ping":
            return 200, "OK", {"Api-Version": API_VERSION, "Docker-Experimental": "false", "OSType": "linux"}
        if method == "GET" and parts == ["version"]:
            return 200, self._version(), {}
        if method == "GET" and parts == ["info"]:
            return 200, self._info(), {}
        if head == "containers":
            return self._containers(method, parts[1:], q, body)
        if head == "images" and method == "GET":
            return self._images(parts[1:])
        if head == "networks":
            return self._networks(method, parts[1:], body)
        if method == "GET" and parts == ["volumes"]:
            return 200, {"Volumes": [], "Warnings": None}, {}
        return 404, {"message": "page not found"}, {}

    def _containers(self, method: str, rest: list[str], q: dict, body: bytes):
        if method == "GET" and rest == ["json"]:
            filters = json.loads(q.get("filters") or "{}") or {}
            every = q.get("all") in ("1", "true", "True")
            listed = [
                c.summary()
                for c in sorted(self.containers.values(), key=lambda c: c.created, reverse=True)
                if (every or c.state == "running") and _matches(c, filters)
            ]
            return 200, listed, {}
        if method == "POST" and rest == ["create"]:
            return self._create(q.get("name", ""), body)
        c = self.find(rest[0]) if rest else None
        if c is None:
            return 404, {"message": f"No such container: {rest[0] if rest else ''}"}, {}
        verb = rest[1] if len(rest) > 1 else ""
        if method == "GET" and verb == "json":
            return 200, c.inspect(), {}
        if method == "POST" and verb == "start":
            if c.state == "running":
                return 304, None, {}
            c.state = "running"
            return 204, None, {}
        if method == "POST" and verb in ("stop", "kill"):
            c.state = "exited"
            return 204, None, {}
        if method == "POST" and verb == "wait":
            c.state = "exited"
            return 200, {"StatusCode": c.exit_code, "Error": None}, {}
        if method == "DELETE" and not verb:
            if c.state == "running" and q.get("force") not in ("1", "true"):
                return (
                    409,
                    {
                        "message": f"You cannot remove a running container {c.id}. Stop the "
                        "container before attempting removal or force remove"
                    },
                    {},
                )
            del self.containers[c.id]
            self.by_name.pop(c.name, None)
            return 204, None, {}
        return 404, {"message": "page not found"}, {}

    def _create(self, name: str, body: bytes):
        arrived = time.time()
        try:
            spec = json.loads(body or b"{}")
        except ValueError as exc:
            return 400, {"message": f"invalid JSON: {exc}"}, {}
        name = name.lstrip("/") or f"sim_{secrets.token_hex(4)}"
        if name in self.by_name:
            return 409, {"message": f'Conflict. The container name "/{name}" is already in use'}, {}
        labels = spec.get("Labels") or {}
        cmd = spec.get("Cmd") or ["sh"]
        c = Container(secrets.token_hex(32), name, arrived, labels, list(cmd), "created")
        self._add(c)
        if SEQ_LABEL in labels:
            self.creates[labels[SEQ_LABEL]] = arrived
        return 201, {"Id": c.id, "Warnings": []}, {}

    def _images(self, rest: list[str]):
        image = {
            "Id": IMAGE_ID,
            "RepoTags": [IMAGE],
            "RepoDigests": [],
            "Created": 1700000000,
            "Size": 4_261_550,
            "SharedSize": -1,
            "VirtualSize": 4_261_550,
            "Labels": None,
            "Containers": -1,
            "ParentId": "",
        }
        if rest == ["json"]:
            return 200, [image], {}
        ref = "/".join(rest[:-1]) if rest and rest[-1] == "json" else ""
        if ref in (IMAGE, "busybox", IMAGE_ID, IMAGE_ID[7:]) or (
            len(ref) >= 12 and IMAGE_ID[7:].startswith(ref)
        ):
            return (
                200,
                {**image, "Config": {"Cmd": ["sh"], "Labels": None}, "Os": "linux", "Architecture": "amd64"},
                {},
            )
        return 404, {"message": f"No such image: {ref}"}, {}

    def _networks(self, method: str, rest: list[str], body: bytes):
        """The three built-in networks, and those made here (a project's own default bridge)."""
        if method == "POST" and rest == ["create"]:
            spec = json.loads(body or b"{}")
            name = spec.get("Name", "")
            if any(n["Name"] == name for n in self.networks):
                return 409, {"message": f"network with name {name} already exists"}, {}
            net = {
                "Name": name,
                "Id": secrets.token_hex(32),
                "Driver": spec.get("Driver") or "bridge",
                "Scope": "local",
                "Labels": spec.get("Labels") or {},
                "Options": spec.get("Options") or {},
                "Containers": {},
            }
            self.networks.append(net)
            return 201, {"Id": net["Id"], "Warning": ""}, {}
        found = [
            n
            for n in self.networks
            if rest and (rest[0] in (n["Name"], n["Id"]) or n["Id"].startswith(rest[0]))
        ]
        if method == "GET" and not rest:
            return 200, self.networks, {}
        if method == "GET" and found:
            return 200, found[0], {}
        if method == "DELETE" and found:
            self.networks.remove(found[0])
            return 204, None, {}
        return 404, {"message": f"network {rest[0] if rest else ''} not found"}, {}

    def _version(self) -> dict:
        return {
            "Version": "20.10.24",
            "ApiVersion": API_VERSION,
            "MinAPIVersion": "1.12",
            "Os": "linux",
            "Arch": "amd64",
            "KernelVersion": "6.1.0",
            "GoVersion": "go1.19.8",
            "GitCommit": "5d6db84",
            "Components": [{"Name": "Engine", "Version": "20.10.24", "Details": {"ApiVersion": API_VERSION}}],
        }

    def _info(self) -> dict:
        states = [c.state for c in self.containers.values()]
        facts = self.facts()["facts"]
        return {
            "ID": "SIM:" + self.uuid[:8].upper(),
            "Containers": len(states),
            "ContainersRunning": states.count("running"),
            "ContainersPaused": 0,
            "ContainersStopped": len(states) - states.count("running"),
            "Images": 1,
            "Driver": "overlay2",
            "ServerVersion": "20.10.24",
            "OSType": "linux",
            "Architecture": "x86_64",
            "IndexServerAddress": "https://index.docker.io/v1/",
            "Labels": [],
            "Warnings": None,
            **facts,
        }
