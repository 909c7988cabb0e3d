"""Reading a Docker API JSON body as dockerd's Go decoder reads it.

Go's encoding/json matches a JSON key to a struct field case-insensitively (``privileged``,
``PRIVILEGED`` and ``Privileged`` all set HostConfig.Privileged), folding a few non-ASCII
letters too (U+017F LONG S reads as ``S``, U+212A KELVIN SIGN as ``K``). When two keys of one
object fold to the same field, the last one in the document wins; Python's dict has lost that
order, so such an object is refused (400) rather than guessed at. Map-typed fields (Labels,
Sysctls, DriverOpts) are Go maps: their keys are exact and are read as plain dicts.
"""

from __future__ import annotations

from gateway.errors import DockerError

# Non-ASCII runes that Go's fold (ToUpper(ToLower(r))) turns into an ASCII letter.
_NON_ASCII_FOLDS = {"\u017f": "S", "\u212a": "K", "\u0130": "I", "\u0131": "I"}


def fold(name: str) -> str:
    out = []
    for char in name:
        if char < "\x80":
            out.append(char.upper())
        else:
            out.append(_NON_ASCII_FOLDS.get(char, char))
    return "".join(out)


class GoObject:
    """A JSON object seen as a Go struct: ``get("HostConfig")`` finds ``hostconfig`` too."""

    def __init__(self, data: dict, where: str = "the request body"):
        self.data = data
        self.where = where
        self._keys: dict[str, list[str]] = {}
        for key in data:
            if isinstance(key, str):
                self._keys.setdefault(fold(key), []).append(key)

    def key(self, name: str) -> str | None:
        keys = self._keys.get(fold(name), [])
        if len(keys) > 1:
            raise DockerError(
                400,
                f"{self.where} names the field {name} more than once "
                f"({', '.join(sorted(keys))}); send it once",
            )
        return keys[0] if keys else None

    def get(self, name: str, default=None):
        key = self.key(name)
        return self.data[key] if key is not None else default

    def has(self, name: str) -> bool:
        return self.key(name) is not None

    def set(self, name: str, value) -> None:
        """Set a field, under the client's own spelling of its key when it sent one."""
        key = self.key(name) or name
        self.data[key] = value
        self._keys.setdefault(fold(key), [key])

    def obj(self, name: str) -> GoObject | None:
        value = self.get(name)
        return GoObject(value, f"{self.where}'s {name}") if isinstance(value, dict) else None


def strings(value) -> list[str]:
    """A Go []string (or strslice.StrSlice, which also takes one bare string) as a list;
    entries of other types are left for dockerd to refuse."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def integer(value) -> int | None:
    """A Go int64 field's value, or None when unset (absent, null) or not an integer
    (dockerd refuses those itself)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value
