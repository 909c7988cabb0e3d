"""The seeded population: instances, containers and quotas, the same rows run after run (SEED)."""

from __future__ import annotations

import datetime as _dt
import json
import random
import uuid as uuid_

from ..run.common import BenchError
from .common import MIB, NANO, PROJECT_LABEL, SEED

# --- the data --------------------------------------------------------------------------------------


class Population:
    """Instances and containers as a large region would hold them, the same on every database.

    Instances: capacities of 50, 100 (half of them), 150 or 200 containers; 1 % down, 1 %
    draining and 0.5 % silent (no heartbeat for two days), each holding half its capacity.
    Containers fill the instances in fill order, as the fill strategy leaves them: the first
    ~86 % of instances are full, then one partly full, then empty ones (the longest walk for
    "the first instance with room"). Projects: 10 of 5,000 containers, 990 of 500 and 9,000
    of about 50, interleaved at random over the instances; 70 % of containers set --memory
    256m and --cpus 0.25. The [quotas] defaults (containers 100, memory 64g, cpus 32) make
    every decision run the quota check; the 1,000 larger projects have their own limits.
    """

    def __init__(self, n_instances: int, n_containers: int, seed: int = SEED):
        rng = random.Random(seed)
        self.now = store_utcnow()
        self.instances = []  # dicts, in fill order
        capacities = (50, 100, 100, 100, 150, 200)
        for i in range(n_instances):
            r = rng.random()
            state, beat = "up", self.now
            if r < 0.01:
                state = "down"
            elif r < 0.02:
                state = "draining"
            elif r < 0.025:
                beat = self.now - _dt.timedelta(days=2)
            self.instances.append(
                dict(
                    uuid=str(uuid_.UUID(int=rng.getrandbits(128), version=4)),
                    capacity=rng.choice(capacities),
                    state=state,
                    last_heartbeat=beat,
                    position=i + 1,
                    agent_url=f"tcp://10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:2376",
                    live=(state == "up" and beat == self.now),
                )
            )
        # Projects, by size tier; the pool holds one entry per container, shuffled.
        scale = n_containers / 1_000_000
        tiers = [(10, 5000), (990, 500), (9000, None)]
        self.projects: list[tuple[str, int]] = []
        left = n_containers
        for count, size in tiers:
            for _ in range(max(1, round(count * scale)) if size else 0):
                self.projects.append((f"{rng.getrandbits(128):032x}", size))
                left -= size
        small = max(1, round(9000 * scale))
        for k in range(small):
            share = left // (small - k)
            self.projects.append((f"{rng.getrandbits(128):032x}", share))
            left -= share
        pool = [p for p, (_, size) in enumerate(self.projects) for _ in range(size)]
        rng.shuffle(pool)
        self.pool = pool
        # How many containers each instance holds, in fill order.
        self.used = []
        left = len(pool)
        for inst in self.instances:
            want = inst["capacity"] if inst["live"] else inst["capacity"] // 2
            take = min(want, left)
            self.used.append(take)
            left -= take
        if left:
            raise BenchError(f"{left} containers do not fit on {n_instances} instances")
        self.seed = seed
        self.big = [p for p, size in self.projects if size >= 500]  # their own quota rows

    def instance_rows(self):
        facts = json.dumps(
            {
                "NCPU": 8,
                "MemTotal": 33_554_432_000,
                "ServerVersion": "24.0.7",
                "OperatingSystem": "Debian GNU/Linux 12 (bookworm)",
                "KernelVersion": "6.1.0-18-amd64",
                "Driver": "overlay2",
                "Architecture": "x86_64",
            },
            sort_keys=True,
        )
        for inst in self.instances:
            yield (
                inst["uuid"],
                "nova",
                inst["agent_url"],
                "s" * 43,
                inst["capacity"],
                inst["state"],
                "24.0.7",
                "1.43",
                "1.12",
                facts,
                self.now - _dt.timedelta(days=30),
                inst["last_heartbeat"],
                inst["position"],
            )

    def container_rows(self):
        """(id, project, name, daemon_name, instance_id, labels, created_at, memory, nano_cpus)."""
        rng = random.Random(self.seed + 1)
        created = (self.now - _dt.timedelta(days=1)).isoformat(sep=" ")
        n = 0
        for inst, used in zip(self.instances, self.used, strict=True):
            for _ in range(used):
                project = self.projects[self.pool[n]][0]
                labels = json.dumps(
                    {
                        "com.docker.compose.project": f"app{n % 7}",
                        "com.docker.compose.service": "web",
                        PROJECT_LABEL: project,
                    },
                    sort_keys=True,
                )
                sized = rng.random() < 0.7
                yield (
                    f"{rng.getrandbits(256):064x}",
                    project,
                    f"svc-{n}",
                    None,
                    inst["uuid"],
                    labels,
                    created,
                    256 * MIB if sized else 0,
                    NANO // 4 if sized else 0,
                )
                n += 1

    def first_fill(self) -> dict:
        return next(
            inst
            for inst, used in zip(self.instances, self.used, strict=True)
            if inst["live"] and used < inst["capacity"]
        )


def store_utcnow():
    from gateway import store

    return store.utcnow()


INSTANCE_COLUMNS = (
    "uuid",
    "provider",
    "agent_url",
    "agent_secret",
    "capacity",
    "state",
    "daemon_version",
    "api_version",
    "min_api_version",
    "facts",
    "registered_at",
    "last_heartbeat",
    "position",
)
CONTAINER_COLUMNS = (
    "id",
    "project",
    "name",
    "daemon_name",
    "instance_id",
    "labels",
    "created_at",
    "memory",
    "nano_cpus",
)


def quota_rows(pop: Population):
    from gateway import quotas

    for project in pop.big:
        yield (project, "containers", 10_000)
        yield (project, "memory", quotas.parse_value("memory", "4t"))
        yield (project, "cpus", quotas.parse_value("cpus", 4000))
