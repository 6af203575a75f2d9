"""Kernel symbol tables (``/proc/kallsyms`` text, as trace.dat embeds it) and vectorised address resolution."""

from __future__ import annotations

import os
import re

import numpy as np
import polars as pl

from .errors import ParseError

__all__ = ["Kallsyms"]

_LINE = re.compile(r"^([0-9a-fA-F]+)\s+(\S)\s+(\S+)(?:\s+\[(\S+)\])?", re.M)


class Kallsyms:
    """A sorted kernel symbol table.

    Attributes:
        addrs: UInt64 start addresses, ascending.
        names: symbol names (compiler suffixes such as ``.isra.0`` kept), aligned with ``addrs``.
        modules: module name or "" per symbol.
    """

    def __init__(self, addrs: np.ndarray, names: np.ndarray, types: np.ndarray | None = None,
                 modules: np.ndarray | None = None):
        order = np.argsort(addrs, kind="stable")
        self.addrs = np.asarray(addrs, dtype=np.uint64)[order]
        self.names = np.asarray(names, dtype=object)[order]
        self.types = (np.asarray(types, dtype=object)[order] if types is not None
                      else np.full(len(order), "t", dtype=object))
        self.modules = (np.asarray(modules, dtype=object)[order] if modules is not None
                        else np.full(len(order), "", dtype=object))
        self._by_name: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.addrs)

    @classmethod
    def parse(cls, text: str, path: str | None = None) -> Kallsyms:
        """Parse kallsyms text (``ADDR TYPE NAME [MODULE]`` per line).

        Raises:
            ParseError: the text is not empty and holds no symbol line.
        """
        rows = _LINE.findall(text)
        if not rows and text.strip():
            raise ParseError(path, 0, "kallsyms lines 'ADDRESS TYPE NAME'", repr(text[:40]))
        addrs = np.array([int(r[0], 16) for r in rows], dtype=np.uint64)
        return cls(addrs, np.array([r[2] for r in rows], dtype=object), np.array([r[1] for r in rows], dtype=object),
                   np.array([r[3] for r in rows], dtype=object))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Kallsyms:
        with open(path, errors="replace") as f:
            return cls.parse(f.read(), os.fspath(path))

    def _text_mask(self) -> np.ndarray:
        return np.isin(self.types, np.array(["t", "T", "w", "W"], dtype=object))

    def resolve(self, addrs: np.ndarray | pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """Map addresses to (name, offset) in one vectorised pass.

        An address below the first symbol, or zero, resolves to name None. The offset is ``addr - symbol start``.
        """
        a = np.asarray(addrs.to_numpy() if isinstance(addrs, pl.Series) else addrs, dtype=np.uint64)
        if not len(self.addrs):
            return np.full(len(a), None, dtype=object), np.zeros(len(a), dtype=np.uint64)
        idx = np.searchsorted(self.addrs, a, side="right") - 1
        ok = (idx >= 0) & (a != 0)
        safe = np.where(ok, idx, 0)
        names = np.where(ok, self.names[safe], None)
        offs = np.where(ok, a - self.addrs[safe], 0).astype(np.uint64)
        return names, offs

    def names_of(self, addrs: np.ndarray | pl.Series) -> pl.Series:
        """Symbol names of ``addrs`` as a String Series (null where unresolved)."""
        names, _ = self.resolve(addrs)
        return pl.Series(names, dtype=pl.String)

    def address_of(self, name: str) -> int | None:
        """Start address of a symbol, or None."""
        if self._by_name is None:
            self._by_name = {n: i for i, n in enumerate(self.names)}
        i = self._by_name.get(name)
        return int(self.addrs[i]) if i is not None else None
