"""Documented divergences: where Moorage answers differently from dockerd on purpose.

Each entry names a section of docs/divergences.md (by its `{#id}` anchor) and says what
Moorage's answer must look like. A case marked with a divergence passes as
"divergence-as-documented" when it has no parity but Moorage's observation matches; the
runner refuses to start if an id used here is missing from docs/divergences.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Divergence:
    id: str
    summary: str
    check: Callable[[object], bool]  # on Moorage's normalized observation


def _status(obs, code: int, message: str | None = None) -> bool:
    if not isinstance(obs, dict) or obs.get("status") != code:
        return False
    if message is None:
        return True
    body = obs.get("body")
    text = body.get("message", "") if isinstance(body, dict) else str(body)
    return re.search(message, text) is not None


def _cli_error(obs, pattern: str) -> bool:
    """Some step of a CLI / docker-py case failed with a message matching pattern."""
    steps = obs.get("steps", [obs]) if isinstance(obs, dict) else obs if isinstance(obs, list) else [obs]
    return any(
        isinstance(s, dict) and s.get("rc", 0) != 0 and re.search(pattern, str(s.get("stderr")))
        for s in steps
    )


def _py_error(obs, status: int, pattern: str) -> bool:
    """Some docker-py step failed with this HTTP status and a matching explanation."""
    steps = obs if isinstance(obs, list) else []
    for step in steps:
        for result in step.values() if isinstance(step, dict) else []:
            if (
                isinstance(result, dict)
                and result.get("status") == status
                and re.search(pattern, str(result.get("explanation")))
            ):
                return True
    return False


DIVERGENCES: dict[str, Divergence] = {
    d.id: d
    for d in [
        Divergence(
            "attach-socket-headers",
            "docker-py's attach_socket() (compose v1 `run`, `up` without -d) sends no HttpHeaders: 401",
            lambda o: _py_error(o, 401, "authentication") or _cli_error(o, "authentication"),
        ),
        Divergence(
            "plugins",
            "plugin routes answer 403: plugins act on the instance host",
            lambda o: _status(o, 403, "plugins") or _cli_error(o, "plugins"),
        ),
        Divergence(
            "auth-headers",
            "every request needs X-Auth-Token and X-Auth-Project-Id (401 otherwise)",
            lambda o: (
                _status(o, 401, "authentication")
                or _cli_error(o, "authentication")
                or _py_error(o, 401, "authentication")
            ),
        ),
        Divergence(
            "buildkit-session",
            "BuildKit on dedicated instances only: on shared ones /session and /grpc answer 400 "
            "naming DOCKER_BUILDKIT=0",
            lambda o: _status(o, 400, "DOCKER_BUILDKIT=0"),
        ),
        Divergence(
            "policy",
            "settings that reach into the instance are refused (403, naming the policy rule)",
            lambda o: _status(o, 403, "policy rule") or _cli_error(o, "policy rule"),
        ),
    ]
}


def check_documented(doc_text: str) -> list[str]:
    """Ids used in the suite but without a `{#id}` section in docs/divergences.md."""
    return [d for d in DIVERGENCES if "{#" + d + "}" not in doc_text]
