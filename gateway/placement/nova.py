"""The nova provider: instances the gateway boots through Nova, for every tenant.

python-novaclient on a keystoneauth1 session with the service credentials of ``[nova]``.
Servers belong to the service project the operator configured; each carries the metadata
``moorage:pool=<[placement] pool_id>`` (and ``moorage:member=<pool member id>``), and the pool
never deletes a server without that mark. Each server's user-data is a shell script that
installs (if needed) and starts ``moorage agent`` with a one-time bootstrap secret.

    [placement]
    provider = "nova"
    pool_id = "moorage"               # the mark on every server this gateway (all replicas) boots
    [nova]
    auth_url = "http://keystone:5000/v3"
    username = "moorage"; password = "..."; project_name = "moorage"
    user_domain_name = "Default"; project_domain_name = "Default"
    region_name = ""                  # optional
    flavor = "m1.moorage"             # name or ID
    image = ""                        # name or ID; "" boots a blank local disk (flavor ephemeral >= 1)
    network = "none"                  # "none", "auto", or a network ID
    key_name = ""                     # optional
    security_groups = []              # optional names
    availability_zone = ""            # optional
    gateway_url = "http://GATEWAY:2375"   # how the instances' agents reach the gateway
    capacity = 0                      # containers per instance (0: [placement] capacity)
    boot_timeout = 300                # seconds from boot to the agent's registration
    empty_grace_seconds = 600         # an instance empty this long is deleted
    max_instances = 0                 # 0: no limit
    agent_command = "moorage"         # the agent's command on the image
    agent_install = "pip install moorage"   # run when agent_command is missing
    agent_port = 2376
    docker = "unix:///var/run/docker.sock"
    name_prefix = "moorage-"
    microversion = "2.90"
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import shlex
import threading

from gateway.config import NovaSettings, PlacementSettings, Settings
from gateway.placement.provider import Provider

log = logging.getLogger("moorage.pool.nova")

POOL_KEY = "moorage:pool"
MEMBER_KEY = "moorage:member"
REQUIRED = ("auth_url", "username", "password", "project_name", "flavor", "gateway_url")


class NovaProvider(Provider):
    name = "nova"
    can_grow = True

    def __init__(self, conf: NovaSettings, settings: Settings, client_factory=None):
        missing = [k for k in REQUIRED if not getattr(conf, k)]
        if missing and client_factory is None:
            raise ValueError(f'[placement] provider = "nova" needs [nova] {", ".join(missing)}')
        self.conf = conf
        self.pool = settings.placement.pool_id or PlacementSettings.pool_id
        self.capacity = conf.capacity or settings.placement.capacity
        self.boot_timeout = conf.boot_timeout
        self.empty_grace = conf.empty_grace_seconds
        self.max_instances = conf.max_instances
        self._factory = client_factory or self._client
        self._nova = None
        self._flavor_id: str | None = None
        self._image_id: str | None = None
        self._lock = threading.Lock()

    # -- the client -----------------------------------------------------------------------------
    def _client(self):
        from keystoneauth1 import session as ks_session
        from keystoneauth1.identity import v3
        from novaclient import client as nova_client

        c = self.conf
        auth = v3.Password(
            auth_url=c.auth_url,
            username=c.username,
            password=c.password,
            project_name=c.project_name,
            user_domain_name=c.user_domain_name,
            project_domain_name=c.project_domain_name,
        )
        sess = ks_session.Session(auth=auth, timeout=c.timeout)
        return nova_client.Client(c.microversion, session=sess, region_name=c.region_name or None)

    @property
    def nova(self):
        with self._lock:
            if self._nova is None:
                self._nova = self._factory()
            return self._nova

    def _flavor(self) -> str:
        if self._flavor_id is None:
            wanted = self.conf.flavor
            flavors = self.nova.flavors.list(is_public=None)
            match = [f for f in flavors if f.id == wanted] or [f for f in flavors if f.name == wanted]
            if not match:
                raise RuntimeError(f"no Nova flavor named {wanted!r} ([nova] flavor)")
            self._flavor_id = str(match[0].id)
        return self._flavor_id

    def _image(self) -> str | None:
        wanted = self.conf.image
        if not wanted:
            return None
        if self._image_id is None:
            try:
                self._image_id = self.nova.glance.find_image(wanted).id
            except Exception:  # noqa: BLE001 (an ID the proxy API cannot look up: use it as is)
                self._image_id = wanted
        return self._image_id

    # -- user-data ----------------------------------------------------------------------------
    def user_data(self, secret: str) -> str:
        c = self.conf
        q = shlex.quote
        return f"""#!/bin/sh
# Moorage agent bootstrap, written by the gateway's nova provider; cloud-init runs it once.
# The bootstrap secret below registers this instance once, under its Nova server UUID.
set -eu
GATEWAY={q(c.gateway_url.rstrip("/"))}
BOOTSTRAP_SECRET={q(secret)}
CAPACITY={int(self.capacity)}
AGENT_PORT={c.agent_port}
DOCKER="${{DOCKER_HOST:-{c.docker}}}"
STATE="${{MOORAGE_AGENT_STATE:-/var/lib/moorage-agent}}"
MOORAGE="${{MOORAGE_AGENT_COMMAND:-{c.agent_command}}}"
if ! command -v "$MOORAGE" >/dev/null 2>&1; then
    {c.agent_install}
fi
GW_HOST=$(printf '%s' "$GATEWAY" | sed -e 's|^[a-z]*://||' -e 's|[:/].*$||')
ADDR=$(ip -4 -o route get "$GW_HOST" | sed -n 's/.* src \\([0-9.]*\\).*/\\1/p')
mkdir -p "$STATE"
(umask 077; printf '%s\\n' "$BOOTSTRAP_SECRET" > "$STATE/bootstrap-secret")
set -- "$MOORAGE" agent --gateway "$GATEWAY" --bootstrap-secret-file "$STATE/bootstrap-secret" \\
    --docker "$DOCKER" --listen "0.0.0.0:$AGENT_PORT" --advertise "tcp://$ADDR:$AGENT_PORT" \\
    --capacity "$CAPACITY" --provider nova --state-dir "$STATE"
if [ -n "${{MOORAGE_AGENT_FOREGROUND:-}}" ]; then
    exec "$@"
fi
nohup "$@" >>/var/log/moorage-agent.log 2>&1 &
"""

    # -- Provider ---------------------------------------------------------------------------------
    def boot(self, member_id: str, secret: str, project: str | None = None) -> str:
        c = self.conf
        kwargs: dict = {
            "meta": {POOL_KEY: self.pool, MEMBER_KEY: member_id},
            "userdata": self.user_data(secret),
        }
        network = c.network or NovaSettings.network
        kwargs["nics"] = network if network in ("none", "auto") else [{"net-id": network}]
        if c.key_name:
            kwargs["key_name"] = c.key_name
        if c.security_groups:
            kwargs["security_groups"] = list(c.security_groups)
        if c.availability_zone:
            kwargs["availability_zone"] = c.availability_zone
        image = self._image()
        if image is None:
            # No Glance needed: a blank local disk (the flavor needs ephemeral >= 1).
            kwargs["block_device_mapping_v2"] = [
                {
                    "source_type": "blank",
                    "destination_type": "local",
                    "boot_index": 0,
                    "volume_size": 1,
                    "delete_on_termination": True,
                }
            ]
        name = f"{c.name_prefix}{member_id[:12]}"
        server = self.nova.servers.create(name, image, self._flavor(), **kwargs)
        log.info("booted Nova server %s (%s) for pool member %s", server.id, name, member_id)
        return server.id

    def delete(self, server_id: str) -> bool:
        from novaclient import exceptions as nova_exc

        try:
            server = self.nova.servers.get(server_id)
        except nova_exc.NotFound:
            return True
        if (getattr(server, "metadata", None) or {}).get(POOL_KEY) != self.pool:
            return False
        with contextlib.suppress(nova_exc.NotFound):
            server.delete()
        log.info("deleted Nova server %s", server_id)
        return True

    def owned_servers(self) -> list[dict]:
        out = []
        for server in self.nova.servers.list(detailed=True):
            meta = getattr(server, "metadata", None) or {}
            if meta.get(POOL_KEY) != self.pool:
                continue
            created = None
            with contextlib.suppress(AttributeError, ValueError):
                created = _dt.datetime.fromisoformat(server.created.replace("Z", "+00:00")).replace(
                    tzinfo=None
                )
            out.append({"id": server.id, "member": meta.get(MEMBER_KEY), "created": created})
        return out
