"""Event format descriptions, as the kernel prints them in tracefs ``events/<system>/<event>/format``.

Implements the text layout of Linux's ``trace_events`` format files (``name:``, ``ID:``, ``format:`` with one
``field:<type> <name>;\toffset:N;\tsize:N;\tsigned:N;`` line per field, then ``print fmt:``) and of
``events/header_page``. Both trace.dat (which embeds these texts) and text input use them; the Polars dtype of every
field column is decided here, from the format, never guessed from data.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from .errors import ParseError

__all__ = ["Field", "EventFormat", "parse_format", "parse_header_page", "load_format_dir", "builtin_formats"]

_FIELD = re.compile(
    r"^\s*field:\s*(?P<decl>[^;]*);\s*offset:\s*(?P<offset>\d+);\s*size:\s*(?P<size>\d+);(?:\s*signed:\s*(?P<signed>-?\d+);)?"
)
_ARRAY = re.compile(r"\[(?P<n>[^\]]*)\]\s*$")

# element sizes of the integer types that appear in kernel formats (long and pointers depend on the file)
_INT_SIZES = {
    "char": 1, "signed char": 1, "unsigned char": 1, "u8": 1, "s8": 1, "__u8": 1, "__s8": 1, "bool": 1, "_Bool": 1,
    "short": 2, "unsigned short": 2, "u16": 2, "s16": 2, "__u16": 2, "__s16": 2, "__le16": 2, "__be16": 2,
    "int": 4, "unsigned int": 4, "unsigned": 4, "u32": 4, "s32": 4, "__u32": 4, "__s32": 4, "pid_t": 4, "gfp_t": 4,
    "__le32": 4, "__be32": 4,
    "long long": 8, "unsigned long long": 8, "u64": 8, "s64": 8, "__u64": 8, "__s64": 8, "__le64": 8, "__be64": 8,
    "loff_t": 8, "dma_addr_t": 8, "phys_addr_t": 8, "sector_t": 8, "ktime_t": 8,
}
_SIGNED_INTS = {1: pl.Int8, 2: pl.Int16, 4: pl.Int32, 8: pl.Int64}
_UNSIGNED_INTS = {1: pl.UInt8, 2: pl.UInt16, 4: pl.UInt32, 8: pl.UInt64}


@dataclass(frozen=True)
class Field:
    """One field of an event record.

    Attributes:
        name: the field's C name (``exit_reason``, ``caller``).
        type: the C type as declared, without the name and array suffix (``unsigned long``, ``__data_loc char[]``).
        offset, size: position and byte size inside the record (for ``__data_loc`` the 4-byte locator).
        signed: the format's ``signed:`` flag.
        array_len: None for scalars, N for ``name[N]``, 0 for a flexible ``name[]``.
        data_loc: True for ``__data_loc`` (offset|len<<16 locator to a dynamic array), ``rel_loc`` for ``__rel_loc``.
    """

    name: str
    type: str
    offset: int
    size: int
    signed: bool
    array_len: int | None = None
    data_loc: bool = False
    rel_loc: bool = False

    @property
    def base_type(self) -> str:
        """The element type: ``__data_loc char[]`` → ``char``, ``const char *`` stays a pointer type."""
        t = re.sub(r"^__(?:data|rel)_loc\s+", "", self.type)
        t = re.sub(r"\[[^\]]*\]\s*$", "", t)
        t = re.sub(r"\b(?:const|volatile|struct|enum|union)\b", "", t)
        return " ".join(t.split())

    @property
    def is_pointer(self) -> bool:
        return "*" in self.type and not self.data_loc

    @property
    def is_string(self) -> bool:
        """``char[N]``, ``__data_loc char[]`` and friends: text, shown as String."""
        base = self.base_type
        return base in ("char", "unsigned char", "signed char") and (self.array_len is not None or self.data_loc
                                                                     or self.rel_loc) and not self.is_pointer

    @property
    def is_dynamic(self) -> bool:
        return self.data_loc or self.rel_loc

    def element_size(self, long_size: int = 8) -> int:
        """Byte size of one element of an array field (or of the scalar)."""
        if self.is_pointer:
            return long_size
        base = self.base_type
        if base in ("long", "unsigned long", "long int", "unsigned long int", "size_t", "ssize_t"):
            return long_size
        if self.array_len and not self.is_dynamic:
            return max(1, self.size // self.array_len)
        if base in _INT_SIZES:
            return _INT_SIZES[base]
        if self.array_len is None and not self.is_dynamic:
            return self.size
        return 1

    def dtype(self, long_size: int = 8) -> pl.DataType:
        """The Polars dtype of this field's column: ints of the field's width and sign, String for char arrays,
        UInt64 for pointers, List of the element type for other arrays."""
        if self.is_string:
            return pl.String()
        if self.is_pointer and self.array_len is None:
            return pl.UInt64()
        if self.array_len is not None or self.is_dynamic:
            es = self.element_size(long_size)
            inner = (_SIGNED_INTS if self.signed and not self.is_pointer else _UNSIGNED_INTS).get(es, pl.UInt8)
            return pl.List(inner)
        table = _SIGNED_INTS if self.signed else _UNSIGNED_INTS
        if self.size in table:
            return table[self.size]()
        return pl.Binary()


@dataclass(frozen=True)
class EventFormat:
    """A parsed event format.

    Attributes:
        system: the event's system (``kvm``), name: its name (``kvm_exit``), id: the ``ID:`` (``common_type``).
        fields: common fields first, then the event's own, in declaration order.
        print_fmt: the text after ``print fmt:`` (format string and argument list, unparsed).
    """

    system: str
    name: str
    id: int
    fields: tuple[Field, ...]
    print_fmt: str = ""
    text: str = field(default="", repr=False, compare=False)

    @property
    def full_name(self) -> str:
        return f"{self.system}:{self.name}"

    @property
    def common_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.name.startswith("common_"))

    @property
    def own_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if not f.name.startswith("common_"))

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def schema(self, long_size: int = 8) -> dict[str, pl.DataType]:
        """Polars dtypes of the event's own fields, in order."""
        return {f.name: f.dtype(long_size) for f in self.own_fields}


def _parse_decl(decl: str) -> tuple[str, str, int | None, bool, bool]:
    """``unsigned long caller[8]`` → (``unsigned long caller[8]``'s type, name, array_len, data_loc, rel_loc)."""
    decl = " ".join(decl.split())
    data_loc = decl.startswith("__data_loc")
    rel_loc = decl.startswith("__rel_loc")
    array_len: int | None = None
    m = _ARRAY.search(decl)
    if m and not (data_loc or rel_loc):
        inner = m.group("n").strip()
        array_len = int(inner, 0) if re.fullmatch(r"0x[0-9a-fA-F]+|\d+", inner) else 0
        decl = decl[: m.start()].rstrip()
    name_m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", decl)
    if not name_m:
        return decl, decl, array_len, data_loc, rel_loc
    name = name_m.group(1)
    ctype = decl[: name_m.start()].strip()
    if data_loc or rel_loc:
        array_len = 0
    return ctype, name, array_len, data_loc, rel_loc


def parse_format(text: str, system: str = "", *, path: str | None = None) -> EventFormat:
    """Parse one event ``format`` text.

    Args:
        text: the format file's content.
        system: the system the event belongs to (trace.dat stores it beside the text; format files in tracefs have
            it as their directory name).
        path: where the text came from, for error messages.

    Raises:
        ParseError: the text lacks ``name:``, ``ID:`` or field lines.
    """
    name = ""
    ev_id = -1
    fields: list[Field] = []
    print_fmt = ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("name:"):
            name = s[5:].strip()
        elif s.startswith("ID:"):
            try:
                ev_id = int(s[3:].strip())
            except ValueError as exc:
                raise ParseError(path, None, "an integer event ID", s) from exc
        elif s.startswith("field:"):
            m = _FIELD.match(line)
            if not m:
                raise ParseError(path, None, "a field line 'field:TYPE NAME; offset:N; size:N; signed:N;'", s[:80])
            ctype, fname, array_len, data_loc, rel_loc = _parse_decl(m.group("decl"))
            signed = m.group("signed")
            fields.append(Field(fname, ctype, int(m.group("offset")), int(m.group("size")),
                                bool(int(signed)) if signed is not None else False, array_len, data_loc, rel_loc))
        elif s.startswith("print fmt:"):
            print_fmt = s[len("print fmt:"):].strip()
    if not name or ev_id < 0:
        raise ParseError(path, None, "an event format with 'name:' and 'ID:' lines", text[:60].strip() or "nothing")
    return EventFormat(system, name, ev_id, tuple(fields), print_fmt, text)


def parse_header_page(text: str) -> dict[str, Field]:
    """Parse ``events/header_page``: the offsets and sizes of ``timestamp``, ``commit``, ``overwrite`` and ``data``
    of a ring-buffer page. ``commit``'s size is the kernel's long size."""
    out: dict[str, Field] = {}
    for line in text.splitlines():
        m = _FIELD.match(line)
        if m:
            ctype, fname, array_len, data_loc, rel_loc = _parse_decl(m.group("decl"))
            out[fname] = Field(fname, ctype, int(m.group("offset")), int(m.group("size")),
                               bool(int(m.group("signed") or 0)), array_len)
    return out


def load_format_dir(path: str | os.PathLike) -> dict[str, EventFormat]:
    """Read every event format under a folder: tracefs ``events/`` (``SYSTEM/EVENT/format``) or a flat copy
    (``SYSTEM/EVENT.format``). Keys are ``system:event``."""
    root = Path(path)
    out: dict[str, EventFormat] = {}
    for f in sorted(root.rglob("*")):
        if not f.is_file():
            continue
        if f.name == "format":
            system = f.parent.parent.name
        elif f.suffix == ".format":
            system = f.parent.name
        else:
            continue
        fmt = parse_format(f.read_text(errors="replace"), system, path=str(f))
        out[fmt.full_name] = fmt
    return out


_BUILTIN: dict[str, EventFormat] | None = None


def builtin_formats() -> dict[str, EventFormat]:
    """The Linux 6.18 x86 formats shipped with tracekit (kvm, sched, irq, nmi, lock, ftrace, …)."""
    global _BUILTIN
    if _BUILTIN is None:
        _BUILTIN = load_format_dir(Path(__file__).parent / "data" / "formats" / "linux-6.18")
    return _BUILTIN
