"""Volume creation: bounded names and labels; local volumes that mount what the instance has
refused unless the policy allows them."""

from __future__ import annotations

from gateway.policy.bodies import GoObject
from gateway.policy.mounts import local_volume_options
from gateway.policy.rules import Request


def volume_create(req: Request, body) -> None:
    if not isinstance(body, dict):
        return
    config = GoObject(body)
    req.limits.check_name(config.get("Name"), "volume name")
    req.limits.check_labels(config.get("Labels"))
    driver = config.get("Driver")
    if not isinstance(driver, str) or driver.strip().lower() in ("", "local"):
        local_volume_options(req, "volume:create", config.get("DriverOpts"), "docker volume create -o")
