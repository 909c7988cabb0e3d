"""The JSON-lines streams dockerd answers pull, push, build, import and load with: read, and
rewritten line by line as they stream.

Pure bytes in, bytes out: the caller says what to rewrite in each block of whole lines (the
daemon's names back to the tenant's, gateway/imagemap.py) and what to watch for (the ID a build
printed, an error line), so this module knows neither HTTP nor the store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator

# A "line" longer than this is not line-delimited after all: it passes on unchanged.
LINE_LIMIT = 1 << 20


def json_lines(raw: bytes) -> list[dict]:
    """The JSON objects of a JSON-lines text; blank lines and anything else are skipped."""
    out = []
    for line in raw.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def rewrite_lines(
    chunks: Iterable[bytes],
    edit: Callable[[bytes], bytes],
    observe: Callable[[dict], object] | None = None,
) -> Iterator[bytes]:
    """A JSON-lines stream with ``edit`` applied to each block of whole lines as it arrives;
    ``observe(obj)`` sees each decoded line after the edit. An empty chunk (the "send the head
    now" flush of gateway/forward.py) passes on at once."""
    pending = b""
    for chunk in chunks:
        if not chunk:
            yield chunk
            continue
        pending += chunk
        if b"\n" not in pending:
            if len(pending) > LINE_LIMIT:
                yield pending
                pending = b""
            continue
        complete, _, pending = pending.rpartition(b"\n")
        yield _block(complete + b"\n", edit, observe)
    if pending:
        yield _block(pending, edit, observe)


def _block(data: bytes, edit: Callable[[bytes], bytes], observe) -> bytes:
    data = edit(data)
    if observe is not None:
        for obj in json_lines(data):
            observe(obj)
    return data


def error_line(message: str) -> bytes:
    """A last line that tells the client the stream's work failed, as dockerd words one."""
    return json.dumps({"errorDetail": {"message": message}, "error": message}).encode() + b"\n"
