"""Sides, cases and the per-side context every scenario runs in.

A case is a function of one Ctx. The runner calls it once with the direct daemon's side and
once with Moorage's, normalizes what each returned (an observation: plain JSON-able data)
and compares the two.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import re
import secrets
import select
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from compat import wire
from compat.normalize import Normalizer, shape

DEFAULT_VERSION = "1.41"
# Every raw-HTTP case runs again at these API versions (its requests at DEFAULT_VERSION move to
# the variant's; its id gets "@VERSION"). The direct side answers them through the documented
# translation (compat/translator.py).
VARIANT_VERSIONS = ("1.44", "1.55")
CLI = os.environ.get("COMPAT_DOCKER_CLI", "/usr/local/bin/docker")
OLD_CLI = "/usr/bin/docker"
# Labels every object the suite creates carries, so the final sweep finds leftovers.
SUITE_LABEL = "org.moorage.compat"

# Headers clients read; compared on every HTTP observation (names lower-cased: HTTP header
# names are case-insensitive).
COMPARED_HEADERS = (
    "content-type",
    "api-version",
    "docker-experimental",
    "ostype",
    "builder-version",
    "cache-control",
    "pragma",
    "x-docker-container-path-stat",
    "docker-content-digest",
    "location",
    "upgrade",
    "connection-upgrade",
)


@dataclass
class Stack:
    direct: str
    gateway: str
    moorage_config: str
    registry: str
    run_id: str
    workdir: str
    beta_config: str | None = None
    # The daemons' data roots (the reference daemon's and the instances'): paths under them
    # (ResolvConfPath, a volume's Mountpoint) differ by daemon only, and compare as <ROOT>.
    roots: tuple[str, ...] = ()
    # The gateway's unix-socket bind (devstack's MOORAGE_GATEWAY_SOCKET; "" when none): the
    # daemon side is a unix socket, and cases whose client acts on the transport (Case.unix)
    # reach Moorage the same way.
    gateway_unix: str = ""

    @classmethod
    def from_env(cls, workdir: str) -> Stack:
        missing = [
            v for v in ("DOCKER_HOST", "MOORAGE_DIRECT_HOST", "DOCKER_CONFIG") if not os.environ.get(v)
        ]
        if missing:
            raise SystemExit(
                f"compat-tests: {', '.join(missing)} not set; source a stack's env "
                "(scripts/devstack up DIR && . DIR/env)"
            )
        # The reference daemon when the stack has one (why: devstack/common.py REFERENCE).
        direct = os.environ.get("MOORAGE_REFERENCE_HOST") or os.environ["MOORAGE_DIRECT_HOST"]
        daemons = {direct, *os.environ.get("MOORAGE_DIRECT_HOSTS", "").split()}
        return cls(
            direct=direct,
            gateway=os.environ["DOCKER_HOST"],
            moorage_config=os.environ["DOCKER_CONFIG"],
            registry=os.environ.get("MOORAGE_REGISTRY", ""),
            run_id=secrets.token_hex(2),
            workdir=workdir,
            beta_config=os.environ.get("MOORAGE_CONFIG_beta"),  # noqa: SIM112 (devstack's name, per tenant)
            roots=tuple(sorted(filter(None, map(_data_root, daemons)), key=len, reverse=True)),
            gateway_unix=os.environ.get("MOORAGE_GATEWAY_SOCKET", ""),
        )


def _data_root(endpoint: str) -> str:
    """A daemon's DockerRootDir ("" if it does not say)."""
    try:
        resp = wire.request(endpoint, "GET", "/v1.41/info", timeout=10)
        return str(json.loads(resp.body).get("DockerRootDir") or "") if resp.status == 200 else ""
    except (OSError, ValueError):
        return ""


@dataclass
class Side:
    name: str  # "direct" | "moorage"
    endpoint: str
    config_dir: str  # DOCKER_CONFIG for the CLI, docker-py and compose
    headers: dict[str, str]

    @classmethod
    def make(cls, name: str, endpoint: str, config_dir: str | None, workdir: str) -> Side:
        if config_dir is None:
            config_dir = os.path.join(workdir, "direct-config")
            os.makedirs(config_dir, exist_ok=True)
            with open(os.path.join(config_dir, "config.json"), "w") as fh:
                fh.write("{}\n")
            headers = {}
        else:
            with open(os.path.join(config_dir, "config.json")) as fh:
                headers = dict(json.load(fh).get("HttpHeaders") or {})
        return cls(name, endpoint, config_dir, headers)


@dataclass
class Case:
    id: str
    layer: str
    ops: tuple[str, ...]
    fn: Callable
    divergence: str | None = None
    timeout: float = 60
    serial: bool = False
    requires: str | None = None  # "compose": skipped when the tool is missing
    # needs the internet (and so waits on DNS timeouts inside dockerd, which stalls its /info):
    # run after every other case, so that stall cannot spill into them
    isolated: bool = False
    api_version: str = DEFAULT_VERSION  # what its requests at DEFAULT_VERSION speak
    # The client behaves differently over TCP than over a unix socket (the docker CLI misses
    # its detach keys over TCP, against dockerd too: docs/divergences.md): the Moorage side
    # goes through the gateway's unix-socket bind, like the daemon side, when the stack has one.
    unix: bool = False


CASES: dict[str, Case] = {}


def case(
    case_id: str,
    ops: tuple[str, ...] | list[str] | str = (),
    *,
    divergence: str | None = None,
    timeout: float = 60,
    serial: bool = False,
    requires: str | None = None,
    isolated: bool = False,
    unix: bool = False,
):
    """Register a scenario. The id's first dotted part is its layer."""
    if isinstance(ops, str):
        ops = (ops,)

    def register(fn):
        if case_id in CASES:
            raise RuntimeError(f"duplicate case id {case_id}")
        layer = case_id.split(".", 1)[0]
        CASES[case_id] = Case(
            case_id, layer, tuple(ops), fn, divergence, timeout, serial, requires, isolated, unix=unix
        )
        if layer == "http":
            for version in VARIANT_VERSIONS:
                CASES[f"{case_id}@{version}"] = Case(
                    f"{case_id}@{version}",
                    layer,
                    tuple(ops),
                    fn,
                    divergence,
                    timeout,
                    serial,
                    requires,
                    isolated,
                    version,
                    unix,
                )
        return fn

    return register


def register(case_id: str, fn: Callable, ops=(), **kwargs) -> None:
    case(case_id, ops, **kwargs)(fn)


class SetupError(Exception):
    """A step a scenario needs (not the thing it observes) failed."""


@dataclass
class CliResult:
    argv: list[str]
    rc: int
    out: str
    err: str


@dataclass
class Ctx:
    stack: Stack
    side: Side
    case_id: str
    prefix: str
    api_version: str = DEFAULT_VERSION
    norm: Normalizer = field(init=False)
    _cleanups: list[Callable] = field(default_factory=list)
    tmp: str = field(init=False)

    def __post_init__(self):
        other = self.stack.gateway if self.side.name == "direct" else self.stack.direct
        self.norm = Normalizer(
            self.prefix, [self.side.endpoint, other], self.stack.registry, self.stack.roots
        )
        # named after the prefix, so paths in arguments and messages normalize alike
        self.tmp = os.path.join(self.stack.workdir, self.prefix)
        os.makedirs(self.tmp, exist_ok=True)

    # -- naming -------------------------------------------------------------------------
    @property
    def moorage(self) -> bool:
        return self.side.name == "moorage"

    def name(self, suffix: str = "c") -> str:
        return f"{self.prefix}-{suffix}"

    @property
    def labels(self) -> dict[str, str]:
        return {SUITE_LABEL: self.stack.run_id}

    def on_cleanup(self, fn: Callable) -> None:
        self._cleanups.append(fn)

    def cleanup(self) -> None:
        for fn in reversed(self._cleanups):
            with contextlib.suppress(Exception):  # best effort
                fn()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- raw HTTP -----------------------------------------------------------------------
    def target(
        self, path: str, query: dict | str | None = None, version: str | None = DEFAULT_VERSION
    ) -> str:
        if isinstance(query, dict):
            query = urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)
        if version == DEFAULT_VERSION:
            version = self.api_version
        t = (f"/v{version}" if version else "") + path
        return t + (f"?{query}" if query else "")

    def headers(self, extra: dict | None = None, auth: bool = True) -> list[tuple[str, str]]:
        out = list(self.side.headers.items()) if auth else []
        out += list((extra or {}).items())
        return out

    def http(
        self,
        method: str,
        path: str,
        query=None,
        *,
        body: bytes | None = None,
        json_body=None,
        headers: dict | None = None,
        version: str | None = DEFAULT_VERSION,
        auth: bool = True,
        timeout: float = 30,
        stream_for: float | None = None,
        content_type: str | None = None,
        chunked: bool = False,
    ) -> wire.Response:
        extra = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            extra.setdefault("Content-Type", "application/json")
        if content_type is not None:
            extra["Content-Type"] = content_type
        if body is None and method in ("POST", "PUT") and not chunked:
            body = b""
        return wire.request(
            self.side.endpoint,
            method,
            self.target(path, query, version),
            headers=self.headers(extra, auth),
            body=body,
            timeout=timeout,
            stream_for=stream_for,
            chunked=chunked,
        )

    def api(self, method: str, path: str, query=None, *, expect=(200, 201, 204), **kwargs):
        """A setup step: must succeed; returns the parsed JSON body (or None)."""
        resp = self.http(method, path, query, **kwargs)
        if resp.status not in expect:
            raise SetupError(f"{method} {path} -> {resp.status} {resp.body[:300]!r}")
        return resp.json() if resp.body else None

    def hijack(
        self,
        method: str,
        path: str,
        query=None,
        *,
        version: str | None = DEFAULT_VERSION,
        body: bytes | None = b"",
        json_body=None,
        **kwargs,
    ) -> wire.Response:
        extra = {}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            extra["Content-Type"] = "application/json"
        return wire.hijack(
            self.side.endpoint,
            method,
            self.target(path, query, version),
            headers=self.headers(extra),
            body=body,
            **kwargs,
        )

    # -- observations -------------------------------------------------------------------
    def obs(self, resp: wire.Response, body: str = "json", **kw) -> dict:
        """status + compared headers + the body, normalized as asked.

        body: json | shape | text | frames | raw | tar | none | lines (JSON lines stream)
        """
        out = {"status": resp.status, "headers": self.obs_headers(resp)}
        out["body"] = self.obs_body(resp, body, **kw)
        return out

    def obs_headers(self, resp: wire.Response) -> dict:
        out = {}
        for name, value in resp.headers:
            lname = name.lower()
            if lname in COMPARED_HEADERS:
                if lname == "x-docker-container-path-stat":
                    value = _path_stat(value)
                out[lname] = self.norm.text(value)
        return out

    def obs_body(self, resp: wire.Response, body: str = "json", **kw):
        data = resp.body
        if body == "none":
            return None
        if resp.status >= 400 and body not in ("raw",):
            parsed = resp.json()
            if isinstance(parsed, dict) and "message" in parsed:
                return {"message": self.norm.text(parsed["message"])}
            return self.norm.text(data.decode(errors="replace"))
        if body == "json":
            parsed = resp.json()
            if parsed is None and data.strip():
                return {"not-json": self.norm.text(data.decode(errors="replace"))}
            return self.norm.json(parsed, **kw)
        if body == "shape":
            return shape(resp.json())
        if body == "text":
            return self.norm.text(data.decode(errors="replace"), **kw)
        if body == "lines":
            return [self.norm.json(item, **kw) for item in json_lines(data)]
        if body == "frames":
            frames, problems, rest = wire.demux(data)
            return {
                "frames": [[s, self.norm.text(p.decode(errors="replace"), **kw)] for s, p in frames],
                "problems": problems,
                "trailing": len(rest),
            }
        if body == "raw":
            return self.norm.text(data.decode(errors="replace"), **kw)
        if body == "tar":
            names = self.norm.json(tar_names(data))
            if "members" in names:
                names["members"] = sorted(names["members"])
            return names
        raise ValueError(body)

    # -- setup helpers (raw API on this side) --------------------------------------------
    def create(
        self, name: str | None = None, cmd=None, image: str = "busybox", start: bool = False, **config
    ) -> str:
        body = {"Image": image, "Labels": dict(self.labels), **config}
        if cmd is not None:
            body["Cmd"] = cmd
        q = {"name": name} if name else None
        created = self.api("POST", "/containers/create", q, json_body=body)
        cid = created["Id"]
        self.on_cleanup(
            lambda: self.http("DELETE", f"/containers/{cid}", {"force": "1", "v": "1"}, timeout=20)
        )
        if start:
            self.api("POST", f"/containers/{cid}/start")
        return cid

    def running(self, name: str | None = None, cmd=("sleep", "300"), **config) -> str:
        return self.create(name, list(cmd), start=True, **config)

    def exited(
        self, name: str | None = None, cmd=("sh", "-c", "echo out; sleep 0.2; echo err >&2"), **config
    ) -> str:
        cid = self.create(name, list(cmd), start=True, **config)
        self.api("POST", f"/containers/{cid}/wait", timeout=30)
        return cid

    def volume(self, name: str, **extra) -> str:
        self.api("POST", "/volumes/create", json_body={"Name": name, "Labels": dict(self.labels), **extra})
        self.on_cleanup(lambda: self.http("DELETE", f"/volumes/{name}", {"force": "1"}))
        return name

    def network(self, name: str, **extra) -> str:
        created = self.api(
            "POST", "/networks/create", json_body={"Name": name, "Labels": dict(self.labels), **extra}
        )
        nid = created["Id"]
        self.on_cleanup(lambda: self.http("DELETE", f"/networks/{nid}"))
        return nid

    def image(self, ref: str, source: str = "busybox:latest") -> str:
        """Tag busybox as ref (repo:tag) on this side."""
        repo, _, tag = ref.rpartition(":")
        self.api("POST", f"/images/{source}/tag", {"repo": repo, "tag": tag})
        self.track_image(ref)
        return ref

    def track_image(self, ref: str) -> None:
        self.on_cleanup(lambda: self.http("DELETE", f"/images/{ref}", {"force": "1"}, timeout=30))

    # -- the docker CLI -----------------------------------------------------------------
    def cli_env(self, extra: dict | None = None) -> dict:
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": self.tmp,
            "DOCKER_HOST": self.side.endpoint,
            "DOCKER_CONFIG": self.side.config_dir,
            "DOCKER_BUILDKIT": "0",
            "DOCKER_CLI_HINTS": "false",
            "LANG": "C.UTF-8",
            "TERM": "xterm",
        }
        env.update(extra or {})
        return env

    def docker(
        self,
        *args: str,
        stdin: bytes | None = None,
        timeout: float = 30,
        env: dict | None = None,
        cli: str | None = None,
        cwd: str | None = None,
    ) -> CliResult:
        argv = [cli or CLI, *args]
        feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
        try:
            proc = subprocess.run(
                argv, capture_output=True, timeout=timeout, env=self.cli_env(env), cwd=cwd or self.tmp, **feed
            )
            return CliResult(
                list(args),
                proc.returncode,
                proc.stdout.decode(errors="replace"),
                proc.stderr.decode(errors="replace"),
            )
        except subprocess.TimeoutExpired as exc:
            # subprocess.run kills with SIGKILL on timeout
            return CliResult(
                list(args),
                -9,
                (exc.stdout or b"").decode(errors="replace"),
                (exc.stderr or b"").decode(errors="replace") + f"\n<timeout after {timeout}s>",
            )

    def cli_obs(self, res: CliResult, *, out: str = "text", err: str = "text", **kw) -> dict:
        """Normalized CLI result. out/err: text | lines-sorted | json | none | shape."""
        json_kw = {k: v for k, v in kw.items() if k in ("keep", "volatile", "sort_lists")}
        text_kw = {k: v for k, v in kw.items() if k in ("sizes", "columns", "numbers")}

        def conv(text: str, how: str):
            if how == "none":
                return None
            if how == "json":
                try:
                    return self.norm.json(json.loads(text), **json_kw)
                except ValueError:
                    return {"not-json": self.norm.text(text)}
            if how == "jsonlines":
                return [self.norm.json(x) for x in json_lines(text.encode())]
            if how == "shape":
                try:
                    return shape(json.loads(text))
                except ValueError:
                    return {"not-json": self.norm.text(text)}
            t = self.norm.text(text, **text_kw)
            if how == "lines-sorted":
                return sorted(t.splitlines())
            return t

        return {
            "argv": [self.norm.text(a) for a in res.argv],
            "rc": res.rc,
            "stdout": conv(res.out, out),
            "stderr": conv(res.err, err),
        }

    def docker_pty(
        self,
        *args: str,
        script: list[tuple] = (),
        timeout: float = 20,
        env: dict | None = None,
        cols: int = 80,
        rows: int = 24,
    ) -> CliResult:
        """Run the CLI on a pseudo-terminal: for each (wait_for, send[, pause]) step wait until
        the output contains wait_for (None: no wait), pause, then send the bytes. Then read until the
        process exits. Output is the terminal transcript, CRLF folded to LF."""
        import fcntl
        import struct
        import termios

        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        proc = subprocess.Popen(
            [CLI, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=self.cli_env(env),
            cwd=self.tmp,
            start_new_session=True,
            close_fds=True,
        )
        os.close(slave)
        deadline = time.monotonic() + timeout
        buf = b""
        seen = 0

        def pump(until: float) -> bool:
            nonlocal buf
            while time.monotonic() < until:
                r, _, _ = select.select([master], [], [], min(0.1, max(0, until - time.monotonic())))
                if r:
                    try:
                        data = os.read(master, 65536)
                    except OSError:
                        return False
                    if not data:
                        return False
                    buf += data
                    return True
                if proc.poll() is not None:
                    # drain what is left
                    r, _, _ = select.select([master], [], [], 0.05)
                    if not r:
                        return False
            return True

        timed_out = False
        try:
            for step in script:
                wait_for, send = step[0], step[1]
                pause = step[2] if len(step) > 2 else 0.0
                if wait_for is not None:
                    needle = wait_for.encode()
                    while needle not in buf[seen:]:
                        if time.monotonic() >= deadline:
                            timed_out = True
                            break
                        if not pump(deadline):
                            break
                    if needle in buf[seen:]:
                        seen = buf.index(needle, seen) + len(needle)
                if timed_out:
                    break
                if pause:
                    time.sleep(pause)
                os.write(master, send)
            while not timed_out:
                if time.monotonic() >= deadline:
                    timed_out = True
                    break
                if not pump(deadline) and proc.poll() is not None:
                    break
        finally:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
            try:
                rc = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                rc = -9
            os.close(master)
        text = terminal_text(buf.decode(errors="replace"))
        if timed_out:
            text += f"\n<timeout after {timeout}s>"
            rc = -9 if rc is None else rc
        return CliResult(list(args), rc, text, "")

    # -- docker-py ----------------------------------------------------------------------
    def dockerpy(self, version: str = "auto", high: bool = True, timeout: int = 30):
        """A docker-py client for this side; its HttpHeaders come from the side's config."""
        import docker

        base_url = self.side.endpoint
        if base_url.startswith("tcp://"):
            base_url = "http://" + base_url[len("tcp://") :]
        # docker-py reads DOCKER_CONFIG when it is built (and negotiates "auto" right there,
        # which already needs the headers): build clients one at a time with it set.
        with _DOCKERPY_LOCK:
            old = os.environ.get("DOCKER_CONFIG")
            os.environ["DOCKER_CONFIG"] = self.side.config_dir
            try:
                if high:
                    client = docker.DockerClient(base_url=base_url, version=version, timeout=timeout)
                else:
                    client = docker.APIClient(base_url=base_url, version=version, timeout=timeout)
            finally:
                if old is None:
                    os.environ.pop("DOCKER_CONFIG", None)
                else:
                    os.environ["DOCKER_CONFIG"] = old
        self.on_cleanup(client.close)
        return client


_DOCKERPY_LOCK = threading.Lock()


_CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def terminal_text(raw: str) -> str:
    """What a terminal would show, roughly: escape sequences dropped, each line as it
    stands after its last carriage return (a shell redrawing its prompt)."""
    raw = _CSI.sub("", raw).replace("\r\n", "\n")
    return "\n".join(line.rsplit("\r", 1)[-1] for line in raw.split("\n"))


def _path_stat(value: str) -> str:
    import base64

    try:
        stat = json.loads(base64.b64decode(value))
    except ValueError:
        return value
    stat.pop("mtime", None)
    return json.dumps(stat, sort_keys=True)


def json_lines(data: bytes) -> list:
    out = []
    dec = json.JSONDecoder()
    text = data.decode(errors="replace")
    i = 0
    while i < len(text):
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        if i >= len(text):
            break
        try:
            obj, i = dec.raw_decode(text, i)
        except ValueError:
            out.append({"not-json": text[i : i + 200]})
            break
        out.append(obj)
    return out


def tar_names(data: bytes) -> dict:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
            members = tf.getmembers()
            return {
                "members": sorted(m.name for m in members),
                "types": sorted({m.type.decode() for m in members}),
            }
    except (tarfile.TarError, EOFError, OSError) as exc:
        return {"not-tar": type(exc).__name__, "bytes": len(data)}


def make_tar(files: dict[str, bytes | str], mode: int = 0o644) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for path, content in files.items():
            if isinstance(content, str):
                content = content.encode()
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mode = mode
            info.mtime = 1700000000
            tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()
