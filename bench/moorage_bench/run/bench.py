"""The Bench: both sides' keep-alive connections, the Docker calls the sections make, the rows,
and the cleanup. The sections are mixins (requests_sections, stream_sections, load_sections).
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse

from .common import BENCH_LABEL, IMAGE, REQUEST_TIMEOUT, SIDES, BenchError, say
from .load_sections import LoadSections
from .raw import Conn, Response
from .requests_sections import RequestSections
from .stack import gateway_config_path
from .stream_sections import StreamSections


def query(params: dict | None) -> str:
    return "?" + urllib.parse.urlencode(params) if params else ""


class Bench(RequestSections, StreamSections, LoadSections):
    """One run: an endpoint and a keep-alive connection per side, the rows, what to remove."""

    def __init__(self, env: dict[str, str], profile: dict, mode: str):
        self.env = env
        self.p = profile
        self.mode = mode
        with open(os.path.join(env["DOCKER_CONFIG"], "config.json")) as fh:
            headers = json.load(fh).get("HttpHeaders") or {}
        if not headers.get("X-Auth-Token"):
            raise BenchError(f"{env['DOCKER_CONFIG']}/config.json has no X-Auth-Token header")
        self.config_path = gateway_config_path(env)
        probe = Conn(env["MOORAGE_DIRECT_HOST"])
        ping = probe.request("GET", "/_ping")
        probe.close()
        if ping.status != 200:
            raise BenchError(f"the daemon's /_ping answered {ping.status}: {ping.text()}")
        # Both sides speak the daemon's API version: the gateway serves the daemon's answers.
        self.api = ping.headers.get("api-version", "1.41")
        self.endpoints = {"direct": env["MOORAGE_DIRECT_HOST"], "moorage": env["DOCKER_HOST"]}
        self.headers = {"direct": {}, "moorage": headers}
        self.conns = {name: self.conn(name) for name in SIDES}
        gw = self.conns["moorage"].request("GET", "/_ping")
        if gw.status != 200:
            raise BenchError(f"the gateway's /_ping answered {gw.status}: {gw.text()}")
        self.rows: list[dict] = []
        self.extra: dict = {}
        self.errors: list[str] = []
        self.created: list[str] = []  # containers made through the gateway, removed at the end
        self.images: list[str] = []  # image IDs loaded, removed at the end (on the daemon)
        self.streamed_moorage = 0  # bytes streamed through the gateway, for RSS per GB

    def conn(self, side: str, timeout: float = REQUEST_TIMEOUT) -> Conn:
        return Conn(self.endpoints[side], self.headers[side], prefix=f"/v{self.api}", timeout=timeout)

    # -- Docker calls, on either side -------------------------------------------------------------
    def call(self, side: str, method: str, path: str, *codes: int, body=None, headers=None, **kw) -> Response:
        conn = kw.pop("conn", None) or self.conns[side]
        r = conn.request(method, path + query(kw.pop("params", None)), body=body, headers=headers, **kw)
        if codes and r.status not in codes:
            raise BenchError(f"{method} {path} via {side} answered {r.status}: {r.text()}")
        return r

    def create(self, side: str, cmd: list[str], **extra) -> str:
        body = {"Image": IMAGE, "Cmd": cmd, "Labels": {BENCH_LABEL: "1"}, **extra}
        r = self.call(
            side,
            "POST",
            "/containers/create",
            201,
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        return json.loads(r.body)["Id"]

    def start(self, side: str, cid: str) -> None:
        self.call(side, "POST", f"/containers/{cid}/start", 204, 304)

    def wait(self, side: str, cid: str, timeout: float = REQUEST_TIMEOUT) -> int:
        conn = self.conn(side, timeout) if timeout != REQUEST_TIMEOUT else None
        r = self.call(side, "POST", f"/containers/{cid}/wait", 200, conn=conn)
        if conn is not None:
            conn.close()
        return json.loads(r.body).get("StatusCode", -1)

    def remove(self, side: str, cid: str, force: bool = False) -> None:
        self.call(
            side, "DELETE", f"/containers/{cid}", 204, params={"force": "1", "v": "1"} if force else None
        )

    def run_kept(self, cmd: list[str], timeout: float = REQUEST_TIMEOUT) -> str:
        """Run `cmd` to its end through the gateway and keep the container (both sides see it)."""
        cid = self.create("moorage", cmd)
        self.created.append(cid)
        self.start("moorage", cid)
        code = self.wait("moorage", cid, timeout)
        if code != 0:
            raise BenchError(f"container {cid[:12]} ({' '.join(cmd)}) exited {code}")
        return cid

    def drop(self, cid: str) -> None:
        self.remove("moorage", cid, force=True)
        self.created.remove(cid)

    def cleanup(self) -> None:
        conn = self.conn("direct")
        for cid in self.created:
            try:
                conn.request("DELETE", f"/containers/{cid}?force=1&v=1")
            except OSError as exc:
                say(f"could not remove {cid[:12]}: {exc}")
        self.created.clear()
        try:
            # Anything a failed section left behind on the daemon, labelled as ours.
            flt = urllib.parse.quote(json.dumps({"label": [BENCH_LABEL]}))
            r = conn.request("GET", f"/containers/json?all=1&filters={flt}")
            for c in json.loads(r.body) if r.status == 200 else []:
                conn.request("DELETE", f"/containers/{c['Id']}?force=1&v=1")
            for image in self.images:
                conn.request("DELETE", f"/images/{image}?force=1")
        except (OSError, ValueError) as exc:
            say(f"could not sweep what the bench made: {exc}")
        self.images.clear()
        conn.close()

    def gateway_trouble(self) -> str:
        """After a section failed: "" if the gateway still answers /_ping on new connections,
        else why the rest of the run would measure nothing. Ten connections, as each lands on
        whichever worker accepts it first and one sick worker is enough to spoil the figures."""
        self.conns["moorage"].close()
        for _ in range(10):
            try:
                r = self.conn("moorage", timeout=10).request("GET", "/_ping", headers={"Connection": "close"})
            except OSError as exc:
                return f"the gateway no longer answers ({type(exc).__name__}: {exc}); see its log"
            if r.status != 200:
                break
        else:
            return ""
        return (
            f"the gateway's /_ping now answers {r.status} ({r.text()[:120]}); see its log "
            "(a worker killed by gunicorn's timeout in the middle of a stream shows as WORKER TIMEOUT)"
        )

    @staticmethod
    def order(i: int) -> tuple[str, ...]:
        """Which side goes first in round i: alternately, so that drift hits both alike."""
        return SIDES if i % 2 == 0 else SIDES[::-1]

    @staticmethod
    def now() -> float:
        return time.perf_counter()
