"""Errors in Docker's own shape: ``{"message": "..."}`` with the status dockerd uses.

Every refusal Moorage makes goes through :class:`DockerError` so that the docker CLI,
docker-py and compose print it exactly as they print a daemon's error.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus

RAW_STREAM = "application/vnd.docker.raw-stream"


class DockerError(Exception):
    """An error answered to the client as dockerd would: status + ``{"message": ...}``."""

    def __init__(self, status: int, message: str, *, content_type: str = "application/json"):
        super().__init__(message)
        self.status = status
        self.message = message
        # dockerd answers a few errors (API version too old) as text/plain; keep that shape.
        self.content_type = content_type

    def raw_answer(self, extra_headers=()) -> bytes:
        """The whole answer as dockerd writes an error on a connection it has taken over
        (POST attach): a status line, the raw-stream type, the plain message; no version
        headers, no length (the connection's end ends it)."""
        try:
            reason = HTTPStatus(self.status).phrase
        except ValueError:
            reason = ""
        head = [f"HTTP/1.1 {self.status} {reason}", f"Content-Type: {RAW_STREAM}"]
        head += [f"{name}: {value}" for name, value in extra_headers]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + self.message.encode() + b"\r\n"

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


# -- the daemon's own paths never reach a tenant ---------------------------------------------------
# A daemon's error may quote where it keeps its data (its data root, its temporary directories):
# that is the instance's layout, shared by every project on it, not the tenant's business. Every
# error body the gateway answers passes through scrub_paths (gateway/app.py for its own errors and
# the daemon's it raises, gateway/forward.py for a relayed one, gateway/services/image_answers.py
# for streamed ones).
DEFAULT_ROOTS = ("/var/lib/docker",)
# What a path under a root is called instead.
NEUTRAL = "(the instance's storage)"
_PATH_CHARS = r"[^\s\"'<>:,;()\[\]{}]"
# A temporary directory the daemon unpacks a client's archive in (load, import, a build's
# context): what follows it is the path inside the client's own archive, which the client knows.
_TEMP_DIR = re.compile(rf"/{_PATH_CHARS}*?/docker-(?:import|builder)-?[0-9a-zA-Z_]*(/{_PATH_CHARS}+)?")
# The image store's file for an image ID: the daemon lacks that image.
_IMAGEDB = re.compile(
    rf"(?:open |stat )?/{_PATH_CHARS}*/imagedb/content/sha256/([0-9a-f]{{64}})"
    r"(?:: no such file or directory)?"
)
# dockerd's words around it ("failed to get digest sha256:...: ") add nothing to them.
NO_SUCH_IMAGE = re.compile(r"No such image: sha256:[0-9a-f]{64}$")


def scrub_paths(text: str, roots=()) -> str:
    """``text`` with every path of the daemon's own removed: an image store file becomes
    dockerd's "No such image: sha256:...", a path inside a temporary directory the client's
    archive was unpacked in becomes the path inside the archive, any other path under a data
    root (``roots``, and /var/lib/docker) becomes a neutral word."""
    if "/" not in text:
        return text
    text = _IMAGEDB.sub(lambda m: f"No such image: sha256:{m.group(1)}", text)
    text = _TEMP_DIR.sub(lambda m: (m.group(1) or "/")[1:] or NEUTRAL, text)
    for root in sorted(
        {r.rstrip("/") for r in (*roots, *DEFAULT_ROOTS) if r and r.strip("/")}, key=len, reverse=True
    ):
        text = re.sub(rf"{re.escape(root)}(?:/{_PATH_CHARS}*)?(?!{_PATH_CHARS})", NEUTRAL, text)
    return text


def scrubbed(error: DockerError, roots=()) -> DockerError:
    """``error`` with the daemon's paths removed (see scrub_paths); a daemon's 500 that turns
    out to be a missing image's file answers as dockerd does for a missing image (404)."""
    message = scrub_paths(error.message, roots)
    missing = NO_SUCH_IMAGE.search(message) if error.status == 500 else None
    if missing:
        return DockerError(404, missing.group(0), content_type=error.content_type)
    if message == error.message:
        return error
    return DockerError(error.status, message, content_type=error.content_type)


def scrubbed_body(status: int, text: str, roots=()) -> tuple[int, str]:
    """A daemon's error answer (status, ``{"message": ...}`` text) with its paths removed, as
    ``scrubbed`` does for a DockerError; a body that is not Docker's shape is scrubbed as text."""
    clean = scrub_paths(text, roots)
    if clean == text and not (status == 500 and "No such image: sha256:" in text):
        return status, text
    try:
        payload = json.loads(text)
    except ValueError:
        return status, clean
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        error = scrubbed(DockerError(status, payload["message"]), roots)
        payload["message"] = error.message
        return error.status, json.dumps(payload, separators=(",", ":")) + "\n"
    return status, clean
