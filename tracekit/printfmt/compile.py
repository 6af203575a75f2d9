"""Compile print fmt ASTs to Polars expressions that evaluate them over a whole event frame at once.

Implements libtraceevent 1.8's evaluation rules (``event-parse.c``: ``eval_num_arg``, ``eval_type_str``,
``print_str_arg``, ``print_arg_number``, ``print_arg_pointer``):

- every number is an unsigned 64-bit value: fields are read unsigned at their width (no sign extension), arithmetic
  wraps, comparisons are unsigned; a cast to ``u8``/``u16``/``u32``/``s8``/``s16``/``s32``/``char``/``short``/``int``
  (optionally ``unsigned``) masks, any other cast keeps the value;
- a conversion prints the value cast to the C type its length modifier names (``%d`` → ``int``, ``%lx`` → ``long``);
- ``__print_symbolic`` / ``__print_flags`` compare with the table values as libtraceevent's ``eval_flag`` reads them
  (a name it does not know counts as -1), unknown values print as ``0x%llx``;
- ``%ps``/``%pS``/``%pF`` resolve through the trace's kallsyms like libtraceevent's function map (absolute ``A``
  symbols skipped, an address past the last symbol resolves only on an exact match), ``%p`` prints as glibc's
  ``%p``.

Nothing here loops over rows in Python: hex digits and symbol lookups are numpy operations over whole columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from ..formats import EventFormat
from .grammar import (
    Binary,
    Call,
    Cast,
    Cond,
    Conversion,
    Field,
    Ident,
    Index,
    Node,
    Num,
    Pair,
    PrintFmt,
    Raw,
    Sizeof,
    Str,
    Unary,
    parse_conversions,
)
from .values import (
    _M64,
    U64,
    FuncTable,
    _c_strtoll,
    _cast_mask,
    _fold,
    _hex_np,
    _int_bits,
    _oct_expr,
    _shift,
    flag_value,
    hex_expr,
)

__all__ = ["Compiler", "FuncTable", "flag_value", "hex_expr"]


def _pad(s: pl.Expr, width: int | None, left: bool, fill: str = " ") -> pl.Expr:
    if not width or width <= 0:
        return s
    return s.str.pad_end(width, fill) if left else s.str.pad_start(width, fill)


@dataclass
class Compiler:
    """Turns one event's print fmt into Polars expressions over that event's frame.

    Attributes:
        fmt: the event format (field types decide how ``%s`` reads a field and what ``sizeof`` is).
        schema: the frame's column dtypes.
        long_size: the traced kernel's ``sizeof(long)``.
        funcs: function map for ``%ps``; printk: address → string of the file's printk formats.
        kernel_enums: symbol tables also know :data:`.values.KERNEL_ENUMS` (symbolic columns; rendering keeps
            libtraceevent's view, in which those names match nothing).
    """

    fmt: EventFormat
    schema: dict[str, pl.DataType]
    long_size: int = 8
    funcs: FuncTable | None = None
    printk: dict[int, str] | None = None
    kernel_enums: bool = False

    def __post_init__(self) -> None:
        # a field named like a frame column (sched_wake_idle_without_ipi's ``cpu``) is stored as ``cpu_``
        self._cols = {f.name: f.name + "_" for f in self.fmt.own_fields
                      if f.name in ("ts", "cpu", "buffer") and f.name + "_" in self.schema}

    def col(self, name: str) -> str:
        """The frame column holding field ``name``."""
        return self._cols.get(name, name)

    # -- numbers -------------------------------------------------------------------------------------------------
    def _field_num(self, name: str) -> pl.Expr:
        name = self.col(name)
        dt = self.schema.get(name)
        if dt is None or dt == pl.String or isinstance(dt, (pl.List, pl.Array)) or dt == pl.Binary:
            return pl.lit(0, U64)
        c = pl.col(name)
        if dt == pl.Boolean:
            return c.cast(U64).fill_null(0)
        if dt.is_signed_integer():
            bits = _int_bits(dt)
            v = c.cast(pl.Int64).fill_null(0).reinterpret(signed=False)
            return v & pl.lit((1 << bits) - 1, U64) if bits < 64 else v
        if dt.is_integer():
            return c.cast(U64).fill_null(0)
        return pl.lit(0, U64)

    def num(self, n: Node) -> pl.Expr:
        """The UInt64 value libtraceevent's ``eval_num_arg`` gives node ``n``."""
        const = _fold(n)
        if const is not None:
            return pl.lit(const, U64)
        if isinstance(n, Num):
            return pl.lit(_c_strtoll(n.text) & _M64, U64)
        if isinstance(n, Str):
            return pl.lit(_c_strtoll(n.value) & _M64, U64)     # a string atom evaluates as strtoull() of its text
        if isinstance(n, (Ident, Raw, Pair)):
            return pl.lit(0, U64)
        if isinstance(n, Field):
            return self._field_num(n.name)
        if isinstance(n, Index):
            base = n.base.operand if isinstance(n.base, Cast) else n.base
            if isinstance(base, Field) and isinstance(self.schema.get(base.name), pl.List) and isinstance(n.index, Num):
                v = pl.col(base.name).list.get(_c_strtoll(n.index.text), null_on_oob=True)
                inner = self.schema[base.name].inner
                if inner.is_signed_integer():
                    bits = _int_bits(inner)
                    v = v.cast(pl.Int64).fill_null(0).reinterpret(signed=False)
                    v = v & pl.lit((1 << bits) - 1, U64) if bits < 64 else v
                else:
                    v = v.cast(U64).fill_null(0)
                if isinstance(n.base, Cast):
                    m = _cast_mask(n.base.type.rstrip(" *")) if n.base.type.endswith("*") else None
                    v = v & pl.lit(m, U64) if m is not None else v
                return v
            return pl.lit(0, U64)
        if isinstance(n, Cast):
            v = self.num(n.operand)
            m = _cast_mask(n.type)
            return v & pl.lit(m, U64) if m is not None else v
        if isinstance(n, Unary):
            v = self.num(n.operand)
            if n.op == "-":
                return pl.lit(0, U64) - v
            if n.op == "!":
                return (v == 0).cast(U64)
            if n.op == "~":
                return ~v
            return v
        if isinstance(n, Binary):
            return self._binary(n)
        if isinstance(n, Cond):
            return pl.when(self.num(n.test) != 0).then(self.num(n.then)).otherwise(self.num(n.other))
        if isinstance(n, Sizeof):
            return pl.lit(self._sizeof(n), U64)
        if isinstance(n, Call):
            if n.name in ("__get_dynamic_array_len", "__get_rel_dynamic_array_len") and n.args:
                return self._dyn_len(n.args[0])
            if n.name == "__builtin_expect" and n.args:
                return self.num(n.args[0])
            return pl.lit(0, U64)
        return pl.lit(0, U64)

    def _dyn_len(self, a: Node) -> pl.Expr:
        name = a.name if isinstance(a, (Ident, Field)) else None
        dt = self.schema.get(name) if name else None
        if dt is None:
            return pl.lit(0, U64)
        if dt == pl.String:
            return (pl.col(name).str.len_bytes() + 1).cast(U64).fill_null(0)
        if isinstance(dt, pl.List):
            try:
                es = self.fmt.field(name).element_size(self.long_size)
            except KeyError:
                es = 1
            return (pl.col(name).list.len() * es).cast(U64).fill_null(0)
        return pl.lit(0, U64)

    def _sizeof(self, n: Sizeof) -> int:
        t = n.type or ""
        if n.operand is not None and isinstance(n.operand, Field):
            try:
                return self.fmt.field(n.operand.name).size
            except KeyError:
                return 0
        t = t.replace("unsigned ", "").replace("signed ", "").strip()
        if t.endswith("*") or t in ("long", "long int", "size_t", "ssize_t"):
            return self.long_size
        return {"char": 1, "u8": 1, "s8": 1, "bool": 1, "short": 2, "u16": 2, "s16": 2, "int": 4, "u32": 4, "s32": 4,
                "long long": 8, "u64": 8, "s64": 8}.get(t, 0)

    def _binary(self, n: Binary) -> pl.Expr:
        op = n.op
        a, b = self.num(n.left), self.num(n.right)
        if op in ("<<", ">>"):
            if isinstance(n.right, Num):
                k = _c_strtoll(n.right.text) & 63
                return a * pl.lit(1 << k, U64) if op == "<<" else a // pl.lit(1 << k, U64)
            return _shift(a, b, op)
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op in ("/", "%"):
            r = (a // b) if op == "/" else (a % b)
            return pl.when(b == 0).then(pl.lit(0, U64)).otherwise(r)
        if op == "&":
            return a & b
        if op == "|":
            return a | b
        if op == "^":
            return a ^ b
        cmp = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b,
               "&&": (a != 0) & (b != 0), "||": (a != 0) | (b != 0)}
        return cmp[op].cast(U64)

    # -- strings -------------------------------------------------------------------------------------------------
    def text(self, n: Node, conv: Conversion | None = None, width: pl.Expr | None = None) -> pl.Expr:
        """What libtraceevent's ``print_str_arg`` prints for ``n`` under a ``%s``-like conversion."""
        if isinstance(n, Str):
            return self._fmt_str(pl.lit(n.value, pl.String), conv, width)
        if isinstance(n, Num):
            return self._fmt_str(pl.lit(n.text, pl.String), conv, width)
        if isinstance(n, Ident):
            return self._fmt_str(pl.lit(n.name, pl.String), conv, width)
        if isinstance(n, Field):
            return self._field_text(n.name, conv, width)
        if isinstance(n, Cond):
            return pl.when(self.num(n.test) != 0).then(self.text(n.then, conv, width)).otherwise(
                self.text(n.other, conv, width))
        if isinstance(n, Call):
            return self._call_text(n, conv, width)
        return pl.lit("", pl.String)

    def _fmt_str(self, s: pl.Expr, conv: Conversion | None, width: pl.Expr | None) -> pl.Expr:
        if conv is None:
            return s
        if conv.precision is not None:
            s = s.str.slice(0, conv.precision)
        if conv.width == -1 and width is not None:
            w = width.cast(pl.Int64)
            return pl.when(w < 0).then(s.str.pad_end(w.abs(), " ")).otherwise(s.str.pad_start(w, " "))
        return _pad(s, conv.width, "-" in conv.flags)

    def _field_text(self, name: str, conv: Conversion | None, width: pl.Expr | None) -> pl.Expr:
        try:
            f = self.fmt.field(name)
        except KeyError:
            f = None
        name = self.col(name)
        dt = self.schema.get(name)
        if dt is None:
            return pl.lit("", pl.String)
        if f is not None and f.array_len is None and not f.is_dynamic and f.size == self.long_size:
            v = self._field_num(name)
            hx = hex_expr(v)
            if self.printk:
                named = v.replace_strict(list(self.printk), list(self.printk.values()), default=None,
                                         return_dtype=pl.String)
                hx = pl.coalesce(named, hx)
            return hx
        if dt == pl.String:
            return self._fmt_str(pl.col(name).fill_null(""), conv, width)
        return self._fmt_str(pl.lit("", pl.String), conv, width)

    def _call_text(self, n: Call, conv: Conversion | None, width: pl.Expr | None) -> pl.Expr:
        name = n.name
        if name in ("__print_symbolic", "__print_symbolic_u64") and n.args:
            return self.symbolic(n, conv, width)
        if name in ("__print_flags", "__print_flags_u64") and n.args:
            return self.flags(n, conv, width)
        if name in ("__get_str", "__get_rel_str") and n.args:
            a = n.args[0]
            col = a.name if isinstance(a, (Ident, Field)) else None
            if col and self.schema.get(col) == pl.String:
                return self._fmt_str(pl.col(col).fill_null(""), conv, width)
            return pl.lit("", pl.String)
        if name in ("__print_hex", "__print_hex_str") and len(n.args) >= 2:
            return self._hex_bytes(n.args[0], n.args[1], " " if name == "__print_hex" else "")
        if name == "__print_array" and len(n.args) >= 3:
            return self._int_array(n.args[0], n.args[1], n.args[2])
        if name in ("__get_bitmask", "__get_rel_bitmask", "__get_cpumask", "__get_rel_cpumask") and n.args:
            return self._bitmask(n.args[0], name.endswith("cpumask"))
        return pl.lit("", pl.String)

    def _bytes_of(self, a: Node) -> tuple[pl.Expr | None, int]:
        if isinstance(a, Call) and a.args:
            a = a.args[0]
        name = a.name if isinstance(a, (Ident, Field)) else None
        dt = self.schema.get(name) if name else None
        if dt is None:
            return None, 1
        try:
            es = self.fmt.field(name).element_size(self.long_size)
        except KeyError:
            es = 1
        if dt == pl.String:
            return pl.col(name).fill_null("").cast(pl.Binary), 1
        if isinstance(dt, pl.List):
            return pl.col(name), es
        return None, 1

    def _hex_bytes(self, data: Node, length: Node, sep: str) -> pl.Expr:
        col, es = self._bytes_of(data)
        if col is None:
            return pl.lit("", pl.String)
        n = self.num(length).cast(pl.Int64)
        if es != 1:
            return pl.lit("", pl.String)
        hx = col.list.head(n).list.eval(hex_expr(pl.element()).str.pad_start(2, "0"))
        return hx.list.join(sep).fill_null("")

    def _int_array(self, data: Node, count: Node, el_size: Node) -> pl.Expr:
        col, _ = self._bytes_of(data)
        if col is None:
            return pl.lit("{}", pl.String)
        n = self.num(count).cast(pl.Int64)
        body = col.list.head(n).list.eval(pl.lit("0x") + hex_expr(pl.element())).list.join(",").fill_null("")
        return pl.lit("{") + body + pl.lit("}")

    def _bitmask(self, a: Node, cpumask: bool) -> pl.Expr:
        col, es = self._bytes_of(a)
        if col is None:
            return pl.lit("", pl.String)
        # kernel bitmaps are arrays of longs (little-endian here); a cpumask is printed like a bitmask (libtraceevent
        # prints CPU ranges for __get_cpumask; no 6.18 format of the bundled systems uses it)
        words = col.list.eval(hex_expr(pl.element()).str.pad_start(es * 2, "0"))
        text = words.list.reverse().list.join("").fill_null("")
        # print_bitmask_to_seq: the bytes from the last, a comma every 32 bits counted from the low end
        return text.str.replace_all(r"([0-9a-f]{8})", "${1},").str.strip_suffix(",")

    # -- symbol tables ---------------------------------------------------------------------------------------------
    @staticmethod
    def table(n: Call, kernel_enums: bool = False) -> list[tuple[int, str]]:
        """The ``(value, name)`` entries of a ``__print_symbolic``/``__print_flags`` call, values as
        libtraceevent's ``eval_flag`` computes them (-1 for names it cannot evaluate; with ``kernel_enums`` the
        names of :data:`.values.KERNEL_ENUMS` get the kernel's values)."""
        out = []
        for a in n.args:
            if isinstance(a, Pair):
                name = a.name.value if isinstance(a.name, Str) else (a.name.text if isinstance(a.name, Num) else "")
                v = flag_value(a.value, kernel_enums)
                out.append((v if v >= 0 else -1, name))
        return out

    def symbolic(self, n: Call, conv: Conversion | None = None, width: pl.Expr | None = None) -> pl.Expr:
        """``__print_symbolic``: the first entry equal to the value, else ``0x%llx``."""
        v = self.num(n.args[0])
        seen: dict[int, str] = {}
        for val, name in self.table(n, self.kernel_enums):
            key = val & _M64
            if key not in seen:
                seen[key] = name
        if not seen:
            return pl.lit("0x", pl.String) + hex_expr(v)
        hit = v.replace_strict(list(seen), [self._fmt_py(s, conv) for s in seen.values()], default=None,
                               return_dtype=pl.String)
        return pl.coalesce(hit, pl.lit("0x", pl.String) + hex_expr(v))

    @staticmethod
    def _fmt_py(s: str, conv: Conversion | None) -> str:
        if conv is None:
            return s
        if conv.precision is not None:
            s = s[:conv.precision]
        if conv.width and conv.width > 0:
            s = s.ljust(conv.width) if "-" in conv.flags else s.rjust(conv.width)
        return s

    def flags(self, n: Call, conv: Conversion | None = None, width: pl.Expr | None = None) -> pl.Expr:
        """``__print_flags``: libtraceevent's loop (matching entries joined by the delimiter, bits left over as
        ``0x%llx``, a negative entry printed alone when the value is 0), unrolled over the table."""
        v = self.num(n.args[0])
        delim_node = n.args[1] if len(n.args) > 1 else Str("")
        delim = delim_node.value if isinstance(delim_node, Str) else ""
        table = [(val, self._fmt_py(name, conv)) for val, name in self.table(n, self.kernel_enums)]

        def f(s: pl.Series) -> pl.Series:
            rem = s.fill_null(0).to_numpy().astype(np.uint64)
            stopped = np.zeros(len(rem), dtype=bool)
            pieces: list[pl.Expr] = []
            for val, name in table:
                if val == 0:
                    continue
                if val < 0:
                    hit = ~stopped & (rem == 0)
                    stopped |= hit
                else:
                    fv = np.uint64(val & _M64)
                    hit = ~stopped & ((rem & fv) == fv)
                    rem = np.where(hit, rem & ~fv, rem)
                if hit.any():
                    pieces.append(pl.when(pl.Series(hit)).then(pl.lit(name, pl.String)))
            left = rem != 0
            if left.any():
                hx = pl.Series(_hex_np(rem), dtype=pl.Binary).cast(pl.String).str.strip_chars_start("0")
                pieces.append(pl.when(pl.Series(left)).then(pl.lit("0x") + hx))
            if not pieces:
                return pl.Series([""] * len(rem), dtype=pl.String)
            return pl.select(pl.concat_str(pieces, separator=delim, ignore_nulls=True)).to_series()

        return v.map_batches(f, return_dtype=pl.String)

    # -- conversions ---------------------------------------------------------------------------------------------
    def number(self, conv: Conversion, n: Node, width: pl.Expr | None = None) -> pl.Expr:
        """``print_arg_number``: the value cast to the conversion's C type, printed with its flags and width."""
        v = self.num(n)
        bits = {-2: 8, -1: 16, 0: 32, 1: 64, 2: 64}.get(max(-2, min(2, conv.length)), 32)
        if bits < 64:
            v = v & pl.lit((1 << bits) - 1, U64)
        neg = pl.lit(False)
        if conv.conv == "c":
            return self._char(v)
        if conv.conv in "di":
            top = pl.lit(1 << (bits - 1), U64)
            neg = (v & top) != 0
            mag = pl.when(neg).then((pl.lit(0, U64) - v) & pl.lit((1 << bits) - 1 if bits < 64 else _M64, U64)
                                    ).otherwise(v)
            digits = mag.cast(pl.String)
        elif conv.conv == "u":
            digits = v.cast(pl.String)
        elif conv.conv in "xX":
            digits = hex_expr(v, conv.conv == "X")
        else:
            digits = _oct_expr(v)
        if conv.precision is not None:
            digits = pl.when((v == 0) & (conv.precision == 0)).then(pl.lit("")).otherwise(
                digits.str.pad_start(conv.precision, "0"))
        prefix = pl.lit("", pl.String)
        if conv.conv in "di":
            sign = "+" if "+" in conv.flags else (" " if " " in conv.flags else "")
            prefix = pl.when(neg).then(pl.lit("-")).otherwise(pl.lit(sign))
        elif "#" in conv.flags and conv.conv in "xX":
            prefix = pl.when(v != 0).then(pl.lit("0" + conv.conv)).otherwise(pl.lit(""))
        elif "#" in conv.flags and conv.conv == "o":
            digits = pl.when(digits.str.starts_with("0")).then(digits).otherwise(pl.lit("0") + digits)
        w = conv.width
        if conv.width == -1 and width is not None:
            wv = width.cast(pl.Int64)
            body = prefix + digits
            return pl.when(wv < 0).then(body.str.pad_end(wv.abs(), " ")).otherwise(body.str.pad_start(wv, " "))
        if w and w > 0 and "0" in conv.flags and "-" not in conv.flags and conv.precision is None:
            plen = prefix.str.len_chars()
            return prefix + digits.str.pad_start(pl.lit(w, pl.Int64) - plen, "0")
        return _pad(prefix + digits, w, "-" in conv.flags)

    @staticmethod
    def _char(v: pl.Expr) -> pl.Expr:
        codes = list(range(1, 256))
        return (v & pl.lit(0xFF, U64)).replace_strict(codes, [chr(c) if c < 128 else chr(c) for c in codes],
                                                      default="", return_dtype=pl.String)

    def pointer(self, conv: Conversion, n: Node) -> pl.Expr:
        """``print_arg_pointer``: ``%ps/%pS/%pF`` through the function map, ``%pM``/``%pI4`` from byte arrays,
        plain ``%p`` as glibc prints a pointer."""
        if isinstance(n, Str):
            return pl.lit(n.value, pl.String)
        ext = conv.ext[:1]
        if ext in ("F", "f", "S", "s"):
            return self._function(self.num(n), ext in ("F", "S"))
        if ext in ("M", "m", "I", "i"):
            return self._net(conv, n)
        v = self.num(n)
        return pl.when(v == 0).then(pl.lit("(nil)")).otherwise(pl.lit("0x") + hex_expr(v))

    def _function(self, v: pl.Expr, offset: bool) -> pl.Expr:
        funcs = self.funcs or FuncTable(None)

        def f(s: pl.Series) -> pl.Series:
            a = s.fill_null(0).to_numpy().astype(np.uint64)
            found, names, offs = funcs.lookup(a)
            hx = pl.Series(_hex_np(a), dtype=pl.Binary).cast(pl.String).str.strip_chars_start("0").replace("", "0")
            raw = ("0x" + hx)
            named = names
            if offset:
                off = pl.Series(_hex_np(offs), dtype=pl.Binary).cast(pl.String).str.strip_chars_start("0").replace(
                    "", "0")
                named = named + "+0x" + off
            return pl.select(pl.when(pl.Series(found)).then(named).otherwise(raw)).to_series()

        return v.map_batches(f, return_dtype=pl.String)

    def _net(self, conv: Conversion, n: Node) -> pl.Expr:
        col, _ = self._bytes_of(n.operand if isinstance(n, Cast) else n)
        if col is None:
            return pl.lit("", pl.String)
        e = conv.ext
        if e[:1] in "Mm":
            sep = "" if e[:1] == "m" else ("-" if "F" in e else ":")
            return col.list.head(6).list.eval(hex_expr(pl.element()).str.pad_start(2, "0")).list.join(sep)
        if e[1:2] == "4":
            return col.list.head(4).list.eval(pl.element().cast(pl.String)).list.join(".")
        # %pI6: eight groups of two bytes as 4 hex digits (the compressed %pI6c form is not reproduced)
        pairs = col.list.head(16).list.eval(hex_expr(pl.element()).str.pad_start(2, "0")).list.join("")
        return pairs.str.replace_all(r"([0-9a-f]{4})", "${1}:").str.strip_suffix(":")

    def conversion(self, conv: Conversion, n: Node, width: Node | None = None) -> pl.Expr:
        """The text of one conversion applied to argument ``n`` (``width`` is the ``*`` argument, if any)."""
        w = self.num(width) if width is not None else None
        if conv.conv == "p":
            return self.pointer(conv, n)
        if conv.conv == "s":
            return self.text(n, conv, w)
        return self.number(conv, n, w)

    def render(self, pf: PrintFmt) -> pl.Expr:
        """The whole ``info`` text of a print fmt as one String expression."""
        pieces: list[pl.Expr] = []
        args = list(pf.args)
        for part in parse_conversions(pf.fmt):
            if isinstance(part, str):
                pieces.append(pl.lit(part, pl.String))
                continue
            width = args.pop(0) if part.width == -1 and args else None
            if not args:
                break
            pieces.append(self.conversion(part, args.pop(0), width))
        if not pieces:
            return pl.lit("", pl.String)
        return pl.concat_str(pieces).fill_null("")
