"""Settings: a TOML file (``moorage --config FILE``, or $MOORAGE_CONFIG) plus flags.

One dataclass per section below holds its keys, types and defaults; nothing else repeats a
default. The file is checked when it is read: a section or key not listed here, or a value of
another type than its default's (TOML says which), is an error naming it, so that a misspelt key
cannot silently leave its default in force. $MOORAGE_DB overrides [gateway] database.

[gateway]
bind = ["tcp://127.0.0.1:2375", "unix:///run/moorage.sock"]   # or one string
workers = 2
database = "sqlite:////var/lib/moorage/moorage.db"
registration_secret = "..."      # what agents present to register
tls_cert = "..."; tls_key = "..."; tls_ca = "..."   # TLS; with tls_ca, client certs are verified
                                  # (without tls_bind: on every bind)
tls_bind = ["tcp://0.0.0.0:2376"] # TLS listeners beside `bind` (tls_cert, tls_key): clients may
                                  # authenticate with a certificate instead of the headers
tls_client_ca = "..."; tls_client_ca_key = "..."   # the CA that issues and verifies client certs
tls_server_ca = "..."             # what clients verify the gateway with (their ca.pem);
                                  # default: tls_client_ca
cert_days = 30                    # lifetime of the client certificates the gateway issues
cert_recheck = 300                # seconds a certificate's user and project stay trusted before
                                  # the identity backend is asked again (role kept, project enabled)
log_file = "..."; pid_file = "..."
log_format = "text"               # or "json": one JSON object per line, with the request ID
                                  # (gateway/logs.py); gunicorn's own lines too
heartbeat_interval = 10           # seconds between agent heartbeats
body_idle_timeout = 120           # seconds a request body may stall before the request is
                                  # refused (400) and its upstream call aborted; 0: never
metrics_bind = "127.0.0.1:9180"   # Prometheus metrics (GET /metrics) on this HOST:PORT, apart
                                  # from the Docker API (gateway/metrics.py); "" (default): off
read_cache = true                 # ps and inspect from the daemon's answer of a moment ago while
                                  # nothing changed it (gateway/services/readcache.py), and a
                                  # repeated one replayed (gateway/replay.py); SQLite only
[identity]
backend = "embedded"              # or "keystone" (gateway/tenancy/keystone.py: its keys and the
                                  # keystoneauth1 plugin's, such as username and password)
token_file = "..."                # embedded: the tokens file
admin_view = false                # let admin-role tokens list every project's objects
                                  # (with the header X-Moorage-All-Projects: 1)
[placement]
tenancy = "dedicated"             # or "shared": whether an instance holds one project's
                                  # containers only (gateway/placement/tenancy.py)
strategy = "fill"                 # or "spread"
capacity = 0                      # default containers per instance; 0 = no limit
provider = "local"                # the instance pool: "local", "static" or "nova"
pool_id = "moorage"               # nova: the mark on the servers this gateway boots
reap_interval = 2                 # seconds between passes of the empty-instance reaper
release_grace = 60                # dedicated: seconds a claimed static host stays empty before
                                  # it is wiped (verified) and free for another project
[nova]                            # provider = "nova": see gateway/placement/nova.py
[local]                           # provider = "local": hosts on this machine, booted on demand by
                                  # commands (gateway/placement/local.py; devstack sets them)
[policy]
file = "/etc/moorage/policy.yaml" # oslo.policy rules (docs/policy.md); none or absent: all refused
reserved_ports = [9100]           # host ports no container publishes (the agents' always are)
[limits]                          # resource defaults/maxima, input bounds (gateway/policy/limits.py)
default_memory = "1g"; max_memory = "8g"; default_cpus = 1; max_cpus = 4
[limits.projects.PROJECT_ID]      # per-project overrides of the resource keys
max_memory = "32g"
[quotas]                          # per-project defaults; a key left out = unlimited;
containers = 50                   # `moorage quota set PROJECT KEY=VALUE` overrides per project
memory = "64g"                    # sum of the containers' --memory (bytes, or k/m/g/t)
cpus = 16                         # sum of the containers' --cpus
volumes = 50
networks = 20
images = 100                      # distinct images the project holds
[rate_limits]                     # each project's fair share (gateway/fairshare.py); 0 = none;
requests_per_second = 50          # `moorage quota set PROJECT rate=N streams=N` overrides
burst = 100                       # requests at once above the rate (0: one second's worth)
streams = 20                      # streamed or hijacked answers open at once (logs -f, attach...)
sync_interval = 1                 # seconds between each worker's exchange with the store
refusal_delay = 1                 # seconds a refused request waits before its 429
[notifications]                   # gateway/notifications/: docs/notifications.md
transport_url = "rabbit://..."    # oslo.messaging transport; "" with driver messagingv2: off
topics = ["notifications"]
driver = "messagingv2"            # or "log" (to the gateway's log), "noop" (off)
exists_interval = 3600            # seconds between compute.container.exists rounds; 0: none
outbox_limit = 100000             # notifications queued in the store while the broker is away
audit = true                      # CADF audit events (audit.http.response) for mutating requests
audit_log = ""                    # also append each CADF event, one JSON line, to this file
[events]
retention = 604800                # seconds the store keeps daemon and gateway events (7 days)
[mesh]                            # published ports at the gateway's address (gateway/mesh.py)
enabled = false                   # true: `moorage mesh` forwards them; false: instance addresses
address = "203.0.113.5"           # the host clients reach published ports at (DOCKER_HOST's)
bind = ""                         # what `moorage mesh` listens on; "" = address
port_min = 20000; port_max = 32767   # where Moorage chooses ports for -P and -p PORT (below
                                  # the kernel's ephemeral range on the mesh's host)
udp_idle = 60                     # seconds a UDP client's session lives without a datagram
poll_interval = 0.5               # seconds between `moorage mesh`'s readings of the store
start_wait = 5                    # seconds a start waits for `moorage mesh` to listen
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

DEFAULT_DB = "sqlite:///" + os.path.expanduser("~/.moorage/moorage.db")


class SettingsError(ValueError):
    """The settings file cannot be used; the message names the file and the key."""


@dataclass
class GatewaySettings:
    bind: list[str] = field(default_factory=lambda: ["tcp://127.0.0.1:2375"])
    workers: int = 2
    database: str = DEFAULT_DB
    registration_secret: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    # Client certificates as identities (gateway/tenancy/certs.py, docs in README "TLS").
    tls_bind: list[str] = field(default_factory=list)
    tls_client_ca: str = ""
    tls_client_ca_key: str = ""
    tls_server_ca: str = ""
    cert_days: float = 30.0
    cert_recheck: float = 300.0
    log_file: str = ""
    pid_file: str = ""
    heartbeat_interval: float = 10.0
    body_idle_timeout: float = 120.0
    metrics_bind: str = ""
    log_format: str = "text"  # or "json": one object per line (gateway/logs.py)
    # ps and inspect answered from the daemons' recent answers while nothing changed them
    # (gateway/services/readcache.py); SQLite store only, off with PostgreSQL.
    read_cache: bool = True

    @property
    def heartbeat_timeout(self) -> float:
        """An instance silent for this long is considered down."""
        return self.heartbeat_interval * 3 + 5


@dataclass
class IdentitySettings:
    # The keystoneauth1 plugin's own options (username, password, project_name,
    # application_credential_secret, ...) depend on auth_type: the loader keeps every key that
    # is no field here in plugin_options, and gateway/tenancy/keystone.py refuses those its
    # plugin does not know.
    EXTRA: ClassVar[str] = "plugin_options"

    backend: str = "embedded"
    token_file: str = ""
    admin_view: bool = False
    auth_url: str = ""
    timeout: float = 5.0  # seconds, every call to Keystone
    cache_ttl: float = 60.0
    negative_cache_ttl: float | None = None  # None: the shorter of cache_ttl and 5 s
    cache_size: int = 10000
    auth_type: str = "password"
    insecure: bool = False
    cafile: str = ""
    plugin_options: dict[str, Any] = field(default_factory=dict)

    @property
    def negative_ttl(self) -> float:
        if self.negative_cache_ttl is not None:
            return self.negative_cache_ttl
        return min(self.cache_ttl, 5.0)


TENANCIES = ("dedicated", "shared")


@dataclass
class PlacementSettings:
    tenancy: str = "dedicated"
    strategy: str = "fill"
    capacity: int = 0
    provider: str = "local"
    pool_id: str = "moorage"
    reap_interval: float = 2.0
    # dedicated: seconds a claimed host that is not the pool's (static, or pre-booted local)
    # stays empty before it is wiped and freed for any project (gateway/placement/reaper.py)
    release_grace: float = 60.0


@dataclass
class PolicySettings:
    file: str = ""
    # Strings are accepted and converted (one that is no port number is logged and skipped).
    reserved_ports: list[int | str] = field(default_factory=list)
    # A container's bind of /var/run/docker.sock or /run/docker.sock gets its own tenant socket
    # (gateway/services/tenantsocket.py): the Docker API as its project, through its agent.
    # false: such a bind is the real socket, refused unless container:create:docker_socket allows it.
    tenant_socket: bool = True
    tenant_socket_ttl: float = 7 * 86400.0  # seconds a socket's credential lasts at most


@dataclass
class ResourceLimits:
    """The resource keys of [limits] and of each [limits.projects.ID]; None: not set."""

    default_memory: int | str | None = None  # bytes, or a size such as "512m"
    max_memory: int | str | None = None
    default_cpus: float | None = None
    max_cpus: float | None = None
    default_pids: int | None = None
    max_pids: int | None = None


@dataclass
class LimitsSettings(ResourceLimits):
    # Bounds on what one request may carry (always applied).
    max_labels: int = 256  # labels per object
    max_label_key_bytes: int = 1024
    max_label_value_bytes: int = 64 * 1024
    max_labels_bytes: int = 256 * 1024  # all of one object's labels, keys and values
    max_name_length: int = 255  # container and volume names (the store keeps 255)
    max_env: int = 4096  # Env entries of a container or an exec
    max_env_bytes: int = 128 * 1024  # one entry: the kernel's MAX_ARG_STRLEN
    max_env_total_bytes: int = 1024 * 1024
    projects: dict[str, ResourceLimits] = field(default_factory=dict)


@dataclass
class QuotaSettings:
    # Raw, as written (5, "1g", 2.5, "unlimited"): gateway/quotas.py parses them. None: unset.
    containers: int | float | str | None = None
    memory: int | float | str | None = None
    cpus: int | float | str | None = None
    volumes: int | float | str | None = None
    networks: int | float | str | None = None
    images: int | float | str | None = None


@dataclass
class RateLimitSettings:
    """[rate_limits]: each project's fair share of the gateway (gateway/fairshare.py); 0: no limit."""

    requests_per_second: float = 0.0  # per project, across every worker and replica
    burst: float = 0.0  # requests a project may send at once above its rate; 0: one second's worth
    streams: int = 0  # streamed or hijacked answers a project holds open at once
    sync_interval: float = 1.0  # seconds between a worker's exchanges with the store
    # Seconds a refused request waits before its 429 (at most its Retry-After): a client that
    # retries at once then costs one request per connection per delay, not a busy loop.
    refusal_delay: float = 1.0


@dataclass
class NovaSettings:
    """[nova]: the provider's service credentials and how it boots (gateway/placement/nova.py)."""

    auth_url: str = ""
    username: str = ""
    password: str = ""
    project_name: str = ""
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    region_name: str = ""
    timeout: float = 30.0  # seconds, every call to Nova
    microversion: str = "2.90"
    flavor: str = ""
    image: str = ""
    network: str = "none"
    key_name: str = ""
    security_groups: list[str] = field(default_factory=list)
    availability_zone: str = ""
    gateway_url: str = ""
    capacity: int = 0  # 0: [placement] capacity
    boot_timeout: float = 300.0
    empty_grace_seconds: float = 600.0
    max_instances: int = 0
    agent_command: str = "moorage"
    agent_install: str = "pip install moorage"
    agent_port: int = 2376
    docker: str = "unix:///var/run/docker.sock"
    name_prefix: str = "moorage-"
    # Dedicated tenancy: each project's servers are created in the project itself through a
    # Keystone trust its first user delegates to the service user (gateway/tenancy/trusts.py).
    trust_key_file: str = ""  # Fernet key(s) sealing the stored trust IDs, one a line; first seals
    trust_roles: list[str] = field(default_factory=lambda: ["member"])  # what the trust delegates


@dataclass
class LocalSettings:
    """[local]: hosts on this machine that commands boot and delete (gateway/placement/local.py).
    Without boot_command the provider is the hosts whose agents register, and never grows."""

    boot_command: list[str] = field(default_factory=list)
    delete_command: list[str] = field(default_factory=list)
    list_command: list[str] = field(default_factory=list)
    max_hosts: int = 8
    capacity: int = 0  # 0: [placement] capacity
    boot_timeout: float = 120.0
    empty_grace_seconds: float = 60.0
    timeout: float = 120.0  # seconds any one command may take


@dataclass
class NotificationsSettings:
    """[notifications]: what the gateway tells OpenStack (gateway/notifications/)."""

    transport_url: str = ""
    topics: list[str] = field(default_factory=lambda: ["notifications"])
    driver: str = "messagingv2"
    exists_interval: float = 3600.0
    outbox_limit: int = 100000
    audit: bool = True
    audit_log: str = ""

    @property
    def enabled(self) -> bool:
        """Whether anything is queued: a driver that sends somewhere."""
        if self.driver == "noop":
            return False
        return self.driver == "log" or bool(self.transport_url)


@dataclass
class EventsSettings:
    """[events]: the durable per-project event journal (gateway/notifications/recorder.py)."""

    retention: float = 7 * 86400.0  # seconds; 0: no journal (docker events is the daemons' only)


@dataclass
class NoticesSettings:
    """[notices]: projects' webhooks for notices (gateway/notifications/webhooks.py)."""

    # Destinations a webhook may name besides public addresses (CIDRs): private, loopback and
    # link-local ones are refused unless listed, so a tenant cannot make the gateway post into
    # the operator's networks.
    allowed_networks: list[str] = field(default_factory=list)
    per_project: int = 5  # subscriptions a project may hold
    queue_limit: int = 1000  # notices waiting for one webhook; more are dropped (and logged)
    max_attempts: int = 12  # tries of one notice (back-off 2, 4, ... 300 s) before it is dropped
    timeout: float = 10.0  # seconds a webhook has to answer one delivery


@dataclass
class MeshSettings:
    """[mesh]: the routing mesh (gateway/mesh.py, `moorage mesh`, docs/operations.md)."""

    enabled: bool = False
    address: str = ""
    bind: str = ""
    port_min: int = 20000
    port_max: int = 32767
    udp_idle: float = 60.0
    poll_interval: float = 0.5
    start_wait: float = 5.0


@dataclass
class NetworkSettings:
    """[networks]: user-defined networks that span a project's instances (gateway/services/spans.py)."""

    # The subnets the gateway gives networks made without --subnet: a range that neither the
    # instances' own networks (dockerd's default-address-pools) nor the underlay use.
    pool: str = "198.19.128.0/17"
    prefix: int = 24  # each network's subnet size within the pool
    # A spanning network's MTU when no agent has reported its underlay MTU; else the smallest
    # reported one (of the instances that may carry the project) minus VXLAN's 50 bytes.
    mtu: int = 1450
    vxlan_port: int = 4789  # udp; the instances must admit it from each other (README "Networks")


@dataclass
class Settings:
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    quotas: QuotaSettings = field(default_factory=QuotaSettings)
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    nova: NovaSettings = field(default_factory=NovaSettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    notifications: NotificationsSettings = field(default_factory=NotificationsSettings)
    events: EventsSettings = field(default_factory=EventsSettings)
    notices: NoticesSettings = field(default_factory=NoticesSettings)
    mesh: MeshSettings = field(default_factory=MeshSettings)
    networks: NetworkSettings = field(default_factory=NetworkSettings)
    source: str = ""  # the file read, "" for none


# -- reading the file ---------------------------------------------------------------------------
def load(path: str | None) -> Settings:
    """The settings of ``path`` (else $MOORAGE_CONFIG, else the defaults); SettingsError if the
    file is unreadable, not TOML, or has a key or type this module does not define."""
    path = path or os.environ.get("MOORAGE_CONFIG")
    settings = Settings()
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"{path}: {exc}") from exc
        try:
            settings = parse(data)
        except SettingsError as exc:
            raise SettingsError(f"{path}: {exc}") from None
        settings.source = path
    if os.environ.get("MOORAGE_DB"):
        settings.gateway.database = os.environ["MOORAGE_DB"]
    return settings


def parse(data: dict[str, Any]) -> Settings:
    """Settings from a parsed TOML document; SettingsError naming the first bad key."""
    sections = _hints(Settings)
    sections.pop("source")
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name not in sections:
            where = "section" if isinstance(value, dict) else "key (outside any section)"
            raise SettingsError(f"unknown {where} [{name}]; known: {', '.join(sections)}")
        if not isinstance(value, dict):
            raise SettingsError(f"[{name}] must be a table (a [{name}] section)")
        for key in ("bind", "tls_bind"):
            if name == "gateway" and isinstance(value.get(key), str):
                value = {**value, key: [value[key]]}
        values[name] = section(sections[name], value, f"[{name}]")
    settings = Settings(**values)
    if settings.placement.tenancy not in TENANCIES:
        raise SettingsError(
            f"[placement] tenancy = {settings.placement.tenancy!r}: must be one of {', '.join(TENANCIES)}"
        )
    extra = settings.identity.plugin_options
    if extra and settings.identity.backend != "keystone":
        known = ", ".join(k for k in _hints(IdentitySettings) if k != IdentitySettings.EXTRA)
        raise SettingsError(f"unknown key [identity] {next(iter(extra))}; known: {known}")
    return settings


def section(cls: type, table: dict[str, Any], name: str) -> Any:
    """An instance of the dataclass ``cls`` from one TOML table; ``name`` is for messages."""
    hints = _hints(cls)
    extra_field = getattr(cls, "EXTRA", None)
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in table.items():
        if key not in hints or key == extra_field:
            if extra_field:
                extra[key] = value
                continue
            raise SettingsError(f"unknown key {name} {key}; known: {', '.join(hints)}")
        values[key] = _value(hints[key], value, f"{name} {key}")
    if extra_field:
        values[extra_field] = extra
    return cls(**values)


def _hints(cls: type) -> dict[str, Any]:
    """The dataclass's fields and their (evaluated) types, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _value(hint: Any, value: Any, name: str) -> Any:
    """``value`` if TOML gave it a type ``hint`` allows (an int where a float goes becomes one)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        for arg in args:
            try:
                return _value(arg, value, name)
            except SettingsError:
                continue
    elif dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return section(typing.cast(type, hint), value, f"{name}")
    elif origin is list and isinstance(value, list):
        return [_value(args[0], item, f"{name}[{i}]") for i, item in enumerate(value)]
    elif origin is dict and isinstance(value, dict):
        return {str(k): _value(args[1], v, f"{name}.{k}") for k, v in value.items()}
    elif hint is Any or (hint in (str, bool) and type(value) is hint) or (hint is int and type(value) is int):
        return value
    elif hint is float and type(value) in (int, float):
        return float(value)
    raise SettingsError(f"{name} = {value!r}: expected {_describe(hint)}, not {_toml_type(value)}")


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is list:
        return f"a list of ({_describe(args[0])})"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(hint, str(hint))


def _toml_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array"}
    return names.get(type(value), "a table" if isinstance(value, dict) else type(value).__name__)
