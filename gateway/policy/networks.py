"""Network creation: bounded labels and options; drivers, driver options and addressing that
reach the instance's own interfaces and routes refused unless the policy allows them."""

from __future__ import annotations

from gateway.policy.bodies import GoObject
from gateway.policy.rules import Request, short

# Network driver options that change nothing outside the network itself.
SAFE_NETWORK_OPTIONS = frozenset(
    {
        "com.docker.network.bridge.enable_icc",
        "com.docker.network.bridge.enable_ip_masquerade",
        "com.docker.network.bridge.inhibit_ipv4",
        "com.docker.network.driver.mtu",
        "com.docker.network.container_iface_prefix",
        "macvlan_mode",
        "ipvlan_mode",
        "ipvlan_flag",
    }
)
SAFE_NETWORK_DRIVERS = frozenset({"", "bridge"})
SAFE_IPAM_DRIVERS = frozenset({"", "default"})


def network_create(req: Request, body) -> None:
    """POST /networks/create: bounded labels and options; drivers and driver options that
    reach the instance's own interfaces refused unless the policy allows them."""
    if not isinstance(body, dict):
        return  # dockerd refuses it itself
    config = GoObject(body)
    req.limits.check_name(config.get("Name"), "network name")
    req.limits.check_labels(config.get("Labels"))
    options = config.get("Options")
    req.limits.check_labels(options, "network option")
    driver = config.get("Driver")
    if isinstance(driver, str) and driver.strip().lower() not in SAFE_NETWORK_DRIVERS:
        req.require(
            "network:create:driver",
            f"the network driver {short(driver, 60)} (docker network create -d)",
            "use the bridge driver (the default)",
        )
    ipam = config.obj("IPAM")
    ipam_driver = ipam.get("Driver") if ipam else None
    if isinstance(ipam_driver, str) and ipam_driver.strip().lower() not in SAFE_IPAM_DRIVERS:
        req.require(
            "network:create:driver",
            f"the IPAM driver {short(ipam_driver, 60)} (--ipam-driver)",
            "use the default IPAM driver",
        )
    addressing = ipam.get("Config") if ipam else None
    if isinstance(addressing, list) and any(
        isinstance(entry, dict) and any(entry.values()) for entry in addressing
    ):
        req.require(
            "network:create:subnet",
            "a network's own subnet, range, gateway or auxiliary addresses "
            "(--subnet, --ip-range, --gateway, --aux-address)",
            "leave the addressing to the daemon, which picks a free subnet",
        )
    if config.get("ConfigOnly") or config.get("ConfigFrom"):
        req.require(
            "network:create:config_from",
            "a config-only network or one made from it (--config-only, --config-from)",
            "give the network its settings directly",
        )
    for key, value in options.items() if isinstance(options, dict) else ():
        key = str(key)
        shown = f"-o {short(key, 60)}={short(str(value), 40)}"
        if key == "com.docker.network.bridge.name":
            req.require(
                "network:create:bridge_name",
                f"naming the instance's bridge interface ({shown})",
                "leave the bridge's name to the daemon",
            )
        elif key == "parent":
            req.require(
                "network:create:parent",
                f"attaching to the instance's interface {short(str(value), 40)} ({shown})",
                "use a bridge network",
            )
        elif key not in SAFE_NETWORK_OPTIONS:
            req.require(
                "network:create:driver_opts",
                f"the network driver option {short(key, 60)} ({shown})",
                "leave it unset (allowed without a rule: " + ", ".join(sorted(SAFE_NETWORK_OPTIONS)) + ")",
            )
