"""Errors in Docker's own shape: ``{"message": "..."}`` with the status dockerd uses.

Every refusal Moorage makes goes through :class:`DockerError` so that the docker CLI,
docker-py and compose print it exactly as they print a daemon's error.
"""

from __future__ import annotations

import json


class DockerError(Exception):
    """An error answered to the client as dockerd would: status + ``{"message": ...}``."""

    def __init__(self, status: int, message: str, *, content_type: str = "application/json"):
        super().__init__(message)
        self.status = status
        self.message = message
        # dockerd answers a few errors (API version too old) as text/plain; keep that shape.
        self.content_type = content_type

    def body(self) -> bytes:
        if self.content_type.startswith("text/plain"):
            return (self.message + "\n").encode()
        return json.dumps({"message": self.message}, separators=(",", ":")).encode() + b"\n"


def no_such_container(ref: str) -> DockerError:
    return DockerError(404, f"No such container: {ref}")


def no_such_exec(ref: str) -> DockerError:
    return DockerError(404, f"No such exec instance: {ref}")


def page_not_found() -> DockerError:
    return DockerError(404, "page not found")
