"""An offline busybox:latest: its rootfs built from the static busybox binary, imported into a daemon."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tarfile
import urllib.parse

from .common import RUN_BASE, Fail, run
from .endpoints import http_request

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
"""
SHADOW = "".join(f"{line.split(':')[0]}:*::0:::::\n" for line in PASSWD.splitlines())
BUSYBOX_CHANGES = ['CMD ["sh"]', "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def find_busybox() -> str:
    for cand in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox") or ""):
        if cand and os.path.isfile(cand):
            if not elf_is_static(cand):
                raise Fail(f"{cand} is dynamically linked; install busybox-static (scripts/install-deps)")
            return cand
    raise Fail("busybox not found; install busybox-static (scripts/install-deps)")


def elf_is_static(path: str) -> bool:
    """True unless the ELF file has a PT_INTERP program header (a dynamic loader)."""
    with open(path, "rb") as fh:
        ident = fh.read(64)
        if ident[:4] != b"\x7fELF":
            return False
        is64, little = ident[4] == 2, ident[5] == 1
        e = "<" if little else ">"
        if is64:
            (phoff,) = struct.unpack(e + "Q", ident[32:40])
            phentsize, phnum = struct.unpack(e + "HH", ident[54:58])
        else:
            (phoff,) = struct.unpack(e + "I", ident[28:32])
            phentsize, phnum = struct.unpack(e + "HH", ident[42:46])
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    for i in range(phnum):
        (p_type,) = struct.unpack(e + "I", table[i * phentsize : i * phentsize + 4])
        if p_type == 3:  # PT_INTERP
            return False
    return True


def build_busybox_tar(out: str) -> None:
    """The rootfs of a busybox:latest lookalike, as `tar -C ROOT -c .` would write it."""
    busybox = find_busybox()
    applets = run([busybox, "--list-full"]).stdout.decode().split()
    mtime = int(os.stat(busybox).st_mtime)
    tmp = out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo("./" + name if name else ".")
            info.type, info.mode, info.mtime = kind, mode, mtime
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.linkname = link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add("", tarfile.DIRTYPE, 0o755)
        dirs = {
            "bin",
            "sbin",
            "usr",
            "usr/bin",
            "usr/sbin",
            "usr/local",
            "usr/local/bin",
            "usr/local/sbin",
            "etc",
            "home",
            "var",
            "var/spool",
            "var/spool/mail",
            "var/www",
            "proc",
            "sys",
            "dev",
            "tmp",
            "root",
        }
        for applet in applets:
            parent = os.path.dirname(applet)
            while parent:
                dirs.add(parent)
                parent = os.path.dirname(parent)
        modes = {"tmp": 0o1777, "root": 0o700}
        for d in sorted(dirs):
            add(d, tarfile.DIRTYPE, modes.get(d, 0o755))
        with open(busybox, "rb") as fh:
            add("bin/busybox", tarfile.REGTYPE, 0o755, fh.read())
        for applet in sorted(set(applets)):
            if applet in ("bin/busybox", "linuxrc") or "/" not in applet:
                continue
            add(applet, tarfile.LNKTYPE, 0o755, link="./bin/busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, PASSWD.encode())
        add("etc/group", tarfile.REGTYPE, 0o644, GROUP.encode())
        add("etc/shadow", tarfile.REGTYPE, 0o640, SHADOW.encode())
    os.replace(tmp, out)


def docker_cli() -> str:
    for cand in ("/usr/bin/docker", "/usr/local/bin/docker", shutil.which("docker") or ""):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise Fail("no docker CLI found (install docker.io: scripts/install-deps)")


def clean_docker_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_CONFIG"] = os.path.join(RUN_BASE, ".docker-cli")  # no user headers or contexts
    return env


def seed_busybox(endpoint: str, tarball: str, verify: bool) -> bool:
    """Import busybox:latest into the daemon unless it has it; True if it imported."""
    imported = False
    status, _ = http_request(endpoint, "GET", "/images/busybox:latest/json", timeout=10)
    if status != 200:
        query = urllib.parse.urlencode(
            {"fromSrc": "-", "repo": "busybox", "tag": "latest", "changes": BUSYBOX_CHANGES}, doseq=True
        )
        with open(tarball, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            try:
                status, body = http_request(
                    endpoint,
                    "POST",
                    f"/images/create?{query}",
                    body=fh,
                    headers={"Content-Type": "application/x-tar", "Content-Length": str(size)},
                    timeout=120,
                )
            except OSError as exc:
                raise Fail(f"importing busybox:latest into {endpoint} failed: {exc}") from exc
        errors = [m.get("error") for m in _json_stream(body) if m.get("error")]
        if status != 200 or errors:
            raise Fail(f"importing busybox:latest into {endpoint} failed: {status} {errors or body[:200]!r}")
        imported = True
    if verify or imported:
        proc = run(
            [docker_cli(), "-H", endpoint, "run", "--rm", "busybox:latest", "echo", "ok"],
            timeout=60,
            check=False,
            env=clean_docker_env(),
        )
        if proc.returncode != 0 or proc.stdout.strip() != b"ok":
            err = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
            raise Fail(f"`docker run --rm busybox:latest echo ok` failed on {endpoint}: {err[-300:]}")
    return imported


def _json_stream(body: bytes) -> list[dict]:
    out, dec, text, i = [], json.JSONDecoder(), body.decode("utf-8", "replace"), 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        try:
            obj, i = dec.raw_decode(text, i)
        except ValueError:
            break
        if isinstance(obj, dict):
            out.append(obj)
    return out
