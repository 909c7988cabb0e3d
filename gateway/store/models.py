"""The store's tables: instances, the objects placed on them, quotas, image ownership, the pool."""

from __future__ import annotations

import datetime as _dt
import json

import peewee

from gateway.store.db import database

# An instance's state is the intent for it: up (takes new containers) or draining (its own
# and the reaper's: takes none; its containers keep running). Whether its daemon answers is
# another column (Instance.daemon_down), reported by each heartbeat: a heartbeat changes the
# daemon's health, never the intent, so a drain outlives a daemon restart.
INSTANCE_UP = "up"
INSTANCE_DRAINING = "draining"
# Not a state any more: the label the census and the admin CLI give an instance whose daemon
# is down, and the value rows of schema versions before _m_daemon_health had for it.
INSTANCE_DOWN = "down"

# A placement holds its slot with a Container row whose ID starts with this until the daemon
# names the container (gateway/placement/scheduler.py); such rows are never a tenant's object.
RESERVATION_PREFIX = "reserved-"

# A pool member's life (gateway/placement/pool.py): building -> active -> draining -> deleting,
# or failed.
BUILDING = "building"
ACTIVE = "active"
DRAINING = "draining"
DELETING = "deleting"
FAILED = "failed"


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC).replace(tzinfo=None)


class JSONField(peewee.TextField):
    def db_value(self, value):
        return None if value is None else json.dumps(value, sort_keys=True)

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(peewee.Model):
    class Meta:
        database = database


class SchemaVersion(BaseModel):
    """One row: the schema version this database was last migrated to."""

    version = peewee.IntegerField()


class Instance(BaseModel):
    """A host with a dockerd and a Moorage agent: a Nova instance, or a local/static host."""

    uuid = peewee.CharField(primary_key=True, max_length=64)
    provider = peewee.CharField(default="static", max_length=32)
    agent_url = peewee.CharField(max_length=255)
    # Issued by the gateway at registration; the agent refuses any request without it.
    agent_secret = peewee.CharField(max_length=128)
    capacity = peewee.IntegerField(default=0)  # containers; 0 = no limit
    state = peewee.CharField(default=INSTANCE_UP, max_length=16)
    daemon_version = peewee.CharField(default="", max_length=64)
    api_version = peewee.CharField(default="", max_length=16)
    min_api_version = peewee.CharField(default="", max_length=16)
    facts = JSONField(null=True)  # NCPU, MemTotal, ... as the agent last reported
    registered_at = peewee.DateTimeField(default=utcnow)
    last_heartbeat = peewee.DateTimeField(default=utcnow)
    # Fill order: instances are filled in the order they first registered.
    position = peewee.IntegerField(default=0, index=True)
    # How many container rows (reservations included) name this instance: kept by the database
    # itself, by triggers on the container table (_m_placement_usage), in the statement that
    # inserts, deletes or moves the row. The gateway reads it and never writes it (hence
    # only_save_dirty: saving a loaded instance must not write back a count read earlier).
    container_count = peewee.IntegerField(default=0, constraints=[peewee.SQL("DEFAULT 0")])
    # Dedicated tenancy ([placement] tenancy, gateway/placement/tenancy.py): the one project
    # whose objects this instance holds, from the placement that claimed it until the reaper
    # deletes it (a pool's) or wipes it (a static host's); NULL: no project's, free to claim.
    project = peewee.CharField(max_length=64, null=True, index=True)
    # When it was claimed: what a worker learnt about the instance's daemon for its project
    # (such as the project's bridge there) holds for this claim only; a wipe ends it.
    claimed_at = peewee.DateTimeField(null=True)
    # When a BuildKit connection (/grpc) to it last began: for a while after, the image names
    # its builds export are looked for before a name is resolved (gateway/services/buildkit.py).
    buildkit_at = peewee.DateTimeField(null=True)
    # Its address between instances and that interface's MTU, as its agent reported them at
    # registration (agent/registration.py underlay): spanning networks' VXLAN peers and MTU
    # (gateway/services/spans.py); NULL until an agent that reports them registers.
    underlay_address = peewee.CharField(max_length=64, null=True)
    underlay_mtu = peewee.IntegerField(null=True)
    # Its agent's last heartbeat said its daemon is down: no merged view or placement uses it
    # until one says the daemon answers again (the state, the intent, is left as it was).
    daemon_down = peewee.BooleanField(default=False, constraints=[peewee.SQL("DEFAULT FALSE")])

    class Meta:
        only_save_dirty = True


class Container(BaseModel):
    """A container the gateway created (or adopted), the project that owns it, where it runs."""

    id = peewee.CharField(primary_key=True, max_length=64)
    project = peewee.CharField(max_length=64, index=True)
    name = peewee.CharField(max_length=255)  # as the tenant sees it, without the leading '/'
    # The daemon's name when it is not the tenant's with the project's suffix (tenancy.names):
    # containers adopted as they were created behind the gateway's back.
    daemon_name = peewee.CharField(max_length=255, null=True)
    instance = peewee.ForeignKeyField(Instance, backref="containers", on_delete="RESTRICT")
    labels = JSONField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    # What the container asked for (HostConfig), counted against the project's quotas (migration 2).
    memory = peewee.BigIntegerField(default=0)  # bytes; 0 = no limit
    nano_cpus = peewee.BigIntegerField(default=0)  # 1e9 = one CPU; 0 = no limit
    # Whether its create published ports (PortBindings or PublishAllPorts; a create's ports do
    # not change later): a start of one that publishes none has nothing for the port mesh to
    # do, and skips the inspect that finds its ports. None: not known (adopted, or older).
    publishes = peewee.BooleanField(null=True)
    # {"asked": HostConfig.Dns as the create sent it} when the gateway pointed the container's
    # DNS at its instance's name responder (gateway/services/spans.py join_create); inspect
    # shows what was asked. NULL: the container's DNS is as asked.
    dns = JSONField(null=True)

    class Meta:
        indexes = ((("project", "name"), False),)


class RemovedContainer(BaseModel):
    """A container the map dropped lately (store.forget_container), kept for REMOVED_KEPT: an
    agent's heartbeat may carry a listing taken before the removal, and reconcile must not adopt
    the container again from it (its name would then stay taken until the next reconcile)."""

    id = peewee.CharField(primary_key=True, max_length=64)
    removed_at = peewee.DateTimeField(default=utcnow, index=True)


class Exec(BaseModel):
    """An exec session, tied to its container (and so to its instance and project)."""

    id = peewee.CharField(primary_key=True, max_length=64)
    container = peewee.ForeignKeyField(Container, backref="execs", on_delete="CASCADE")
    project = peewee.CharField(max_length=64, index=True)
    created_at = peewee.DateTimeField(default=utcnow)


class Network(BaseModel):
    """A user-defined network: its ID, the project that made it, the name it sees.

    The daemon's name is rewritten (tenancy.names) so that two projects can each have ``app``.
    A spanning network (``subnet`` set, gateway/services/spans.py) has a gateway-made ID and
    no instance: it reaches an instance when a container there joins it (NetworkMember). A
    network made before networks spanned instances keeps the daemon's ID and its one instance."""

    id = peewee.CharField(primary_key=True, max_length=64)
    project = peewee.CharField(max_length=64, index=True)
    name = peewee.CharField(max_length=255)  # as the tenant sees it
    daemon_name = peewee.CharField(max_length=255)
    instance = peewee.ForeignKeyField(Instance, backref="networks", on_delete="RESTRICT", null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    subnet = peewee.CharField(max_length=64, null=True)  # e.g. 198.19.3.0/24
    vni = peewee.IntegerField(null=True, unique=True)  # the VXLAN segment's ID
    mtu = peewee.IntegerField(null=True)
    spec = JSONField(
        null=True
    )  # what the tenant asked for (Labels, Options, Internal, ...): inspect shows it

    class Meta:
        indexes = ((("project", "name"), False),)


class NetworkMember(BaseModel):
    """A spanning network on one instance: its slot there gives the instance's gateway address
    on the segment (gateway/services/spans.py gateway_address)."""

    network = peewee.ForeignKeyField(Network, backref="members", on_delete="CASCADE")
    instance = peewee.ForeignKeyField(Instance, backref="network_members", on_delete="CASCADE")
    slot = peewee.IntegerField()
    # Random, per joining: a network that left the instance and came back is another member
    # to the workers' memory of the copies they made (row IDs may be reused).
    joined = peewee.CharField(max_length=32, null=True)

    class Meta:
        indexes = ((("network", "instance"), True), (("network", "slot"), True))


class NetworkAddress(BaseModel):
    """The gateway's one address table of a spanning network: which container holds which
    address, on which instance, under which names (its DNS records)."""

    network = peewee.ForeignKeyField(Network, backref="addresses", on_delete="CASCADE")
    address = peewee.CharField(max_length=64)
    container = peewee.CharField(max_length=80, index=True)  # a container ID, or a create's token
    instance = peewee.CharField(max_length=64)
    names = JSONField(null=True)  # the tenant's names and aliases the responder answers for
    dns = JSONField(null=True)  # the container's own HostConfig.Dns, as sent: where its qualified names go
    asked = peewee.BooleanField(default=False)  # the tenant chose the address (--ip)

    class Meta:
        indexes = ((("network", "address"), True),)


class Volume(BaseModel):
    """A named volume. Volume names are the daemon's keys, so the daemon's name is rewritten
    per project (tenancy.names); the tenant sees and uses ``name``."""

    daemon_name = peewee.CharField(primary_key=True, max_length=255)
    project = peewee.CharField(max_length=64, index=True)
    name = peewee.CharField(max_length=255)
    instance = peewee.ForeignKeyField(Instance, backref="volumes", on_delete="RESTRICT")
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("project", "name"), True),)


class Quota(BaseModel):
    """An operator's limit for one project and resource (`moorage quota set`), overriding the
    [quotas] defaults of the settings file. -1 lifts the limit for that project."""

    project = peewee.CharField(max_length=64)
    resource = peewee.CharField(max_length=16)  # containers, memory, cpus, volumes, networks, images
    value = peewee.BigIntegerField()  # a count, bytes (memory) or nano-CPUs (cpus); -1 = unlimited

    class Meta:
        primary_key = peewee.CompositeKey("project", "resource")


class QuotaReservation(BaseModel):
    """A create in flight for a resource counted from its own table (volumes, networks,
    images): counted as in use until the create's row is recorded or it fails. Containers
    need none: their placement reservation (a Container row) is what counts."""

    id = peewee.CharField(primary_key=True, max_length=64)
    project = peewee.CharField(max_length=64, index=True)
    resource = peewee.CharField(max_length=16)
    created_at = peewee.DateTimeField(default=utcnow)


class ProjectLock(BaseModel):
    """One row per project, created on demand: SELECT ... FOR UPDATE on it serialises a
    project's quota checks across gateway replicas on PostgreSQL."""

    project = peewee.CharField(primary_key=True, max_length=64)


class ImageRef(BaseModel):
    """A project's reference to an image (gateway.imagemap). Daemon tags are global and image IDs
    are shared by content, so who owns an image lives here, not on the daemons.

    ``reference`` is the tenant's normalized name ("app:1", "reg:5000/team/app:1"), or "" for an
    untagged image the project made or whose tag moved away (it lists as <none>:<none>).
    ``daemon_ref`` is the name Moorage gave it on the daemons ("moorage/p-<project>/...", see
    imagemap.daemon_ref), "" for an untagged one. Public images (operator-published base
    images) have project "" and daemon_ref == reference."""

    project = peewee.CharField(max_length=64, index=True)
    reference = peewee.CharField(max_length=512)
    daemon_ref = peewee.CharField(max_length=512)
    image_id = peewee.CharField(max_length=80, index=True)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("project", "reference", "image_id"), True),)


class ImagePresence(BaseModel):
    """Which instances hold which image (by ID): where to copy an image from when a container
    lands on an instance that lacks it (images follow containers)."""

    image_id = peewee.CharField(max_length=80)
    instance = peewee.ForeignKeyField(Instance, backref="images", on_delete="CASCADE")

    class Meta:
        indexes = ((("image_id", "instance"), True),)


class PoolMember(BaseModel):
    """An instance the pool booted (or is booting), by the pool's own ID for it."""

    id = peewee.CharField(primary_key=True, max_length=64)
    provider = peewee.CharField(max_length=32)
    pool = peewee.CharField(max_length=64)  # [placement] pool_id: the gateway that booted it
    server_id = peewee.CharField(max_length=64, null=True, unique=True)  # = Instance.uuid
    state = peewee.CharField(max_length=16, default=BUILDING, index=True)
    capacity = peewee.IntegerField(default=0)  # containers; 0 = no limit
    claimed = peewee.IntegerField(default=0)  # creates waiting for this boot
    secret_sha256 = peewee.CharField(max_length=64, null=True, unique=True)
    error = peewee.TextField(default="")
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)
    registered_at = peewee.DateTimeField(null=True)
    empty_since = peewee.DateTimeField(null=True)
    # Dedicated tenancy: the project this instance is booted for (its server is created in
    # that project through the project's trust, and only its creates join the boot).
    project = peewee.CharField(max_length=64, null=True)

    class Meta:
        table_name = "pool_member"


class PoolLease(BaseModel):
    """A named lease (the reaper's): held by one worker until it expires."""

    name = peewee.CharField(primary_key=True, max_length=32)
    holder = peewee.CharField(max_length=128, default="")
    expires_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "pool_lease"


class ShareReport(BaseModel):
    """What one gateway worker saw of one project in its last fair-share interval
    (gateway/fairshare.py): the requests it was asked and the streams it holds open. Each
    worker writes its own rows once per interval, never per request; a row not refreshed
    within a few intervals (its worker is gone) no longer counts."""

    worker = peewee.CharField(max_length=128)
    project = peewee.CharField(max_length=64, index=True)
    demand = peewee.IntegerField(default=0)
    streams = peewee.IntegerField(default=0)
    seen_at = peewee.DateTimeField(default=utcnow, index=True)

    class Meta:
        table_name = "share_report"
        primary_key = peewee.CompositeKey("worker", "project")


class ClientCert(BaseModel):
    """A client certificate the gateway issued (gateway/tenancy/certs.py): who it names, until
    when, and whether it was revoked. A certificate is an identity only while its row says so."""

    serial = peewee.CharField(primary_key=True, max_length=40)  # hex, as `openssl x509 -serial`
    project = peewee.CharField(max_length=64, index=True)
    project_name = peewee.CharField(max_length=255, default="")
    user_id = peewee.CharField(max_length=64, default="")
    user_name = peewee.CharField(max_length=255, default="")
    not_after = peewee.DateTimeField()
    created_at = peewee.DateTimeField(default=utcnow)
    revoked_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "client_cert"


class Trust(BaseModel):
    """A Keystone trust a project's user delegated to the gateway's Nova service user, so that
    the nova provider creates and deletes that project's dedicated servers in the project itself
    (gateway/tenancy/trusts.py). The trust's ID is a credential (with the service user's
    password it acts in the project): it is kept sealed (Fernet, [nova] trust_key_file), never
    in the clear."""

    project = peewee.CharField(primary_key=True, max_length=64)
    sealed_id = peewee.TextField()  # the trust ID, Fernet-encrypted
    trustor_user_id = peewee.CharField(max_length=64)  # the user whose token made it
    trustee_user_id = peewee.CharField(max_length=64)  # the gateway's service user
    roles = JSONField(null=True)  # the role names it delegates
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "trust"


MODELS = [
    SchemaVersion,
    Instance,
    Container,
    Exec,
    Network,
    NetworkMember,
    NetworkAddress,
    Volume,
    Quota,
    QuotaReservation,
    ProjectLock,
    ImageRef,
    ImagePresence,
    PoolMember,
    PoolLease,
    ShareReport,
    ClientCert,
    Trust,
]
