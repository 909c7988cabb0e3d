"""The configuration files of placement, neutron and nova (and the argv shims gunicorn loads),
and their databases' schema.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time

from .backends import db_url
from .common import MANAGE_TIMEOUT, Fail, quiet_env, run, say, tail, write_private
from .identity import authtoken
from .state import Nova

SHIMS = {
    "placement": """\
# written by scripts/nova: oslo.config would parse gunicorn's command line
import sys
sys.argv = sys.argv[:1]
from placement.wsgi import api as _api  # noqa: E402
application = _api.application
""",
    "nova": """\
# written by scripts/nova: oslo.config would parse gunicorn's command line
import sys
sys.argv = sys.argv[:1]
from nova.wsgi import osapi_compute as _api  # noqa: E402
application = _api.application
""",
    "neutron": """\
# written by scripts/nova: oslo.config would parse gunicorn's command line; neutron reads ours.
import os
import sys
sys.argv = [sys.argv[0], "--config-file", os.environ["MOORAGE_NEUTRON_CONF"],
            "--config-file", os.environ["MOORAGE_NEUTRON_ML2"]]
from neutron.wsgi import api as _api  # noqa: E402
import sqlalchemy.orm  # noqa: E402
sqlalchemy.orm.configure_mappers()  # else the first GET /v2.0/ports fails (Port.port_forwardings)
application = _api.application
""",
}


def write_configs(nv: Nova, admin: dict, venv: str) -> bool:
    """Write every service's configuration; True if any changed."""
    ports = nv.state["ports"]
    transport = f"rabbit://guest:guest@127.0.0.1:{ports['rabbitmq']}/"
    for d in ("state", "lock", "logs", "etc"):
        os.makedirs(nv.path(d), exist_ok=True)
    shutil.copy(os.path.join(venv, "etc", "nova", "api-paste.ini"), nv.path("etc", "api-paste.ini"))
    nova_conf = f"""# written by scripts/nova; rewritten by every `up`. TEST SETTINGS (fake virt driver).
[DEFAULT]
transport_url = {transport}
compute_driver = fake.FakeDriverWithoutFakeNodes
host = moorage-fake-{nv.hash}
state_path = {nv.path("state")}
my_ip = 127.0.0.1
use_stderr = true
debug = false
[api]
auth_strategy = keystone
[api_database]
connection = {db_url(nv, "nova_api")}
max_pool_size = 5
[database]
connection = {db_url(nv, "nova")}
max_pool_size = 5
[wsgi]
api_paste_config = {nv.path("etc", "api-paste.ini")}
[oslo_concurrency]
lock_path = {nv.path("lock")}
[oslo_messaging_notifications]
driver = noop
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = 5
[vnc]
enabled = false
[cinder]
os_region_name = RegionOne
[glance]
# No Glance: servers boot from a blank local disk. Notifications still build image URLs from
# this (nothing listens there).
api_servers = http://127.0.0.1:9292
[service_user]
send_service_user_token = true
{authtoken(nv, admin, "nova", "service_user").split(chr(10), 2)[2]}
{authtoken(nv, admin, "nova")}
{authtoken(nv, admin, "nova", "placement")}
valid_interfaces = public
{authtoken(nv, admin, "nova", "neutron")}
valid_interfaces = public
"""
    changed = write_private(nv.path("etc", "nova.conf"), nova_conf)
    placement_conf = f"""# written by scripts/nova
[DEFAULT]
use_stderr = true
[placement_database]
connection = {db_url(nv, "placement")}
[api]
auth_strategy = keystone
{authtoken(nv, admin, "placement")}
"""
    os.makedirs(nv.path("etc", "placement"), exist_ok=True)
    changed |= write_private(nv.path("etc", "placement", "placement.conf"), placement_conf)
    neutron_conf = f"""# written by scripts/nova: neutron's API only (no agents, no mechanism drivers)
[DEFAULT]
core_plugin = ml2
service_plugins = router,port_forwarding
auth_strategy = keystone
transport_url = {transport}
state_path = {nv.path("state")}
api_paste_config = {os.path.join(venv, "etc", "neutron", "api-paste.ini")}
use_stderr = true
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
[database]
connection = {db_url(nv, "neutron")}
max_pool_size = 5
[oslo_concurrency]
lock_path = {nv.path("lock")}
{authtoken(nv, admin, "neutron")}
{authtoken(nv, admin, "neutron", "nova")}
"""
    changed |= write_private(nv.path("etc", "neutron.conf"), neutron_conf)
    changed |= write_private(
        nv.path("etc", "ml2_conf.ini"),
        """# written by scripts/nova
[ml2]
type_drivers = flat
tenant_network_types =
mechanism_drivers =
extension_drivers =
[ml2_type_flat]
flat_networks = *
""",
    )
    for name, text in SHIMS.items():
        changed |= write_private(nv.path("etc", f"{name}_wsgi.py"), text)
    return changed


def service_env(nv: Nova) -> dict:
    return quiet_env(
        OS_NOVA_CONFIG_DIR=nv.path("etc"),
        OS_PLACEMENT_CONFIG_DIR=nv.path("etc", "placement"),
        MOORAGE_NEUTRON_CONF=nv.path("etc", "neutron.conf"),
        MOORAGE_NEUTRON_ML2=nv.path("etc", "ml2_conf.ini"),
    )


def db_sync(nv: Nova, venv: str) -> None:
    done = nv.state.setdefault("synced", {})
    b = os.path.join(venv, "bin")
    env = service_env(nv)
    log = nv.path("logs", "db-sync.log")
    conf = ["--config-file", nv.path("etc", "nova.conf")]
    steps = [
        (
            "placement",
            [
                f"{b}/placement-manage",
                "--config-file",
                nv.path("etc", "placement", "placement.conf"),
                "db",
                "sync",
            ],
        ),
        (
            "neutron",
            [
                f"{b}/neutron-db-manage",
                "--config-file",
                nv.path("etc", "neutron.conf"),
                "--config-file",
                nv.path("etc", "ml2_conf.ini"),
                "upgrade",
                "heads",
            ],
        ),
        ("nova_api", [f"{b}/nova-manage", *conf, "api_db", "sync"]),
        ("cell0", [f"{b}/nova-manage", *conf, "cell_v2", "map_cell0"]),
        ("cell1", [f"{b}/nova-manage", *conf, "cell_v2", "create_cell", "--name", "cell1"]),
        ("nova", [f"{b}/nova-manage", *conf, "db", "sync"]),
    ]
    todo = [(n, a) for n, a in steps if not done.get(n)]
    if not todo:
        return
    t0 = time.monotonic()
    say(f"database syncs: {', '.join(n for n, _ in todo)}")
    for name, argv in todo:
        proc = run(argv, timeout=MANAGE_TIMEOUT, env=env, log=log, check=False)
        out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
        if proc.returncode != 0 and not (name == "cell1" and "already" in out.lower()):
            raise Fail(f"`{shlex.join(argv)}` failed (exit {proc.returncode}); see {log}:\n{tail(log)}")
        done[name] = True
        nv.save()
    say(f"databases synced in {time.monotonic() - t0:.0f} s")
