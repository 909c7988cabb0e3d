"""schemathesis hooks for scripts/api-fuzz (loaded through SCHEMATHESIS_HOOKS).

The check ``moorage_answer`` holds the gateway to issue 18's bar: every answer is either a
success, or an error in Docker's shape (``{"message": "..."}``; text/plain where dockerd uses it),
or the daemon's own answer passed through; never a traceback, and never a 5xx the gateway made
itself (its internal errors, or an instance it cannot reach on a healthy stack). A daemon's 5xx
(dockerd answers 500 to many malformed requests, 503 to swarm calls on a daemon that is no
manager) is the daemon's answer, as a client talking to dockerd would get it.
"""

from __future__ import annotations

import json
import time

import schemathesis

# What the gateway says when it fails itself (gateway/app.py, gateway/forward.py).
GATEWAY_OWN = ("internal error in the Moorage gateway", "is not answering (")

# Answers dockerd itself gives with no Content-Type: its websocket attach refuses a request
# that is not a websocket handshake with golang.org/x/net/websocket's bare
# "400 Bad Request\r\n\r\nnot websocket protocol" (the same through Moorage and straight).
DAEMON_UNTYPED = frozenset({"not websocket protocol"})


@schemathesis.check
def moorage_answer(ctx, response, case):
    text = response.content.decode("utf-8", "replace") if response.content else ""
    if "Traceback (most recent call last)" in text:
        raise AssertionError("a traceback in the answer's body")
    status = response.status_code
    if status < 400 or case.method.upper() == "HEAD":  # a HEAD's answer has no body to judge
        return
    ctype = (response.headers.get("content-type") or response.headers.get("Content-Type") or [""])[0]
    if ctype.startswith("application/json"):
        try:
            doc = json.loads(text)
        except ValueError:
            raise AssertionError(
                f"{status} with a JSON Content-Type but no JSON body: {text[:200]!r}"
            ) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("message"), str):
            raise AssertionError(f"{status} not in Docker's error shape: {text[:200]!r}")
        message = doc["message"]
    elif ctype.startswith("text/plain"):
        message = text
    elif ctype.startswith("application/vnd.docker.raw-stream") and case.path.endswith("/attach"):
        # POST attach: dockerd answers its errors on the connection it took over, as a raw
        # head and the plain message, and so does the gateway (gateway/routing.py raw_errors).
        message = text
    elif not ctype and status < 500 and text.strip() in DAEMON_UNTYPED:
        message = text  # the daemon's own answer, passed on as it came (see DAEMON_UNTYPED)
    else:
        raise AssertionError(f"{status} answered with Content-Type {ctype!r}: {text[:200]!r}")
    if status >= 500 and any(marker in message for marker in GATEWAY_OWN):
        raise AssertionError(f"the gateway's own {status}: {message[:300]}")


@schemathesis.hook("map_query").apply_to(method="GET", path="/events")
def events_end_now(ctx, query):
    """`GET /events` streams until the client leaves; with `until` it answers at once."""
    query = dict(query or {})
    query["until"] = str(int(time.time()))
    return query


# Archives (`POST /images/load`, `POST /plugins/create`): the generated body is sent as bytes,
# which makes them tar streams that end early or lie about their sizes.
schemathesis.serializer.alias("application/x-tar", "application/octet-stream")
