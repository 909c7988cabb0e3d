"""Rewrite a few small members of a tar archive as it streams through.

Image loads (manifest.json, repositories), saves (the same, back) and build contexts (the
Dockerfile) carry image names the gateway must translate. The archive is never held whole:
headers are parsed as they pass, every member streams through untouched except the ones asked
for, which are buffered (they are small: a manifest, a Dockerfile) and re-emitted with a new
size and checksum. Anything that is not a plain ustar/GNU stream (compressed contexts, PAX
size overrides) passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

BLOCK = 512
MEMBER_LIMIT = 4 * 1024 * 1024


def _octal(field: bytes) -> int:
    if field and field[0] & 0x80:  # base-256 (GNU) for large sizes
        value = int.from_bytes(field[1:], "big")
        return value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", errors="replace")


def _with_size(header: bytes, size: int) -> bytes:
    h = bytearray(header)
    h[124:136] = b"%011o\0" % size
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def looks_like_tar(first: bytes) -> bool:
    if len(first) < BLOCK:
        return False
    header = first[:BLOCK]
    try:
        stored = _octal(header[148:156])
    except ValueError:
        return False
    h = bytearray(header)
    h[148:156] = b" " * 8
    return stored == sum(h)


def rewrite(
    chunks: Iterable[bytes], wanted: Callable[[str], bool], edit: Callable[[str, bytes], bytes]
) -> Iterator[bytes]:
    """Yield the archive from ``chunks`` with each wanted member's content replaced by
    ``edit(name, content)``."""
    it = iter(chunks)
    buf = bytearray()

    def fill(n: int) -> bool:
        while len(buf) < n:
            try:
                data = next(it)
            except StopIteration:
                return False
            buf.extend(data)
        return True

    first = True
    while True:
        if not fill(BLOCK):
            break
        header = bytes(buf[:BLOCK])
        if first:
            first = False
            if not looks_like_tar(header):
                break  # compressed or not a tar: pass it through as it is
        if header == b"\0" * BLOCK:
            break  # end of archive: the rest passes through
        try:
            size = _octal(header[124:136])
        except ValueError:
            break
        typeflag = header[156:157]
        padded = (size + BLOCK - 1) // BLOCK * BLOCK
        name = _name(header)
        if typeflag in (b"0", b"\0") and size <= MEMBER_LIMIT and wanted(name):
            if not fill(BLOCK + padded):
                break
            content = bytes(buf[BLOCK : BLOCK + size])
            del buf[: BLOCK + padded]
            new = edit(name, content)
            yield _with_size(header, len(new))
            yield new + b"\0" * ((BLOCK - len(new) % BLOCK) % BLOCK)
            continue
        del buf[:BLOCK]
        yield header
        remaining = padded
        while remaining:
            if not buf and not fill(1):
                return
            take = min(remaining, len(buf))
            yield bytes(buf[:take])
            del buf[:take]
            remaining -= take
    if buf:
        yield bytes(buf)
    yield from it
