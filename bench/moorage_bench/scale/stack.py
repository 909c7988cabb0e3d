"""The simulated stack: a throwaway PostgreSQL, two gateway replicas of this checkout (gunicorn,
as scripts/devstack starts them), the embedded identity's tenants, and the simulator processes.

Everything is started in a directory of its own (DIR) and recorded in DIR/pids.json, so that a
kept stack (--keep) is taken down later by `bench/scale --down DIR`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid as uuid_

from .. import REPO
from ..run.common import BenchError, say
from ..run.raw import Conn
from ..run.stack import children, vm_rss_kb
from .common import CAPACITY, CONTAINERS, WIDE_HOSTS, Layout
from .daemon import IMAGE, IMAGE_ID

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _scripts(name: str):
    """A module of scripts/moorage_scripts (tests/pgserver.py puts scripts/ on the path)."""
    from tests import pgserver  # noqa: F401

    return importlib.import_module(f"moorage_scripts.{name}")


def _free_port() -> int:
    return _scripts("ports").free_port()


def gateway_env() -> dict:
    """The gateway processes run this checkout (not whatever `moorage` is installed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "MOORAGE_"))}
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ScaleStack:
    def __init__(self, layout: Layout, heartbeat_interval: float, sims: int, workers: int = 2):
        self.layout = layout
        self.interval = heartbeat_interval
        self.nsims = sims
        self.workers = workers
        self.dir = tempfile.mkdtemp(prefix="moorage-scale-")
        self.pg = None
        self.db_url = ""
        self.ports: list[int] = []
        self.metrics_ports: list[int] = []
        self.gateways: list[subprocess.Popen] = []
        self.sims: list[subprocess.Popen] = []
        self.controls: list[int] = []
        self.tokens: dict[str, tuple[str, str]] = {}  # tenant name -> (token, project ID)
        self.secret = secrets.token_hex(16)

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    # -- bring up ----------------------------------------------------------------------------------

    def up(self) -> None:
        from tests import pgserver

        say(f"scale: stack in {self.dir}: PostgreSQL")
        # Durable commits as devstack's --postgres and production have them.
        self.pg = pgserver.ThrowawayPostgres(settings={"fsync": "on", "shared_buffers": "128MB"})
        self.pg.start()
        self.db_url = self.pg.createdb("moorage")
        self._record()
        self._identity()
        self.ports = [_free_port() for _ in range(2)]
        self.metrics_ports = [_free_port() for _ in range(2)]
        self._config()
        for i in range(2):
            self.gateways.append(self._start_gateway(i))
            self._record()
        for i in range(2):
            self._wait_gateway(i)
        self._admin("images", "publish", IMAGE, "--id", IMAGE_ID)
        self._start_sims()
        self._record()

    def _identity(self) -> None:
        """Tokens of the embedded identity (as scripts/devstack/identity.py writes them) for the
        tenants the bench speaks as: the wide and the single project, and the create projects."""
        tokens = {}
        for name, project in self.layout.tenants().items():
            token = secrets.token_hex(32)
            tokens[token] = {
                "project_id": project,
                "project_name": name,
                "user_id": uuid_.uuid4().hex,
                "user_name": f"{name}-user",
                "roles": ["member"],
            }
            self.tokens[name] = (token, project)
        doc = {"development_only": True, "comment": "bench/scale's tenants", "tokens": tokens}
        with open(self.path("identity.json"), "w") as fh:
            json.dump(doc, fh)
        os.chmod(self.path("identity.json"), 0o600)
        for name in ("wide", "single"):
            token, project = self.tokens[name]
            os.makedirs(self.path("tenants", name), exist_ok=True)
            with open(self.path("tenants", name, "config.json"), "w") as fh:
                json.dump({"HttpHeaders": {"X-Auth-Token": token, "X-Auth-Project-Id": project}}, fh)

    def _config(self) -> None:
        q = json.dumps
        lines = [
            "# written by bench/scale",
            "[gateway]",
            f"bind = [{q(f'tcp://127.0.0.1:{self.ports[0]}')}]",
            f"workers = {self.workers}",
            f"database = {q(self.db_url)}",
            f"registration_secret = {q(self.secret)}",
            f"log_file = {q(self.path('gateway-1.log'))}",
            f"metrics_bind = {q(f'127.0.0.1:{self.metrics_ports[0]}')}",
            f"heartbeat_interval = {self.interval:g}",
            "",
            "[identity]",
            'backend = "embedded"',
            f"token_file = {q(self.path('identity.json'))}",
            "",
            "[placement]",
            'tenancy = "dedicated"',
            f"capacity = {CAPACITY}",
        ]
        with open(self.path("moorage.toml"), "w") as fh:
            fh.write("\n".join(lines) + "\n")
        os.chmod(self.path("moorage.toml"), 0o600)

    def admin_argv(self) -> list[str]:
        return [sys.executable, "-m", "gateway.cli", "--config", self.path("moorage.toml")]

    def _admin(self, *args: str) -> None:
        proc = subprocess.run(
            [*self.admin_argv(), *args], capture_output=True, text=True, timeout=120, env=gateway_env()
        )
        if proc.returncode != 0:
            raise BenchError(f"moorage {' '.join(args)} failed: {(proc.stderr or proc.stdout)[-300:]}")

    def _start_gateway(self, i: int) -> subprocess.Popen:
        say(f"scale: gateway replica {i + 1} on 127.0.0.1:{self.ports[i]}")
        argv = [*self.admin_argv(), "serve"]
        if i:  # the settings file binds replica 1, as devstack's does
            argv += [
                "--bind",
                f"tcp://127.0.0.1:{self.ports[i]}",
                "--log-file",
                self.path(f"gateway-{i + 1}.log"),
            ]
            argv += ["--metrics-bind", f"127.0.0.1:{self.metrics_ports[i]}"]
        log = open(self.path(f"gateway-{i + 1}.out"), "wb")  # noqa: SIM115 - the child keeps it
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=gateway_env(),
            start_new_session=True,
        )

    def _wait_gateway(self, i: int) -> None:
        token, project = self.tokens["wide"]
        conn = Conn(f"tcp://127.0.0.1:{self.ports[i]}", {"X-Auth-Token": token, "X-Auth-Project-Id": project})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.gateways[i].poll() is not None:
                raise BenchError(f"gateway replica {i + 1} exited: see {self.path(f'gateway-{i + 1}.out')}")
            try:
                # Any HTTP answer: with no instance registered yet, most routes answer 503.
                if conn.request("GET", "/_ping").status:
                    conn.close()
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise BenchError(f"gateway replica {i + 1} did not answer within 120 s")

    def _start_sims(self) -> None:
        specs = [[] for _ in range(self.nsims)]
        for k, inst in enumerate(self.layout.instances):
            specs[k % self.nsims].append(inst)
        ready = []
        for s, mine in enumerate(specs):
            spec = {
                "gateways": [f"127.0.0.1:{p}" for p in self.ports],
                "secret": self.secret,
                "instances": mine,
                "register_concurrency": 8,
            }
            with open(self.path(f"sim-{s}.json"), "w") as fh:
                json.dump(spec, fh)
            log = open(self.path(f"sim-{s}.log"), "wb")  # noqa: SIM115 - the child keeps it
            env = gateway_env()
            env["PYTHONPATH"] = BENCH_DIR + os.pathsep + env["PYTHONPATH"]
            self.sims.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "moorage_bench.scale.sim",
                        self.path(f"sim-{s}.json"),
                        self.path(f"sim-{s}.ready"),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
            )
            ready.append(self.path(f"sim-{s}.ready"))
        say(f"scale: {len(self.layout.instances)} simulated instances in {self.nsims} process(es)")
        deadline = time.monotonic() + 300
        for s, path in enumerate(ready):
            while not os.path.exists(path):
                if self.sims[s].poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"simulator {s} did not start: see {self.path(f'sim-{s}.log')}")
                time.sleep(0.2)
            with open(path) as fh:
                self.controls.append(json.load(fh)["control"])

    # -- looking at it -----------------------------------------------------------------------------

    def sim_stats(self, since: float = 0.0) -> dict:
        """The simulators' counters summed, their heartbeats and their creates merged."""
        out: dict = {
            "stats": {},
            "beats": [],
            "creates": {},
            "pids": [],
            "intervals": set(),
            "span": [0.0, 0.0],
        }
        for port in self.controls:
            conn = Conn(f"tcp://127.0.0.1:{port}", timeout=60)
            try:
                doc = json.loads(conn.request("GET", f"/stats?since={since}").body)
            finally:
                conn.close()
            for k, v in doc["stats"].items():
                out["stats"][k] = out["stats"].get(k, 0) + v
            out["beats"] += doc["beats"]
            out["creates"].update(doc["creates"])
            out["pids"].append(doc["pid"])
            out["intervals"].update(doc["intervals"])
            first = min(doc["started"], out["span"][0] or doc["started"])
            out["span"] = [first, max(doc["registered"][1], out["span"][1])]
        return out

    def replica_pids(self, i: int) -> list[int]:
        """Replica i's gunicorn master and its workers."""
        master = self.gateways[i].pid
        return [master, *children(master)]

    def sim_pids(self) -> list[int]:
        return [p.pid for p in self.sims]

    def postgres_pids(self) -> list[int]:
        if self.pg is None or self.pg.proc is None:
            return []
        return [self.pg.proc.pid, *children(self.pg.proc.pid)]

    def rss_mb(self, pids: list[int]) -> float:
        return sum(vm_rss_kb(p) or 0 for p in pids) / 1024

    def pss_mb(self, pids: list[int]) -> float:
        """Proportional set size: pages shared between the processes (PostgreSQL's shared
        buffers) counted once, not once per process as RSS would."""
        kb = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/smaps_rollup") as fh:
                    kb += next((int(ln.split()[1]) for ln in fh if ln.startswith("Pss:")), 0)
            except OSError:
                continue
        return kb / 1024

    def write_env(self) -> str:
        values = [
            ("DOCKER_HOST", f"tcp://127.0.0.1:{self.ports[0]}"),
            ("MOORAGE_GATEWAYS", " ".join(f"tcp://127.0.0.1:{p}" for p in self.ports)),
            ("MOORAGE_METRICS_URLS", " ".join(f"http://127.0.0.1:{p}/metrics" for p in self.metrics_ports)),
            ("DOCKER_CONFIG", self.path("tenants", "wide")),
            ("MOORAGE_CONFIG_single", self.path("tenants", "single")),
            # The admin commands of this checkout's gateway, whatever is installed.
            ("MOORAGE_ADMIN", shlex.join(["env", f"PYTHONPATH={REPO}", *self.admin_argv()])),
            ("MOORAGE_DATABASE", self.db_url),
            ("MOORAGE_STACK_DIR", self.dir),
        ]
        text = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values)
        with open(self.path("env"), "w") as fh:
            fh.write(text)
        return self.path("env")

    # -- take down ---------------------------------------------------------------------------------

    def _record(self) -> None:
        doc = {
            "gateways": [record(p.pid) for p in self.gateways],
            "sims": [record(p.pid) for p in self.sims],
            "postgres": {"pid": self.pg.proc.pid, "dir": self.pg.dir} if self.pg and self.pg.proc else None,
        }
        with open(self.path("pids.json"), "w") as fh:
            json.dump(doc, fh)

    def down(self, keep_logs: bool = False) -> None:
        for proc in [*self.sims, *self.gateways]:
            stop(record(proc.pid))
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
        if self.pg is not None:
            self.pg.stop()
        if keep_logs:
            say(f"scale: the logs stay in {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def stop(rec: dict) -> None:
    """SIGTERM to a process the stack started in a session of its own and to its group (a
    gunicorn master and its workers), SIGKILL to what is left after 15 s (scripts/devstack's
    way: moorage_scripts/procs.py)."""
    try:
        _scripts("procs").stop_process(rec, f"process {rec['pid']}", timeout=15, say=say)
    except Exception as exc:  # noqa: BLE001 - the rest is still taken down
        say(f"scale: {exc}")


def record(pid: int) -> dict:
    """A process as moorage_scripts/procs.py knows it: its pid and start time."""
    return {"pid": pid, "start": _scripts("procs").proc_start(pid)}


def down_kept(directory: str) -> None:
    """`bench/scale --down DIR`: stop what a --keep run left, from DIR/pids.json."""
    with open(os.path.join(directory, "pids.json")) as fh:
        doc = json.load(fh)
    for rec in [*doc.get("sims", []), *doc.get("gateways", [])]:
        stop(rec)
    pg = doc.get("postgres")
    if pg:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pg["pid"], signal.SIGINT)  # fast shutdown
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pg["pid"], 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        shutil.rmtree(pg["dir"], ignore_errors=True)
    shutil.rmtree(directory, ignore_errors=True)


__all__ = ["CONTAINERS", "WIDE_HOSTS", "ScaleStack", "down_kept"]
