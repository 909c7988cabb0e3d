"""The nova provider: instances the gateway boots through Nova.

python-novaclient on keystoneauth1 sessions of the service user of ``[nova]``. Where a server is
created depends on ``[placement] tenancy``:

- ``dedicated`` (the default): in the project it is for, through that project's Keystone trust
  (gateway/tenancy/trusts.py: made from the caller's token at the project's first boot, kept
  sealed, reused for every later boot, listing and delete), so it counts against the project's
  Nova quota and shows in its ``openstack server list``, owned by the user who made the trust;
- ``shared``: in the service project the operator configured.

Each server carries the metadata
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
    trust_key_file = "/etc/moorage/trust.key"   # dedicated: Fernet key(s) sealing the trust IDs
    trust_roles = ["member"]          # dedicated: the roles each project's trust delegates

Nova's refusals reach the client in Docker's shape, naming the project and the cause: a quota
(403 "Nova quota exceeded for project ..."), the flavor or anything else (503).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import shlex
import threading
from typing import Any

from gateway import store
from gateway.config import NovaSettings, PlacementSettings, Settings
from gateway.errors import DockerError
from gateway.placement.provider import Provider
from gateway.placement.scheduler import dedicated
from gateway.tenancy.trusts import Delegation, Sealer, StoredTrust, TrustStore, create_trust, delete_trust

log = logging.getLogger("moorage.pool.nova")

POOL_KEY = "moorage:pool"
MEMBER_KEY = "moorage:member"
REQUIRED = ("auth_url", "username", "password", "project_name", "flavor", "gateway_url")


class NovaProvider(Provider):
    name = "nova"
    can_grow = True

    def __init__(self, conf: NovaSettings, settings: Settings, client_factory=None):
        """``client_factory(trust_id)``: a novaclient Client, with the service user's own
        project scope (trust_id None) or scoped to a trust."""
        missing = [k for k in REQUIRED if not getattr(conf, k)]
        if missing and client_factory is None:
            raise ValueError(f'[placement] provider = "nova" needs [nova] {", ".join(missing)}')
        self.conf = conf
        self.pool = settings.placement.pool_id or PlacementSettings.pool_id
        self.capacity = conf.capacity or settings.placement.capacity
        self.boot_timeout = conf.boot_timeout
        self.empty_grace = conf.empty_grace_seconds
        self.max_instances = conf.max_instances
        self.roles = list(conf.trust_roles) or list(NovaSettings().trust_roles)
        self.trusts: TrustStore | None = None
        if dedicated(settings):
            if settings.identity.backend != "keystone":
                raise ValueError(
                    '[placement] provider = "nova" with tenancy "dedicated" creates each project\'s '
                    "servers in the project itself, through a Keystone trust made from its users' "
                    'tokens: it needs [identity] backend = "keystone" (or set [placement] tenancy = '
                    '"shared" to boot every server in the service project)'
                )
            self.trusts = TrustStore(Sealer.from_file(conf.trust_key_file))  # ValueError if unusable
        self._factory = client_factory or self._client
        self._nova = None
        self._session = None
        self._trustee: str | None = None
        self._flavor_id: str | None = None
        self._image_id: str | None = None
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[str, Any]] = {}  # project -> (trust ID, its client)
        self._seen: dict[str, str | None] = {}  # server ID -> its project, from the last listing
        self._names: dict[str, str] = {}  # project ID -> name, as callers' tokens said

    # -- the clients ----------------------------------------------------------------------------
    def _auth(self, trust_id: str | None = None):
        from keystoneauth1.identity import v3

        c = self.conf
        if trust_id:
            # The trust sets the project (and, impersonating, the user the token speaks for).
            return v3.Password(
                auth_url=c.auth_url,
                username=c.username,
                password=c.password,
                user_domain_name=c.user_domain_name,
                trust_id=trust_id,
            )
        return v3.Password(
            auth_url=c.auth_url,
            username=c.username,
            password=c.password,
            project_name=c.project_name,
            user_domain_name=c.user_domain_name,
            project_domain_name=c.project_domain_name,
        )

    def _client(self, trust_id: str | None = None):
        from keystoneauth1 import session as ks_session
        from novaclient import client as nova_client

        c = self.conf
        sess = ks_session.Session(auth=self._auth(trust_id), timeout=c.timeout)
        return nova_client.Client(c.microversion, session=sess, region_name=c.region_name or None)

    @property
    def nova(self):
        """The service project's client (shared tenancy; flavors and images)."""
        with self._lock:
            if self._nova is None:
                self._nova = self._factory(None)
            return self._nova

    @property
    def session(self):
        """The service user's keystoneauth1 session (its user ID; the trust calls)."""
        from keystoneauth1 import session as ks_session

        with self._lock:
            if self._session is None:
                self._session = ks_session.Session(auth=self._auth(), timeout=self.conf.timeout)
            return self._session

    def trustee_id(self) -> str:
        if self._trustee is None:
            self._trustee = self.session.get_user_id()
        return str(self._trustee)

    def _where(self, project: str | None) -> str:
        if project is None or self.trusts is None:
            return f"Moorage's service project {self.conf.project_name}"
        name = self._names.get(project)
        return f"project {name} ({project})" if name else f"project {project}"

    def _nova_for(self, project: str | None):
        """The client that acts in ``project``: through its stored trust (dedicated), or the
        service project's (shared, or a server booted before the project had its own)."""
        if project is None or self.trusts is None:
            return self.nova
        trust = self.trusts.get(project)  # the store's, which another worker may have replaced
        if trust is None:
            raise RuntimeError(
                f"no Keystone trust is stored for {self._where(project)}: Moorage cannot act there "
                "until a create of one of its users needs a new instance and makes one"
            )
        with self._lock:
            entry = self._clients.get(project)
        if entry is not None and entry[0] == trust.trust_id:
            return entry[1]
        return self._keep(trust)

    def _keep(self, trust: StoredTrust):
        client = self._factory(trust.trust_id)
        with self._lock:
            self._clients[trust.project] = (trust.trust_id, client)
        return client

    # -- trusts (dedicated tenancy) -------------------------------------------------------------
    def authorize(self, project: str | None, delegation: Delegation | None = None) -> None:
        """Before a boot for ``project``: a trust Keystone honours now, the stored one or a new
        one made from the caller's token (``delegation``)."""
        if project is None or self.trusts is None:
            return
        from keystoneauth1 import exceptions as ksa_exc

        if delegation is not None and delegation.project_name:
            self._names[project] = delegation.project_name
        old = self.trusts.get(project)
        if old is not None:
            try:
                # A new session's first token: Keystone says now whether the trust still holds.
                self._keep(old).client.get_token()
                return
            except (ksa_exc.Unauthorized, ksa_exc.Forbidden, ksa_exc.NotFound) as exc:
                log.warning(
                    "Keystone no longer honours the trust of %s (%s): it is replaced on this boot",
                    self._where(project),
                    type(exc).__name__,
                )
                with self._lock:
                    self._clients.pop(project, None)
        if delegation is None or delegation.project_id != project:
            why = "the stored one is no longer honoured" if old is not None else "none is stored"
            raise DockerError(
                503,
                f"Moorage creates {self._where(project)}'s instances in the project through a "
                f"Keystone trust, {why}, and this request carries no Keystone token of the project "
                "to make one: run the create again with your own token (`moorage login`)",
            )
        trustee = self.trustee_id()
        trust_id = create_trust(self.session, self.conf.auth_url, delegation, trustee, self.roles)
        if old is not None:
            self.trusts.forget(old)
        kept = self.trusts.put(project, trust_id, delegation.user_id, trustee, self.roles)
        if kept.trust_id != trust_id:  # another worker's trust was kept first: use it
            delete_trust(self.session, self.conf.auth_url, delegation, trust_id)
        self._keep(kept)

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
        from keystoneauth1 import exceptions as ksa_exc
        from novaclient import exceptions as nova_exc

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
        flavor = self._flavor()
        nova = self._nova_for(project)
        try:
            server = nova.servers.create(name, image, flavor, **kwargs)
        except nova_exc.ClientException as exc:
            raise self._refusal(exc, project) from exc
        except (ksa_exc.Unauthorized, ksa_exc.Forbidden, ksa_exc.NotFound) as exc:
            with self._lock:
                self._clients.pop(project or "", None)
            raise DockerError(
                503,
                f"Keystone refused Moorage's token for {self._where(project)} ({type(exc).__name__}): "
                "was the project's trust deleted? The next create makes a new one; try again",
            ) from exc
        log.info(
            "booted Nova server %s (%s) for pool member %s in %s",
            server.id,
            name,
            member_id,
            self._where(project),
        )
        return server.id

    def _refusal(self, exc, project: str | None) -> DockerError:
        """Nova's refusal of a boot in Docker's shape, naming the project and the cause."""
        code = getattr(exc, "code", 0) or 0
        why = " ".join(str(getattr(exc, "message", "") or exc).split())[:400]
        where = self._where(project)
        if code in (403, 413) and "quota" in why.lower():
            return DockerError(
                403,
                f"Nova quota exceeded for {where}: {why}; remove containers (or instances) you no "
                "longer need, or ask the cloud's operators to raise the project's quota "
                "(`openstack quota show`)",
            )
        if "flavor" in why.lower():
            return DockerError(
                503,
                f"Nova refused the flavor {self.conf.flavor!r} in {where}: {why}; operators: "
                "[nova] flavor must exist and be usable by the project (public, or given access)",
            )
        return DockerError(503, f"Nova refused the boot in {where} (HTTP {code}): {why}")

    def _project_of(self, server_id: str) -> str | None:
        member = store.PoolMember.get_or_none(store.PoolMember.server_id == server_id)
        if member is not None and member.project is not None:
            return member.project
        return self._seen.get(server_id)

    def delete(self, server_id: str) -> bool:
        from novaclient import exceptions as nova_exc

        project = self._project_of(server_id)
        nova = self._nova_for(project)
        try:
            server = nova.servers.get(server_id)
        except nova_exc.NotFound:
            return True
        if (getattr(server, "metadata", None) or {}).get(POOL_KEY) != self.pool:
            return False
        with contextlib.suppress(nova_exc.NotFound):
            server.delete()
        log.info("deleted Nova server %s in %s", server_id, self._where(project))
        return True

    def owned_servers(self) -> list[dict]:
        """The service project's servers with this pool's mark, and (dedicated) each trusted
        project's. A project whose listing fails counts its known servers as present, so that
        nothing is taken for an orphan or for vanished on one failed listing."""
        seen: dict[str, str | None] = {}
        out = self._listing(self.nova, None, seen)
        for project in self.trusts.projects() if self.trusts is not None else []:
            try:
                out += self._listing(self._nova_for(project), project, seen)
            except Exception as exc:  # noqa: BLE001 (one project's broken trust stops no other)
                log.warning("listing the servers of %s failed: %s", self._where(project), exc)
                out += [
                    {"id": m.server_id, "member": m.id, "created": None}
                    for m in store.PoolMember.select().where(
                        (store.PoolMember.project == project) & store.PoolMember.server_id.is_null(False)
                    )
                ]
        self._seen = seen
        return out

    def _listing(self, nova, project: str | None, seen: dict) -> list[dict]:
        out = []
        for server in nova.servers.list(detailed=True):
            meta = getattr(server, "metadata", None) or {}
            if meta.get(POOL_KEY) != self.pool:
                continue
            created = None
            with contextlib.suppress(AttributeError, ValueError):
                created = _dt.datetime.fromisoformat(server.created.replace("Z", "+00:00")).replace(
                    tzinfo=None
                )
            seen[server.id] = project
            out.append({"id": server.id, "member": meta.get(MEMBER_KEY), "created": created})
        return out
