"""gateway/services/jsonlines.py: the JSON-lines rewriter pull, push, build, import and load share."""

from __future__ import annotations

import json

from gateway.services.jsonlines import LINE_LIMIT, error_line, json_lines, rewrite_lines


def upper(data: bytes) -> bytes:
    return data.replace(b"daemon", b"TENANT")


def test_lines_split_across_chunks_are_edited_whole():
    chunks = [b'{"status":"dae', b'mon 1"}\n{"status":"daemon 2"}\n{"sta', b'tus":"daemon 3"}']
    out = b"".join(rewrite_lines(chunks, upper))
    assert out == b'{"status":"TENANT 1"}\n{"status":"TENANT 2"}\n{"status":"TENANT 3"}'


def test_the_flush_chunk_passes_at_once_and_pending_bytes_wait():
    out = list(rewrite_lines([b"", b'{"a":1}\n{"b"', b"", b":2}\n"], upper))
    assert out == [b"", b'{"a":1}\n', b"", b'{"b":2}\n']


def test_observe_sees_each_decoded_line_after_the_edit():
    seen = []
    list(rewrite_lines([b'{"stream":"daemon"}\nnot json\n\n[1]\n{"error":"x"}\n'], upper, seen.append))
    assert seen == [{"stream": "TENANT"}, {"error": "x"}]


def test_a_stream_without_newlines_passes_unchanged_past_the_limit():
    big = b"x" * (LINE_LIMIT + 1)
    assert list(rewrite_lines([big], upper)) == [big]


def test_json_lines_and_error_line():
    assert json_lines(b' {"a": 1} \r\n\n{"b": 2}\nnope\n') == [{"a": 1}, {"b": 2}]
    line = error_line("no room")
    assert line.endswith(b"\n")
    assert json.loads(line) == {"errorDetail": {"message": "no room"}, "error": "no room"}
