"""The one exception tree of tracekit.

Every error tracekit raises on purpose derives from :class:`TracekitError`, so callers (and the CLI, which turns
them into a one-line message and exit code 2) need to catch exactly one type::

    TracekitError                     base of everything below
    ├── ParseError                    damaged or truncated input: path, byte offset, what was expected, what was found
    │   └── TruncatedError            the input ends before a structure it announced
    ├── UnsupportedFormatError        recognised but not supported (unknown version, compression, endianness …),
    │                                 or not recognised at all
    ├── MissingEventError             an event was asked for that the trace does not hold; lists the closest names
    ├── MissingSymbolError            an address or symbol table needed to resolve a name is absent
    └── ConfigError                   a bad option, rules file or command-line value

A message reads like ``trace.dat @0x1f40: expected section id 16, found 3``. Errors raised while handling a lower
level exception are chained with ``raise … from exc``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable

__all__ = [
    "TracekitError",
    "ParseError",
    "TruncatedError",
    "UnsupportedFormatError",
    "MissingEventError",
    "MissingSymbolError",
    "ConfigError",
]


class TracekitError(Exception):
    """Base of every error tracekit raises on purpose."""


def _where(path: str | os.PathLike | None, offset: int | None) -> str:
    name = os.fspath(path) if path is not None else "<input>"
    return f"{name} @{offset:#x}" if offset is not None else name


class ParseError(TracekitError):
    """The input is damaged: ``path`` at byte ``offset`` did not hold what the format ``expected``.

    Args:
        path: the file (or directory member) being read.
        offset: byte offset in that file of the structure that failed, or None when unknown.
        expected: what the format requires there, in words.
        found: what was there instead (optional).
    """

    def __init__(self, path, offset: int | None, expected: str, found: object = None):
        self.path = os.fspath(path) if path is not None else None
        self.offset = offset
        self.expected = expected
        self.found = found
        msg = f"{_where(path, offset)}: expected {expected}"
        if found is not None:
            msg += f", found {found}"
        super().__init__(msg)


class TruncatedError(ParseError):
    """The input ends before the end of a structure it announced."""


class UnsupportedFormatError(TracekitError):
    """The input is not in a format (or a variant of it) that tracekit reads."""

    def __init__(self, path, what: str, offset: int | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.offset = offset
        super().__init__(f"{_where(path, offset)}: {what}")


class MissingEventError(TracekitError, KeyError):
    """An event was asked for that the trace does not hold.

    Attributes:
        missing: the names asked for and absent.
        closest: the closest names present (may be empty).
    """

    def __init__(self, missing: str | Iterable[str], present: Iterable[str] = (), hint: str = ""):
        self.missing = [missing] if isinstance(missing, str) else list(missing)
        present = list(present)
        closest: list[str] = []
        for name in self.missing:
            short = name.split(":")[-1]
            for cand in difflib.get_close_matches(short, present, n=3, cutoff=0.5):
                if cand not in closest:
                    closest.append(cand)
        self.closest = closest
        msg = f"event(s) not in the trace: {', '.join(self.missing)}"
        if closest:
            msg += f"; closest present: {', '.join(closest)}"
        if hint:
            msg += f"; {hint}"
        self.message = msg
        Exception.__init__(self, msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class MissingSymbolError(TracekitError):
    """Symbols needed to resolve addresses are not available."""


class ConfigError(TracekitError, ValueError):
    """A bad option, rules file or command-line value."""
