"""`env_file`: a strict reader of dotenv files. Pure parser + one bounded reader; standard library only.

Why not python-dotenv: it is lax where a deployment needs to be told. It skips a line it cannot parse with a
logged warning (a typo silently drops a secret), accepts `KEY` alone as "unset", keeps the last of two equal
keys, and expands `${VAR}` inside values by default (a password holding `$` changes). Here every one of those
is a located error (`FILE:LINE:COL`) and a value means what it says. It is also imported by the cache on a hit,
in the master, which imports nothing outside the standard library.

The format (what Docker's `--env-file`, systemd's `EnvironmentFile=` and python-dotenv agree on):
- blank lines and lines starting with `#` (after optional blanks) are ignored;
- `KEY=value` or `export KEY=value`; KEY is letters, digits and `_`, not starting with a digit; blanks around
  `=` are allowed;
- an unquoted value runs to the end of the line, or to ` #` (a comment); blanks around it are dropped;
- `'single quoted'`: literal, may span lines; `"double quoted"`: `\\n`, `\\t`, `\\r`, `\\"`, `\\\\` and `\\$`
  are escapes (any other backslash is kept), may span lines; after the closing quote only blanks and a comment;
- no `${VAR}` expansion: `$` is a literal `$` (the site file is the place for references);
- a key given twice, a NUL byte, invalid UTF-8, a file larger than MAX_ENV_FILE_BYTES: errors.

No message quotes a value, or the text of a line that may hold one: a dotenv file holds secrets.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

MAX_ENV_FILE_BYTES = 1 << 20

_LINE_RE = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*")
_KEYISH_RE = re.compile(r"[ \t]*(?:export[ \t]+)?([^=\s]*)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


@dataclass(frozen=True)
class DotenvError(Exception):
    """One problem in a dotenv file, at a 1-based line and column."""

    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.line}:{self.col}: {self.message}"


class EnvFileUnreadable(Exception):
    """The env_file cannot be used at all (missing, not a regular file, too large); the message says why."""


def read_env_file(path: str) -> bytes:
    """The bytes of a regular file of at most MAX_ENV_FILE_BYTES; never blocks on a FIFO, never reads more
    than one byte past the limit. Raises EnvFileUnreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise EnvFileUnreadable(exc.strerror or str(exc)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise EnvFileUnreadable("not a regular file: it is " +
                                    ("a directory" if stat.S_ISDIR(mode) else "a device, FIFO or socket"))
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_ENV_FILE_BYTES:
            chunk = os.read(fd, MAX_ENV_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise EnvFileUnreadable(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if size > MAX_ENV_FILE_BYTES:
        raise EnvFileUnreadable(f"larger than {MAX_ENV_FILE_BYTES >> 20} MiB; an env_file holds a few variables")
    return b"".join(chunks)


def parse_dotenv(data: bytes) -> dict[str, str]:
    """The variables of a dotenv file, in file order. Raises DotenvError at the first problem."""
    text = _decode(data)
    nul = text.find("\0")
    if nul >= 0:
        line, col = _position(text, nul)
        raise DotenvError(line, col, "a NUL byte: environment values cannot hold one")
    return _Parser(text.removeprefix("\ufeff")).parse()


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _position(data[: exc.start].decode("utf-8", "replace"), None)
        raise DotenvError(line, col, "not valid UTF-8") from None


def _position(text: str, index: int | None) -> tuple[int, int]:
    before = text if index is None else text[:index]
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text.replace("\r\n", "\n")
        self.i = 0
        self.out: dict[str, str] = {}
        self.first: dict[str, int] = {}

    def fail(self, at: int, message: str) -> DotenvError:
        line, col = _position(self.text, at)
        return DotenvError(line, col, message)

    def parse(self) -> dict[str, str]:
        while self.i < len(self.text):
            end = self.text.find("\n", self.i)
            end = len(self.text) if end < 0 else end
            line = self.text[self.i : end]
            if not line.strip() or line.lstrip().startswith("#"):
                self.i = end + 1
                continue
            self.assignment()
        return self.out

    def assignment(self) -> None:
        start = self.i
        match = _LINE_RE.match(self.text, start)
        if match is None:
            raise self._not_an_assignment(start)
        key = match[1]
        line = _position(self.text, start)[0]
        if key in self.first:
            raise self.fail(match.start(1), f"{key} is set twice (first at line {self.first[key]})")
        self.i = match.end()
        quote = self.text[self.i : self.i + 1]
        value = self.quoted(quote) if quote in ("'", '"') else self.unquoted()
        self.first[key] = line
        self.out[key] = value

    def _not_an_assignment(self, start: int) -> DotenvError:
        word = _KEYISH_RE.match(self.text, start)
        name = word[1] if word else ""
        at = word.start(1) if word else start
        eol = self.text.find("\n", start)
        if "=" not in self.text[start : len(self.text) if eol < 0 else eol]:
            return self.fail(at, "expected KEY=value (or export KEY=value); a line holds one assignment")
        shown = name if len(name) <= 40 and name.isprintable() else name[:37] + "..."
        return self.fail(at, f'"{shown}" is not a variable name: use letters, digits and _, not starting with a '
                             "digit")

    def unquoted(self) -> str:
        end = self.text.find("\n", self.i)
        end = len(self.text) if end < 0 else end
        raw = self.text[self.i : end]
        comment = re.search(r"[ \t]#", raw)
        if comment:
            raw = raw[: comment.start()]
        self.i = end + 1
        return raw.strip(" \t")

    def quoted(self, quote: str) -> str:
        opening = self.i
        self.i += 1
        out: list[str] = []
        while True:
            if self.i >= len(self.text):
                raise self.fail(opening, f"the value's {quote} is never closed")
            c = self.text[self.i]
            if c == quote:
                self.i += 1
                break
            if c == "\\" and quote == '"' and self.i + 1 < len(self.text):
                nxt = self.text[self.i + 1]
                out.append(_ESCAPES.get(nxt, "\\" + nxt))
                self.i += 2
                continue
            out.append(c)
            self.i += 1
        self.rest_of_line()
        return "".join(out)

    def rest_of_line(self) -> None:
        end = self.text.find("\n", self.i)
        end = len(self.text) if end < 0 else end
        rest = self.text[self.i : end]
        stripped = rest.lstrip(" \t")
        if stripped and not stripped.startswith("#"):
            raise self.fail(self.i + len(rest) - len(stripped), "unexpected text after the closing quote (a "
                                                                "comment starts with #)")
        self.i = end + 1
