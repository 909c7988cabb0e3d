"""One test per row of the version table (gateway/versions/table.py), through the same entry
points the gateway uses (translate_request, translate_answer), and the table's own rules."""

from __future__ import annotations

import copy
import json

import pytest

from gateway import versions
from gateway.errors import DockerError
from gateway.versions.rows import CONVERTED, DROPPED, EMULATED, OMITTED, REFUSED
from gateway.versions.table import ROWS

DAEMON = "1.41"
SHORT = "0123456789ab"
CID = SHORT + "c" * 52


def req(operation, body=None, query=(), client="1.55", daemon=DAEMON):
    return versions.translate_request(operation, client, daemon, copy.deepcopy(body), list(query))


def refused(operation, body=None, query=(), client="1.55", daemon=DAEMON) -> str:
    with pytest.raises(DockerError) as exc:
        req(operation, body, query, client, daemon)
    assert exc.value.status == 400
    return exc.value.message


def ans(operation, payload, client="1.55", spoken=(DAEMON,), query=None, reference=""):
    return versions.translate_answer(
        operation, client, list(spoken), copy.deepcopy(payload), query or {}, reference=reference
    )


TESTED: dict[tuple[str, str], object] = {}


def row(version: str, change: str):
    """Marks the test of the table row (version, change)."""

    def mark(fn):
        TESTED[(version, change)] = fn
        return fn

    return mark


# -- the table's rules ----------------------------------------------------------------------------


def test_every_row_has_a_test():
    rows = {(r.version, r.change) for r in ROWS}
    assert rows - set(TESTED) == set(), "rows without a test"
    assert set(TESTED) - rows == set(), "tests naming no row"


def test_rows_are_in_version_order_within_the_translated_range():
    order = [versions.parse(r.version) for r in ROWS]
    assert order == sorted(order)
    assert all(
        versions.parse(versions.TABLE_FLOOR) < v <= versions.parse(versions.MOORAGE_MAX_API) for v in order
    )
    assert all(r.handling in (CONVERTED, DROPPED, EMULATED, OMITTED, REFUSED) for r in ROWS)


def test_every_row_is_documented():
    with open("docs/divergences.md", encoding="utf-8") as f:
        text = f.read()
    for r in ROWS:
        assert f"| {r.version} | {r.change} |" in text, r.change


def test_same_versions_translate_nothing():
    body = {"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {"a": {}, "b": {}}}}
    assert req("ContainerCreate", body, client="1.41").body == body
    assert ans("ImageInspect", {"VirtualSize": 1}, client="1.41") == {"VirtualSize": 1}


def test_the_daemon_speaks_the_nearest_version():
    assert versions.for_daemon("1.55", "1.41", "1.12") == "1.41"
    assert versions.for_daemon("1.30", "1.41", "1.12") == "1.30"
    assert versions.for_daemon("1.30", "1.55", "1.44") == "1.44"
    assert versions.for_daemon("1.50", "", "") == "1.50"


def test_the_gateway_advertises_its_own_range_over_translatable_daemons():
    assert versions.advertised(["1.41", "1.41"]) == ("1.55", "1.24")
    assert versions.advertised([]) == ("1.55", "1.24")
    assert versions.advertised(["1.40", "1.41"]) == ("1.40", "1.24")  # below the table: its own


def test_answers_merged_from_daemons_of_several_versions_come_out_in_one_shape():
    image = {"Id": "sha256:x", "Size": 5, "VirtualSize": 5, "RepoTags": ["<none>:<none>"], "RepoDigests": []}
    newer = {"Id": "sha256:y", "Size": 6, "RepoTags": [], "RepoDigests": []}
    out = ans("ImageList", [image, newer], spoken=("1.41", "1.55"))
    assert out == [{"Id": "sha256:x", "Size": 5, "RepoTags": [], "RepoDigests": []}, newer]


# -- containers: create ------------------------------------------------------------------------------------


@row("1.42", "HostConfig.ConsoleSize (exec: ConsoleSize)")
def test_console_size_is_dropped():
    assert req("ContainerCreate", {"HostConfig": {"ConsoleSize": [24, 80]}}).body == {"HostConfig": {}}
    assert req("ContainerExec", {"Cmd": ["sh"], "ConsoleSize": [24, 80]}).body == {"Cmd": ["sh"]}
    assert req("ContainerCreate", {"HostConfig": {"ConsoleSize": [1, 1]}}, client="1.41").body["HostConfig"]


@row("1.42", "Mounts[].BindOptions.CreateMountpoint")
def test_create_mountpoint_is_refused():
    mount = {"Type": "bind", "Source": "/x", "Target": "/y", "BindOptions": {"CreateMountpoint": True}}
    assert "CreateMountpoint" in refused("ContainerCreate", {"HostConfig": {"Mounts": [mount]}})
    mount["BindOptions"]["CreateMountpoint"] = False
    req("ContainerCreate", {"HostConfig": {"Mounts": [mount]}})


@row("1.42", "KernelMemory no longer applied")
def test_kernel_memory_is_not_applied_from_1_42():
    assert req("ContainerCreate", {"HostConfig": {"KernelMemory": 1 << 20}}).body == {"HostConfig": {}}
    assert req("ContainerUpdate", {"KernelMemory": 1 << 20, "Memory": 5}).body == {"Memory": 5}
    kept = req("ContainerUpdate", {"KernelMemory": 1}, client="1.41").body
    assert kept == {"KernelMemory": 1}
    # An old client and a daemon that no longer reads it: dropped too.
    assert req("ContainerUpdate", {"KernelMemory": 1}, client="1.40", daemon="1.44").body == {}


@row("1.42", "KernelMemory, KernelMemoryTCP omitted when unset")
def test_kernel_memory_omitted_in_inspect():
    out = ans("ContainerInspect", {"HostConfig": {"KernelMemory": 0, "KernelMemoryTCP": 0, "Memory": 0}})
    assert out["HostConfig"] == {"Memory": 0}
    set_ = ans("ContainerInspect", {"HostConfig": {"KernelMemory": 5, "KernelMemoryTCP": 0}}, client="1.45")
    assert set_["HostConfig"] == {"KernelMemory": 5}
    older = ans("ContainerInspect", {"HostConfig": {}}, client="1.40", spoken=("1.44",))
    assert older["HostConfig"] == {"KernelMemory": 0, "KernelMemoryTCP": 0}


@row("1.42", "`signal` query parameter")
def test_stop_signal_is_refused():
    assert "signal" in refused("ContainerStop", query=[("signal", "SIGINT"), ("t", "1")])
    call = req("ContainerRestart", query=[("t", "1")])
    assert call.query == [("t", "1")] and not call.query_changed


@row("1.42", "KernelMemory, KernelMemoryTCP omitted when unsupported")
def test_info_kernel_memory_omitted():
    assert ans("SystemInfo", {"KernelMemory": False, "KernelMemoryTCP": False, "NCPU": 2}, client="1.43") == {
        "NCPU": 2
    }
    assert ans("SystemInfo", {"KernelMemory": True}, client="1.43") == {"KernelMemory": True}
    assert ans("SystemInfo", {}, client="1.41", spoken=("1.44",)) == {
        "KernelMemory": False,
        "KernelMemoryTCP": False,
    }


DF = {
    "LayersSize": 100,
    "Images": [{"Id": "i1", "Size": 60, "SharedSize": -1, "VirtualSize": 60, "Containers": 1}],
    "Containers": [
        {"Id": "c1", "State": "running", "SizeRw": 5},
        {"Id": "c2", "State": "exited", "SizeRw": 7},
    ],
    "Volumes": [{"Name": "v", "UsageData": {"RefCount": 0, "Size": 3}}],
    "BuildCache": None,
    "BuilderSize": 0,
}


@row("1.42", "`type` query parameter; BuilderSize removed")
def test_df_type_selects_kinds():
    out = ans("SystemDataUsage", DF, client="1.42", query={"type": ["volume"]})
    assert out["Images"] is None and out["Containers"] is None and out["LayersSize"] == 0
    assert out["Volumes"] == DF["Volumes"] and "BuilderSize" not in out
    assert ans("SystemDataUsage", DF, client="1.42")["Images"][0]["Id"] == "i1"
    assert ans("SystemDataUsage", {"LayersSize": 0}, client="1.41", spoken=("1.44",))["BuilderSize"] == 0


@row("1.42", "prune removes only anonymous volumes unless `all`")
def test_volume_prune_needs_the_all_filter():
    assert "--all" in refused("VolumePrune", query=[("filters", '{"label":["x"]}')])
    call = req("VolumePrune", query=[("filters", '{"all":["true"],"label":["x"]}')])
    assert call.query_changed and json.loads(dict(call.query)["filters"]) == {"label": ["x"]}
    assert req("VolumePrune", query=[("filters", '{"all":{"1":true}}')]).query == [("filters", "{}")]
    assert not req("VolumePrune", query=[("filters", "{}")], client="1.41").query_changed


@row("1.43", "HostConfig.Annotations")
def test_annotations_are_refused():
    assert "Annotations" in refused("ContainerCreate", {"HostConfig": {"Annotations": {"a": "b"}}})
    assert req("ContainerCreate", {"HostConfig": {"Annotations": {}}}).body == {"HostConfig": {}}


@row("1.43", "no <none>:<none> / <none>@<none> for untagged images")
def test_untagged_images_list_empty_arrays():
    image = {"RepoTags": ["<none>:<none>"], "RepoDigests": ["<none>@<none>"]}
    assert ans("ImageList", [image], client="1.43") == [{"RepoTags": [], "RepoDigests": []}]
    assert ans("ImageList", [{"RepoTags": [], "RepoDigests": []}], client="1.42", spoken=("1.44",)) == [image]


def endpoints_body(**endpoints):
    return {
        "Image": "busybox",
        "HostConfig": {"NetworkMode": "b"},
        "NetworkingConfig": {"EndpointsConfig": endpoints},
    }


@row("1.44", "several EndpointsConfig: create, then connect the others")
def test_several_endpoints_are_created_then_connected():
    call = req("ContainerCreate", endpoints_body(a={"Aliases": ["x"]}, b={}, c=None), client="1.44")
    assert call.body["NetworkingConfig"]["EndpointsConfig"] == {"b": {}}
    assert [(f.method, f.path, f.body) for f in call.followups] == [
        ("POST", "/networks/a/connect", {"Container": "{id}", "EndpointConfig": {"Aliases": ["x"]}}),
        ("POST", "/networks/c/connect", {"Container": "{id}", "EndpointConfig": {}}),
    ]
    assert call.undo is not None and call.undo.method == "DELETE"
    one = req("ContainerCreate", endpoints_body(b={}), client="1.44")
    assert one.followups == [] and one.undo is None
    # No network mode among them: the first listed is the one created on.
    first = req(
        "ContainerCreate", {"NetworkingConfig": {"EndpointsConfig": {"x": {}, "y": {}}}}, client="1.44"
    )
    assert list(first.body["NetworkingConfig"]["EndpointsConfig"]) == ["x"]


@row("1.44", "MacAddress per endpoint (Config.MacAddress deprecated)")
def test_endpoint_mac_address_becomes_the_containers():
    call = req("ContainerCreate", endpoints_body(b={"MacAddress": "02:42:c6:12:00:05"}))
    assert call.body["MacAddress"] == "02:42:c6:12:00:05"
    assert call.body["NetworkingConfig"]["EndpointsConfig"] == {"b": {}}
    assert "EndpointsConfig[a].MacAddress" in refused(
        "ContainerCreate", endpoints_body(a={"MacAddress": "02:42:c6:12:00:05"}, b={})
    )
    clash = endpoints_body(b={"MacAddress": "02:42:c6:12:00:05"})
    clash["MacAddress"] = "02:42:c6:12:00:06"
    assert "both" in refused("ContainerCreate", clash)
    older = req(
        "ContainerCreate", {"MacAddress": "02:42:c6:12:00:07", "HostConfig": {}}, client="1.41", daemon="1.52"
    )
    assert older.body["NetworkingConfig"]["EndpointsConfig"] == {
        "default": {"MacAddress": "02:42:c6:12:00:07"}
    }


@row("1.44", "EndpointConfig.MacAddress (ignored until 1.54)")
def test_connect_mac_address_ignored_as_dockerd_did():
    body = {"Container": "x", "EndpointConfig": {"MacAddress": "02:42:c6:12:00:05"}}
    assert req("NetworkConnect", body, client="1.50").body == {"Container": "x", "EndpointConfig": {}}


@row("1.44", "Healthcheck.StartInterval (refused only inside a StartPeriod)")
def test_start_interval():
    assert "StartInterval" in refused(
        "ContainerCreate",
        {"Healthcheck": {"StartInterval": 10**9, "StartPeriod": 10**10, "Interval": 3 * 10**10}},
    )
    no_period = req("ContainerCreate", {"Healthcheck": {"StartInterval": 10**9, "Interval": 10**9}})
    assert no_period.body == {"Healthcheck": {"Interval": 10**9}}
    same = req("ContainerCreate", {"Healthcheck": {"StartInterval": 5, "Interval": 5, "StartPeriod": 9}})
    assert "StartInterval" not in same.body["Healthcheck"]
    older = req("ContainerCreate", {"Healthcheck": {"StartInterval": 5}}, client="1.41", daemon="1.44")
    assert older.body == {"Healthcheck": {}}


@row("1.44", "BindOptions.ReadOnlyNonRecursive / ReadOnlyForceRecursive")
def test_read_only_recursion():
    mount = {"Type": "bind", "ReadOnly": True, "BindOptions": {"ReadOnlyNonRecursive": True}}
    out = req("ContainerCreate", {"HostConfig": {"Mounts": [mount]}}).body
    assert out["HostConfig"]["Mounts"][0]["BindOptions"] == {}
    mount["BindOptions"] = {"ReadOnlyForceRecursive": True}
    assert "ReadOnlyForceRecursive" in refused("ContainerCreate", {"HostConfig": {"Mounts": [mount]}})


INSPECT = {
    "Id": CID,
    "Name": "/web",
    "Config": {"Hostname": SHORT, "OnBuild": None},
    "HostConfig": {"NetworkMode": "app", "KernelMemory": 0, "KernelMemoryTCP": 0},
    "NetworkSettings": {
        "Bridge": "",
        "IPAddress": "",
        "MacAddress": "",
        "Networks": {
            "app": {"Aliases": ["web", "db", SHORT], "IPAddress": "198.18.0.3"},
            "bridge": {"Aliases": None, "IPAddress": "198.18.1.3"},
        },
    },
}


@row("1.44", "DNSNames per endpoint")
def test_dns_names_per_endpoint():
    out = ans("ContainerInspect", INSPECT, client="1.44")
    networks = out["NetworkSettings"]["Networks"]
    assert networks["app"]["DNSNames"] == ["web", "db", SHORT]
    assert networks["bridge"]["DNSNames"] is None
    assert networks["app"]["Aliases"] == ["web", "db", SHORT]  # 1.44 still has the short ID
    older = ans("ContainerInspect", out, client="1.41", spoken=("1.44",))
    assert "DNSNames" not in older["NetworkSettings"]["Networks"]["app"]


@row("1.44", "VirtualSize removed")
def test_virtual_size_removed():
    assert ans("ImageList", [{"Size": 5, "VirtualSize": 5}], client="1.44") == [{"Size": 5}]
    assert ans("ImageInspect", {"Size": 5, "VirtualSize": 5}, client="1.44") == {"Size": 5}
    assert ans("ImageInspect", {"Size": 5}, client="1.43", spoken=("1.44",)) == {"Size": 5, "VirtualSize": 5}


@row("1.44", "Created omitted when the config has none")
def test_zero_created_omitted():
    assert ans("ImageInspect", {"Created": "0001-01-01T00:00:00Z"}, client="1.44") == {}
    kept = {"Created": "2024-01-01T00:00:00Z"}
    assert ans("ImageInspect", kept, client="1.44") == kept


@row("1.44", "VirtualSize removed from images")
def test_df_virtual_size_removed():
    out = ans("SystemDataUsage", DF, client="1.44")
    assert "VirtualSize" not in out["Images"][0] and out["Images"][0]["Size"] == 60


@row("1.44", "CDISpecDirs")
def test_info_cdi_spec_dirs():
    assert ans("SystemInfo", {}, client="1.44")["CDISpecDirs"] == []
    assert "CDISpecDirs" not in ans("SystemInfo", {"CDISpecDirs": []}, client="1.43", spoken=("1.44",))


@row("1.45", "Mounts[].VolumeOptions.Subpath")
def test_volume_subpath_refused():
    mount = {"Type": "volume", "Source": "v", "Target": "/d", "VolumeOptions": {"Subpath": "x"}}
    assert "Subpath" in refused("ContainerCreate", {"HostConfig": {"Mounts": [mount]}})


@row("1.45", "Container and ContainerConfig removed")
def test_image_container_config_removed():
    out = ans("ImageInspect", {"Id": "x", "Container": "abc", "ContainerConfig": {}}, client="1.45")
    assert out == {"Id": "x"}
    assert ans("ImageInspect", {"Container": "abc"}, client="1.44") == {"Container": "abc"}


@row("1.45", "Aliases exactly as given (no short ID)")
def test_aliases_as_given():
    out = ans("ContainerInspect", INSPECT, client="1.45")
    app = out["NetworkSettings"]["Networks"]["app"]
    assert app["Aliases"] == ["web", "db"] and app["DNSNames"] == ["web", "db", SHORT]
    older = ans("ContainerInspect", out, client="1.44", spoken=("1.45",))
    assert older["NetworkSettings"]["Networks"]["app"]["Aliases"] == ["web", "db", SHORT]


@row("1.46", "Mounts[].TmpfsOptions.Options")
def test_tmpfs_options_refused():
    mount = {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"Options": [["exec"]]}}
    assert "TmpfsOptions.Options" in refused("ContainerCreate", {"HostConfig": {"Mounts": [mount]}})
    mount["TmpfsOptions"] = {"SizeBytes": 1024}
    req("ContainerCreate", {"HostConfig": {"Mounts": [mount]}})


@row("1.46", "`platform` query parameter")
def test_push_platform_refused():
    assert "platform" in refused("ImagePush", query=[("platform", '{"os":"linux"}')])
    assert req("ImagePush", query=[("platform", ""), ("tag", "x")]).query == [("tag", "x")]


@row("1.47", "Manifests (containerd image store only)")
def test_manifests_omitted():
    image = {"Id": "x", "Size": 1}
    assert ans("ImageList", [image], client="1.47", query={"manifests": ["1"]}) == [image]


@row("1.48", 'Mounts[].Type "image"')
def test_image_mounts_refused():
    assert '"image"' in refused("ContainerCreate", {"HostConfig": {"Mounts": [{"Type": "image"}]}})


@row("1.48", "GwPriority per endpoint")
def test_gw_priority():
    one = req("ContainerCreate", endpoints_body(b={"GwPriority": 5}))
    assert one.body["NetworkingConfig"]["EndpointsConfig"] == {"b": {}}
    picks_first = req("ContainerCreate", endpoints_body(a={"GwPriority": 1}, b={"GwPriority": 9}))
    assert all("GwPriority" not in f.body["EndpointConfig"] for f in picks_first.followups)
    assert "GwPriority" in refused("ContainerCreate", endpoints_body(a={"GwPriority": 9}, b={}))
    assert "GwPriority" in refused("NetworkConnect", {"Container": "x", "EndpointConfig": {"GwPriority": 1}})
    plain = req("NetworkConnect", {"Container": "x", "EndpointConfig": {"GwPriority": 0}})
    assert plain.body == {"Container": "x", "EndpointConfig": {}}


@row("1.48", "GwPriority per endpoint in answers")
def test_gw_priority_in_answers():
    listed = ans("ContainerList", [{"NetworkSettings": {"Networks": {"bridge": {}}}}], client="1.48")
    assert listed[0]["NetworkSettings"]["Networks"]["bridge"] == {"GwPriority": 0}
    out = ans("ContainerInspect", INSPECT, client="1.48")
    assert out["NetworkSettings"]["Networks"]["app"]["GwPriority"] == 0
    older = ans("ContainerList", listed, client="1.47", spoken=("1.48",))
    assert older[0]["NetworkSettings"]["Networks"]["bridge"] == {}


@row("1.48", "`platform` query parameter")
def test_platform_refused_on_history_save_load():
    for operation in ("ImageHistory", "ImageGet", "ImageGetAll", "ImageLoad"):
        assert "platform" in refused(operation, query=[("platform", '{"os":"linux","architecture":"arm64"}')])
    assert not req("ImageLoad", query=[("quiet", "1")]).query_changed


@row("1.48", "Descriptor (containerd image store only)")
def test_descriptor_omitted():
    assert "Descriptor" not in ans("ImageInspect", {"Id": "x"}, client="1.48")


@row("1.48", "EnableIPv4")
def test_network_create_enable_ipv4():
    assert "EnableIPv4" in refused("NetworkCreate", {"Name": "n", "EnableIPv4": False})
    assert req("NetworkCreate", {"Name": "n", "EnableIPv4": True}).body == {"Name": "n"}


@row("1.48", "EnableIPv4 in answers")
def test_network_enable_ipv4_in_answers():
    assert ans("NetworkInspect", {"Name": "n"}, client="1.48") == {"Name": "n", "EnableIPv4": True}
    assert ans("NetworkList", [{"Name": "n"}], client="1.48") == [{"Name": "n", "EnableIPv4": True}]
    assert ans("NetworkInspect", {"EnableIPv4": True}, client="1.47", spoken=("1.48",)) == {}


@row("1.49", "`platform` query parameter (one platform per image here)")
def test_image_inspect_platform():
    image = {"Id": "x", "Os": "linux", "Architecture": "amd64"}
    ok = ans(
        "ImageInspect", image, client="1.49", query={"platform": ['{"os":"linux","architecture":"amd64"}']}
    )
    assert ok == image
    with pytest.raises(DockerError) as exc:
        ans(
            "ImageInspect",
            image,
            client="1.49",
            query={"platform": ['{"os":"linux","architecture":"arm64"}']},
            reference="busybox",
        )
    assert exc.value.status == 404
    assert exc.value.message == (
        "image with reference busybox was found but does not match the specified platform: "
        "wanted linux/arm64, actual: linux/amd64"
    )
    assert "conflicting" in refused(
        "ImageInspect", query=[("platform", '{"os":"linux"}'), ("manifests", "1")], client="1.49"
    )


@row("1.49", "no Expected commits, no non-distributable registry settings")
def test_info_expected_commits():
    info = {
        "ContainerdCommit": {"ID": "a", "Expected": "a"},
        "RuncCommit": {"ID": "b", "Expected": "b"},
        "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": [], "IndexConfigs": {}},
    }
    out = ans("SystemInfo", info, client="1.49")
    assert out["ContainerdCommit"] == {"ID": "a"} and out["RuncCommit"] == {"ID": "b"}
    assert out["RegistryConfig"] == {"IndexConfigs": {}}


@row("1.50", "Config holds only image config fields")
def test_image_config_only():
    config = {"Hostname": "", "Tty": False, "Image": "", "Env": ["A=1"], "Cmd": ["sh"]}
    assert ans("ImageInspect", {"Config": config}, client="1.50")["Config"] == {"Env": ["A=1"], "Cmd": ["sh"]}
    older = ans("ImageInspect", {"Config": {"Cmd": ["sh"]}}, client="1.49", spoken=("1.50",))
    assert older["Config"]["Hostname"] == "" and older["Config"]["Tty"] is False


@row("1.50", "BridgeNfIptables, BridgeNfIp6tables omitted")
def test_info_bridge_nf():
    assert ans("SystemInfo", {"BridgeNfIptables": True, "BridgeNfIp6tables": True}, client="1.50") == {
        "CDISpecDirs": []
    }
    older = ans("SystemInfo", {}, client="1.49", spoken=("1.50",))
    assert older["BridgeNfIptables"] is False


@row("1.51", "Containers counts the image's containers (was -1)")
def test_image_list_containers_left_as_the_daemon_says():
    assert ans("ImageList", [{"Containers": -1}], client="1.51") == [{"Containers": -1}]


@row("1.52", "legacy NetworkSettings fields, KernelMemoryTCP, empty OnBuild removed")
def test_legacy_network_settings_removed():
    out = ans("ContainerInspect", INSPECT, client="1.52")
    assert "IPAddress" not in out["NetworkSettings"] and "Bridge" not in out["NetworkSettings"]
    assert "OnBuild" not in out["Config"] and "KernelMemoryTCP" not in out["HostConfig"]
    older = ans("ContainerInspect", out, client="1.51", spoken=("1.52",))
    assert older["NetworkSettings"]["IPAddress"] == "198.18.1.3"
    assert older["NetworkSettings"]["IPPrefixLen"] == 0 and older["NetworkSettings"]["Bridge"] == ""


@row("1.52", "KernelMemoryTCP removed")
def test_update_kernel_memory_tcp_dropped():
    assert req("ContainerUpdate", {"KernelMemoryTCP": 5}, client="1.52").body == {}
    assert req("ContainerUpdate", {"KernelMemoryTCP": 5}, client="1.51").body == {"KernelMemoryTCP": 5}


@row("1.52", "empty Config fields, Parent, Comment, DockerVersion, Author omitted")
def test_image_empty_fields_omitted():
    image = {"Parent": "", "Comment": "", "Author": "me", "Config": {"Cmd": None, "Env": [], "User": "u"}}
    out = ans("ImageInspect", image, client="1.52")
    assert out == {"Author": "me", "Config": {"User": "u"}}


@row("1.52", "KernelMemoryTCP removed from /info")
def test_info_kernel_memory_tcp_removed():
    assert ans("SystemInfo", {"KernelMemoryTCP": True}, client="1.52") == {"CDISpecDirs": []}


@row("1.52", "ImageUsage, ContainerUsage, VolumeUsage, BuildCacheUsage; `verbose`")
def test_df_usage_summaries():
    out = ans("SystemDataUsage", DF, client="1.52")
    assert out["ImageUsage"] == {"ActiveCount": 1, "TotalCount": 1, "Reclaimable": 40, "TotalSize": 100}
    assert out["ContainerUsage"] == {"ActiveCount": 1, "TotalCount": 2, "Reclaimable": 7, "TotalSize": 12}
    assert out["VolumeUsage"] == {"ActiveCount": 0, "TotalCount": 1, "Reclaimable": 3, "TotalSize": 3}
    assert out["BuildCacheUsage"]["TotalCount"] == 0
    assert out["Images"] and out["LayersSize"] == 100  # 1.52 still has the legacy fields
    verbose = ans("SystemDataUsage", DF, client="1.52", query={"verbose": ["1"], "type": ["container"]})
    assert set(verbose) == {"ContainerUsage"} and len(verbose["ContainerUsage"]["Items"]) == 2


@row("1.52", "events without status, id, from")
def test_events_without_legacy_fields():
    event = {
        "status": "start",
        "id": CID,
        "from": "busybox",
        "Type": "container",
        "Action": "start",
        "Actor": {"ID": CID, "Attributes": {"image": "busybox", "name": "web"}},
        "time": 1,
    }
    newer = ans("SystemEvents", event, client="1.52")
    assert set(newer) == {"Type", "Action", "Actor", "time"}
    assert ans("SystemEvents", newer, client="1.51", spoken=("1.52",)) == event


@row("1.53", "legacy LayersSize, Images, Containers, Volumes, BuildCache removed")
def test_df_legacy_gone():
    out = ans("SystemDataUsage", DF, client="1.53")
    assert set(out) == {"ImageUsage", "ContainerUsage", "VolumeUsage", "BuildCacheUsage"}
    assert "Items" not in out["ImageUsage"]


@row("1.54", "EndpointConfig.MacAddress applied")
def test_connect_mac_address_refused_from_1_54():
    body = {"Container": "x", "EndpointConfig": {"MacAddress": "02:42:c6:12:00:05"}}
    assert "MacAddress" in refused("NetworkConnect", body, client="1.54")


@row("1.55", "per-device blkio settings applied")
def test_update_blkio_devices():
    assert "BlkioDeviceReadBps" in refused("ContainerUpdate", {"BlkioDeviceReadBps": [{"Path": "/dev/x"}]})
    assert req("ContainerUpdate", {"BlkioDeviceReadBps": None, "Memory": 1}).body == {
        "BlkioDeviceReadBps": None,
        "Memory": 1,
    }
    older = req("ContainerUpdate", {"BlkioDeviceReadBps": [{"Path": "/dev/x"}]}, client="1.44", daemon="1.55")
    assert older.body == {}


@pytest.mark.parametrize("body", [None, [], "text", 5, {"HostConfig": 5, "NetworkingConfig": []}])
def test_bodies_of_any_shape_pass_every_request_row(body):
    """The daemon judges what is not a JSON object; the table must neither crash nor refuse it."""
    for r in ROWS:
        for operation in set(r.operations) - {"VolumePrune"}:  # refused by its query, whatever the body
            req(operation, body, client="1.55")
            req(operation, body, client="1.24", daemon="1.55")
