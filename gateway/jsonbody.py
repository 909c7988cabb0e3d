"""JSON bodies on the request path, decoded and encoded with orjson.

Why: py-spy on the gateway answering ``inspect`` from its read cache found 13% of its CPU in
the standard library's json: a 4 KB inspect took 23 us to decode and 30 us to encode, where
orjson takes 8 and 4 (bench/README.md has the profile and the figures before and after).

The values are json's, with one difference: orjson reads an integer beyond 64 bits as a float.
dockerd, written in Go, never writes one (its numbers are int64, uint64 and float64), and
``decode`` reads daemons' answers only. The text differs only where JSON allows it: compact,
and non-ASCII written as UTF-8 (as dockerd writes it) where json wrote ``\\uXXXX``. In the
corners orjson refuses and json accepts, json does the work, so no answer that worked before
fails now: ``NaN``, lone surrogates, keys that are not strings, integers beyond 64 bits when
encoding.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def decode(raw: bytes | str) -> Any:
    """json.loads of a daemon's answer: ValueError (json.JSONDecodeError) for what is not
    JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def encode(payload: Any) -> bytes:
    """Compact JSON, as dockerd writes it (without its newline); TypeError for what JSON
    cannot hold."""
    try:
        return orjson.dumps(payload)
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(payload, separators=(",", ":")).encode()


# What orjson would write as something else than it reads back (a datetime as its text, a
# dataclass as a dict, a str or dict subclass as the base type) is refused instead, so that
# ``replaced`` gives back the same types or nothing.
_SAME_TYPES = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def replaced(value: Any, old: str) -> Any | None:
    """A fresh copy of the JSON value ``value`` with ``old`` removed from every string and key,
    or None when it holds anything but JSON's types. Exact when ``old`` holds no character
    that JSON escapes or that delimits (quotes, backslashes, control characters): then it
    occurs in the text exactly where it occurs in a string or key."""
    try:
        text = orjson.dumps(value, option=_SAME_TYPES)
    except TypeError:
        return None
    return orjson.loads(text.replace(old.encode(), b"") if old else text)
