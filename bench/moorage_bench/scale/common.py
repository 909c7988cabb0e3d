"""What every bench/scale module shares: the layout of instances and projects, sizes, targets."""

from __future__ import annotations

import uuid as uuid_

CONTAINERS = 30  # per instance
CAPACITY = 40  # each instance's, as its agent reports it: room for the creates
WIDE_HOSTS = 20  # the project whose merged `ps` is timed spans this many instances
CREATE_TENANTS = 200  # projects with a token of their own, for the concurrent creates

# Targets at 1,000 instances (issue 19, item 4).
PLACEMENT_P99_MS = 5.0
SCHEDULING_P99_MS = 50.0
INFO_P99_MS = 100.0
MERGED_PS_RATIO = 1.5

PROFILES = {
    "full": dict(reads=200, warm=10, beat_window=30.0, creates=200, one_by_one=40, decisions=300),
    "quick": dict(reads=40, warm=5, beat_window=10.0, creates=200, one_by_one=10, decisions=60),
}


def project_id(name: str) -> str:
    return uuid_.uuid5(uuid_.NAMESPACE_URL, f"moorage-bench-scale/{name}").hex


def instance_uuid(k: int) -> str:
    return str(uuid_.uuid5(uuid_.NAMESPACE_URL, f"moorage-bench-scale/instance/{k}"))


class Layout:
    """N instances with dedicated tenancy: instances 0-19 are the wide project's (20 x 30
    containers), instance 20 the single project's (alone, holding as many containers as the wide
    project has over its 20: the two `ps` answers are the same size), the rest two by two to
    projects p1, p2, ... (30 containers each; an odd last one alone): about N/2 projects. With
    `projects` (M), the rest go to M - 2 projects in turn instead."""

    def __init__(self, n: int, projects: int | None = None):
        if n < WIDE_HOSTS + 3:
            raise ValueError(f"--instances must be at least {WIDE_HOSTS + 3}")
        rest = n - WIDE_HOSTS - 1
        others = (rest + 1) // 2 if projects is None else projects - 2
        if not 1 <= others <= rest:
            raise ValueError(f"--projects must be between 3 and {rest + 2} for {n} instances")
        self.n = n
        owners = ["wide"] * WIDE_HOSTS + ["single"]
        # Contiguous runs, so that a project's instances are neighbours in fill order.
        owners += [f"p{1 + k * others // rest}" for k in range(rest)]
        self.owners = owners
        self.names = sorted(set(owners), key=lambda s: (len(s), s))
        self.projects = {name: project_id(name) for name in self.names}
        self.instances = [
            [
                instance_uuid(i),
                self.projects[owner],
                CONTAINERS * WIDE_HOSTS if owner == "single" else CONTAINERS,
                CONTAINERS * WIDE_HOSTS + 10 if owner == "single" else CAPACITY,
            ]
            for i, owner in enumerate(owners)
        ]

    @property
    def containers(self) -> int:
        return sum(inst[2] for inst in self.instances)

    def creators(self) -> list[str]:
        """The projects the concurrent creates come from (the first 200 of p1, p2, ...)."""
        return [n for n in self.names if n.startswith("p")][:CREATE_TENANTS]

    def tenants(self) -> dict[str, str]:
        return {name: self.projects[name] for name in ["wide", "single", *self.creators()]}

    def by_project(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for inst in self.instances:
            out.setdefault(inst[1], []).append(inst[0])
        return out
