"""Image ownership: which project sees which image, and the names images carry on the daemons.

Daemon tags are global and image IDs are shared by content, so who owns an image lives in the
store (store.ImageRef), never on a daemon. A tenant's tag maps to a daemon reference that Moorage
controls (the daemon reference scheme):

    tenant (project P)                      daemon
    app:1                                   moorage/p-P/docker.io/library/app:1
    team/app:1                              moorage/p-P/docker.io/team/app:1
    198.18.0.1:5000/team/app:1              moorage/p-P/198.18.0.1__5000/team/app:1
    busybox:latest (public)                 busybox:latest

i.e. ``moorage/p-<project>/<domain>/<path>:<tag>`` with the fully normalized name (so the
mapping is one-to-one and decodes without the store); a port's ``:`` in the domain becomes
``__`` (a registry host never holds ``_``; path components may). Public images, which an
operator publishes (`moorage images publish REF`), keep their own name on the daemons and have
project "" in the store. A tenant never sees a daemon reference: every answer naming one is
rewritten back (rewrite_text).

Resolution (resolve) follows dockerd's GetImage within what the project may see: a full ID,
then a name (the project's own tags first, then public ones), then an unambiguous ID prefix.
Another project's image is indistinguishable from a missing one: the routes forward a decoy
(decoy) that the daemon surely lacks, of the same shape as what the tenant typed, and rewrite
the decoy back in dockerd's answer, so the 404 is dockerd's own, word for word.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass

import peewee

from gateway import store
from gateway.errors import DockerError

DAEMON_PREFIX = "moorage/p-"
DEFAULT_DOMAIN = "docker.io"
PUBLIC = ""  # the project of a public image's rows

# The grammar of github.com/docker/distribution/reference.
_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]*)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"^((?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)(?::({_TAG}))?(?:@({_DIGEST}))?$"
)
_ANY_NAME = re.compile(rf"^(?:{_DOMAIN}/)?[a-zA-Z0-9._-]+(?:/[a-zA-Z0-9._-]+)*(?::{_TAG})?(?:@{_DIGEST})?$")
_FULL_ID = re.compile(r"^(?:sha256:)?([0-9a-f]{64})$")
_HEX = re.compile(r"^[0-9a-f]+$")
ZERO_ID = "0" * 64

# A daemon reference anywhere in a text (progress lines, error messages, tags).
_DAEMON_IN_TEXT = re.compile(
    r"(docker\.io/)?moorage/p-([a-z0-9]+)/([a-z0-9][a-z0-9._-]*)((?:/[a-z0-9][a-z0-9._-]*)+)"
    rf"(?::({_TAG}))?(?:@({_DIGEST}))?"
)


class ReferenceError_(ValueError):
    """A reference dockerd would refuse to parse; the message is dockerd's."""


@dataclass(frozen=True)
class Ref:
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        if self.domain != DEFAULT_DOMAIN:
            return self.full_name
        if self.path.startswith("library/") and self.path.count("/") == 1:
            return self.path[len("library/") :]
        return self.path

    def suffix(self, default_tag: bool = True) -> str:
        if self.digest:
            return f"@{self.digest}"
        tag = self.tag or ("latest" if default_tag else None)
        return f":{tag}" if tag else ""

    def familiar(self, default_tag: bool = True) -> str:
        """As dockerd prints it: "app:1", "team/app:latest", "reg:5000/x/app:1"."""
        return self.familiar_name + self.suffix(default_tag)


def parse(text: str) -> Ref:
    """Parse a reference as dockerd's ParseNormalizedNamed does; ReferenceError_ if it would refuse."""
    m = _REFERENCE.match(text)
    if not m:
        if text and _ANY_NAME.match(text) and text != text.lower():
            raise ReferenceError_("invalid reference format: repository name must be lowercase")
        raise ReferenceError_("invalid reference format")
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    if _FULL_ID.match(name):
        raise ReferenceError_(f"invalid repository name ({name}), cannot specify 64-byte hexadecimal strings")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == "index.docker.io":
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = "library/" + path
    if len(domain) + 1 + len(path) > 255:
        raise ReferenceError_("repository name must not be more than 255 characters")
    if path != path.lower():
        raise ReferenceError_("invalid reference format: repository name must be lowercase")
    return Ref(domain, path, tag, digest)


def reserved(ref: Ref) -> bool:
    """Whether ``ref`` names a repository under ``moorage/``: the prefix of every project's
    daemon names (see the module docstring), so a tenant's own name there could be another
    project's image on the daemon."""
    return ref.path.startswith("moorage/") or ref.familiar_name.startswith("moorage/")


def refuse_reserved(ref: Ref) -> None:
    """DockerError 400 when a tenant names a repository under ``moorage/`` (tag, commit, import,
    pull, push, load, build -t): dockerd has no such rule, so the wording says what to do."""
    if reserved(ref):
        raise DockerError(
            400,
            f"repository name {ref.familiar_name} is reserved for the gateway's own names; "
            "use another repository name",
        )


def normalize(text: str) -> str:
    """The tenant's reference as the store keeps it: familiar, with a tag (default latest)."""
    return parse(text).familiar()


def full_id(text: str) -> str | None:
    """``sha256:<hex>`` when ``text`` is a full image ID (with or without the algorithm)."""
    m = _FULL_ID.match(text)
    return f"sha256:{m.group(1)}" if m else None


def _project_component(project: str) -> str:
    p = project.lower()
    if p and re.fullmatch(r"[a-z0-9]+", p) and len(p) <= 64:
        return p
    return "x" + hashlib.sha256(project.encode()).hexdigest()[:32]


def _encode_domain(domain: str) -> str:
    return domain.lower().replace(":", "__")


# A decoy's project component (decoy below): of [a-z0-9] and longer than any component
# _project_component gives, so no project's daemon name is ever a decoy, nor is one a daemon
# still holds after the project dropped the name (a stale tag, image_removal._untag_daemon).
DECOY_COMPONENT = "decoy" + "0" * 60


def daemon_repo(project: str, ref: Ref, component: str | None = None) -> str:
    """The daemon's repository (no tag) for the tenant's ``ref``."""
    component = component or _project_component(project)
    return f"{DAEMON_PREFIX}{component}/{_encode_domain(ref.domain)}/{ref.path}"


def daemon_ref(project: str, ref: Ref | str, default_tag: bool = True) -> str:
    """The daemon's name for the tenant's reference (see the module docstring)."""
    if isinstance(ref, str):
        ref = parse(ref)
    return daemon_repo(project, ref) + ref.suffix(default_tag)


def _decode(m: re.Match, project: str | None) -> str | None:
    qualified, proj, domain, path, tag, digest = m.groups()
    if project is not None and proj not in (_project_component(project), DECOY_COMPONENT):
        return None
    ref = Ref(domain.replace("__", ":"), path.lstrip("/"), tag, digest)
    name = ref.full_name if qualified else ref.familiar_name
    return name + ref.suffix(default_tag=False)


def tenant_name(project: str | None, text: str) -> str | None:
    """The tenant's name for a daemon reference of ``project`` (any project if None); None if
    ``text`` is not one."""
    m = _DAEMON_IN_TEXT.fullmatch(text)
    return _decode(m, project) if m else None


def rewrite_text(project: str, text: str) -> str:
    """Every daemon reference of ``project`` in ``text`` back to the tenant's name."""
    if DAEMON_PREFIX not in text:
        return text
    return _DAEMON_IN_TEXT.sub(lambda m: _decode(m, project) or m.group(0), text)


def rewrite_bytes(project: str, data: bytes) -> bytes:
    if DAEMON_PREFIX.encode() not in data:
        return data
    return rewrite_text(project, data.decode("utf-8", errors="surrogateescape")).encode(
        "utf-8", errors="surrogateescape"
    )


def decoy(project: str, typed: str) -> tuple[str, dict[str, str]]:
    """A reference of the same shape as ``typed`` that no daemon holds, and what to replace in
    the daemon's answer to turn its words about the decoy into dockerd's words about ``typed``
    (a decoy name comes back as ``typed`` through rewrite_text, as the project's own do).

    No daemon holds it: the decoy's request goes with the caller's method (a DELETE, a push, a
    build's FROM), so a name a daemon could hold would act on that image."""
    m = _FULL_ID.match(typed)
    if m:
        return typed.replace(m.group(1), ZERO_ID), {ZERO_ID: m.group(1)}
    try:
        ref = parse(typed)
    except ReferenceError_:
        return typed, {}  # unparsable: the daemon refuses it whatever it holds
    return daemon_repo(project, ref, DECOY_COMPONENT) + ref.suffix(default_tag=False), {}


# -- the store ------------------------------------------------------------------------------------
IR = store.ImageRef


def _visible(project: str):
    return IR.select().where(IR.project.in_([project, PUBLIC]))


@dataclass
class Found:
    image_id: str
    row: store.ImageRef | None  # the tag the tenant named (None: named by ID)

    @property
    def public(self) -> bool:
        return self.row is not None and self.row.project == PUBLIC

    def daemon_name(self) -> str:
        """How to name it to a daemon: the daemon tag when named by a tag, else the full ID."""
        if self.row is not None and self.row.daemon_ref:
            return self.row.daemon_ref
        return self.image_id


def resolve(project: str, typed: str) -> Found | None:
    """The image ``typed`` names for ``project`` (dockerd's lookup order), None if it names none."""
    typed = typed.strip()
    fid = full_id(typed)
    if fid:
        return Found(fid, None) if _visible(project).where(IR.image_id == fid).exists() else None
    try:
        ref = parse(typed)
    except ReferenceError_:
        ref = None
    if ref is not None:
        name = ref.familiar()
        rows = list(_visible(project).where(IR.reference == name))
        rows.sort(key=lambda r: r.project != project)  # the project's own tag shadows a public one
        if rows:
            return Found(rows[0].image_id, rows[0])
    prefix = typed[len("sha256:") :] if typed.startswith("sha256:") else typed
    if prefix and _HEX.match(prefix):
        ids = {
            r.image_id for r in _visible(project).where(IR.image_id.startswith("sha256:" + prefix)).limit(50)
        }
        if len(ids) == 1:
            return Found(ids.pop(), None)
    return None


def visible_images(project: str) -> dict[str, list[store.ImageRef]]:
    """image ID → the rows that make it visible to ``project`` (own and public)."""
    out: dict[str, list[store.ImageRef]] = {}
    for row in _visible(project).order_by(IR.created_at, IR.id):
        out.setdefault(row.image_id, []).append(row)
    return out


def tenant_tags(project: str, rows: list[store.ImageRef]) -> list[str]:
    """The tags ``project`` sees on an image, from its visible rows (a public tag the project
    shadows with its own left out), in dockerd's order: sorted by name."""
    own = [r.reference for r in rows if r.project == project and r.reference and "@" not in r.reference]
    public = [r.reference for r in rows if r.project == PUBLIC and r.reference]
    shadowed = set(own) | _own_references(project, public)
    return sorted(set(own) | {t for t in public if t not in shadowed})


def visible_tags(project: str, image_id: str) -> list[str]:
    """The tags ``project`` sees on ``image_id`` (tenant_tags): what dockerd counts as the
    image's references when it decides whether an untag would leave it dangling."""
    return tenant_tags(project, list(_visible(project).where(IR.image_id == image_id)))


def _own_references(project: str, refs: list[str]) -> set[str]:
    if not refs:
        return set()
    return {
        r.reference for r in IR.select(IR.reference).where((IR.project == project) & IR.reference.in_(refs))
    }


def record(project: str, reference: str, image_id: str, instance=None, daemon: str | None = None) -> None:
    """``project``'s ``reference`` now names ``image_id`` ("" reference: an untagged image it made).

    A tag that moves away leaves its old image to the project as untagged (dangling), as on dockerd."""
    if not image_id.startswith("sha256:"):
        image_id = "sha256:" + image_id
    with store.write_transaction():
        if reference:
            for old in IR.select().where((IR.project == project) & (IR.reference == reference)):
                if old.image_id == image_id or project == PUBLIC:  # (public: one ID per daemon)
                    continue
                old.delete_instance()
                if (
                    project != PUBLIC
                    and not IR.select()
                    .where((IR.project == project) & (IR.image_id == old.image_id))
                    .exists()
                ):
                    _insert(project, "", "", old.image_id)
            # Tagged now: it no longer lists as <none>.
            IR.delete().where(
                (IR.project == project) & (IR.reference == "") & (IR.image_id == image_id)
            ).execute()
            dref = (
                daemon
                if daemon is not None
                else (reference if project == PUBLIC else daemon_ref(project, reference))
            )
            _insert(project, reference, dref, image_id)
        elif not IR.select().where((IR.project == project) & (IR.image_id == image_id)).exists():
            _insert(project, "", "", image_id)
    if instance is not None:
        present(image_id, instance)


def _insert(project: str, reference: str, dref: str, image_id: str) -> None:
    try:
        with store.write_transaction():
            IR.create(project=project, reference=reference, daemon_ref=dref, image_id=image_id)
    except peewee.IntegrityError:
        pass  # a concurrent request recorded the same


def forget(row: store.ImageRef) -> None:
    IR.delete().where(IR.id == row.id).execute()


def referenced(image_id: str) -> bool:
    """Whether any project (or the public set) still references ``image_id``."""
    return IR.select().where(IR.image_id == image_id).exists()


def project_rows(project: str, image_id: str) -> list[store.ImageRef]:
    return list(IR.select().where((IR.project == project) & (IR.image_id == image_id)).order_by(IR.id))


def is_public(image_id: str) -> bool:
    return IR.select().where((IR.project == PUBLIC) & (IR.image_id == image_id)).exists()


def present(image_id: str, instance) -> None:
    """Note that ``instance`` holds ``image_id``: one statement, which does nothing if it is
    noted already (every create after the first of an image there), rather than an insert that
    fails and a rollback."""
    uuid = instance if isinstance(instance, str) else instance.uuid
    P = store.ImagePresence
    with contextlib.suppress(peewee.IntegrityError):  # the instance is gone: nothing to note
        P.insert(image_id=image_id, instance=uuid).on_conflict_ignore().execute()


def absent(image_id: str, instance) -> None:
    uuid = instance if isinstance(instance, str) else instance.uuid
    P = store.ImagePresence
    P.delete().where((P.image_id == image_id) & (P.instance == uuid)).execute()


def holders(image_id: str) -> list[str]:
    """Instance UUIDs known to hold ``image_id``."""
    P = store.ImagePresence
    return [p.instance_id for p in P.select().where(P.image_id == image_id)]


def image_visible(project: str, id_or_ref: str) -> str | None:
    """For events (and anything else that sees daemon names): what ``project`` calls this image —
    its tag, a public tag, or the ID — or None when the project may not see it.

    ``id_or_ref`` is what a daemon event names: an image ID, a daemon reference, or a name."""
    if not id_or_ref:
        return None
    if id_or_ref.startswith(DAEMON_PREFIX) or id_or_ref.startswith("docker.io/" + DAEMON_PREFIX):
        return tenant_name(project, id_or_ref)
    fid = full_id(id_or_ref)
    if fid:
        rows = list(_visible(project).where(IR.image_id == fid))
        return id_or_ref if rows else None
    try:
        name = normalize(id_or_ref)
    except ReferenceError_:
        return None
    if IR.select().where((IR.project == PUBLIC) & (IR.reference == name)).exists():
        return id_or_ref
    return None


def holder_instances(image_id: str) -> list[store.Instance]:
    """The instances the store knows to hold ``image_id`` (live or not: callers judge)."""
    out = []
    for uuid in holders(image_id):
        instance = store.Instance.get_or_none(store.Instance.uuid == uuid)
        if instance is not None:
            out.append(instance)
    return out


def project_daemon_tags(image_id: str, project: str | None = None) -> list[str]:
    """The daemon tags projects give ``image_id`` (public names are the daemons' own); with
    ``project``, that project's only."""
    return [
        r.daemon_ref
        for r in IR.select().where(IR.image_id == image_id)
        if r.daemon_ref and r.project != PUBLIC and (project is None or r.project == project)
    ]


def referenced_besides(row: store.ImageRef) -> bool:
    """Whether a row other than ``row`` references ``row``'s image."""
    return IR.select().where((IR.image_id == row.image_id) & (IR.id != row.id)).exists()


def is_public_name(name: str) -> bool:
    """Whether ``name`` (familiar, tagged) is the daemon name of a public image."""
    return IR.select().where((IR.project == PUBLIC) & (IR.daemon_ref == name)).exists()


def public_names() -> set[str]:
    """The daemon names of every public image."""
    return {r.daemon_ref for r in IR.select().where(IR.project == PUBLIC)}


def public_images() -> dict[str, set[str]]:
    """image ID -> its public references (operator-published images; a public image seeded on
    each daemon has an ID per daemon)."""
    found: dict[str, set[str]] = {}
    rows = IR.select(IR.image_id, IR.reference).where(IR.project == PUBLIC).tuples()
    for image_id, reference in rows:  # type: ignore[misc]  (peewee's tuples() rows)
        found.setdefault(image_id, set()).add(reference)
    return found


def familiar_tag(tag: str) -> str:
    """A daemon's RepoTag as a public ImageRef spells it ("busybox:latest" for
    "docker.io/library/busybox:latest")."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if tag.startswith(prefix):
            return tag[len(prefix) :]
    return tag


def holds_reference(project: str, reference: str) -> bool:
    """Whether ``project``'s tag ``reference`` (familiar, tagged) names an image."""
    return IR.select().where((IR.project == project) & (IR.reference == reference)).exists()


def holds(project: str, image_id: str) -> bool:
    """Whether ``project`` references ``image_id`` (tagged or not)."""
    return IR.select().where((IR.project == project) & (IR.image_id == image_id)).exists()


def project_references(project: str) -> list[str]:
    """Every tag and digest reference ``project`` holds."""
    return [r.reference for r in IR.select().where((IR.project == project) & (IR.reference != ""))]


def row_for_daemon_tag(project: str, daemon_name: str) -> store.ImageRef | None:
    """``project``'s row whose daemon tag is ``daemon_name``."""
    return IR.get_or_none((IR.project == project) & (IR.daemon_ref == daemon_name))
