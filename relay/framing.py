"""Where an HTTP/1.1 message body ends, found by watching its bytes go by.

A relay that keeps its connections alive must know where each body ends, yet has no reason to
take the body apart: ``BodyEnd`` follows the framing (a Content-Length, or chunks) over the
bytes as they pass, so they can be passed on exactly as they came, in the pieces they came in
(one write per read, not one per chunk), and the bytes after the end stay for the next message.
"""

from __future__ import annotations

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

    def feed(self, data: bytes) -> int:
        """How many of ``data``'s bytes belong to the body: all of them while it goes on,
        fewer when it ends inside ``data`` (the rest is the next message's). Sets ``done``."""
        if self.done:
            return 0
        if not self.chunked:
            take = min(len(data), self.remaining)
            self.remaining -= take
            self.done = self.remaining == 0
            return take
        # One pass over ``data``: a chunk whose size line and bytes are all here is skipped in
        # the same step (a log stream is one chunk per line: about two million of them in
        # 200 MB of 100-byte lines, so the per-chunk work is what the relay's rate is).
        i, n = 0, len(data)
        find = data.find
        while i < n:
            if self._state == _DATA:
                take = min(n - i, self.remaining)
                i += take
                self.remaining -= take
                if self.remaining:
                    return i
                self._state = _SIZE
                continue
            newline = find(b"\n", i, i + MAX_LINE + 1)
            if newline < 0:
                self._line += data[i : i + MAX_LINE + 1]
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
            if self._state == _SIZE:
                size = chunk_size(line)
                if size == 0:
                    self._state = _TRAILER
                elif n - i >= size + 2:
                    i += size + 2  # the chunk and its CRLF, here whole
                else:
                    self._state = _DATA
                    self.remaining = size + 2  # the chunk, then its CRLF
            elif not line.strip():  # the blank line after the trailers: the end
                self.done = True
                return i
        return i


def chunk_size(line: bytes) -> int:
    """The size a chunk's size line gives (its extensions ignored); FramingError if none."""
    try:
        size = int(line.split(b";", 1)[0].strip(), 16)
    except ValueError:
        raise FramingError(f"bad chunk size line {line[:40]!r}") from None
    if size < 0:
        raise FramingError(f"bad chunk size line {line[:40]!r}")
    return size
