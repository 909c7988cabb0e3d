"""Policy on request bodies, resource defaults and maxima, input bounds (gateway.policy)."""

import json
import os
import time

import pytest

from gateway import config, instances, store
from gateway.errors import DockerError
from gateway.policy import RULES, Checker, reserved_ports
from gateway.policy.bodies import fold
from gateway.tenancy import Identity

ALPHA = Identity("alpha-id", roles=("member",))
BETA = Identity("beta-id", roles=("member",))
ADMIN = Identity("admin-id", roles=("admin",))


@pytest.fixture
def policy_path(tmp_path):
    return tmp_path / "policy.yaml"


@pytest.fixture
def checker(policy_path):
    # The real socket's rule: with [policy] tenant_socket off (on, a bind of it is the tenant
    # socket: test_tenant_socket_policy.py).
    return Checker(config.PolicySettings(file=str(policy_path), tenant_socket=False), config.LimitsSettings())


def write_policy(path, rules: dict) -> None:
    path.write_text("".join(f'"{k}": "{v}"\n' for k, v in rules.items()))
    stamp = time.time() + (getattr(write_policy, "n", 0) + 1) * 10  # a new mtime on every write
    write_policy.n = getattr(write_policy, "n", 0) + 1
    os.utime(path, (stamp, stamp))


def refused(call, *args, **kwargs) -> DockerError:
    with pytest.raises(DockerError) as exc:
        call(*args, **kwargs)
    return exc.value


def hc(**fields):
    """The v1.41 shape: HostConfig fields inside HostConfig."""
    return {"Image": "busybox", "HostConfig": fields}


def top(**fields):
    """The v1.24-and-earlier shape: HostConfig fields at the top level of the create body."""
    return {"Image": "busybox", **fields}


VOLUME_BIND = {
    "Type": "volume",
    "Source": "v",
    "Target": "/x",
    "VolumeOptions": {
        "DriverConfig": {"Name": "local", "Options": {"type": "none", "o": "bind", "device": "/etc"}}
    },
}

# (rule, HostConfig fields, text the message must carry)
REFUSED = [
    ("container:create:privileged", {"Privileged": True}, "privileged mode"),
    ("container:create:bind_mount", {"Binds": ["/etc:/host-etc:ro"]}, "instance path /etc"),
    ("container:create:bind_mount", {"Binds": ["/:/host"]}, "instance path /"),
    ("container:create:bind_mount", {"Binds": ["./rel:/x"]}, "instance path /rel"),
    ("container:create:bind_mount", {"Mounts": [{"Type": "bind", "Source": "/srv", "Target": "/x"}]}, "/srv"),
    ("container:create:bind_mount", {"Mounts": [VOLUME_BIND]}, "/etc"),
    (
        "container:create:docker_socket",
        {"Binds": ["/var/run/docker.sock:/var/run/docker.sock"]},
        "Docker socket",
    ),
    ("container:create:docker_socket", {"Binds": ["//run/../run/docker.sock:/s"]}, "/run/docker.sock"),
    (
        "container:create:docker_socket",
        {"Mounts": [{"Type": "BIND", "Source": "/run/docker.sock", "Target": "/s"}]},
        "Docker socket",
    ),
    ("container:create:host_network", {"NetworkMode": "host"}, "network namespace"),
    ("container:create:host_pid", {"PidMode": "host"}, "PID namespace"),
    ("container:create:host_ipc", {"IpcMode": "host"}, "IPC namespace"),
    ("container:create:host_uts", {"UTSMode": "host"}, "UTS namespace"),
    ("container:create:host_userns", {"UsernsMode": "host"}, "user namespace"),
    ("container:create:host_cgroupns", {"CgroupnsMode": "host"}, "cgroup namespace"),
    (
        "container:create:devices",
        {
            "Devices": [
                {"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"}
            ]
        },
        "--device",
    ),
    ("container:create:devices", {"DeviceCgroupRules": ["c 1:3 rwm"]}, "--device-cgroup-rule"),
    ("container:create:devices", {"DeviceRequests": [{"Count": -1, "Capabilities": [["gpu"]]}]}, "--gpus"),
    ("container:create:cap_add", {"CapAdd": ["SYS_ADMIN"]}, "SYS_ADMIN"),
    ("container:create:cap_add", {"CapAdd": ["cap_net_admin"]}, "NET_ADMIN"),
    ("container:create:cap_add", {"CapAdd": "ALL"}, "every capability"),
    ("container:create:security_opt", {"SecurityOpt": ["seccomp=unconfined"]}, "unconfined seccomp"),
    ("container:create:security_opt", {"SecurityOpt": ["seccomp:unconfined"]}, "unconfined seccomp"),
    (
        "container:create:security_opt",
        {"SecurityOpt": ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}']},
        "custom seccomp",
    ),
    ("container:create:security_opt", {"SecurityOpt": ["apparmor=unconfined"]}, "AppArmor"),
    ("container:create:security_opt", {"SecurityOpt": ["label=disable"]}, "SELinux"),
    ("container:create:security_opt", {"SecurityOpt": ["label:type:spc_t"]}, "SELinux"),
    ("container:create:security_opt", {"SecurityOpt": ["label=level:s0:c100,c200"]}, "SELinux"),
    ("container:create:security_opt", {"SecurityOpt": ["disable"]}, "SELinux"),
    ("container:create:system_paths", {"MaskedPaths": []}, "MaskedPaths"),
    ("container:create:system_paths", {"ReadonlyPaths": ["/proc/sys"]}, "ReadonlyPaths"),
    ("container:create:cgroup_parent", {"CgroupParent": "/system.slice"}, "--cgroup-parent"),
    ("container:create:sysctls", {"Sysctls": {"kernel.msgmax": "1"}}, "kernel.msgmax"),
    ("container:create:sysctls", {"Sysctls": {"net/core/somaxconn": "1024"}}, "net.core.somaxconn"),
    ("container:create:runtime", {"Runtime": "nvidia"}, "nvidia"),
    ("container:create:oom_score_adj", {"OomScoreAdj": -1000}, "OOM score"),
    ("container:create:oom_kill_disable", {"OomKillDisable": True}, "OOM killer"),
    (
        "container:create:log_driver",
        {"LogConfig": {"Type": "syslog", "Config": {"syslog-address": "tcp://198.18.0.1:514"}}},
        "syslog",
    ),
    (
        "container:create:privileged_ports",
        {"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "80"}]}},
        "the instance's port 80 (-p 80:80/tcp",
    ),
    ("container:create:privileged_ports", {"PortBindings": {"22/tcp": [{"HostPort": "22"}]}}, "port 22"),
    (
        "container:create:privileged_ports",
        {"PortBindings": {"8080/tcp": [{"HostPort": "1000-1100"}]}},
        "port 1000",
    ),
    ("container:create:privileged_ports", {"PortBindings": {"53/udp": [{"hostport": "0-53"}]}}, "port 1 "),
    (
        "container:create:host_ip",
        {"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}},
        "the instance's address 127.0.0.1 (-p 127.0.0.1:8080:80/tcp)",
    ),
    (
        "container:create:host_ip",
        {"PortBindings": {"80/tcp": [{"hostip": "198.18.0.5", "hostport": ""}]}},
        "198.18.0.5",
    ),
    (
        "container:create:host_ip",
        {"PortBindings": {"80/tcp": [{"HostIp": "169.254.169.254"}]}},
        "169.254.169.254",
    ),
]

ALLOWED = [
    {"Binds": ["data:/data", "my_vol.1:/x:ro", "/anonymous"]},
    {"Mounts": [{"Type": "volume", "Source": "v", "Target": "/v"}, {"Type": "tmpfs", "Target": "/t"}]},
    {
        "Mounts": [
            {
                "Type": "volume",
                "Target": "/v",
                "VolumeOptions": {
                    "DriverConfig": {
                        "Name": "local",
                        "Options": {"type": "tmpfs", "device": "tmpfs", "o": "size=64m"},
                    }
                },
            }
        ]
    },
    {"CapAdd": ["chown", "CAP_NET_BIND_SERVICE", "Sys_Chroot"], "CapDrop": ["ALL"]},
    {
        "SecurityOpt": [
            "no-new-privileges",
            "no-new-privileges:false",
            "no-new-privileges=true",
            "apparmor=docker-default",
        ]
    },
    {"Sysctls": {"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shm_rmid_forced": "1"}},
    {"Runtime": "runc"},
    {"Runtime": ""},
    {"NetworkMode": "bridge"},
    {"NetworkMode": "default"},
    {"NetworkMode": "none"},
    {"NetworkMode": "my-net"},
    {"NetworkMode": "container:other"},
    {"PidMode": "container:other"},
    {"IpcMode": "shareable"},
    {"IpcMode": "container:other"},
    {"VolumesFrom": ["other:ro"]},
    {"Links": ["other:alias"]},
    {"Devices": [], "DeviceCgroupRules": None, "DeviceRequests": []},
    {"MaskedPaths": None, "ReadonlyPaths": None},
    {"OomScoreAdj": 500},
    {"OomKillDisable": False},
    {"Privileged": False},
    {"LogConfig": {"Type": "json-file", "Config": {"max-size": "10m"}}},
    {"CgroupParent": ""},
    {"Tmpfs": {"/run": "rw,size=64m"}},
    # ports the daemon chooses (-p 80, -P), on every address; unparsable ones dockerd refuses itself
    {
        "PortBindings": {
            "80/tcp": [{"HostIp": "", "HostPort": ""}],
            "81/udp": [{"HostPort": "0"}],
            "82/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
            "83/tcp": [{"HostIp": "::", "HostPort": "1024-1030"}],
            "84/tcp": None,
            "85/tcp": [None, 1],
            "86/tcp": [{"HostPort": "x"}],
        },
        "PublishAllPorts": True,
        "ExposedPorts": {"80/tcp": {}},
    },
    {"PortBindings": {"80/tcp": [{"HostPort": "65535"}]}},
    {"PortBindings": ["80:80"]},
]


@pytest.mark.parametrize("shape", [hc, top], ids=["v1.41", "v1.24-top-level"])
@pytest.mark.parametrize(
    "rule,fields,text", REFUSED, ids=[f"{r[0].split(':')[-1]}-{i}" for i, r in enumerate(REFUSED)]
)
def test_refused_by_default_with_a_message_naming_the_setting_and_rule(checker, shape, rule, fields, text):
    err = refused(
        checker.container_create,
        ALPHA,
        shape(**json.loads(json.dumps(fields))),
        version="1.24" if shape is top else "1.41",
    )
    assert err.status == 403
    assert f'policy rule "{rule}"' in err.message
    assert text in err.message
    assert "ask your operator to allow that rule for project alpha-id" in err.message


@pytest.mark.parametrize("shape", [hc, top], ids=["v1.41", "v1.24-top-level"])
@pytest.mark.parametrize(
    "rule,fields,text", REFUSED, ids=[f"{r[0].split(':')[-1]}-{i}" for i, r in enumerate(REFUSED)]
)
def test_each_rule_is_allowed_per_project_and_per_role(checker, policy_path, shape, rule, fields, text):
    rules = {rule: "project_id:alpha-id or role:admin"}
    if rule.endswith((":docker_socket", ":bind_mount")):  # a socket is a bind mount, and / holds one
        rules["container:create:bind_mount"] = rules["container:create:docker_socket"] = rules[rule]
    write_policy(policy_path, rules)
    checker.container_create(ALPHA, shape(**json.loads(json.dumps(fields))))
    checker.container_create(ADMIN, shape(**json.loads(json.dumps(fields))))
    assert refused(checker.container_create, BETA, shape(**json.loads(json.dumps(fields)))).status == 403


@pytest.mark.parametrize("fields", ALLOWED, ids=[str(i) for i in range(len(ALLOWED))])
def test_harmless_settings_pass_without_a_policy_file(checker, fields):
    checker.container_create(ALPHA, hc(**fields))
    checker.container_create(ALPHA, top(**fields), version="1.23")


def test_the_socket_alone_is_not_enough_nor_are_bind_mounts_alone(checker, policy_path):
    sock = hc(Binds=["/var/run/docker.sock:/var/run/docker.sock"])
    write_policy(policy_path, {"container:create:bind_mount": "@"})
    assert "docker_socket" in refused(checker.container_create, ALPHA, json.loads(json.dumps(sock))).message
    checker.container_create(ALPHA, hc(Binds=["/srv/data:/data"]))
    # a directory holding the socket needs both rules as well
    assert "docker_socket" in refused(checker.container_create, ALPHA, hc(Binds=["/var/run:/r"])).message
    write_policy(policy_path, {"container:create:docker_socket": "@"})
    assert "bind_mount" in refused(checker.container_create, ALPHA, json.loads(json.dumps(sock))).message


def test_field_names_are_matched_as_gos_decoder_matches_them(checker):
    for body in (
        {"hostconfig": {"privileged": True}},
        {"HOSTCONFIG": {"PRIVILEGED": True}},
        {"HostConfig": {"Bind\u017f": ["/etc:/x"]}},
        {"privileged": True},
        {"HostConfig": {"\u212aernelMemory": 0, "NetworkMode": "host"}},
        {"HostConfig": {"Mounts": [{"type": "bind", "source": "/etc", "target": "/x"}]}},
    ):
        assert refused(checker.container_create, ALPHA, body).status == 403, body
    assert fold("Bind\u017f") == "BINDS" and fold("\u212aill") == "KILL"


def test_a_field_sent_twice_in_two_spellings_is_refused_not_guessed(checker):
    err = refused(checker.container_create, ALPHA, {"HostConfig": {"Privileged": False, "privileged": True}})
    assert err.status == 400 and "more than once" in err.message


def test_top_level_host_fields_are_checked_even_beside_a_hostconfig(checker):
    assert refused(checker.container_create, ALPHA, {"HostConfig": {}, "Privileged": True}).status == 403


def test_networking_config_naming_the_host_network_is_host_networking(checker):
    body = hc(NetworkMode="bridge")
    body["NetworkingConfig"] = {"EndpointsConfig": {"host": {}}}
    assert "host_network" in refused(checker.container_create, ALPHA, body).message


def test_malformed_bodies_are_left_to_dockerd_and_never_crash(checker):
    for body in (
        None,
        [],
        "x",
        1,
        {"HostConfig": "x"},
        {"HostConfig": {"Binds": "x:/y"}},
        {"HostConfig": {"Binds": [1, None]}},
        {"HostConfig": {"Mounts": [1, "x", None]}},
        {"HostConfig": {"Mounts": {"Type": "bind"}}},
        {"HostConfig": {"Sysctls": ["x"]}},
        {"HostConfig": {"SecurityOpt": [None, 1]}},
        {"HostConfig": {"CapAdd": [None]}},
        {"HostConfig": {"Memory": "1g", "NanoCpus": 1.5, "PidsLimit": True}},
        {"Labels": ["a"], "Env": "x"},
        {"HostConfig": {"LogConfig": "x"}},
        {"NetworkingConfig": {"EndpointsConfig": ["host"]}},
        {1: 2},
    ):
        checker.container_create(ALPHA, body)
        checker.container_update(ALPHA, body)
        checker.exec_create(ALPHA, body)
        checker.volume_create(ALPHA, body)
        checker.container_start(ALPHA, body)
        checker.network_create(ALPHA, body)


# -- start with a HostConfig (API < 1.24), update, exec, build, volumes --------------------------
def test_a_start_hostconfig_is_checked_as_a_create(checker, policy_path):
    assert "privileged" in refused(checker.container_start, ALPHA, {"Privileged": True}).message
    assert "bind_mount" in refused(checker.container_start, ALPHA, {"Binds": ["/:/h"]}).message
    write_policy(policy_path, {"container:create:privileged": "project_id:alpha-id"})
    checker.container_start(ALPHA, {"Privileged": True})


def test_update_devices_and_cgroup_parent(checker, policy_path):
    assert (
        "container:update:devices"
        in refused(checker.container_update, ALPHA, {"Devices": [{"PathOnHost": "/dev/sda"}]}).message
    )
    assert (
        "container:update:cgroup_parent"
        in refused(checker.container_update, ALPHA, {"CgroupParent": "x"}).message
    )
    checker.container_update(ALPHA, {"Memory": 1 << 30, "RestartPolicy": {"Name": "always"}})
    write_policy(policy_path, {"container:update:devices": "role:admin"})
    checker.container_update(ADMIN, {"Devices": [{"PathOnHost": "/dev/sda"}]})


def test_privileged_exec(checker, policy_path):
    err = refused(checker.exec_create, ALPHA, {"Cmd": ["sh"], "Privileged": True})
    assert err.status == 403 and 'policy rule "exec:create:privileged"' in err.message
    checker.exec_create(ALPHA, {"Cmd": ["sh"], "Privileged": False, "User": "root"})
    assert refused(checker.exec_create, ALPHA, {"cmd": ["sh"], "privileged": True}).status == 403
    write_policy(policy_path, {"exec:create:privileged": "project_id:alpha-id"})
    checker.exec_create(ALPHA, {"Cmd": ["sh"], "Privileged": True})


@pytest.mark.parametrize(
    "query,rule",
    [
        ("networkmode=host", "image:build:host_network"),
        ("t=x&networkmode=HOST", "image:build:host_network"),
        ("networkmode=bridge&networkmode=host", "image:build:host_network"),
        ("network%6Dode=host", "image:build:host_network"),
        ("remote=http%3A%2F%2F169.254.169.254%2Flatest", "image:build:remote"),
        ("remote=git%40github.com%3Ax%2Fy.git", "image:build:remote"),
        ("cgroupparent=%2Fsystem.slice", "image:build:cgroup_parent"),
    ],
)
def test_build_query_settings(checker, policy_path, query, rule):
    err = refused(checker.build, ALPHA, query, "application/x-tar")
    assert err.status == 403 and f'"{rule}"' in err.message
    write_policy(policy_path, {rule: "project_id:alpha-id"})
    checker.build(ALPHA, query, "application/x-tar")


def test_the_agents_port_is_never_published_whatever_the_policy(checker, policy_path):
    write_policy(policy_path, {"container:create:privileged_ports": "@", "container:create:host_ip": "@"})
    reserved = frozenset({2376, 9100})
    for port in ("2376", "2000-3000", "9100", "9000-9200"):
        body = hc(PortBindings={"80/tcp": [{"HostIp": "", "HostPort": port}]})
        err = refused(checker.container_create, ALPHA, body, reserved_ports=reserved)
        assert (
            err.status == 403 and "reserved for Moorage" in err.message and "policy rule" not in err.message
        )
    assert (
        "2376"
        in refused(
            checker.container_create,
            ALPHA,
            top(PortBindings={"2376/tcp": [{"HostPort": "2376"}]}),
            version="1.23",
        ).message
    )
    checker.container_create(
        ALPHA,
        hc(PortBindings={"80/tcp": [{"HostPort": "80"}, {"HostIp": "127.0.0.1", "HostPort": "2377"}]}),
        reserved_ports=reserved,
    )
    checker.container_create(
        ALPHA, hc(PortBindings={"2376/tcp": [{"HostPort": ""}]}), reserved_ports=reserved
    )


def test_reserved_ports_are_the_agents_and_the_operators():
    assert reserved_ports([]) == {2376}
    assert reserved_ports([9100, "9200", "x"], [7000, 2376]) == {2376, 7000, 9100, 9200}


def test_the_registered_agents_ports_come_from_the_store(tmp_path):
    store.init(
        config.Settings(
            gateway=config.GatewaySettings(database=f"sqlite:///{tmp_path}/m.db")
        ).gateway.database
    )
    for n, url in enumerate(["tcp://198.18.0.11:7000", "http://198.18.0.12:7001", "unix:///run/agent.sock"]):
        store.Instance.create(uuid=f"i{n}", agent_url=url, agent_secret="s", position=n)
    assert instances.agent_ports() == {7000, 7001}


@pytest.mark.parametrize(
    "query",
    [
        "fromSrc=http%3A%2F%2F169.254.169.254%2Flatest%2Fmeta-data",
        "169.254.169.254",
        "https://example.com/x.tar",
        "file:///etc/passwd",
        " -",
    ],
)
def test_import_from_a_url_is_refused(checker, policy_path, query):
    err = refused(checker.image_import, ALPHA, query)
    assert (
        err.status == 403
        and 'policy rule "image:import:url"' in err.message
        and "docker import -" in err.message
    )
    write_policy(policy_path, {"image:import:url": "project_id:alpha-id"})
    checker.image_import(ALPHA, query)
    assert refused(checker.image_import, BETA, query).status == 403


def test_import_from_the_body_passes(checker):
    checker.image_import(ALPHA, "-")
    checker.image_import(ALPHA, "")  # dockerd fetches "http://": nothing


NETWORK_REFUSED = [
    ("network:create:driver", {"Driver": "macvlan"}, "the network driver macvlan"),
    ("network:create:driver", {"Driver": "ipvlan", "Options": {"ipvlan_mode": "l2"}}, "ipvlan"),
    ("network:create:driver", {"driver": "overlay"}, "overlay"),
    ("network:create:driver", {"Driver": "some/plugin:latest"}, "some/plugin"),
    ("network:create:driver", {"IPAM": {"Driver": "infoblox"}}, "the IPAM driver infoblox"),
    ("network:create:bridge_name", {"Options": {"com.docker.network.bridge.name": "docker0"}}, "docker0"),
    (
        "network:create:bridge_name",
        {"Driver": "bridge", "Options": {"com.docker.network.bridge.name": "br-ex"}},
        "bridge interface",
    ),
    ("network:create:parent", {"Options": {"parent": "eth0"}}, "interface eth0"),
    ("network:create:subnet", {"IPAM": {"Config": [{"Subnet": "169.254.0.0/16"}]}}, "--subnet"),
    ("network:create:subnet", {"ipam": {"config": [{"Gateway": "198.19.9.1"}]}}, "--gateway"),
    ("network:create:config_from", {"ConfigFrom": {"Network": "other"}}, "--config-from"),
    ("network:create:config_from", {"ConfigOnly": True}, "--config-only"),
    (
        "network:create:driver_opts",
        {"Options": {"com.docker.network.bridge.host_binding_ipv4": "127.0.0.1"}},
        "host_binding_ipv4",
    ),
    (
        "network:create:driver_opts",
        {"Options": {"com.docker.network.bridge.gateway_mode_ipv4": "routed"}},
        "gateway_mode_ipv4",
    ),
]


@pytest.mark.parametrize(
    "rule,fields,text",
    NETWORK_REFUSED,
    ids=[f"{r[0].split(':')[-1]}-{i}" for i, r in enumerate(NETWORK_REFUSED)],
)
def test_network_settings_that_reach_the_instance(checker, policy_path, rule, fields, text):
    body = {"Name": "n", **fields}
    err = refused(checker.network_create, ALPHA, json.loads(json.dumps(body)))
    assert err.status == 403 and f'policy rule "{rule}"' in err.message and text in err.message
    write_policy(
        policy_path,
        {
            r: "project_id:alpha-id"
            for r in RULES
            if r.startswith("network:create:") and (r in (rule, "network:create:driver"))
        },
    )
    checker.network_create(ALPHA, json.loads(json.dumps(body)))
    assert refused(checker.network_create, BETA, json.loads(json.dumps(body))).status == 403


def test_macvlan_parent_needs_both_rules(checker, policy_path):
    body = {"Name": "n", "Driver": "macvlan", "Options": {"parent": "eth0", "macvlan_mode": "bridge"}}
    write_policy(policy_path, {"network:create:driver": "@"})
    assert "network:create:parent" in refused(checker.network_create, ALPHA, dict(body)).message
    write_policy(policy_path, {"network:create:parent": "@"})
    assert "network:create:driver" in refused(checker.network_create, ALPHA, dict(body)).message
    write_policy(policy_path, {"network:create:parent": "@", "network:create:driver": "@"})
    checker.network_create(ALPHA, dict(body))


def test_plain_networks_pass_and_are_bounded(checker):
    for body in (
        {"Name": "n"},
        {
            "Name": "n",
            "Driver": "bridge",
            "Internal": True,
            "Attachable": True,
            "EnableIPv6": False,
            "Labels": {"a": "b"},
            "IPAM": {"Driver": "default", "Config": [{}]},
            "Options": {
                "com.docker.network.bridge.enable_icc": "false",
                "com.docker.network.bridge.enable_ip_masquerade": "true",
                "com.docker.network.driver.mtu": "1400",
            },
        },
        {"Name": "n", "Driver": ""},
        None,
        [],
        {"Name": "n", "Options": ["x"], "IPAM": "x"},
    ):
        checker.network_create(ALPHA, body)
    assert (
        "limits.max_labels"
        in refused(
            checker.network_create, ALPHA, {"Name": "n", "Labels": {str(i): "" for i in range(300)}}
        ).message
    )
    assert (
        "network option"
        in refused(
            checker.network_create,
            ALPHA,
            {"Name": "n", "Options": {"com.docker.network.driver.mtu": "1" * 70_000}},
        ).message
    )
    assert "limits.max_name_length" in refused(checker.network_create, ALPHA, {"Name": "n" * 300}).message


def test_build_harmless_queries_and_form_bodies(checker):
    checker.build(
        ALPHA, "t=x&networkmode=bridge&extrahosts=a%3A1.2.3.4&remote=&nocache=1", "application/x-tar"
    )
    checker.build(ALPHA, "networkmode=default&remote=client-session", None)
    err = refused(checker.build, ALPHA, "t=x", "application/x-www-form-urlencoded")
    assert err.status == 400 and "tar archive" in err.message


@pytest.mark.parametrize(
    "opts",
    [
        {"type": "none", "o": "bind", "device": "/etc"},
        {"type": "tmpfs", "o": "bind", "device": "/etc"},
        {"o": "rbind", "device": "/"},
        {"type": "ext4", "device": "/dev/sda1"},
        {"type": "nfs", "o": "addr=198.18.0.1", "device": ":/export"},
        {"Type": "none", "O": "bind", "Device": "/var/run"},
    ],
)
def test_volume_driver_options_that_mount_the_instance(checker, policy_path, opts):
    body = {"Name": "v", "Driver": "local", "DriverOpts": opts}
    err = refused(checker.volume_create, ALPHA, body)
    assert err.status == 403 and 'policy rule "volume:create:host_bind"' in err.message
    assert (
        refused(checker.volume_create, ALPHA, {"Name": "v", "DriverOpts": opts}).status == 403
    )  # default driver
    write_policy(policy_path, {"volume:create:host_bind": "project_id:alpha-id"})
    checker.volume_create(ALPHA, body)


def test_plain_and_tmpfs_volumes_pass(checker):
    checker.volume_create(ALPHA, {"Name": "v"})
    checker.volume_create(ALPHA, {"Name": "v", "Driver": "local", "DriverOpts": {}})
    checker.volume_create(
        ALPHA, {"Name": "v", "DriverOpts": {"type": "tmpfs", "device": "tmpfs", "o": "size=100m"}}
    )
    checker.volume_create(ALPHA, {"Name": "v", "Driver": "some-plugin", "DriverOpts": {"type": "none"}})


# -- the policy file ----------------------------------------------------------------------------
def test_every_rule_defaults_to_refused_and_is_documented():
    assert all(name.count(":") == 2 for name in RULES)
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "policy.md")) as fh:
        doc = fh.read()
    for name in RULES:
        assert f"`{name}`" in doc, name


def test_the_file_is_reread_when_it_changes(checker, policy_path):
    body = hc(Privileged=True)
    assert refused(checker.container_create, ALPHA, dict(body)).status == 403
    write_policy(policy_path, {"container:create:privileged": "project_id:alpha-id"})
    checker.container_create(ALPHA, hc(Privileged=True))
    write_policy(policy_path, {"container:create:privileged": "project_id:beta-id"})
    assert refused(checker.container_create, ALPHA, hc(Privileged=True)).status == 403
    checker.container_create(BETA, hc(Privileged=True))
    policy_path.unlink()
    assert refused(checker.container_create, BETA, hc(Privileged=True)).status == 403


def test_a_broken_file_refuses_everything(checker, policy_path):
    write_policy(policy_path, {"container:create:privileged": "@"})
    checker.container_create(ALPHA, hc(Privileged=True))
    policy_path.write_text("{{{ not yaml")
    os.utime(policy_path, (time.time() + 1000, time.time() + 1000))
    assert refused(checker.container_create, ALPHA, hc(Privileged=True)).status == 403
    write_policy(
        policy_path, {"container:create:privileged": "project_id:alpha-id and ("}
    )  # unparsable check
    assert refused(checker.container_create, ALPHA, hc(Privileged=True)).status == 403


def test_rules_can_refer_to_other_rules_and_roles(checker, policy_path):
    policy_path.write_text(
        '"trusted": "project_id:alpha-id or role:operator"\n'
        '"container:create:privileged": "rule:trusted"\n'
        '"container:create:host_network": "@"\n'
    )
    checker.container_create(ALPHA, hc(Privileged=True))
    checker.container_create(Identity("x", roles=("Operator",)), hc(Privileged=True))
    assert refused(checker.container_create, BETA, hc(Privileged=True)).status == 403
    checker.container_create(BETA, hc(NetworkMode="host"))


def test_no_policy_file_configured_refuses_everything():
    checker = Checker(config.PolicySettings(), config.LimitsSettings())
    assert refused(checker.container_create, ADMIN, hc(Privileged=True)).status == 403


# -- resource defaults and maxima ---------------------------------------------------------------
LIMITS = config.LimitsSettings(
    default_memory="512m",
    max_memory="2g",
    default_cpus=1.0,
    max_cpus=2.0,
    default_pids=256,
    max_pids=1024,
    projects={"beta-id": config.ResourceLimits(max_memory="8g")},
)


@pytest.fixture
def limited(tmp_path):
    return Checker(config.PolicySettings(file=str(tmp_path / "none.yaml")), LIMITS)


def test_defaults_fill_what_the_request_lacks(limited):
    body = hc()
    limited.container_create(ALPHA, body)
    assert body["HostConfig"] == {"Memory": 512 << 20, "NanoCpus": 1_000_000_000, "PidsLimit": 256}
    body = hc(Memory=1 << 30, NanoCpus=500_000_000, PidsLimit=10)
    limited.container_create(ALPHA, body)
    assert body["HostConfig"] == {"Memory": 1 << 30, "NanoCpus": 500_000_000, "PidsLimit": 10}
    body = {"Image": "busybox"}  # a v1.24+ body without HostConfig gets one
    limited.container_create(ALPHA, body)
    assert body["HostConfig"]["Memory"] == 512 << 20
    body = {"Image": "busybox", "Binds": ["v:/v"]}  # the old form: the defaults go beside its fields
    limited.container_create(ALPHA, body, version="1.23")
    assert body["Memory"] == 512 << 20 and "HostConfig" not in body
    body = hc(CpuQuota=50_000)  # a quota is a CPU limit: no NanoCpus beside it
    limited.container_create(ALPHA, body)
    assert "NanoCpus" not in body["HostConfig"]
    body = hc(CpuPeriod=50_000)  # a period alone: the default is said as a quota of it
    limited.container_create(ALPHA, body)
    assert body["HostConfig"]["CpuQuota"] == 50_000 and "NanoCpus" not in body["HostConfig"]
    body = {"Image": "busybox", "hostconfig": {"memory": 0}}
    limited.container_create(ALPHA, body)
    assert body["hostconfig"]["memory"] == 512 << 20 and "Memory" not in body["hostconfig"]


@pytest.mark.parametrize(
    "fields,limit",
    [
        ({"Memory": 3 << 30}, "limits.max_memory"),
        ({"NanoCpus": 4_000_000_000}, "limits.max_cpus"),
        ({"CpuQuota": 300_000}, "limits.max_cpus"),
        ({"CpuQuota": 300_000, "CpuPeriod": 100_000}, "limits.max_cpus"),
        ({"PidsLimit": 5000}, "limits.max_pids"),
        ({"PidsLimit": -1}, "limits.max_pids"),
    ],
)
def test_limits_above_the_maximum_are_refused_naming_the_limit(limited, fields, limit):
    err = refused(limited.container_create, ALPHA, hc(**fields))
    assert err.status == 403 and limit in err.message and "alpha-id" in err.message
    assert refused(limited.container_create, ALPHA, top(**fields), version="1.23").status == 403
    assert refused(limited.container_start, ALPHA, dict(fields)).status == 403


def test_per_project_maxima(limited):
    limited.container_create(BETA, hc(Memory=4 << 30))
    assert refused(limited.container_create, ALPHA, hc(Memory=4 << 30)).status == 403


def test_update_is_held_to_the_maxima_but_gets_no_defaults(limited):
    body = {"RestartPolicy": {"Name": "no"}}
    limited.container_update(ALPHA, body)
    assert body == {"RestartPolicy": {"Name": "no"}}
    limited.container_update(ALPHA, {"Memory": 1 << 30, "NanoCpus": 2_000_000_000, "PidsLimit": 100})
    for fields in (
        {"Memory": 3 << 30},
        {"Memory": -1},
        {"NanoCpus": 3_000_000_000},
        {"CpuQuota": -1},
        {"PidsLimit": 0},
        {"PidsLimit": -1},
        {"PidsLimit": 2048},
    ):
        assert refused(limited.container_update, ALPHA, dict(fields)).status == 403, fields


def test_swap_is_bounded_with_a_memory_maximum(limited):
    err = refused(limited.container_create, ALPHA, hc(Memory=1 << 30, MemorySwap=-1))
    assert err.status == 403 and "unlimited swap (--memory-swap -1)" in err.message
    assert "limits.max_memory" in err.message and "at most 4 GiB" in err.message
    assert (
        refused(limited.container_create, ALPHA, top(Memory=1 << 30, MemorySwap=-1), version="1.23").status
        == 403
    )
    assert (
        refused(
            limited.container_create, ALPHA, {"Image": "busybox", "HostConfig": {}, "MemorySwap": -1}
        ).status
        == 403
    )
    assert refused(limited.container_update, ALPHA, {"Memory": 1 << 30, "MemorySwap": -1}).status == 403
    err = refused(limited.container_create, ALPHA, hc(Memory=1 << 30, MemorySwap=5 << 30))
    assert (
        "the memory and swap limit 5 GiB (--memory-swap)" in err.message
        and "twice limits.max_memory" in err.message
    )
    limited.container_create(ALPHA, hc(Memory=2 << 30, MemorySwap=4 << 30))
    limited.container_create(ALPHA, hc(Memory=1 << 30, MemorySwap=0))
    limited.container_create(BETA, hc(Memory=1 << 30, MemorySwap=16 << 30))  # beta's maximum is 8g
    Checker(config.PolicySettings(), config.LimitsSettings()).container_create(
        ALPHA, hc(Memory=1 << 30, MemorySwap=-1)
    )  # no maximum: dockerd's way


def test_shm_and_cpu_weight_are_bounded_by_the_maxima(limited):
    err = refused(limited.container_create, ALPHA, hc(ShmSize=3 << 30))
    assert "the /dev/shm size 3 GiB (--shm-size)" in err.message and "limits.max_memory" in err.message
    limited.container_create(ALPHA, hc(ShmSize=64 << 20))
    err = refused(limited.container_create, ALPHA, hc(CpuShares=4096))
    assert "the CPU weight 4096 (--cpu-shares)" in err.message and "limits.max_cpus" in err.message
    assert "2048, 1024 per CPU of 2 CPUs" in err.message
    limited.container_create(ALPHA, hc(CpuShares=2048))
    assert refused(limited.container_update, ALPHA, {"CpuShares": 262144}).status == 403
    Checker(config.PolicySettings(), config.LimitsSettings()).container_create(
        ALPHA, hc(ShmSize=64 << 30, CpuShares=262144)
    )


def build_query(pairs) -> dict:
    out = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def test_build_resources_get_the_defaults(limited):
    sent = build_query(limited.build(ALPHA, "t=x&rm=1", "application/x-tar"))
    assert sent == {"t": ["x"], "rm": ["1"], "memory": [str(512 << 20)], "cpuquota": ["100000"]}
    sent = build_query(limited.build(ALPHA, "cpuperiod=50000&memory=1073741824", "application/x-tar"))
    assert sent == {"memory": [str(1 << 30)], "cpuperiod": ["50000"], "cpuquota": ["50000"]}
    sent = build_query(
        limited.build(
            ALPHA,
            "cpuquota=150000&memswap=2147483648&cpushares=512&shmsize=67108864&cpusetcpus=0",
            "application/x-tar",
        )
    )
    assert sent == {
        "cpuquota": ["150000"],
        "memswap": [str(2 << 30)],
        "cpushares": ["512"],
        "shmsize": [str(64 << 20)],
        "cpusetcpus": ["0"],
        "memory": [str(512 << 20)],
    }
    # As dockerd reads them: the first value; what does not parse is 0 (and gets the default)
    sent = build_query(
        limited.build(ALPHA, "memory=1073741824&memory=9999999999999&cpuquota=lots", "application/x-tar")
    )
    assert sent["memory"] == [str(1 << 30)] and sent["cpuquota"] == ["100000"]
    sent = build_query(limited.build(ALPHA, "memory=&memory=9999999999999", "application/x-tar"))
    assert sent["memory"] == [str(512 << 20)]
    sent = build_query(limited.build(ALPHA, "shmsize=64m", "application/x-tar"))
    assert sent["shmsize"] == ["64m"]  # dockerd refuses it itself


@pytest.mark.parametrize(
    "query,limit",
    [
        ("memory=3221225472", "limits.max_memory"),
        ("memswap=-1", "unlimited swap"),
        ("memory=1073741824&memswap=8589934592", "limits.max_memory"),
        ("shmsize=4294967296", "--shm-size"),
        ("cpuquota=300000", "limits.max_cpus"),
        ("cpuquota=100000&cpuperiod=10000", "limits.max_cpus"),
        ("cpushares=8192", "--cpu-shares"),
    ],
)
def test_build_resources_above_the_maxima_are_refused(limited, query, limit):
    err = refused(limited.build, ALPHA, query, "application/x-tar")
    assert err.status == 403 and limit in err.message and "alpha-id" in err.message


def test_build_query_unchanged_without_limits(checker):
    query = "t=x&memory=abc&memswap=-1&cpushares=99999&shmsize=1&q=1"
    assert checker.build(ALPHA, query, "application/x-tar") == [
        ("t", "x"),
        ("q", "1"),
        ("memswap", "-1"),
        ("cpushares", "99999"),
        ("shmsize", "1"),
    ]


def test_a_maximum_alone_is_the_default():
    checker = Checker(config.PolicySettings(), config.LimitsSettings(max_memory="1g"))
    body = hc()
    checker.container_create(ALPHA, body)
    assert body["HostConfig"] == {"Memory": 1 << 30}


def test_nothing_configured_changes_nothing():
    checker = Checker(config.PolicySettings(), config.LimitsSettings())
    for body in (hc(), {"Image": "busybox"}, top(Binds=["v:/v"])):
        before = json.dumps(body)
        checker.container_create(ALPHA, body)
        assert json.dumps(body) == before


# -- input bounds ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body,limit",
    [
        ({"Labels": {f"l{i}": "" for i in range(257)}}, "limits.max_labels"),
        ({"Labels": {"k" * 1025: ""}}, "limits.max_label_key_bytes"),
        ({"Labels": {"k": "v" * (64 * 1024 + 1)}}, "limits.max_label_value_bytes"),
        ({"Labels": {f"l{i}": "v" * 60_000 for i in range(5)}}, "limits.max_labels_bytes"),
        ({"Env": [f"A{i}=1" for i in range(4097)]}, "limits.max_env"),
        ({"Env": ["A=" + "x" * (128 * 1024)]}, "limits.max_env_bytes"),
        ({"Env": ["A=" + "x" * (100 * 1024)] * 11}, "limits.max_env_total_bytes"),
        ({"labels": {f"l{i}": "" for i in range(257)}}, "limits.max_labels"),
    ],
)
def test_oversize_inputs_are_400_naming_the_limit(checker, body, limit):
    err = refused(checker.container_create, ALPHA, {"Image": "busybox", **body})
    assert err.status == 400 and limit in err.message


def test_names_exec_env_volume_and_build_labels_are_bounded(checker):
    checker.container_create(ALPHA, {"Image": "busybox"}, name="n" * 255)
    checker.container_create(ALPHA, {"Image": "busybox"}, name="/" + "n" * 255)
    assert "limits.max_name_length" in refused(checker.container_create, ALPHA, {}, name="n" * 256).message
    assert refused(checker.exec_create, ALPHA, {"Env": ["A=1"] * 5000}).status == 400
    assert refused(checker.volume_create, ALPHA, {"Name": "v" * 300}).status == 400
    assert refused(checker.volume_create, ALPHA, {"Labels": {f"{i}": "" for i in range(300)}}).status == 400
    labels = json.dumps({f"{i}": "" for i in range(300)})
    assert refused(checker.build, ALPHA, "labels=" + labels, "application/x-tar").status == 400
    checker.build(ALPHA, "labels=not-json", "application/x-tar")


def test_input_bounds_are_configurable():
    checker = Checker(config.PolicySettings(), config.LimitsSettings(max_labels=2, max_name_length=10))
    assert refused(checker.container_create, ALPHA, {"Labels": {"a": "", "b": "", "c": ""}}).status == 400
    assert refused(checker.container_create, ALPHA, {}, name="x" * 11).status == 400


def test_loopback_publishing_is_the_projects_own_business_on_a_dedicated_instance():
    """-p 127.0.0.1:8080:80: refused by default on a shared instance, accepted on a dedicated
    one (no other project is there); any other single address still needs the rule."""
    loopback = {"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}}
    v6 = {"PortBindings": {"80/tcp": [{"HostIp": "::1", "HostPort": "8080"}]}}
    other = {"PortBindings": {"80/tcp": [{"HostIp": "198.18.0.5", "HostPort": "8080"}]}}
    shared = Checker(config.PolicySettings(), config.LimitsSettings())
    dedicated = Checker(config.PolicySettings(), config.LimitsSettings(), dedicated=True)
    for body in (loopback, v6):
        with pytest.raises(DockerError) as exc:
            shared.container_create(None, body)
        assert 'policy rule "container:create:host_ip"' in exc.value.message
        dedicated.container_create(None, body)
    with pytest.raises(DockerError):
        dedicated.container_create(None, other)
