"""The settings file: typed sections, every key known, and the files the repo itself writes."""

from __future__ import annotations

import os
import sys

import pytest

from gateway import config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def no_environment(monkeypatch):
    monkeypatch.delenv("MOORAGE_CONFIG", raising=False)
    monkeypatch.delenv("MOORAGE_DB", raising=False)


def write(tmp_path, text: str) -> str:
    path = tmp_path / "moorage.toml"
    path.write_text(text)
    return str(path)


def error(tmp_path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(config.SettingsError) as exc:
        config.load(path)
    assert str(exc.value).startswith(f"{path}: ")
    return str(exc.value)[len(path) + 2 :]


def test_no_file_is_the_defaults():
    s = config.load(None)
    assert s == config.Settings()
    assert s.gateway.bind == ["tcp://127.0.0.1:2375"] and s.gateway.workers == 2
    assert s.gateway.heartbeat_timeout == 35.0
    assert s.placement == config.PlacementSettings(strategy="fill", capacity=0, provider="local")
    assert s.identity.backend == "embedded" and s.identity.negative_ttl == 5.0
    assert s.source == ""


def test_the_example_file_loads():
    path = os.path.join(REPO, "docs", "moorage.example.toml")
    s = config.load(path)
    assert s.source == path
    assert s.gateway.bind == ["tcp://0.0.0.0:2375"] and s.gateway.registration_secret == "CHANGE-ME"
    assert s.identity.backend == "keystone"
    assert s.policy.file == "/etc/moorage/policy.yaml"
    assert (s.limits.default_memory, s.limits.max_cpus, s.limits.max_pids) == ("1g", 4.0, 8192)


def test_every_section(tmp_path):
    s = config.load(
        write(
            tmp_path,
            """
[gateway]
bind = "unix:///run/moorage.sock"
workers = 4
heartbeat_interval = 2
[identity]
backend = "keystone"
auth_url = "http://keystone:5000"
username = "moorage"
password = "secret"
cache_ttl = 10
[placement]
tenancy = "shared"
strategy = "spread"
capacity = 3
provider = "nova"
reap_interval = 0.5
[nova]
flavor = "m1.moorage"
security_groups = ["default"]
empty_grace_seconds = 5
[policy]
reserved_ports = [9100, "9200"]
[limits]
max_memory = "8g"
max_labels = 10
[limits.projects.p1]
max_memory = "32g"
[quotas]
containers = 5
memory = "1g"
cpus = 2.5
""",
        )
    )
    assert s.gateway.bind == ["unix:///run/moorage.sock"]  # one string: a list of one
    assert s.gateway.workers == 4 and s.gateway.heartbeat_interval == 2.0
    assert isinstance(s.gateway.heartbeat_interval, float)  # an integer where a number goes
    assert s.identity.plugin_options == {"username": "moorage", "password": "secret"}
    assert s.identity.cache_ttl == 10.0 and s.identity.negative_ttl == 5.0
    assert s.placement == config.PlacementSettings("shared", "spread", 3, "nova", "moorage", 0.5)
    assert (s.nova.flavor, s.nova.security_groups, s.nova.empty_grace_seconds) == (
        "m1.moorage",
        ["default"],
        5.0,
    )
    assert s.nova.boot_timeout == 300.0  # the default
    assert s.policy.reserved_ports == [9100, "9200"]
    assert s.limits.max_memory == "8g" and s.limits.max_labels == 10 and s.limits.max_env == 4096
    assert s.limits.projects == {"p1": config.ResourceLimits(max_memory="32g")}
    assert s.quotas == config.QuotaSettings(containers=5, memory="1g", cpus=2.5)


def test_unknown_section(tmp_path):
    assert error(tmp_path, "[placment]\nstrategy = 'fill'\n") == (
        "unknown section [placment]; known: gateway, identity, placement, policy, limits, quotas, "
        "rate_limits, nova, local, notifications, events, notices, mesh, networks"
    )
    assert error(tmp_path, "bind = 'tcp://0.0.0.0:2375'\n").startswith(
        "unknown key (outside any section) [bind]; known: gateway"
    )


def test_unknown_key(tmp_path):
    assert error(tmp_path, "[placement]\nstratgy = 'spread'\n") == (
        "unknown key [placement] stratgy; known: tenancy, strategy, capacity, provider, pool_id, "
        "reap_interval, release_grace"
    )
    assert error(tmp_path, "[gateway]\ndatabse = 'sqlite://'\n").startswith(
        "unknown key [gateway] databse; known: bind,"
    )
    assert error(tmp_path, "[limits.projects.p1]\nmax_labels = 3\n").startswith(
        "unknown key [limits] projects.p1 max_labels; known: default_memory,"
    )
    assert error(tmp_path, "[quotas]\nimages = 5\ncontainer = 5\n").startswith(
        "unknown key [quotas] container;"
    )


def test_identity_keys_beyond_the_fields_are_keystones_only(tmp_path):
    message = error(tmp_path, "[identity]\ntoken_file = 'x'\nusername = 'moorage'\n")
    assert message.startswith("unknown key [identity] username; known: backend, token_file, admin_view,")
    assert "plugin_options" not in message


def test_wrong_type(tmp_path):
    assert (
        error(tmp_path, "[gateway]\nworkers = '4'\n")
        == "[gateway] workers = '4': expected an integer, not a string"
    )
    assert error(tmp_path, "[placement]\ncapacity = 2.5\n") == (
        "[placement] capacity = 2.5: expected an integer, not a float"
    )
    assert error(tmp_path, "[identity]\nadmin_view = 'yes'\n") == (
        "[identity] admin_view = 'yes': expected true or false, not a string"
    )
    assert error(tmp_path, "[gateway]\nworkers = true\n").endswith("expected an integer, not a boolean")
    assert (
        error(tmp_path, "[gateway]\nbind = [1]\n")
        == "[gateway] bind[0] = 1: expected a string, not an integer"
    )
    assert (
        error(tmp_path, "[limits]\nmax_cpus = '4'\n")
        == "[limits] max_cpus = '4': expected a number, not a string"
    )
    assert error(tmp_path, "[placement]\nprovider = 3\n").startswith(
        "[placement] provider = 3: expected a string"
    )
    assert error(tmp_path, "placement = 3\n") == "[placement] must be a table (a [placement] section)"


def test_not_toml(tmp_path):
    assert error(tmp_path, "[gateway\n")  # tomllib's message, after the file's name


def test_moorage_db_overrides_the_file(tmp_path, monkeypatch):
    path = write(tmp_path, "[gateway]\ndatabase = 'sqlite:////from/the/file.db'\n")
    assert config.load(path).gateway.database == "sqlite:////from/the/file.db"
    monkeypatch.setenv("MOORAGE_DB", "sqlite:////from/the/env.db")
    assert config.load(path).gateway.database == "sqlite:////from/the/env.db"
    assert config.load(None).gateway.database == "sqlite:////from/the/env.db"
    monkeypatch.setenv("MOORAGE_CONFIG", path)
    assert config.load(None).source == path


def test_cli_names_the_bad_key(tmp_path, capsys):
    from gateway import cli

    path = write(tmp_path, "[placement]\nstratgy = 'spread'\n")
    with pytest.raises(SystemExit) as exc:
        cli.main(["--config", path, "instances", "list"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith(f"moorage: {path}: unknown key [placement] stratgy; known: ")


def test_the_readme_nova_example_loads(tmp_path):
    with open(os.path.join(REPO, "README.md")) as fh:
        readme = fh.read()
    block = next(b for b in readme.split("```toml\n")[1:] if b.startswith("[placement]"))
    s = config.load(write(tmp_path, block.split("```", 1)[0]))
    assert (s.placement.provider, s.nova.flavor, s.nova.network) == ("nova", "m1.moorage", "auto")


# -- the files the repo writes --------------------------------------------------------------------
class _Stack:
    """What scripts/moorage_scripts/devstack/gateways.py reads of a stack."""

    def __init__(self, tmp_path, **state):
        self.dir = str(tmp_path)
        self.gw_ip = "198.18.0.1"
        self.hash = "0123abcd"
        self.state = {"port": 2375, "secret": "s", **state}
        self.nhosts = int(self.state.get("hosts", 1))
        self.external = None

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)


@pytest.mark.parametrize("capacity", [None, 2])
def test_devstack_writes_a_file_the_loader_takes(tmp_path, monkeypatch, capacity):
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    try:
        from moorage_scripts.devstack import gateways
    finally:
        sys.path.remove(os.path.join(REPO, "scripts"))
    monkeypatch.setattr(gateways, "database_url", lambda st: "sqlite:///" + st.path("moorage.db"))
    st = _Stack(tmp_path, capacity=capacity)
    (tmp_path / "identity.json").write_text("{}")
    s = config.load(gateways.write_gateway_config(st))  # type: ignore[arg-type]
    assert s.identity.backend == "embedded" and s.identity.token_file == st.path("identity.json")
    assert s.placement.capacity == (capacity or 0) and s.policy.file == st.path("policy.yaml")
    # and a unix socket in DIR, as a local dockerd is reached (the parity suite's attach cases)
    assert s.gateway.bind == [
        "tcp://127.0.0.1:2375",
        "tcp://198.18.0.1:2375",
        f"unix://{st.path('gateway.sock')}",
    ]
    # dedicated by default; hosts beyond --hosts booted by devstack's own commands
    assert s.placement.tenancy == "dedicated" and s.placement.release_grace == 60
    assert s.local.max_hosts == 7 and s.local.boot_command[-2:] == ["boot-host", st.dir]
    assert s.local.delete_command[-2:] == ["delete-host", st.dir]


def test_devstack_shared_tenancy_and_no_booting(tmp_path, monkeypatch):
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    try:
        from moorage_scripts.devstack import gateways
    finally:
        sys.path.remove(os.path.join(REPO, "scripts"))
    monkeypatch.setattr(gateways, "database_url", lambda st: "sqlite:///" + st.path("moorage.db"))
    st = _Stack(tmp_path, tenancy="shared", hosts=2, max_hosts=2, release_grace=3)
    (tmp_path / "identity.json").write_text("{}")
    s = config.load(gateways.write_gateway_config(st))  # type: ignore[arg-type]
    assert (s.placement.tenancy, s.placement.release_grace) == ("shared", 3)
    assert s.local.boot_command == [] and s.placement.provider == "local"


def test_devstack_keystone_and_nova_settings_load(tmp_path, monkeypatch):
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    try:
        from moorage_scripts.devstack import gateways, novaconf
    finally:
        sys.path.remove(os.path.join(REPO, "scripts"))
    monkeypatch.setattr(gateways, "database_url", lambda st: "sqlite:///" + st.path("moorage.db"))
    rc = {
        "MOORAGE_NOVA_AUTH_URL": "http://198.18.0.1:5000/v3",
        "MOORAGE_NOVA_USERNAME": "moorage",
        "MOORAGE_NOVA_PASSWORD": "pw",
        "MOORAGE_NOVA_PROJECT_NAME": "moorage",
        "MOORAGE_NOVA_FLAVOR": "m1.moorage",
    }
    monkeypatch.setattr(novaconf, "novarc", lambda st: rc)
    (tmp_path / "keystone").mkdir()
    (tmp_path / "keystone" / "openrc").write_text(
        "export OS_AUTH_URL=http://198.18.0.1:5000/v3\nexport OS_USERNAME=admin\n"
        "export OS_PASSWORD=pw\nexport OS_PROJECT_NAME=admin\n"
    )
    st = _Stack(tmp_path, keystone=True, nova=True, capacity=2, nova_grace=5)
    s = config.load(gateways.write_gateway_config(st))  # type: ignore[arg-type]
    assert s.identity.backend == "keystone" and s.identity.auth_url == "http://198.18.0.1:5000/v3"
    assert s.identity.plugin_options["username"] == "admin"
    assert (s.placement.provider, s.placement.capacity, s.placement.reap_interval) == ("nova", 2, 1.0)
    assert (s.nova.flavor, s.nova.empty_grace_seconds, s.nova.gateway_url) == (
        "m1.moorage",
        5.0,
        "http://198.18.0.1:2375",
    )
    # dedicated tenancy: the tenants' trusts are sealed with a key devstack made
    from gateway.tenancy.trusts import Sealer

    assert s.nova.trust_key_file == st.path("trust.key") and s.nova.trust_roles == ["member"]
    assert (
        Sealer.from_file(s.nova.trust_key_file).open(Sealer.from_file(st.path("trust.key")).seal("t")) == "t"
    )
    from gateway.tenancy import keystone

    pytest.importorskip("keystoneauth1")
    keystone.plugin(s.identity)  # every plugin key is the password plugin's


def test_keystone_refuses_a_key_its_plugin_does_not_know():
    pytest.importorskip("keystoneauth1")
    from gateway.tenancy import keystone

    identity = config.IdentitySettings(
        backend="keystone", auth_url="http://k:5000/v3", plugin_options={"username": "u", "pasword": "p"}
    )
    with pytest.raises(ValueError, match=r"unknown key \[identity\] pasword \(auth_type 'password'\)"):
        keystone.plugin(identity)
    with pytest.raises(ValueError, match="unknown key"):
        keystone.KeystoneIdentity(identity)


def test_notifications_and_events_sections(tmp_path):
    path = tmp_path / "moorage.toml"
    path.write_text(
        '[notifications]\ntransport_url = "rabbit://u:p@127.0.0.1:5672/"\ndriver = "messagingv2"\n'
        'topics = ["notifications", "moorage"]\nexists_interval = 60\n[events]\nretention = 3600\n'
    )
    s = config.load(str(path))
    assert s.notifications.transport_url == "rabbit://u:p@127.0.0.1:5672/"
    assert s.notifications.topics == ["notifications", "moorage"]
    assert s.notifications.exists_interval == 60.0 and s.notifications.enabled
    assert s.events.retention == 3600.0
    defaults = config.Settings()
    assert defaults.notifications.topics == ["notifications"] and not defaults.notifications.enabled
    assert defaults.events.retention == 7 * 86400
    assert error(tmp_path, "[notifications]\ndrivr = 'log'\n").startswith("unknown key [notifications] drivr")


def test_tenancy_is_dedicated_unless_the_operator_shares(tmp_path):
    assert config.Settings().placement.tenancy == "dedicated"
    path = tmp_path / "m.toml"
    path.write_text('[placement]\ntenancy = "shared"\n')
    assert config.load(str(path)).placement.tenancy == "shared"
    path.write_text('[placement]\ntenancy = "private"\n')
    with pytest.raises(config.SettingsError, match="tenancy = 'private': must be one of dedicated, shared"):
        config.load(str(path))
