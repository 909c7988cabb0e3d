"""A saved image's archive (docker load), parsed as the daemon will unpack it, and re-written.

dockerd unpacks a load into a directory (every entry name cleaned, PAX and GNU records applied,
links made) and then reads ``manifest.json`` (or, without one, ``repositories``) from it: the
tags it gives the loaded images are the ones that file names. A text match on entry names
misses ``./manifest.json``, ``x/../manifest.json``, a PAX ``path`` record, a symbolic link or a
second entry, so the archive is parsed here (the standard library's tarfile, in stream mode:
nothing is held but the two small name files) and what reaches the daemon is a plain archive
written anew, entry by entry, with the cleaned names the checks saw. Whatever the client's
archive hides, the daemon unpacks only what was checked.

A load whose ``manifest.json`` or ``repositories`` is anything but one plain regular file at
the top of the archive, named in its own header, is refused (400), as is any entry placed
through a symbolic link, escaping the archive, or of a kind a saved image never holds. The
names inside the two files go through the caller's edits (gateway/services/image_transfer.py:
the tenant's names to its daemon names, reserved and public names refused).
"""

from __future__ import annotations

import bz2
import json
import lzma
import posixpath
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from gateway.errors import DockerError

NAME_FILES = ("manifest.json", "repositories")
NAME_FILE_LIMIT = 4 * 1024 * 1024
PIECE = 1 << 20

_SEND_INSTEAD = "send the archive docker save wrote, unchanged"


def refused(why: str) -> DockerError:
    return DockerError(400, f"refusing to load this archive: {why}; {_SEND_INSTEAD}")


# -- the raw stream: decompressed as dockerd would ---------------------------------------------------
_GZIP, _BZIP2, _XZ, _ZSTD = b"\x1f\x8b\x08", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd"


def _decompressed(head: bytes, rest: Iterator[bytes], new) -> Iterator[bytes]:
    """The decompressed stream of ``head`` + ``rest``; ``new()`` makes a decompressor for each
    concatenated stream (gzip members, bzip2 and xz streams), as dockerd reads them."""
    d = new()
    pending = head
    while True:
        while pending:
            out = d.decompress(pending)
            if out:
                yield out
            if d.eof:
                pending = d.unused_data
                if pending:
                    d = new()
                continue
            pending = b""
        try:
            pending = next(rest)
        except StopIteration:
            return  # (a truncated stream: the tar parser reports the missing end)


class _Gzip:
    """zlib's gzip decompressor with bz2/lzma's ``eof``/``unused_data`` interface."""

    def __init__(self):
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def decompress(self, data: bytes) -> bytes:
        return self._d.decompress(data)

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data


class _Reader:
    """Reads over an iterator of byte strings (the request's body): whole blocks for tarfile's
    header parser (``read_exactly``), a member's data in the pieces they came in
    (``read_piece``); keeps the first block it gave out (``head``)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._it = chunks
        self._buf = bytearray()
        self.head = b""

    def read_exactly(self, n: int) -> bytes:
        """``n`` bytes, fewer only at the stream's end (a header, a name file)."""
        while len(self._buf) < n:
            try:
                chunk = next(self._it)
            except StopIteration:
                break
            self._buf.extend(chunk)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self._keep_head(out)
        return out

    def read_piece(self, n: int) -> bytes:
        """Up to ``n`` bytes as they came: what is buffered, else the next piece (a member's
        data is passed on in the pieces the client sent, never joined and cut again)."""
        if not self._buf:
            return self._next_piece(n)
        take = min(n, len(self._buf))
        out = bytes(self._buf[:take])
        del self._buf[:take]
        self._keep_head(out)
        return out

    def _next_piece(self, n: int) -> bytes:
        """Nothing buffered: the next piece as it came, up to ``n`` bytes, not joined to a buffer
        and cut out of it again (the rest of a larger piece stays buffered)."""
        for chunk in self._it:
            if not chunk:
                continue
            if len(chunk) > n:
                self._buf.extend(memoryview(chunk)[n:])
                chunk = chunk[:n]
            out = bytes(chunk)
            self._keep_head(out)
            return out
        return b""

    def _keep_head(self, out: bytes) -> None:
        if len(self.head) < tarfile.BLOCKSIZE:
            self.head += out[: tarfile.BLOCKSIZE - len(self.head)]


# tarfile's header errors, as TarFile.next tells them apart (not in its stubs: its own names).
_tarfile_names = vars(tarfile)
_EOF_HEADER: type[Exception] = _tarfile_names["EOFHeaderError"]
_BAD_HEADER: tuple[type[Exception], ...] = tuple(
    _tarfile_names[n] for n in ("InvalidHeaderError", "EmptyHeaderError", "TruncatedHeaderError")
)
_SUBSEQUENT_HEADER: type[Exception] = _tarfile_names["SubsequentHeaderError"]


class _Source:
    """The archive as tarfile's TarInfo.fromtarfile reads a member's headers from it (this
    stands for its TarFile: ``fileobj``, ``offset``, ``encoding``, ``errors``, ``pax_headers``):
    the same parsing of headers, PAX and GNU records as tarfile's own stream mode, whose
    TarFile.next this follows, ends and errors included. A member's data is then read here in
    the pieces it came in: tarfile's stream copied every byte through its buffer several times,
    most of a load's CPU in the gateway."""

    encoding = tarfile.ENCODING
    errors = "surrogateescape"

    def __init__(self, reader: _Reader):
        self.reader = reader
        self.fileobj = self
        self.offset = 0  # where the next header starts (tarfile's TarInfo sets it)
        self.pax_headers: dict[str, str] = {}  # the archive's global PAX headers
        self.position = 0

    def read(self, n: int) -> bytes:
        data = self.reader.read_exactly(n)
        self.position += len(data)
        return data

    def tell(self) -> int:
        return self.position

    def piece(self, n: int) -> bytes:
        data = self.reader.read_piece(n)
        self.position += len(data)
        return data

    def next_member(self) -> _Info | None:
        """The next member's header (None at the archive's end), the stream then at its data."""
        while self.position < self.offset:  # the previous member's data not read, and padding
            if not self.piece(min(PIECE, self.offset - self.position)):
                raise tarfile.ReadError("unexpected end of data")
        try:
            return _Info.fromtarfile(self)  # pyright: ignore[reportArgumentType]
        except _EOF_HEADER:
            return None
        except _BAD_HEADER as exc:
            if self.offset == 0:
                raise tarfile.ReadError(str(exc)) from None
            return None
        except _SUBSEQUENT_HEADER as exc:
            raise tarfile.ReadError(str(exc)) from None


class _Info(tarfile.TarInfo):
    """A member that remembers whether a GNU long-name record named it (a PAX ``path`` record
    shows in its ``pax_headers``)."""

    long_name = False

    def _proc_gnulong(self, tarfile):  # type: ignore[override]
        member = super()._proc_gnulong(tarfile)  # pyright: ignore[reportAttributeAccessIssue]
        member.long_name = True
        return member


# -- names -------------------------------------------------------------------------------------------
def clean(name: str) -> str:
    """An entry's name as dockerd's unpacking resolves it (Go's filepath.Clean, joined to the
    target directory): ``./a``, ``a//b``, ``x/../a`` and ``/a`` are ``a``; "." is the top.
    A name that climbs out of the archive is refused."""
    if name.startswith("/"):
        out = posixpath.normpath(name).lstrip("/") or "."
    else:
        out = posixpath.normpath(name) if name else "."
    if out == ".." or out.startswith("../"):
        raise refused(f"the entry {name!r} lies outside the archive")
    return out


def _ancestors(name: str) -> Iterator[str]:
    parts = name.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


# -- the archive ---------------------------------------------------------------------------------------
def rewrite_load(
    chunks: Iterable[bytes],
    edit_manifest: Callable[[Any], Any],
    edit_repositories: Callable[[Any], Any],
) -> Iterator[bytes]:
    """The archive of a load, parsed and written anew as it streams (see the module docstring);
    raises DockerError (from the generator) for an archive it refuses."""
    raw = iter(chunks)
    head = b""
    for chunk in raw:
        head += chunk
        if len(head) >= 6:
            break
    if head.startswith(_ZSTD):
        raise refused("zstd-compressed archives are not read here; decompress it first (zstd -d)")
    if head.startswith(_GZIP):
        stream: Iterator[bytes] = _decompressed(head, raw, _Gzip)
    elif head.startswith(_BZIP2):
        stream = _decompressed(head, raw, bz2.BZ2Decompressor)
    elif head.startswith(_XZ):
        stream = _decompressed(head, raw, lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ))
    else:
        stream = _chain(head, raw)
    compressed = head.startswith((_GZIP, _BZIP2, _XZ))
    reader = _Reader(stream)
    source = _Source(reader)
    try:
        first = source.next_member()
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
        if compressed:
            raise refused(f"it does not decompress to a tar archive ({exc})") from None
        # Not a tar at all: dockerd says so in its own words, from the first block alone
        # (one block cannot hold an entry with content, so nothing can be loaded from it).
        yield reader.head
        _drain(raw)
        return
    try:
        yield from _members(source, first, edit_manifest, edit_repositories)
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
        _drain(raw)
        raise refused(f"it is not a valid tar archive ({exc})") from None
    except DockerError:
        _drain(raw)
        raise
    yield b"\0" * (2 * tarfile.BLOCKSIZE)
    _drain(raw)


def _chain(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if head:
        yield head
    yield from rest


def _drain(raw: Iterator[bytes]) -> None:
    """Read what the client still sends (after the archive's end, or after a refusal), so that
    it reads the answer instead of failing to send."""
    for _ in raw:
        pass


def _members(source: _Source, member: _Info | None, edit_manifest, edit_repositories) -> Iterator[bytes]:
    seen_names: set[str] = set()
    links: set[str] = set()  # symbolic links so far (a later entry through one is refused)
    while member is not None:
        yield from _member(source, member, seen_names, links, edit_manifest, edit_repositories)
        member = source.next_member()


def _member(
    source: _Source, member: _Info, seen_names: set[str], links: set[str], edit_manifest, edit_repositories
) -> Iterator[bytes]:
    """One member written anew: its header, then its data (a name file edited)."""
    name = clean(member.name)
    first = name.split("/", 1)[0]
    through = next((a for a in _ancestors(name) if a in links), None)
    if through is not None:
        raise refused(f"the entry {member.name!r} lies under the symbolic link {through!r}")
    if first in NAME_FILES:
        _check_name_file(member, name, first, seen_names)
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()) or member.issparse():
        raise refused(f"the entry {member.name!r} is of a kind a saved image never holds")
    if member.issym():
        links.add(name)
    else:
        links.discard(name)
    out = tarfile.TarInfo(name)
    out.type = tarfile.REGTYPE if member.isreg() else member.type
    out.mode, out.uid, out.gid = member.mode, member.uid, member.gid
    out.uname, out.gname, out.mtime = member.uname, member.gname, int(member.mtime)
    if member.islnk():
        out.linkname = clean(member.linkname)
    elif member.issym():
        out.linkname = member.linkname
    if member.isreg() and first in NAME_FILES:
        if member.size > NAME_FILE_LIMIT:
            raise refused(f"{name} is larger than {NAME_FILE_LIMIT} bytes")
        data = source.read(member.size)
        if len(data) < member.size:
            raise refused(f"the entry {member.name!r} ends before its size")
        data = _edit_json(name, data, edit_manifest if name == "manifest.json" else edit_repositories)
        out.size = len(data)
        yield _header(out)
        yield data + _padding(len(data))
        return
    out.size = member.size if member.isreg() else 0
    yield _header(out)
    if not member.isreg():
        return
    left = member.size
    while left:
        piece = source.piece(min(PIECE, left))
        if not piece:
            raise refused(f"the entry {member.name!r} ends before its size")
        left -= len(piece)
        yield piece
    yield _padding(member.size)


def _check_name_file(member: tarfile.TarInfo, name: str, first: str, seen: set[str]) -> None:
    """``manifest.json`` and ``repositories`` hold the names the load gives its images: each may
    be only one plain regular file at the archive's top, named in its own header."""
    what = f"{first} must be one regular file at the top of the archive"
    if name != first:
        raise refused(f"{what}, not a directory holding {member.name!r}")
    if not member.isreg():
        kind = "a symbolic link" if member.issym() else "a hard link" if member.islnk() else "not a file"
        raise refused(f"{what}; the entry {member.name!r} is {kind}")
    if first in seen:
        raise refused(f"{what}; the archive holds it twice (as {member.name!r} the second time)")
    if member.name != first:
        raise refused(f"{what}, named plainly; the entry is named {member.name!r}")
    if "path" in member.pax_headers or getattr(member, "long_name", False):
        raise refused(f"{what}, named in its own header, not by a PAX or GNU long-name record")
    seen.add(first)


def _edit_json(name: str, data: bytes, edit: Callable[[Any], Any]) -> bytes:
    try:
        parsed = json.loads(data)
    except ValueError:
        raise refused(f"{name} is not JSON") from None
    return json.dumps(edit(parsed)).encode()


def _header(info: tarfile.TarInfo) -> bytes:
    try:
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    except (ValueError, UnicodeError) as exc:
        raise refused(f"the entry {info.name!r} cannot be written again ({exc})") from None


def _padding(size: int) -> bytes:
    return b"\0" * ((tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE) % tarfile.BLOCKSIZE)
