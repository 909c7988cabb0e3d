"""The one table of API differences between 1.41 (the oldest daemon the gateway translates) and
MOORAGE_MAX_API, from the CHANGELOG of the Docker Engine API. Each row: the version a change
appeared in, the operations it concerns, and how the gateway bridges it (rows.py says what each
handling means; docs/divergences.md#api-versions lists them for users). Rows of one version
apply oldest first to answers and newest first to requests; every answer transform leaves an
answer that already has its target shape as it is.

Changes that need nothing from the gateway are not rows: fields a newer dockerd leaves out when
unset and this daemon never sets (image Manifests, Descriptor, Identity, a container's
ImageManifestDescriptor: all filled only by a containerd image store; /info's Containerd,
FirewallBackend, DiscoveredDevices, NRI), query parameters this daemon ignores just as a newer
one does when unset, and unversioned changes."""

from __future__ import annotations

from gateway.versions import containers as c
from gateway.versions import images as i
from gateway.versions import system as s
from gateway.versions.rows import CONVERTED, DROPPED, EMULATED, OMITTED, REFUSED, Row

CREATE = ("ContainerCreate",)
INSPECT = ("ContainerInspect",)
IMAGE = ("ImageInspect",)
IMAGES = ("ImageList",)
INFO = ("SystemInfo",)
DF = ("SystemDataUsage",)
NETWORKS = ("NetworkInspect", "NetworkList")

ROWS: list[Row] = [
    # -- 1.42 --------------------------------------------------------------------------------
    Row(
        "1.42",
        (*CREATE, "ContainerExec"),
        "HostConfig.ConsoleSize (exec: ConsoleSize)",
        DROPPED,
        c.console_size,
    ),
    Row("1.42", CREATE, "Mounts[].BindOptions.CreateMountpoint", REFUSED, c.create_mountpoint),
    Row(
        "1.42",
        (*CREATE, "ContainerUpdate"),
        "KernelMemory no longer applied",
        DROPPED,
        c.kernel_memory,
        older_request=c.kernel_memory,
    ),
    Row(
        "1.42",
        INSPECT,
        "KernelMemory, KernelMemoryTCP omitted when unset",
        CONVERTED,
        answer=c.kernel_memory_omitted,
        older_answer=c.kernel_memory_older,
    ),
    Row("1.42", ("ContainerStop", "ContainerRestart"), "`signal` query parameter", REFUSED, c.stop_signal),
    Row(
        "1.42",
        INFO,
        "KernelMemory, KernelMemoryTCP omitted when unsupported",
        CONVERTED,
        answer=s.info_kernel_memory,
        older_answer=s.info_kernel_memory_older,
    ),
    Row(
        "1.42",
        DF,
        "`type` query parameter; BuilderSize removed",
        CONVERTED,
        answer=s.df_types,
        older_answer=s.df_types_older,
    ),
    Row(
        "1.42",
        ("VolumePrune",),
        "prune removes only anonymous volumes unless `all`",
        REFUSED,
        s.volume_prune_anonymous,
    ),
    # -- 1.43 --------------------------------------------------------------------------------
    Row("1.43", CREATE, "HostConfig.Annotations", REFUSED, c.annotations),
    Row(
        "1.43",
        IMAGES,
        "no <none>:<none> / <none>@<none> for untagged images",
        CONVERTED,
        answer=i.no_none_tags,
        older_answer=i.none_tags_older,
    ),
    # -- 1.44 --------------------------------------------------------------------------------
    Row(
        "1.44",
        CREATE,
        "several EndpointsConfig: create, then connect the others",
        EMULATED,
        c.several_endpoints,
    ),
    Row(
        "1.44",
        CREATE,
        "MacAddress per endpoint (Config.MacAddress deprecated)",
        CONVERTED,
        c.endpoint_mac_address,
        older_request=c.config_mac_address_older,
    ),
    Row(
        "1.44",
        ("NetworkConnect",),
        "EndpointConfig.MacAddress (ignored until 1.54)",
        DROPPED,
        c.connect_mac_address,
    ),
    Row(
        "1.44",
        CREATE,
        "Healthcheck.StartInterval (refused only inside a StartPeriod)",
        REFUSED,
        c.start_interval,
        older_request=c.start_interval_older,
    ),
    Row(
        "1.44",
        CREATE,
        "BindOptions.ReadOnlyNonRecursive / ReadOnlyForceRecursive",
        CONVERTED,
        c.bind_recursive,
    ),
    Row(
        "1.44",
        INSPECT,
        "DNSNames per endpoint",
        CONVERTED,
        answer=c.dns_names,
        older_answer=c.dns_names_older,
    ),
    Row(
        "1.44",
        IMAGES + IMAGE,
        "VirtualSize removed",
        CONVERTED,
        answer=i.no_virtual_size,
        older_answer=i.virtual_size_older,
    ),
    Row("1.44", IMAGE, "Created omitted when the config has none", CONVERTED, answer=i.no_zero_created),
    Row(
        "1.44",
        DF,
        "VirtualSize removed from images",
        CONVERTED,
        answer=s.df_virtual_size,
        older_answer=s.df_virtual_size_older,
    ),
    Row("1.44", INFO, "CDISpecDirs", CONVERTED, answer=s.info_cdi, older_answer=s.info_cdi_older),
    # -- 1.45 --------------------------------------------------------------------------------
    Row("1.45", CREATE, "Mounts[].VolumeOptions.Subpath", REFUSED, c.volume_subpath),
    Row("1.45", IMAGE, "Container and ContainerConfig removed", CONVERTED, answer=i.no_container_config),
    Row(
        "1.45",
        INSPECT,
        "Aliases exactly as given (no short ID)",
        CONVERTED,
        answer=c.aliases_as_given,
        older_answer=c.aliases_with_short_id,
    ),
    # -- 1.46 --------------------------------------------------------------------------------
    Row("1.46", CREATE, "Mounts[].TmpfsOptions.Options", REFUSED, c.tmpfs_options),
    Row("1.46", ("ImagePush",), "`platform` query parameter", REFUSED, i.push_platform),
    # -- 1.47 --------------------------------------------------------------------------------
    Row("1.47", IMAGES, "Manifests (containerd image store only)", OMITTED),
    # -- 1.48 --------------------------------------------------------------------------------
    Row("1.48", CREATE, 'Mounts[].Type "image"', REFUSED, c.image_mounts),
    Row("1.48", (*CREATE, "NetworkConnect"), "GwPriority per endpoint", CONVERTED, c.gw_priority),
    Row(
        "1.48",
        (*INSPECT, "ContainerList"),
        "GwPriority per endpoint in answers",
        CONVERTED,
        answer=c.gw_priority_answer,
        older_answer=c.gw_priority_older,
    ),
    Row(
        "1.48",
        ("ImageHistory", "ImageGet", "ImageGetAll", "ImageLoad"),
        "`platform` query parameter",
        REFUSED,
        i.platform_param,
    ),
    Row("1.48", IMAGES + IMAGE, "Descriptor (containerd image store only)", OMITTED),
    Row("1.48", ("NetworkCreate",), "EnableIPv4", CONVERTED, s.create_enable_ipv4),
    Row(
        "1.48",
        NETWORKS,
        "EnableIPv4 in answers",
        CONVERTED,
        answer=s.enable_ipv4,
        older_answer=s.enable_ipv4_older,
    ),
    # -- 1.49 --------------------------------------------------------------------------------
    Row(
        "1.49",
        IMAGE,
        "`platform` query parameter (one platform per image here)",
        EMULATED,
        i.manifests_refused_with_platform,
        answer=i.platform_matches,
    ),
    Row(
        "1.49",
        INFO,
        "no Expected commits, no non-distributable registry settings",
        CONVERTED,
        answer=s.info_expected_commits,
    ),
    # -- 1.50 --------------------------------------------------------------------------------
    Row(
        "1.50",
        IMAGE,
        "Config holds only image config fields",
        CONVERTED,
        answer=i.image_config_only,
        older_answer=i.image_config_older,
    ),
    Row(
        "1.50",
        INFO,
        "BridgeNfIptables, BridgeNfIp6tables omitted",
        CONVERTED,
        answer=s.info_bridge_nf,
        older_answer=s.info_bridge_nf_older,
    ),
    # -- 1.51 --------------------------------------------------------------------------------
    Row("1.51", IMAGES, "Containers counts the image's containers (was -1)", OMITTED),
    # -- 1.52 --------------------------------------------------------------------------------
    Row(
        "1.52",
        INSPECT,
        "legacy NetworkSettings fields, KernelMemoryTCP, empty OnBuild removed",
        CONVERTED,
        answer=c.legacy_network_settings,
        older_answer=c.legacy_network_settings_older,
    ),
    Row("1.52", ("ContainerUpdate",), "KernelMemoryTCP removed", DROPPED, c.kernel_memory_tcp),
    Row(
        "1.52",
        IMAGE,
        "empty Config fields, Parent, Comment, DockerVersion, Author omitted",
        CONVERTED,
        answer=i.omit_empty_fields,
    ),
    Row("1.52", INFO, "KernelMemoryTCP removed from /info", CONVERTED, answer=s.info_kernel_memory_tcp),
    Row(
        "1.52",
        DF,
        "ImageUsage, ContainerUsage, VolumeUsage, BuildCacheUsage; `verbose`",
        CONVERTED,
        answer=s.df_usage,
    ),
    Row(
        "1.52",
        ("SystemEvents",),
        "events without status, id, from",
        CONVERTED,
        answer=s.events_without_legacy,
        older_answer=s.events_with_legacy,
    ),
    # -- 1.53 --------------------------------------------------------------------------------
    Row(
        "1.53",
        DF,
        "legacy LayersSize, Images, Containers, Volumes, BuildCache removed",
        CONVERTED,
        answer=s.df_legacy_gone,
    ),
    # -- 1.54 --------------------------------------------------------------------------------
    Row(
        "1.54",
        ("NetworkConnect",),
        "EndpointConfig.MacAddress applied",
        REFUSED,
        c.connect_mac_address_applied,
    ),
    # -- 1.55 --------------------------------------------------------------------------------
    Row(
        "1.55",
        ("ContainerUpdate",),
        "per-device blkio settings applied",
        REFUSED,
        c.blkio_devices,
        older_request=c.blkio_devices_ignored,
    ),
]
