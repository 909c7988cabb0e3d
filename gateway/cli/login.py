"""`moorage login`: a project-scoped Keystone token in a docker config dir of its own.

    . my-project-openrc.sh && eval "$(moorage login --host tcp://moorage.example.org:2375)"
    eval "$(moorage login --os-cloud mycloud)"          # clouds.yaml: password or application credential
    moorage login --refresh                             # a new token even if the old one still lives

Credentials come from the usual OS_* variables (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD,
OS_PROJECT_NAME, OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME; or OS_AUTH_TYPE=v3applicationcredential
with OS_APPLICATION_CREDENTIAL_ID and OS_APPLICATION_CREDENTIAL_SECRET) or from a cloud of
clouds.yaml (--os-cloud or OS_CLOUD). The token goes into DIR/config.json (DIR: --config-dir, default
~/.moorage/docker-config-PROJECT, mode 0700/0600) as the HttpHeaders X-Auth-Token and
X-Auth-Project-Id, which the docker CLI sends with every request. It never goes into the default
~/.docker/config.json, from where the docker CLI would send it to every daemon it talks to.

stdout carries only `export DOCKER_CONFIG=...` (and `export DOCKER_HOST=...` with --host or
$MOORAGE_HOST), so `eval "$(moorage login)"` works; what happened and when the token expires goes
to stderr. Without --refresh, a token already in DIR that Keystone still accepts for at least
another --min-lifetime seconds is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import re
import shlex
import sys

from gateway.wire import ALL_PROJECTS_HEADER, PROJECT_HEADER, TOKEN_HEADER

# The operators' admin view (gateway.context.Context.all_projects).
METADATA = "moorage-login.json"
DEFAULT_MIN_LIFETIME = 3600
TIMEOUT = 30

# Options that choose a scope: an application credential carries its own project.
SCOPE_OPTIONS = {
    "project_id",
    "project_name",
    "project_domain_id",
    "project_domain_name",
    "domain_id",
    "domain_name",
    "system_scope",
    "trust_id",
    "default_domain_id",
    "default_domain_name",
}


class LoginError(Exception):
    """A failure to print as one line (exit 1; usage errors exit 2)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _say(msg: str) -> None:
    print(f"moorage login: {msg}", file=sys.stderr, flush=True)


# --- credentials -------------------------------------------------------------------------------


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _from_env(env: dict) -> tuple[str, dict, bool | str]:
    """(plugin name, options, verify) from OS_* variables."""
    auth_type = env.get("OS_AUTH_TYPE") or (
        "v3applicationcredential"
        if env.get("OS_APPLICATION_CREDENTIAL_ID") or env.get("OS_APPLICATION_CREDENTIAL_NAME")
        else "password"
    )
    loader = _loader(auth_type)
    options = {}
    for opt in loader.get_options():
        for var in opt.argparse_envvars:
            if env.get(var):
                options[opt.dest] = env[var]
                break
    verify: bool | str = True
    if _truthy(env.get("OS_INSECURE", "")):
        verify = False
    elif env.get("OS_CACERT"):
        verify = env["OS_CACERT"]
    return auth_type, options, verify


def _clouds_files(env: dict) -> list[str]:
    if env.get("OS_CLIENT_CONFIG_FILE"):
        return [env["OS_CLIENT_CONFIG_FILE"]]
    home = os.path.expanduser("~")
    config_home = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return [
        os.path.join(os.getcwd(), "clouds.yaml"),
        os.path.join(config_home, "openstack", "clouds.yaml"),
        "/etc/openstack/clouds.yaml",
    ]


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def _from_cloud(name: str, env: dict) -> tuple[str, dict, bool | str]:
    """(plugin name, options, verify) from clouds.yaml (and its secure.yaml)."""
    try:
        import yaml
    except ImportError as exc:
        raise LoginError(
            "reading clouds.yaml needs PyYAML (pip install pyyaml); or source an openrc "
            "file and run `moorage login` without --os-cloud",
            2,
        ) from exc
    searched = _clouds_files(env)
    cloud = None
    source = ""
    for path in searched:
        if not os.path.isfile(path):
            continue
        try:
            with open(path) as fh:
                data = yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise LoginError(f"cannot read {path}: {exc}", 2) from exc
        clouds = data.get("clouds") or {}
        if name in clouds:
            cloud, source = dict(clouds[name] or {}), path
            secure = os.path.join(os.path.dirname(path), "secure.yaml")
            if os.path.isfile(secure):
                with contextlib.suppress(OSError, yaml.YAMLError), open(secure) as fh:
                    secret = ((yaml.safe_load(fh) or {}).get("clouds") or {}).get(name) or {}
                    cloud = _merge(cloud, secret)
            break
    if cloud is None:
        raise LoginError(f"no cloud named {name!r} in clouds.yaml (looked in {', '.join(searched)})", 2)
    auth = {str(k).replace("-", "_"): v for k, v in (cloud.get("auth") or {}).items()}
    auth_type = str(cloud.get("auth_type") or cloud.get("auth-type") or "password")
    loader = _loader(auth_type)
    known = {opt.dest for opt in loader.get_options()}
    unknown = sorted(set(auth) - known)
    if unknown:
        _say(f"ignoring {', '.join(unknown)} in cloud {name!r} of {source} (not options of {auth_type})")
    options = {k: v for k, v in auth.items() if k in known and v not in (None, "")}
    verify: bool | str = True
    if cloud.get("verify") is not None and not _truthy(cloud["verify"]):
        verify = False
    elif cloud.get("cacert"):
        verify = os.path.expanduser(str(cloud["cacert"]))
    return auth_type, options, verify


def _loader(auth_type: str):
    from keystoneauth1 import exceptions as ksa_exc
    from keystoneauth1 import loading

    try:
        return loading.get_plugin_loader(auth_type)
    except ksa_exc.NoMatchingPlugin as exc:
        raise LoginError(
            f"unknown auth type {auth_type!r} (use password or v3applicationcredential)", 2
        ) from exc


def _check_options(auth_type: str, options: dict, from_cloud: bool) -> None:
    """Name what is missing the way the user sets it: OS_* variables, or clouds.yaml keys."""
    missing = []
    if not options.get("auth_url"):
        missing.append("auth_url")
    if "applicationcredential" in auth_type:
        if not options.get("application_credential_secret"):
            missing.append("application_credential_secret")
        if not (options.get("application_credential_id") or options.get("application_credential_name")):
            missing.append("application_credential_id")
    elif auth_type in ("password", "v3password"):
        if not (options.get("username") or options.get("user_id")):
            missing.append("username")
        if not options.get("password"):
            missing.append("password")
        if not (options.get("project_name") or options.get("project_id")):
            missing.append("project_name")
    if missing:
        if from_cloud:
            raise LoginError(f"the cloud's auth section lacks {', '.join(missing)}", 2)
        names = ", ".join("OS_" + m.upper() for m in missing)
        raise LoginError(
            f"{names} not set: source your OpenStack credentials (an openrc file) or use --os-cloud NAME", 2
        )


def _plugin(auth_type: str, options: dict):
    from keystoneauth1 import exceptions as ksa_exc

    loader = _loader(auth_type)
    if "applicationcredential" in auth_type:
        options = {k: v for k, v in options.items() if k not in SCOPE_OPTIONS}
    try:
        return loader.load_from_options(**options)
    except ksa_exc.MissingRequiredOptions as exc:
        names = ", ".join(o.argparse_envvars[0] if o.argparse_envvars else o.dest for o in exc.options)
        raise LoginError(f"{names} not set", 2) from exc


# --- the docker config dir ---------------------------------------------------------------------


def default_config_dir(project: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", project) or "project"
    return os.path.join(os.path.expanduser("~"), ".moorage", f"docker-config-{safe}")


def _check_not_default(config_dir: str) -> None:
    default = os.path.realpath(os.path.expanduser("~/.docker"))
    if os.path.realpath(config_dir) == default:
        raise LoginError(
            f"refusing to write a token into {default}: the docker CLI would send it to every "
            "daemon it talks to; use a dedicated --config-dir",
            2,
        )


def _read_json(path: str) -> dict:
    try:
        with open(path) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_private(path: str, data: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_config_dir(
    config_dir: str, token: str, project_id: str, meta: dict, all_projects: bool | None = None
) -> None:
    os.makedirs(config_dir, mode=0o700, exist_ok=True)
    os.chmod(config_dir, 0o700)
    path = os.path.join(config_dir, "config.json")
    config = _read_json(path)
    headers = config.get("HttpHeaders") if isinstance(config.get("HttpHeaders"), dict) else {}
    headers = {
        k: v for k, v in headers.items() if k.lower() not in (TOKEN_HEADER.lower(), PROJECT_HEADER.lower())
    }
    headers[TOKEN_HEADER] = token
    headers[PROJECT_HEADER] = project_id
    if all_projects is not None:
        headers = {k: v for k, v in headers.items() if k.lower() != ALL_PROJECTS_HEADER.lower()}
        if all_projects:
            headers[ALL_PROJECTS_HEADER] = "1"
    config["HttpHeaders"] = headers
    _write_private(path, config)
    _write_private(os.path.join(config_dir, METADATA), meta)


def _existing_token(config_dir: str) -> tuple[str, str, dict] | None:
    config = _read_json(os.path.join(config_dir, "config.json"))
    headers = config.get("HttpHeaders") or {}
    token = next((v for k, v in headers.items() if k.lower() == TOKEN_HEADER.lower()), "")
    project = next((v for k, v in headers.items() if k.lower() == PROJECT_HEADER.lower()), "")
    if not token or not project:
        return None
    return token, project, _read_json(os.path.join(config_dir, METADATA))


def _still_good(session, auth_url: str, token: str, project_id: str, min_lifetime: float) -> dict | None:
    """Keystone's view of a token we hold (a token may validate itself), if it is good for long enough."""
    url = auth_url.rstrip("/")
    url = (url if url.endswith("/v3") else url + "/v3") + "/auth/tokens?nocatalog"
    try:
        resp = session.get(
            url,
            headers={"X-Auth-Token": token, "X-Subject-Token": token},
            authenticated=False,
            raise_exc=False,
            log=False,
            timeout=TIMEOUT,
        )
        if resp.status_code != 200:
            return None
        body = resp.json()["token"]
        expires = _parse_time(body["expires_at"])
    except Exception:  # noqa: BLE001 (unreachable, unreadable: just log in afresh)
        return None
    if (body.get("project") or {}).get("id") != project_id:
        return None
    if (expires - datetime.datetime.now(datetime.UTC)).total_seconds() < min_lifetime:
        return None
    return body


def _parse_time(value: str) -> datetime.datetime:
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _lifetime(expires: datetime.datetime) -> str:
    seconds = int((expires - datetime.datetime.now(datetime.UTC)).total_seconds())
    if seconds <= 0:
        return "already expired"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days} day{'s' * (days != 1)}"] if days else []
    if hours or days:
        parts.append(f"{hours} hour{'s' * (hours != 1)}")
    if not days:
        parts.append(f"{minutes} minute{'s' * (minutes != 1)}" if hours or minutes else f"{seconds} seconds")
    return "in " + " ".join(parts)


# --- the command -------------------------------------------------------------------------------


def login(args, env: dict | None = None) -> tuple[str, str | None]:
    """Do the work; returns (config dir, docker host or None). Raises LoginError."""
    from keystoneauth1 import exceptions as ksa_exc
    from keystoneauth1 import session as ksa_session

    env = dict(os.environ if env is None else env)
    cloud = args.os_cloud or (env.get("OS_CLOUD") if not env.get("OS_AUTH_URL") else None)
    if cloud:
        auth_type, options, verify = _from_cloud(cloud, env)
        where = f"cloud {cloud!r}"
    else:
        auth_type, options, verify = _from_env(env)
        where = "OS_* variables"
    _check_options(auth_type, options, bool(cloud))
    plugin = _plugin(auth_type, options)
    session = ksa_session.Session(auth=plugin, verify=verify, timeout=TIMEOUT, user_agent="moorage-login")
    auth_url = str(options["auth_url"])

    config_dir = os.path.abspath(os.path.expanduser(args.config_dir)) if args.config_dir else None
    if config_dir is None and "applicationcredential" not in auth_type:
        label = options.get("project_name") or options.get("project_id")
        if label:
            config_dir = default_config_dir(str(label))
    if config_dir:
        _check_not_default(config_dir)

    if config_dir and not args.refresh:
        held = _existing_token(config_dir)
        if held and held[2].get("auth_url") == auth_url:
            body = _still_good(session, auth_url, held[0], held[1], args.min_lifetime)
            if body is not None:
                expires = _parse_time(body["expires_at"])
                project = body.get("project") or {}
                _say(
                    f"still logged in to project {project.get('name', '?')} ({project.get('id')}) as "
                    f"{(body.get('user') or {}).get('name', '?')}; the token in {config_dir} expires at "
                    f"{expires:%Y-%m-%d %H:%M:%S} UTC ({_lifetime(expires)}); `moorage login --refresh` "
                    "re-issues it"
                )
                return config_dir, args.host

    try:
        access = plugin.get_access(session)
    except ksa_exc.Unauthorized as exc:
        raise LoginError(
            f"Keystone at {auth_url} refused the credentials from {where} (HTTP 401): check the "
            "user name, password or application credential, and the project"
        ) from exc
    except (ksa_exc.ConnectionError, ksa_exc.DiscoveryFailure) as exc:
        raise LoginError(
            f"cannot reach Keystone at {auth_url} ({type(exc).__name__}): check OS_AUTH_URL and your network"
        ) from exc
    except ksa_exc.HttpError as exc:
        raise LoginError(f"Keystone at {auth_url} answered {exc.http_status}: {exc.message}") from exc
    except ksa_exc.ClientException as exc:
        raise LoginError(f"logging in to Keystone at {auth_url} failed: {exc}") from exc
    if not access.project_id:
        raise LoginError(
            "Keystone issued a token that is not scoped to a project: set OS_PROJECT_NAME (and "
            "OS_PROJECT_DOMAIN_NAME), or use a project's application credential",
            2,
        )
    project_name = access.project_name or access.project_id
    if config_dir is None:
        config_dir = default_config_dir(project_name)
        _check_not_default(config_dir)
    expires = access.expires
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=datetime.UTC)
    meta = {
        "auth_url": auth_url,
        "project_id": access.project_id,
        "project_name": project_name,
        "user_id": access.user_id,
        "user_name": access.username,
        "expires_at": expires.astimezone(datetime.UTC).isoformat(),
        "issued_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "note": "written by `moorage login`; the token itself is in config.json",
    }
    write_config_dir(
        config_dir,
        access.auth_token,
        access.project_id,
        meta,
        all_projects=getattr(args, "all_projects", None),
    )
    _say(
        f"logged in to project {project_name} ({access.project_id}) as {access.username}; the token in "
        f"{config_dir}/config.json expires at {expires.astimezone(datetime.UTC):%Y-%m-%d %H:%M:%S} UTC "
        f"({_lifetime(expires)}); `moorage login --refresh` re-issues it"
    )
    return config_dir, args.host


def cmd_login(args) -> int:
    # keystoneauth warns on stderr when version discovery fails; our own message says it better
    logging.getLogger("keystoneauth").setLevel(logging.ERROR)
    if getattr(args, "tls", False):
        from gateway.cli import certs

        return certs.login_tls(args, login, LoginError)
    try:
        config_dir, host = login(args)
    except LoginError as exc:
        _say(str(exc))
        return exc.code
    sys.stdout.write(f"export DOCKER_CONFIG={shlex.quote(config_dir)}\n")
    if host:
        sys.stdout.write(f"export DOCKER_HOST={shlex.quote(host)}\n")
    sys.stdout.flush()
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add `login` to `moorage`'s subcommands (gateway/cli/commands.py)."""
    p = subparsers.add_parser(
        "login",
        help="get a Keystone token and write a docker config dir that sends it",
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--os-cloud",
        metavar="NAME",
        help="a cloud of clouds.yaml (default: $OS_CLOUD when OS_AUTH_URL is not set)",
    )
    p.add_argument(
        "--config-dir",
        metavar="DIR",
        help="the docker config dir to write (default ~/.moorage/docker-config-PROJECT); never ~/.docker",
    )
    p.add_argument(
        "--host",
        default=os.environ.get("MOORAGE_HOST") or None,
        metavar="URL",
        help="the Moorage endpoint to print as DOCKER_HOST (default: $MOORAGE_HOST)",
    )
    p.add_argument(
        "--all-projects",
        action="store_true",
        default=None,
        help="operators (admin role, where the gateway enables its admin view): list every project's objects",
    )
    p.add_argument(
        "--refresh", action="store_true", help="issue a new token even if the one held still lives"
    )
    p.add_argument(
        "--min-lifetime",
        type=float,
        default=DEFAULT_MIN_LIFETIME,
        metavar="SECONDS",
        help=f"keep a held token only if it lives this much longer (default {DEFAULT_MIN_LIFETIME})",
    )
    from gateway.cli import certs

    certs.add_login_arguments(p)
    p.set_defaults(func=cmd_login)
    return p


def main(argv: list[str] | None = None) -> int:
    """`python -m gateway.cli.login [OPTIONS]`, the same as `moorage login [OPTIONS]`."""
    parser = argparse.ArgumentParser(prog="moorage")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["login", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
