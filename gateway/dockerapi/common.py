"""What the handlers share: reading a request's JSON body as dockerd reads it."""

from __future__ import annotations

import json

from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import client_body

JSON_BODY_LIMIT = 10 * 1024 * 1024
_JSON = json.JSONDecoder()


def read_json(ctx: Context, limit: int = JSON_BODY_LIMIT) -> tuple[object | None, bytes]:
    """(parsed body, raw bytes). Parsed is None when the daemon should judge the raw body:
    empty, not JSON, or not declared as JSON; dockerd then answers with its own exact error."""
    length = ctx.req.content_length
    if length is not None and length > limit:
        raise DockerError(
            413, f"request body too large: {length} bytes (limit {limit}); send a smaller request"
        )
    # Through forward's one body reader: a chunked body (docker-java sends its JSON so) is
    # read whole, and a malformed or short one is a 400, not an empty body.
    chunks, _ = client_body(ctx)
    buf = bytearray()
    for data in chunks or ():
        buf += data
        if len(buf) > limit:
            raise DockerError(413, f"request body too large (limit {limit} bytes); send a smaller request")
    raw = bytes(buf)
    ctype = (ctx.req.content_type or "").split(";")[0].strip().lower()
    if not raw or ctype != "application/json":
        return None, raw
    try:
        # Go's decoder accepts invalid UTF-8 (replacing it), so must we: a body dockerd
        # would accept must never slip past the gateway unparsed. dockerd reads one JSON value
        # with json.Decoder and ignores what follows it: so do we (raw_decode).
        text = raw.decode("utf-8", errors="replace")
        parsed = _JSON.raw_decode(text, len(text) - len(text.lstrip(" \t\r\n")))[0]
    except RecursionError:
        raise DockerError(
            400, "request body nested too deeply to be read as JSON; send a flatter body"
        ) from None
    except ValueError:
        return None, raw
    ctx.refuse_untranslatable(parsed)  # what the daemons' API version cannot do: 400 before any work
    return parsed, raw
