"""Resource limits on a request: memory, CPU and PIDs held to the project's maxima
(``[limits]``, gateway.policy.limits), and the project's defaults given to what is unset."""

from __future__ import annotations

from gateway.errors import DockerError
from gateway.policy.bodies import GoObject, integer
from gateway.policy.limits import human_bytes, human_cpus
from gateway.policy.rules import Request

_PERIOD = 100_000  # dockerd's CPU period (µs) when the client gives none


def apply_resources(
    req: Request, objects: list[GoObject], target, create: bool, nano_cpus: bool = True
) -> None:
    """Check every memory, CPU and PIDs limit against the project's maxima (403 naming the
    limit), then, on create, give ``target()`` (the object the defaults go in, made on first
    use) the defaults for the limits the request lacks. ``nano_cpus=False``: the request has
    no NanoCpus field (a build), so a default CPU limit is said as a CpuQuota.

    With a memory maximum, swap is bounded too: no unlimited swap (MemorySwap -1), and memory
    plus swap at most twice the maximum (what dockerd's default, as much swap as memory, gives
    a container at the maximum); a /dev/shm (ShmSize, which is memory) at most the maximum.
    With a CPU maximum, the CPU weight (CpuShares) is at most 1024 per CPU of the maximum (as
    Kubernetes gives a container whose request is its limit)."""
    res = req.limits.resources(req.project)

    def values(field):
        return [v for v in (integer(o.get(field)) for o in objects) if v is not None]

    def over(what, value, maximum, key, instead):
        raise DockerError(
            403,
            f"{what} is above the maximum for project {req.project} ({maximum}, "
            f"limits.{key}): {instead}, or ask your operator to raise limits.{key}",
        )

    memory = values("Memory")
    if res.max_memory:
        for value in memory:
            if value > res.max_memory or (value < 0 and not create):
                shown = "no memory limit" if value < 0 else f"the memory limit {human_bytes(value)}"
                over(
                    shown,
                    value,
                    human_bytes(res.max_memory),
                    "max_memory",
                    f"ask for at most {human_bytes(res.max_memory)} (--memory)",
                )
        swap_max = 2 * res.max_memory
        instead = (
            f"set --memory-swap (memory and swap together) to at most {human_bytes(swap_max)}, or leave "
            "it unset (as much swap as memory)"
        )
        for value in values("MemorySwap"):
            if value < 0:
                raise DockerError(
                    403,
                    f"unlimited swap (--memory-swap -1) is not allowed for project {req.project}, "
                    f"which has a memory maximum ({human_bytes(res.max_memory)}, "
                    f"limits.max_memory): {instead}, or ask your operator to raise "
                    "limits.max_memory",
                )
            if value > swap_max:
                raise DockerError(
                    403,
                    f"the memory and swap limit {human_bytes(value)} (--memory-swap) is above "
                    f"the maximum for project {req.project} ({human_bytes(swap_max)}, twice "
                    f"limits.max_memory): {instead}, or ask your operator to raise "
                    "limits.max_memory",
                )
        for value in values("ShmSize"):
            if value > res.max_memory:
                over(
                    f"the /dev/shm size {human_bytes(value)} (--shm-size)",
                    value,
                    human_bytes(res.max_memory),
                    "max_memory",
                    f"ask for at most {human_bytes(res.max_memory)} (--shm-size)",
                )
    nano = values("NanoCpus")
    quotas = values("CpuQuota")
    periods = [p for p in values("CpuPeriod") if p > 0]
    if res.max_nano_cpus:
        asked = [n for n in nano if n > 0]
        asked += [q * 1_000_000_000 // (periods[0] if periods else _PERIOD) for q in quotas if q > 0]
        unlimited = not create and any(q < 0 for q in quotas)
        for value in asked:
            if value > res.max_nano_cpus:
                over(
                    f"the CPU limit {human_cpus(value)}",
                    value,
                    human_cpus(res.max_nano_cpus),
                    "max_cpus",
                    f"ask for at most {res.max_nano_cpus / 1e9:g} CPUs (--cpus)",
                )
        if unlimited:
            over(
                "no CPU limit (CpuQuota -1)",
                -1,
                human_cpus(res.max_nano_cpus),
                "max_cpus",
                f"ask for at most {res.max_nano_cpus / 1e9:g} CPUs (--cpus)",
            )
        weight = max(2, 1024 * res.max_nano_cpus // 1_000_000_000)
        for value in values("CpuShares"):
            if value > weight:
                over(
                    f"the CPU weight {value} (--cpu-shares)",
                    value,
                    f"{weight}, 1024 per CPU of {human_cpus(res.max_nano_cpus)}",
                    "max_cpus",
                    f"ask for a weight of at most {weight} (--cpu-shares)",
                )
    pids = values("PidsLimit")
    if res.max_pids:
        for value in pids:
            if value > res.max_pids or (value < 0 if create else value <= 0):
                shown = "no PIDs limit" if value <= 0 else f"the PIDs limit {value}"
                over(shown, value, res.max_pids, "max_pids", f"ask for at most {res.max_pids} (--pids-limit)")
    if not create:
        return
    if res.memory_default and not any(v != 0 for v in memory):
        target().set("Memory", res.memory_default)
    if res.cpus_default and not any(v > 0 for v in nano) and not any(q > 0 for q in quotas):
        if periods or not nano_cpus:
            # NanoCpus and CpuPeriod cannot both be set (and a build has no NanoCpus): say it as
            # a quota of that period (the kernel's default period when none is given).
            period = periods[0] if periods else _PERIOD
            target().set("CpuQuota", max(1000, res.cpus_default * period // 1_000_000_000))
        else:
            target().set("NanoCpus", res.cpus_default)
    if res.pids_default and not any(v != 0 for v in pids):
        target().set("PidsLimit", res.pids_default)
