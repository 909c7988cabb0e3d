"""Where an HTTP/1.1 message body ends, found by watching its bytes go by.

A relay that keeps its connections alive must know where each body ends, yet has no reason to
take the body apart: ``BodyEnd`` follows the framing (a Content-Length, or chunks) over the
bytes as they pass, so they can be passed on exactly as they came, in the pieces they came in
(one write per read, not one per chunk), and the bytes after the end stay for the next message.
"""

from __future__ import annotations

import re

MAX_LINE = 8 * 1024

_SIZE, _DATA, _TRAILER = range(3)


class FramingError(ValueError):
    """The body's framing is broken (a chunk size that is not hex, a line too long)."""


class BodyEnd:
    """The end of one body: ``BodyEnd(length=N)`` or ``BodyEnd(chunked=True)``."""

    def __init__(self, length: int | None = None, chunked: bool = False):
        if length is None and not chunked:
            raise ValueError("a body needs a length or chunks to have a known end")
        self.chunked = chunked
        self.remaining = 0 if chunked else int(length or 0)
        self.done = not chunked and self.remaining == 0
        self._state = _SIZE
        self._line = bytearray()

    @property
    def at_boundary(self) -> bool:
        """Whether the bytes fed so far end between two chunks (where a stream may be ended by
        a last chunk of its relay's own and still be well framed)."""
        return self.chunked and not self.done and self._state == _SIZE and not self._line

    def feed(self, data: bytes | bytearray, n: int | None = None, spans: list | None = None) -> int:
        """How many of ``data``'s bytes (its first ``n``: a reused buffer) belong to the body:
        all of them while it goes on, fewer when it ends inside ``data`` (the rest is the next
        message's). Sets ``done``. A chunk's data must be followed by CRLF, and its size line
        be hex digits ending in CRLF (FramingError otherwise): what the relay passes on framed
        as it came is read the same way by every reader after it. With ``spans``, each run of
        chunk data in ``data`` is appended to it as (start, end): the body without its framing."""
        if n is None:
            n = len(data)
        if self.done:
            return 0
        if not self.chunked:
            take = min(n, self.remaining)
            self.remaining -= take
            self.done = self.remaining == 0
            return take
        # One pass over ``data``: a chunk whose size line and bytes are all here is skipped in
        # the same step (a log stream is one chunk per line: about two million of them in
        # 200 MB of 100-byte lines, so the per-chunk work is what the relay's rate is).
        i = 0
        find = data.find
        size_line = SIZE_LINE.match
        while i < n:
            if self._state == _DATA:
                take = min(n - i, self.remaining)
                if spans is not None and self.remaining > 2:
                    spans.append((i, i + min(take, self.remaining - 2)))
                # The chunk's CRLF is its last two bytes: each is checked in the piece it is in.
                if self.remaining - take < 2:
                    end = i + take
                    for left, want in ((2, 13), (1, 10)):
                        pos = i + self.remaining - left
                        if i <= pos < end and data[pos] != want:
                            raise FramingError("chunk data not followed by CRLF")
                i += take
                self.remaining -= take
                if self.remaining:
                    return i
                self._state = _SIZE
                continue
            # The common case in one step: a whole, well-formed size line (a log stream has one
            # per 100-byte line, so this is most of the relay's work on it); else line by line.
            m = size_line(data, i, n) if self._state == _SIZE and not self._line else None
            if m is not None:
                size = int(m.group(1), 16)
                i = m.end()
            else:
                newline = find(b"\n", i, min(n, i + MAX_LINE + 1))
                if newline < 0:
                    self._line += data[i : min(n, i + MAX_LINE + 1)]
                    if len(self._line) > MAX_LINE or n - i > MAX_LINE:
                        raise FramingError("chunk size or trailer line too long")
                    return n
                if self._line:
                    self._line += data[i:newline]
                    line = bytes(self._line)
                    self._line.clear()
                else:
                    line = data[i:newline]
                i = newline + 1
                if not line.endswith(b"\r"):
                    raise FramingError(f"chunk line {bytes(line[:40])!r} does not end in CRLF")
                if self._state == _TRAILER:
                    if not line.strip():  # the blank line after the trailers: the end
                        self.done = True
                        return i
                    continue
                size = chunk_size(line)
            if size == 0:
                self._state = _TRAILER
            elif n - i >= size + 2:
                if data[i + size] != 13 or data[i + size + 1] != 10:
                    raise FramingError("chunk data not followed by CRLF")
                if spans is not None:
                    spans.append((i, i + size))
                i += size + 2  # the chunk and its CRLF, here whole
            else:
                self._state = _DATA
                self.remaining = size + 2  # the chunk, then its CRLF
        return i


_HEX = frozenset(b"0123456789abcdefABCDEF")
# A whole size line as chunk_size reads it: hex digits, blanks, an extension, CRLF.
SIZE_LINE = re.compile(rb"([0-9a-fA-F]{1,16})[ \t]*(?:;[^\r\n]{0,%d})?\r\n" % MAX_LINE)


def chunk_size(line: bytes | bytearray) -> int:
    """The size a chunk's size line gives (its extensions ignored); FramingError if none.
    Hex digits only, as HTTP/1.1 has it: ``int(..., 16)`` alone would also take ``0x1a``,
    ``1_a``, ``+1a`` or spaces, which another reader of the same bytes may not."""
    size = line.split(b";", 1)[0].rstrip(b"\r\n").rstrip(b" \t")
    if not size or len(size) > 16 or not _HEX.issuperset(size):
        raise FramingError(f"bad chunk size line {bytes(line[:40])!r}")
    return int(size, 16)
