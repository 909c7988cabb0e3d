"""Limits: per-project resource defaults and maxima, and bounds on what a request may carry.

Settings, ``[limits]`` in the TOML file (every key optional; gateway/config.py's LimitsSettings)::

    [limits]
    default_memory = "1g"     # memory limit given to containers created without one
    max_memory = "8g"         # a larger limit (or none at all) is refused, 403
    default_cpus = 1.0        # CPU limit (HostConfig.NanoCpus) given to containers without one
    max_cpus = 4.0
    default_pids = 1024       # HostConfig.PidsLimit given to containers without one
    max_pids = 8192
    [limits.projects.PROJECT_ID]   # per-project overrides of the six keys above
    max_memory = "32g"

A maximum without a default makes the maximum the default (a container with no limit would be
above it). Unset keys change nothing. The input bounds (``max_labels``, ``max_label_key_bytes``,
``max_label_value_bytes``, ``max_labels_bytes``, ``max_name_length``, ``max_env``,
``max_env_bytes``, ``max_env_total_bytes``) always apply, with the defaults of LimitsSettings;
a request over one is refused 400 naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

from gateway.config import LimitsSettings, ResourceLimits
from gateway.errors import DockerError

INPUT_KEYS = (
    "max_labels",
    "max_label_key_bytes",
    "max_label_value_bytes",
    "max_labels_bytes",
    "max_name_length",
    "max_env",
    "max_env_bytes",
    "max_env_total_bytes",
)

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_bytes(value, key: str) -> int:
    """512, "512m", "1g", "1.5GiB" -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f'[limits] {key} = {value!r}: expected bytes or a size such as "512m" or "2g"')
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def human_bytes(value: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            amount = value / size
            return f"{amount:g} {unit}" if amount == int(amount) else f"{amount:.2f} {unit}"
    return f"{value} bytes"


def human_cpus(nano: int) -> str:
    return f"{nano / 1e9:g} CPUs"


@dataclass(frozen=True)
class Resources:
    """One project's resource defaults and maxima (None: not configured)."""

    default_memory: int | None = None  # bytes
    max_memory: int | None = None
    default_nano_cpus: int | None = None
    max_nano_cpus: int | None = None
    default_pids: int | None = None
    max_pids: int | None = None

    @property
    def memory_default(self) -> int | None:
        return self.default_memory or self.max_memory

    @property
    def cpus_default(self) -> int | None:
        return self.default_nano_cpus or self.max_nano_cpus

    @property
    def pids_default(self) -> int | None:
        return self.default_pids or self.max_pids


def _resources(section: ResourceLimits) -> Resources:
    def number(key, convert):
        value = getattr(section, key)
        return None if value in (None, "", 0) else convert(value)

    return Resources(
        default_memory=number("default_memory", lambda v: parse_bytes(v, "default_memory")),
        max_memory=number("max_memory", lambda v: parse_bytes(v, "max_memory")),
        default_nano_cpus=number("default_cpus", lambda v: int(float(v) * 1e9)),
        max_nano_cpus=number("max_cpus", lambda v: int(float(v) * 1e9)),
        default_pids=number("default_pids", int),
        max_pids=number("max_pids", int),
    )


class Limits:
    def __init__(self, config: LimitsSettings):
        self.input = {key: getattr(config, key) for key in INPUT_KEYS}
        base = ResourceLimits(**{f.name: getattr(config, f.name) for f in fields(ResourceLimits)})
        self._default = _resources(base)
        # A project's key replaces the [limits] one; keys it leaves out (None) keep it.
        self._projects = {
            project: _resources(replace(base, **{k: v for k, v in vars(overrides).items() if v is not None}))
            for project, overrides in config.projects.items()
        }

    def resources(self, project_id: str) -> Resources:
        return self._projects.get(project_id, self._default)

    # -- input bounds (400) -----------------------------------------------------------------
    def _over(self, what: str, key: str, amount: int, unit: str = "") -> None:
        limit = self.input[key]
        if amount > limit:
            raise DockerError(
                400, f"{what} is {amount}{unit}; the limit is {limit}{unit} (limits.{key}); send less"
            )

    def check_labels(self, labels, what: str = "label") -> None:
        """``what``: the singular noun for the message ("label", "build label")."""
        if not isinstance(labels, dict):
            return  # dockerd refuses what is not a map of strings itself
        self._over(f"the number of {what}s", "max_labels", len(labels))
        total = 0
        for key, value in labels.items():
            key_bytes = len(str(key).encode("utf-8", "replace"))
            value_bytes = len(value.encode("utf-8", "replace")) if isinstance(value, str) else 0
            self._over(f"the {what} key {str(key)[:40]!r}", "max_label_key_bytes", key_bytes, " bytes")
            self._over(
                f"the value of {what} {str(key)[:40]!r}", "max_label_value_bytes", value_bytes, " bytes"
            )
            total += key_bytes + value_bytes
        self._over(f"the size of all {what}s", "max_labels_bytes", total, " bytes")

    def check_env(self, env) -> None:
        if not isinstance(env, list):
            return
        self._over("the number of environment variables", "max_env", len(env))
        total = 0
        for entry in env:
            if not isinstance(entry, str):
                continue
            size = len(entry.encode("utf-8", "replace"))
            self._over(
                f"the environment variable {entry.split('=', 1)[0][:60]!r}", "max_env_bytes", size, " bytes"
            )
            total += size
        self._over("the size of the environment", "max_env_total_bytes", total, " bytes")

    def check_name(self, name, what: str = "container name") -> None:
        if isinstance(name, str):
            self._over(f"the {what}'s length", "max_name_length", len(name.lstrip("/")), " characters")
