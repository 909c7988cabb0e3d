"""The OpenStack services themselves under gunicorn or as daemons, waiting for them, the
flavor, and DIR/novarc.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time

from ..procs import alive
from .api import api_answers, http_call
from .common import FLAVOR, MANAGE_TIMEOUT, MOORAGE_PROJECT, MOORAGE_USER, SERVICES, Fail, run, say, tail
from .configs import service_env
from .state import Nova


def gunicorn(nv: Nova, venv: str, name: str, module: str, port: int) -> list[str]:
    g = os.path.join(venv, "bin", "gunicorn")
    argv = [
        g,
        "--chdir",
        nv.path("etc"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--threads",
        "4",
        "--timeout",
        "120",
        "--graceful-timeout",
        "3",
        "--name",
        f"{name}:{nv.dir}",
        "--error-logfile",
        nv.path("logs", f"{name}.log"),
    ]
    help_text = subprocess.run([g, "--help"], capture_output=True, timeout=30).stdout.decode()
    if "--no-control-socket" in help_text:
        argv.append("--no-control-socket")
    return [*argv, f"{module}:application"]


def start_services(nv: Nova, venv: str) -> None:
    env = service_env(nv)
    b = os.path.join(venv, "bin")
    ports = nv.state["ports"]
    conf = ["--config-file", nv.path("etc", "nova.conf")]
    plan = {
        "placement": gunicorn(nv, venv, "placement", "placement_wsgi", ports["placement"]),
        "neutron": gunicorn(nv, venv, "neutron", "neutron_wsgi", ports["neutron"]),
        "nova-api": gunicorn(nv, venv, "nova-api", "nova_wsgi", ports["nova-api"]),
        "nova-conductor": [f"{b}/nova-conductor", *conf],
        "nova-scheduler": [f"{b}/nova-scheduler", *conf],
        "nova-compute": [f"{b}/nova-compute", *conf],
    }
    started = [n for n in SERVICES if not alive(nv.proc(n))]
    if started:
        nv.state["services_started"] = time.time()
    for name in started:
        nv.spawn(name, plan[name], env, nv.path("logs", f"{name}.out"))
    if started:
        say(f"started {', '.join(started)}")
    for name in ("placement", "neutron", "nova-api"):
        nv.wait(name, f"{name} on 127.0.0.1:{ports[name]}", lambda p=ports[name]: api_answers(p))


def wait_services(nv: Nova, token: str, since: float) -> None:
    """Every nova service started at `since` has reported itself up (its service record's
    updated_at is newer): before that, a boot can land on a compute that is not consuming."""
    url = f"http://127.0.0.1:{nv.state['ports']['nova-api']}/v2.1/os-services"
    want = {"nova-compute", "nova-scheduler", "nova-conductor"}
    deadline = time.monotonic() + 180
    while True:
        try:
            status, _, doc = http_call("GET", url, headers={"X-Auth-Token": token})
        except OSError:
            status, doc = 0, {}
        fresh = set()
        for svc in doc.get("services", []) if status == 200 else []:
            stamp = svc.get("updated_at")
            if stamp and svc.get("state") == "up":
                t = time.mktime(time.strptime(stamp.split(".")[0], "%Y-%m-%dT%H:%M:%S")) - time.timezone
                if t >= since - 1:
                    fresh.add(svc["binary"])
        if want <= fresh:
            return
        for name in want - fresh:
            if not alive(nv.proc(name)):
                rec = nv.proc(name) or {"log": "?"}
                raise Fail(f"{name} exited; see {rec['log']}:\n{tail(rec['log'])}")
        if time.monotonic() > deadline:
            raise Fail(
                f"{', '.join(sorted(want - fresh))} did not report within 180 s; see {nv.path('logs')}"
            )
        time.sleep(1)


def wait_compute(nv: Nova, venv: str, token: str) -> None:
    """nova-compute registers its service; discover_hosts maps it to cell1."""
    if nv.state.get("compute_mapped"):
        return
    url = f"http://127.0.0.1:{nv.state['ports']['nova-api']}/v2.1/os-hypervisors"
    env = service_env(nv)
    deadline = time.monotonic() + 180
    t0 = time.monotonic()
    while True:
        run(
            [
                os.path.join(venv, "bin", "nova-manage"),
                "--config-file",
                nv.path("etc", "nova.conf"),
                "cell_v2",
                "discover_hosts",
            ],
            timeout=MANAGE_TIMEOUT,
            env=env,
            log=nv.path("logs", "db-sync.log"),
        )
        try:
            status, _, doc = http_call("GET", url, headers={"X-Auth-Token": token})
        except OSError:
            status, doc = 0, {}
        if status == 200 and doc.get("hypervisors"):
            break
        if not alive(nv.proc("nova-compute")):
            rec = nv.proc("nova-compute")
            raise Fail(f"nova-compute exited; see {rec['log']}:\n{tail(rec['log'])}")
        if time.monotonic() > deadline:
            raise Fail(
                f"nova-compute did not register within 180 s; see {nv.path('logs', 'nova-compute.out')}"
            )
        time.sleep(2)
    nv.state["compute_mapped"] = True
    nv.save()
    say(f"nova-compute registered and mapped in {time.monotonic() - t0:.0f} s")


def ensure_flavor(nv: Nova, token: str) -> None:
    base = f"http://127.0.0.1:{nv.state['ports']['nova-api']}/v2.1"
    headers = {"X-Auth-Token": token, "X-OpenStack-Nova-API-Version": "2.90"}
    status, _, doc = http_call("GET", f"{base}/flavors?is_public=None", headers=headers)
    if status != 200:
        raise Fail(f"nova-api answered {status} to GET /flavors: {doc}")
    if any(f["name"] == FLAVOR for f in doc.get("flavors", [])):
        return
    body = {
        "flavor": {
            "name": FLAVOR,
            "vcpus": 1,
            "ram": 256,
            "disk": 0,
            "OS-FLV-EXT-DATA:ephemeral": 1,
            "os-flavor-access:is_public": True,
        }
    }
    status, _, doc = http_call("POST", f"{base}/flavors", body, headers)
    if status != 200:
        raise Fail(f"nova-api answered {status} to POST /flavors: {doc}")


def novarc(nv: Nova, admin: dict) -> str:
    values = [
        ("MOORAGE_NOVA_AUTH_URL", admin["OS_AUTH_URL"]),
        ("MOORAGE_NOVA_USERNAME", MOORAGE_USER),
        ("MOORAGE_NOVA_PASSWORD", nv.state["moorage_password"]),
        ("MOORAGE_NOVA_PROJECT_NAME", MOORAGE_PROJECT),
        ("MOORAGE_NOVA_PROJECT_ID", nv.state["moorage_project_id"]),
        ("MOORAGE_NOVA_FLAVOR", FLAVOR),
        ("MOORAGE_NOVA_URL", f"http://127.0.0.1:{nv.state['ports']['nova-api']}/v2.1"),
    ]
    return "".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in values)


# --- commands ----------------------------------------------------------------------------------
