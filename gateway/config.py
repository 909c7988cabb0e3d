"""Settings: a TOML file (``moorage --config FILE``, or $MOORAGE_CONFIG) plus flags.

[gateway]
bind = ["tcp://127.0.0.1:2375", "unix:///run/moorage.sock"]
workers = 2
database = "sqlite:////var/lib/moorage/moorage.db"
registration_secret = "..."      # what agents present to register
tls_cert = "..."; tls_key = "..."; tls_ca = "..."   # TLS; with tls_ca, client certs are verified
log_file = "..."
heartbeat_interval = 10           # seconds between agent heartbeats
[identity]
backend = "embedded"              # or "keystone" (tenancy issue)
token_file = "..."
admin_view = false                # let admin-role tokens list every project's objects
                                  # (with the header X-Moorage-All-Projects: 1)
[placement]
strategy = "fill"                 # or "spread"
capacity = 0                      # default containers per instance; 0 = no limit
provider = "local"                # the instance pool: "local", "static" or "nova"
pool_id = "moorage"               # nova: the mark on the servers this gateway boots
reap_interval = 2                 # nova: seconds between passes of the empty-instance reaper
[nova]                            # provider = "nova": see gateway/placement/nova.py
[policy]
file = "/etc/moorage/policy.yaml" # oslo.policy rules (docs/policy.md); none or absent: all refused
reserved_ports = [9100]           # host ports no container publishes (the agents' always are)
[limits]                          # resource defaults/maxima, input bounds (gateway/policy/limits.py)
default_memory = "1g"; max_memory = "8g"; default_cpus = 1; max_cpus = 4
[quotas]                          # per-project defaults; a key left out = unlimited;
containers = 50                   # `moorage quota set PROJECT KEY=VALUE` overrides per project
memory = "64g"                    # sum of the containers' --memory (bytes, or k/m/g/t)
cpus = 16                         # sum of the containers' --cpus
volumes = 50
networks = 20
images = 100                      # distinct images the project holds
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field

DEFAULT_DB = "sqlite:///" + os.path.expanduser("~/.moorage/moorage.db")


@dataclass
class Settings:
    bind: list[str] = field(default_factory=lambda: ["tcp://127.0.0.1:2375"])
    workers: int = 2
    database: str = DEFAULT_DB
    registration_secret: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    log_file: str = ""
    pid_file: str = ""
    heartbeat_interval: float = 10.0
    identity: dict = field(default_factory=lambda: {"backend": "embedded"})
    placement: dict = field(default_factory=lambda: {"strategy": "fill", "capacity": 0})
    policy: dict = field(default_factory=dict)
    limits: dict = field(default_factory=dict)
    quotas: dict = field(default_factory=dict)  # raw [quotas]; gateway.quotas parses it
    nova: dict = field(default_factory=dict)
    source: str = ""

    @property
    def heartbeat_timeout(self) -> float:
        """An instance silent for this long is considered down."""
        return self.heartbeat_interval * 3 + 5


def load(path: str | None) -> Settings:
    settings = Settings()
    path = path or os.environ.get("MOORAGE_CONFIG")
    if path:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        gateway = data.get("gateway", {})
        for key, value in gateway.items():
            if hasattr(settings, key) and key not in (
                "identity",
                "placement",
                "policy",
                "limits",
                "quotas",
                "nova",
            ):
                setattr(settings, key, value)
        if isinstance(settings.bind, str):
            settings.bind = [settings.bind]
        settings.identity = {**settings.identity, **data.get("identity", {})}
        settings.placement = {**settings.placement, **data.get("placement", {})}
        settings.policy = dict(data.get("policy", {}))
        settings.limits = dict(data.get("limits", {}))
        settings.quotas = dict(data.get("quotas", {}))
        settings.nova = dict(data.get("nova", {}))
        settings.source = path
    if os.environ.get("MOORAGE_DB"):
        settings.database = os.environ["MOORAGE_DB"]
    return settings
