"""Rewrite a few small members of a tar archive as it streams through.

Image loads (manifest.json, repositories), saves (the same, back) and build contexts (the
Dockerfile) carry image names the gateway must translate. The archive is never held whole:
headers are parsed as they pass, every member streams through untouched except the ones asked
for, which are buffered (they are small: a manifest, a Dockerfile) and re-emitted with a new
size and checksum. Anything that is not a plain ustar/GNU stream (compressed contexts, PAX
size overrides) passes through unchanged.
"""

from __future__ import annotations

import posixpath
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


# -- build contexts ------------------------------------------------------------------------------
# A build context is read strictly, as the daemon's Go archive/tar reader and its unpacker read
# it, because a member the gateway misreads is a Dockerfile it never checks: PAX `path`/`size`
# records and GNU long names apply to the next member, header-only members (links, directories,
# devices) carry no data whatever their size field says, and a member lands where the unpacker
# puts it (the name cleaned, symlinks met on the way followed, inside the context's root).

PAX_LIMIT = 1024 * 1024
_HEADER_ONLY = frozenset(b"123456")
_REGULAR = (b"0", b"\0")


class ContextError(ValueError):
    """The build context cannot be checked as it is; the message says what to send instead."""


def _go_number(field: bytes) -> int:
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        if field[0] & 0x40:
            raise ContextError("the build context has a tar header with a negative number")
        return value
    text = field.strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ContextError(
            "the build context is not a valid tar archive (a header field is not a number)"
        ) from None


def _go_string(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


def is_tar(first: bytes) -> bool:
    """Whether ``first`` starts with a tar header the daemon's reader accepts."""
    return len(first) >= BLOCK and (first[:BLOCK] == b"\0" * BLOCK or _checksum_ok(first[:BLOCK]))


def _checksum_ok(header: bytes) -> bool:
    try:
        stored = _go_number(header[148:156])
    except ContextError:
        return False
    h = bytearray(header)
    h[148:156] = b" " * 8
    unsigned = sum(h)
    signed = sum(b - 256 if b > 127 else b for b in h)
    return stored in (unsigned, signed)


def _parse_pax(data: bytes) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    while data:
        length, sep, _ = data.partition(b" ")
        if not sep or not length.isdigit() or int(length) > len(data) or int(length) < len(length) + 3:
            raise ContextError("the build context has a malformed PAX header")
        record, data = data[: int(length)], data[int(length) :]
        if not record.endswith(b"\n"):
            raise ContextError("the build context has a malformed PAX header")
        key, eq, value = record[len(length) + 1 : -1].partition(b"=")
        if not eq:
            raise ContextError("the build context has a malformed PAX header")
        if key.startswith(b"GNU.sparse."):
            raise ContextError("the build context has a sparse file; send a plain tar (docker build does)")
        records[key] = value
    return records


def _pax_bytes(records: dict[bytes, bytes]) -> bytes:
    out = b""
    for key, value in records.items():
        body = b" " + key + b"=" + value + b"\n"
        n = len(body) + 1
        while len(str(n).encode()) + len(body) != n:
            n += 1
        out += str(n).encode() + body
    return out


def _header_name(header: bytes) -> bytes:
    name = _go_string(header[0:100])
    magic, version, trailer = header[257:263], header[263:265], header[508:512]
    prefix = b""
    if magic == b"ustar\0" and trailer == b"tar\0":
        prefix = _go_string(header[345:476])  # star
    elif magic == b"ustar\0":
        prefix = _go_string(header[345:500])  # ustar, pax
    del version
    return prefix + b"/" + name if prefix else name


class _Tree:
    """Where the unpacker puts each member: the symlinks made so far, followed as the kernel
    follows them inside the context's root."""

    def __init__(self) -> None:
        self.links: dict[str, str] = {}

    def _walk(self, start: str, parts: list[str], hops: list[int]) -> str:
        cur = start
        for part in parts:
            if part in ("", "."):
                continue
            if part == "..":
                cur = posixpath.dirname(cur)
                continue
            cand = posixpath.join(cur, part)
            target = self.links.get(cand)
            if target is None:
                cur = cand
                continue
            hops[0] += 1
            if hops[0] > 40:
                raise ContextError("the build context has a loop of symbolic links")
            cur = self._walk("/" if target.startswith("/") else cur, target.split("/"), hops)
        return cur

    def place(self, name: str) -> tuple[str, str]:
        """(where the member lands, its cleaned name) for a member called ``name``."""
        clean = posixpath.normpath("/" + name)
        parent, base = posixpath.split(clean)
        return posixpath.join(self._walk("/", parent.split("/"), [0]), base), clean

    def landed(self, path: str, typeflag: bytes, linkname: str) -> None:
        if typeflag == b"5":
            self.links.pop(path, None)  # a directory replaces a symlink, merges with a directory
        else:
            for p in [p for p in self.links if p == path or p.startswith(path + "/")]:
                del self.links[p]
        if typeflag == b"2":
            self.links[path] = linkname


def rewrite_build_context(
    chunks: Iterable[bytes], targets: set[str], edit: Callable[[str, bytes], bytes]
) -> Iterator[bytes]:
    """Yield the tar build context from ``chunks`` with every regular member that lands on one
    of ``targets`` (absolute paths inside the context: the build file and its fallback) replaced
    by ``edit(name, content)``. ContextError for what could put anything else there: a symbolic
    or hard link, device or sparse file named as the build file, a symbolic link on its path, a
    build file too large to check, or a header the daemon's reader would read differently."""
    it = iter(chunks)
    buf = bytearray()
    tree = _Tree()
    ancestors = {a for t in targets for a in _parents(t)}

    def fill(n: int) -> bool:
        while len(buf) < n:
            try:
                buf.extend(next(it))
            except StopIteration:
                return False
        return True

    def take(n: int) -> bytes:
        if not fill(n):
            raise ContextError("the build context ends in the middle of a tar member")
        out = bytes(buf[:n])
        del buf[:n]
        return out

    pax: dict[bytes, bytes] = {}
    long_name = long_link = None
    pending: list[bytes] = []  # meta headers (and their data) for the next member, as read
    while True:
        if not fill(BLOCK):
            if buf or pending:
                raise ContextError("the build context ends in the middle of a tar header")
            return  # no end-of-archive blocks: the reader stops here too
        header = take(BLOCK)
        if header == b"\0" * BLOCK:
            second = take(BLOCK) if fill(BLOCK) else b""
            if second and second != b"\0" * BLOCK:
                raise ContextError("the build context has a zero block followed by a header")
            yield header + second
            yield bytes(buf)
            yield from it  # after the end of the archive nothing is unpacked
            return
        if not _checksum_ok(header):
            raise ContextError("the build context is not a valid tar archive (bad header checksum)")
        typeflag = header[156:157]
        size = _go_number(header[124:136])
        if typeflag in (b"x", b"g", b"L", b"K"):
            if size > PAX_LIMIT:
                raise ContextError("the build context has an oversized tar extension header")
            data = take(_padded(size))
            content = data[:size]
            if typeflag == b"x":
                pax = _parse_pax(content)
                pending = [p for p in pending if p[156:157] in (b"L", b"K")]
                pending.append(header + data)
                continue
            if typeflag == b"L":
                long_name = _go_string(content)
                pending.append(header + data)
                continue
            if typeflag == b"K":
                long_link = _go_string(content)
                pending.append(header + data)
                continue
            # A global header is a member of its own: the unpacker removes what is at its name.
            records = _parse_pax(content)
            name = _text(records.get(b"path") or _header_name(header))
            path, clean = tree.place(name)
            tree.landed(path, typeflag, "")
            yield from pending
            pending, pax, long_name, long_link = [], {}, None, None
            yield header + data
            continue
        raw_name = _header_name(header)
        name_b = pax.get(b"path") or raw_name
        if long_name:
            name_b = long_name
        link_b = pax.get(b"linkpath") or _go_string(header[157:257])
        if long_link:
            link_b = long_link
        if pax.get(b"size"):
            if not pax[b"size"].isdigit():
                raise ContextError("the build context has a malformed PAX size")
            size = int(pax[b"size"])
        if typeflag == b"\0" and (name_b.endswith(b"/") or raw_name.endswith(b"/")):
            if not (name_b.endswith(b"/") and raw_name.endswith(b"/")):
                raise ContextError("the build context has a member whose type depends on the tar reader")
            typeflag = b"5"
        if typeflag in (b"S",):
            raise ContextError("the build context has a sparse file; send a plain tar (docker build does)")
        data_size = 0 if typeflag[0] in _HEADER_ONLY else size
        name = _text(name_b)
        path, clean = tree.place(name)
        hit = path in targets or clean in targets
        if hit and typeflag in _REGULAR:
            if data_size > MEMBER_LIMIT:
                raise ContextError(f"the build file {name} is larger than {MEMBER_LIMIT} bytes")
            content = take(_padded(data_size))[:data_size]
            new = edit(name, content)
            pax.pop(b"size", None)
            for meta in pending:
                if meta[156:157] == b"x":
                    yield _meta_header(meta, _pax_bytes(pax))
                else:
                    yield meta
            yield _with_size(header, len(new))
            yield new + b"\0" * ((BLOCK - len(new) % BLOCK) % BLOCK)
        else:
            if hit and typeflag not in (b"5", b"g"):
                raise ContextError(
                    f"the build file {name} is a link or special file in the build context; "
                    "send it as a regular file"
                )
            if (path in ancestors or clean in ancestors) and typeflag == b"2":
                raise ContextError(
                    f"the build context has a symbolic link ({name}) on the build file's path; "
                    "send the build file under its real path"
                )
            yield from pending
            yield header
            remaining = _padded(data_size)
            while remaining:
                if not buf and not fill(1):
                    raise ContextError("the build context ends in the middle of a tar member")
                n = min(remaining, len(buf))
                yield bytes(buf[:n])
                del buf[:n]
                remaining -= n
        tree.landed(path, typeflag, _text(link_b))
        pending, pax, long_name, long_link = [], {}, None, None


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def _text(name: bytes) -> str:
    return name.decode("utf-8", errors="surrogateescape")


def _parents(path: str) -> list[str]:
    out = []
    while path not in ("/", ""):
        path = posixpath.dirname(path)
        out.append(path)
    return out


def _meta_header(meta: bytes, records: bytes) -> bytes:
    header = _with_size(meta[:BLOCK], len(records))
    return header + records + b"\0" * ((BLOCK - len(records) % BLOCK) % BLOCK)
