"""--nova: Nova itself (scripts/nova up/down) and the gateway's [placement] and [nova] settings.

`up --nova` implies --keystone, starts Nova (scripts/nova up DIR/nova), configures the gateway with
`[placement] provider = "nova"` and starts no instance host: novawatch.py makes hosts for the
servers the gateway boots. With dedicated tenancy (the default) those servers are created in the
tenants' own projects through Keystone trusts (gateway/tenancy/trusts.py), sealed with DIR/trust.key.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys

from .. import REPO
from .common import Fail, parse_exports, run_down
from .daemons import moorage_argv

NOVA_SCRIPT = os.path.join(REPO, "scripts", "nova")
NOVA_UP_TIMEOUT = 1800  # a first `up` installs apt packages and the virtualenv
DEFAULT_GRACE = 60
DEFAULT_BOOT_TIMEOUT = 120


def pool_id(st) -> str:
    return f"devstack-{st.hash}"


def nova_up(st) -> dict:
    """scripts/nova up DIR/nova; the gateway's [nova] credentials."""
    argv = [
        sys.executable,
        NOVA_SCRIPT,
        "up",
        st.path("nova"),
        "--keystone-openrc",
        st.path("keystone", "openrc"),
    ]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, timeout=NOVA_UP_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise Fail(f"`{' '.join(argv)}` did not finish within {NOVA_UP_TIMEOUT} s") from exc
    if proc.returncode != 0:
        raise Fail(f"`{' '.join(argv)}` failed (exit {proc.returncode}; its error is above)")
    return parse_exports(proc.stdout.decode())


def nova_down(st, purge: bool = False) -> None:
    """Stop Nova; with purge, also its databases (so its servers: hosts start afresh)."""
    if purge:
        st.state.pop("nova_index", None)
    if not os.path.isdir(st.path("nova")):
        return
    run_down(
        [sys.executable, NOVA_SCRIPT, "down", st.path("nova")] + (["--purge"] if purge else []), timeout=180
    )


def novarc(st) -> dict:
    from_file = {}
    with contextlib.suppress(OSError), open(st.path("nova", "novarc")) as fh:
        for line in fh:
            words = line.split(None, 1)
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                key, _, value = words[1].strip().partition("=")
                from_file[key] = value.strip("'")
    return from_file


def trust_key(st) -> str:
    """DIR/trust.key: the Fernet key sealing the Keystone trusts the gateway keeps (dedicated
    tenancy: each project's servers are created in the project through its trust), made once."""
    path = st.path("trust.key")
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.urlsafe_b64encode(os.urandom(32)) + b"\n")  # what Fernet.generate_key() makes
    return path


def gateway_config(st) -> list[str]:
    """The [placement] and [nova] lines of the gateway's moorage.toml."""
    q = json.dumps
    rc = novarc(st)
    capacity = st.state.get("capacity")
    gateway_url = f"http://{st.gw_ip}:{st.state['port']}"
    lines = ["", "[placement]"]
    if capacity is not None:
        lines.append(f"capacity = {int(capacity)}")
    lines += [
        'provider = "nova"',
        f"pool_id = {q(pool_id(st))}",
        "reap_interval = 1",
        "",
        "[nova]",
        f"auth_url = {q(rc['MOORAGE_NOVA_AUTH_URL'])}",
        f"username = {q(rc['MOORAGE_NOVA_USERNAME'])}",
        f"password = {q(rc['MOORAGE_NOVA_PASSWORD'])}",
        f"project_name = {q(rc['MOORAGE_NOVA_PROJECT_NAME'])}",
        'user_domain_name = "Default"',
        'project_domain_name = "Default"',
        f"flavor = {q(rc['MOORAGE_NOVA_FLAVOR'])}",
        'image = ""  # a blank local disk: no Glance',
        'network = "none"',
        f"gateway_url = {q(gateway_url)}",
        f"boot_timeout = {int(st.state.get('nova_boot_timeout') or DEFAULT_BOOT_TIMEOUT)}",
        f"empty_grace_seconds = {float(st.state.get('nova_grace', DEFAULT_GRACE)):g}",
        f"agent_command = {q(moorage_argv()[0])}",
        'agent_install = "echo moorage is missing >&2; exit 1"',
        f"trust_key_file = {q(trust_key(st))}",
        'trust_roles = ["member"]  # what the tenants\' trusts delegate to the service user',
    ]
    return lines


def hosts(st) -> list[tuple[int, str]]:
    """(index, server UUID) of the current hosts, in index order."""
    return sorted((i, sid) for sid, i in st.state.get("nova_hosts", {}).items())
