"""API versions: what the gateway advertises, what a request may ask for, and what reaches a
daemon. The one place in the request path where a client's version meets a daemon's: the
dispatcher checks the requested version here (``check``) and gateway/forward.py asks here which
version to speak to the instance (``for_daemon``)."""

from __future__ import annotations

from gateway.errors import DockerError

# What Moorage itself implements; the advertised maximum is never higher than the daemons'.
MOORAGE_MAX_API = "1.41"
MOORAGE_MIN_API = "1.12"


def parse(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def lowest(versions: list[str], default: str) -> str:
    valid = [v for v in versions if v]
    return min(valid, key=parse) if valid else default


def highest(versions: list[str], default: str) -> str:
    valid = [v for v in versions if v]
    return max(valid, key=parse) if valid else default


def for_daemon(requested: str) -> str:
    """The version a request speaks to its instance's daemon. The advertised maximum is never
    above any live daemon's, so every daemon speaks the client's version as it is."""
    return requested


def check(requested: str, maximum: str, minimum: str) -> None:
    """dockerd's answers (status, wording and content type) for a version out of range."""
    if parse(requested) < parse(minimum):
        raise DockerError(
            400,
            f"client version {requested} is too old. Minimum supported API version is {minimum}, "
            "please upgrade your client to a newer version",
            content_type="text/plain; charset=utf-8",
        )
    if parse(requested) > parse(maximum):
        raise DockerError(
            400, f"client version {requested} is too new. Maximum supported API version is {maximum}"
        )
