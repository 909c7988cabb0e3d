"""A Dockerfile as the classic builder reads it, and the same file with every image reference
resolved: what a build hands the daemon in shared mode.

The daemon (moby's builder, with BuildKit's Dockerfile parser) reads parser directives at the
top (`# escape=`), joins continuation lines, drops comment lines, takes the first word of each
logical line as the instruction (any letter case, split on spaces or tabs), strips
`--flag=value` words, and expands `$ARG` in FROM (global ARGs and the request's build args).
Matching `FROM ` as text misses every one of those forms, so this module parses the file under
those rules and writes it out again: one logical line per physical line, the instruction in
upper case, and every image reference (FROM, COPY/ADD --from=, inside ONBUILD too) replaced by
the literal name `resolve` gives. The daemon then parses exactly the references that were
checked: a literal name has no `$`, quote or escape for it to expand, and a line that holds no
continuation or comment cannot be read as more than one instruction.

What cannot be decided here is refused (BuildfileError, a 400 naming the line): a reference
whose ARG has no value, an unknown instruction, `RUN --mount`/`--network`/`--security` (the
classic builder refuses them too), `# syntax=` (it asks for a BuildKit frontend).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

# Go's unicode.IsSpace: what the parser trims around lines and words.
_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    chr(c) for c in range(0x2000, 0x200B)
)
# The parser splits the instruction from its arguments, and FROM's arguments, on these only.
_SPLIT = re.compile(r"[\t\v\f\r ]+")
_DIRECTIVE = re.compile(r"^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$")
_DIRECTIVES = ("escape", "syntax", "check")
_STAGE_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]*$")
_NAME = re.compile(r"[A-Za-z0-9_]+")
_INSTRUCTIONS = frozenset(
    (
        "add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck", "label",
        "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir",
    )
)  # fmt: skip
_NOT_TRIGGERS = ("onbuild", "from", "maintainer")


class BuildfileError(ValueError):
    """The build file cannot be checked as it is; the message says where and what to do."""


class ParseError(BuildfileError):
    """A build file the daemon's own parser refuses: the message is dockerd's, word for word."""


@dataclass
class _State:
    escape: str
    buildargs: dict[str, str | None]
    resolve: Callable[[str, int, list[str]], str]
    meta: dict[str, str | None] = field(default_factory=dict)  # global ARGs (before the first FROM)
    env: dict[str, str | None] = field(default_factory=dict)  # the current stage's ARGs
    stages: list[str] = field(default_factory=list)  # stage names (lower case, "" unnamed), in order
    seen_from: bool = False


def _lstrip(s: str) -> str:
    i = 0
    while i < len(s) and s[i] in _SPACE:
        i += 1
    return s[i:]


def _strip(s: str) -> str:
    s = _lstrip(s)
    j = len(s)
    while j and s[j - 1] in _SPACE:
        j -= 1
    return s[:j]


def logical_lines(text: str) -> tuple[str, list[tuple[int, str]]]:
    """The escape character and the logical lines (first physical line number, text)."""
    lines = text.split("\n")  # Go's line scanner splits on \n alone
    if lines and lines[-1] == "":
        lines.pop()
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")
    escape, seen, directives = "\\", set(), True
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        raw = lines[i].rstrip("\r\n")
        i += 1
        lineno = i
        s = _lstrip(raw)
        if directives:
            m = _DIRECTIVE.match(s)
            if m and m.group(1).lower() in _DIRECTIVES:
                name, value = m.group(1).lower(), m.group(2)
                if name in seen:
                    raise BuildfileError(
                        f"Dockerfile line {lineno}: only one {name} parser directive can be used"
                    )
                seen.add(name)
                if name == "syntax":
                    raise BuildfileError(
                        f"Dockerfile line {lineno}: the '# syntax=' parser directive selects a BuildKit "
                        "frontend, and this service builds with the classic builder only; remove the line"
                    )
                if name == "escape":
                    if value not in ("\\", "`"):
                        raise BuildfileError(
                            f"Dockerfile line {lineno}: invalid escape token '{value}' does not match ` or \\"
                        )
                    escape = value
                continue
            directives = False
        if s.startswith("#"):
            continue
        line, end = _trim_continuation(s, escape)
        if end and line == "":
            continue
        while not end and i < len(lines):
            raw = lines[i].rstrip("\r\n")
            i += 1
            stripped = _lstrip(raw)
            if stripped.startswith("#") or stripped == "":
                continue  # comments and empty lines inside a continuation are dropped
            part, end = _trim_continuation(raw, escape)
            line += part
        out.append((lineno, line))
    return escape, out


def _trim_continuation(line: str, escape: str) -> tuple[str, bool]:
    m = re.search(re.escape(escape) + r"[ \t]*$", line)
    if m:
        return line[: m.start()], False
    return line, True


def split_command(line: str) -> tuple[str, str]:
    parts = _SPLIT.split(_strip(line), maxsplit=1)
    return parts[0], parts[1] if len(parts) == 2 else ""


def extract_flags(rest: str) -> tuple[list[str], str, bool]:
    """The leading `--flag[=value]` words (quotes and backslashes as the parser reads them), the
    rest of the line, and whether a bare `--` ended the flags."""
    words: list[str] = []
    i, n = 0, len(rest)
    while True:
        while i < n and rest[i] in _SPACE:
            i += 1
        if i >= n or not rest.startswith("--", i):
            return words, rest[i:], False
        word, quote, blank_ok = "", "", False
        while i < n:
            ch = rest[i]
            if quote:
                if ch == quote:
                    quote = ""
                elif ch == "\\":
                    if i + 1 == n:
                        quote = ""
                    else:
                        i += 1
                        word += rest[i]
                else:
                    word += ch
            elif ch in _SPACE:
                break
            elif ch in "'\"":
                quote, blank_ok = ch, True
            elif ch == "\\":
                if i + 1 < n:
                    i += 1
                    word += rest[i]
            else:
                word += ch
            i += 1
        if word == "--":
            return words, _lstrip(rest[i:]), True
        if blank_ok or word:
            words.append(word)


def split_words(rest: str, escape: str) -> list[str]:
    """Words split on white space, quotes and escapes kept (the parser's ARG/ENV word split)."""
    words: list[str] = []
    word, quote, in_word, blank_ok = "", "", False, False
    i, n = 0, len(rest)
    while i < n:
        ch = rest[i]
        if not in_word and not quote:
            if ch in _SPACE:
                i += 1
                continue
            in_word = True
        if quote:
            if ch == quote:
                quote = ""
            if ch == escape and quote != "'" and quote:
                if i + 1 == n:
                    quote = ""
                    i += 1
                    continue
                word += ch
                i += 1
                ch = rest[i]
            word += ch
        elif ch in _SPACE:
            if blank_ok or word:
                words.append(word)
            word, in_word, blank_ok = "", False, False
        else:
            if ch in "'\"":
                quote, blank_ok = ch, True
            if ch == escape:
                if i + 1 == n:
                    i += 1
                    continue
                word += ch
                i += 1
                ch = rest[i]
            word += ch
        i += 1
    if in_word and (blank_ok or word):
        words.append(word)
    return words


class _Unset(Exception):
    def __init__(self, name: str):
        self.name = name


def expand(word: str, env: dict[str, str | None], escape: str) -> str:
    """``word`` with its quotes, escapes and `$VAR`/`${VAR}`/`${VAR:-x}`... processed as the
    builder's shell-word expansion does; _Unset for a variable without a known value."""
    out: list[str] = []
    i, n = 0, len(word)
    while i < n:
        ch = word[i]
        if ch == "'":
            j = word.find("'", i + 1)
            if j < 0:
                raise BuildfileError("unexpected end of statement while looking for matching single-quote")
            out.append(word[i + 1 : j])
            i = j + 1
        elif ch == '"':
            i += 1
            while True:
                if i >= n:
                    raise BuildfileError(
                        "unexpected end of statement while looking for matching double-quote"
                    )
                c = word[i]
                if c == '"':
                    i += 1
                    break
                if c == escape and i + 1 < n and word[i + 1] in ('"', "$", escape):
                    out.append(word[i + 1])
                    i += 2
                elif c == "$":
                    value, i = _dollar(word, i, env, escape)
                    out.append(value)
                else:
                    out.append(c)
                    i += 1
        elif ch == escape:
            if i + 1 < n:
                out.append(word[i + 1])
            i += 2
        elif ch == "$":
            value, i = _dollar(word, i, env, escape)
            out.append(value)
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _lookup(env: dict[str, str | None], name: str) -> str | None:
    if name not in env:
        return None
    value = env[name]
    if value is None:
        raise _Unset(name)
    return value


def _dollar(word: str, i: int, env: dict[str, str | None], escape: str) -> tuple[str, int]:
    n = len(word)
    if i + 1 < n and word[i + 1] == "{":
        m = _NAME.match(word, i + 2)
        if not m:
            raise BuildfileError(f"unsupported substitution in {word!r}")
        name, j = m.group(0), m.end()
        if j < n and word[j] == "}":
            value = _lookup(env, name)
            if value is None:
                raise _Unset(name)
            return value, j + 1
        for op in (":-", ":+", "-", "+"):
            if word.startswith(op, j):
                close = word.find("}", j + len(op))
                if close < 0:
                    raise BuildfileError(f"missing '}}' in {word!r}")
                operand = expand(word[j + len(op) : close], env, escape)
                value = _lookup(env, name)
                if op == ":-":
                    return (value if value else operand), close + 1
                if op == "-":
                    return (value if value is not None else operand), close + 1
                if op == ":+":
                    return (operand if value else ""), close + 1
                return (operand if value is not None else ""), close + 1
        raise BuildfileError(f"unsupported substitution in {word!r}; give the image name literally")
    m = _NAME.match(word, i + 1)
    if not m:
        return "$", i + 1
    value = _lookup(env, m.group(0))
    if value is None:
        raise _Unset(m.group(0))
    return value, m.end()


def _quote_flag(value: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./:@=,+-]*", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _literal(word: str, env: dict[str, str | None], state: _State, lineno: int, what: str) -> str:
    try:
        value = expand(word, env, state.escape)
    except _Unset as exc:
        raise BuildfileError(
            f"Dockerfile line {lineno}: {what} {word!r} uses ${exc.name}, which has no value here; "
            f"declare it with ARG (before the first FROM for FROM) and give it a default or "
            f"--build-arg {exc.name}=..."
        ) from None
    except BuildfileError as exc:
        raise BuildfileError(f"Dockerfile line {lineno}: {exc}") from None
    if "$" in value:
        raise BuildfileError(
            f"Dockerfile line {lineno}: {what} {value!r} still holds '$' after expansion; "
            "give the image name literally"
        )
    return value


def _image_or_stage(value: str, state: _State, lineno: int, allow_index: bool) -> str:
    """What a FROM or --from names: scratch, an earlier stage (by name, or by index for --from),
    else an image, resolved."""
    if value == "scratch":
        return value
    if value.lower() in state.stages:
        return value
    if allow_index and value.isdigit() and int(value) < len(state.stages):
        return value
    return state.resolve(value, lineno, list(state.stages))


def _instruction(line: str, lineno: int, state: _State, trigger: bool = False) -> str:
    cmd, rest = split_command(line)
    low = cmd.lower()
    if not cmd.isascii() or low not in _INSTRUCTIONS:
        raise ParseError(f"dockerfile parse error line {lineno}: unknown instruction: {cmd}")
    name = low.upper()
    if trigger and low in _NOT_TRIGGERS:
        raise BuildfileError(f"Dockerfile line {lineno}: {name} isn't allowed as an ONBUILD trigger")
    if not state.seen_from and not trigger and low not in ("arg", "from"):
        raise BuildfileError(
            f"Dockerfile line {lineno}: no build stage in current context (only ARG may come before FROM)"
        )
    if low == "onbuild":
        inner = _strip(rest)
        if not inner:
            raise BuildfileError(f"Dockerfile line {lineno}: ONBUILD requires at least one argument")
        return "ONBUILD " + _instruction(inner, lineno, state, trigger=True)
    if low == "arg":
        _arg(rest, lineno, state)
        return f"{name} {rest}" if rest else name
    if low == "from":
        return _from(rest, lineno, state)
    if low == "run":
        flags, _, _ = extract_flags(rest)
        if flags:
            option = flags[0][2:].split("=", 1)[0]
            raise BuildfileError(
                f"Dockerfile line {lineno}: the --{option} option requires BuildKit, which this "
                "service does not run; build without it"
            )
    if low in ("copy", "add"):
        return _copy(name, rest, lineno, state, trigger)
    return f"{name} {rest}" if rest else name


def _arg(rest: str, lineno: int, state: _State) -> None:
    target = state.env if state.seen_from else state.meta
    scope = {**state.meta, **state.env} if state.seen_from else dict(state.meta)
    for word in split_words(rest, state.escape):
        key, eq, raw = word.partition("=")
        given = state.buildargs.get(key)
        if given is not None:
            value: str | None = given
        elif eq:
            try:
                value = expand(raw, scope, state.escape)
            except (_Unset, BuildfileError):
                value = None  # known to be set, value unknown: a reference that uses it is refused
        elif state.seen_from and key in state.meta:
            value = state.meta[key]  # a global ARG declared again in the stage
        else:
            target.pop(key, None)  # declared without a value: unset
            scope.pop(key, None)
            continue
        target[key] = value
        scope[key] = value


def _from(rest: str, lineno: int, state: _State) -> str:
    flags, args_text, _ = extract_flags(rest)
    args = [a for a in _SPLIT.split(_strip(args_text)) if a]
    if not (len(args) == 1 or (len(args) == 3 and args[1].lower() == "as")):
        raise BuildfileError(f"Dockerfile line {lineno}: FROM requires either one or three arguments")
    base = _literal(args[0], state.meta, state, lineno, "FROM")
    resolved = _image_or_stage(base, state, lineno, allow_index=False)
    stage = ""
    if len(args) == 3:
        if not _STAGE_NAME.match(args[2]):
            raise BuildfileError(
                f"Dockerfile line {lineno}: invalid name for build stage: {args[2]!r}, name can't start "
                "with a number or contain symbols"
            )
        stage = args[2].lower()
    state.seen_from = True
    state.stages.append(stage)
    state.env = {}
    out = "FROM"
    for f in flags:
        key, eq, value = f[2:].partition("=")
        out += f" --{key}" + (f"={_quote_flag(value)}" if eq else "")
    out += f" {resolved}"
    if stage:
        out += f" AS {args[2]}"
    return out


def _copy(name: str, rest: str, lineno: int, state: _State, trigger: bool) -> str:
    flags, remaining, ended = extract_flags(rest)
    out = name
    seen_from = False
    for f in flags:
        key, eq, value = f[2:].partition("=")
        if key.lower() == "from":
            if seen_from:
                raise BuildfileError(f"Dockerfile line {lineno}: duplicate flag specified: from")
            seen_from = True
            if not eq:
                raise BuildfileError(f"Dockerfile line {lineno}: missing a value on flag: from")
            if value:
                if trigger:
                    if "$" in value:
                        raise BuildfileError(
                            f"Dockerfile line {lineno}: ONBUILD {name} --from={value} names its image "
                            "through a variable; give the image name literally"
                        )
                    value = state.resolve(value, lineno, [])
                else:
                    literal = _literal(value, {**state.meta, **state.env}, state, lineno, f"{name} --from")
                    value = _image_or_stage(literal, state, lineno, allow_index=True)
            out += f" --from={_quote_flag(value)}"
            continue
        out += f" --{key}" + (f"={_quote_flag(value)}" if eq else "")
    remaining = _strip(remaining)
    if remaining:
        out += (" -- " if ended and remaining.startswith("--") else " ") + remaining
    return out


def rewrite(
    data: bytes,
    buildargs: dict[str, str | None],
    resolve: Callable[[str, int, list[str]], str],
) -> bytes:
    """The Dockerfile ``data`` written out again with every image reference replaced by
    ``resolve(reference, line, stages so far)`` (stages and scratch left as they are)."""
    text = data.decode("utf-8", errors="surrogateescape")
    escape, lines = logical_lines(text)
    state = _State(escape, buildargs, resolve)
    out = [] if escape == "\\" else [f"# escape={escape}"]
    for lineno, line in lines:
        out.append(_instruction(line, lineno, state))
    return ("\n".join(out) + "\n").encode("utf-8", errors="surrogateescape")


def trigger_references(trigger: str) -> list[str]:
    """The image references (COPY/ADD --from=) in an image's ONBUILD trigger, as written."""
    try:
        _, lines = logical_lines(trigger)
    except BuildfileError:
        return []
    refs: list[str] = []
    for _, line in lines:
        cmd, rest = split_command(line)
        if cmd.lower() in ("copy", "add"):
            flags, _, _ = extract_flags(rest)
            for f in flags:
                key, _, value = f[2:].partition("=")
                if key.lower() == "from" and value:
                    refs.append(value)
        elif cmd.lower() == "run":
            flags, _, _ = extract_flags(rest)
            refs.extend(f for f in flags if "from" in f.lower())
    return refs
