"""Invert an event's print fmt into a parser of its rendered text (the ``info`` part of a trace line).

Implements the reverse of :mod:`.render` for the text libtraceevent 1.8 prints without plugins and the kernel's own
tracefs ``trace`` output (both follow the event's ``print fmt``). One regex is built per event from the format string
(:func:`.grammar.parse_conversions`), with one named group per conversion whose argument can be inverted; all rows
are matched at once with Polars ``str.extract_groups`` and converted column-wise.

What is inverted (the field gets the value):
    - ``%d %i %u %x %X %o %p %c`` of ``REC->f``, possibly cast (a cast that masks fewer bits than the field has
      makes the field unrecoverable and it stays null); ``%s`` of a ``char[]``/``__data_loc char[]`` field or of
      ``__get_str(f)``;
    - ``__print_symbolic(REC->f [& mask], …)`` (the name mapped back through the table; ``0x…`` for unknown values)
      and ``__print_flags(REC->f [& mask], delim, …)`` (names OR-ed back, left-over ``0x…`` bits added);
    - ``REC->f ? "a" : "b"`` (→ 1 / 0), ``(REC->f & BITS) ? "a" : "b"`` (→ BITS / 0), ``test ? <flags or symbolic
      of f> : "text"`` (the text branch → 0), and kvm_exit's ``(REC->isa == 1) ? __print_symbolic(…) :
      __print_symbolic(…)`` (the table that knows the name gives ``exit_reason``; the first table also sets ``isa``);
    - several conversions that feed the same integer field are OR-ed (kvm_exit's ``FAILED_VMENTRY`` flag,
      sched_switch's ``prev_state`` ``+``);
    - a fixed array printed element by element as numbers, ``REC->a[0]`` … ``REC->a[n-1]`` (sys_enter's ``args``):
      the list, when every element is printed.

What is not (the field comes out null): ``%ps``/``%pS`` (a symbol name has no address without kallsyms), fields
printed only through arithmetic (``REC->flags >> 22``), ``__print_hex``/``__print_array``/bitmasks, GNU statement
expressions, and any field the format does not print at all. Rows whose text does not match the format give null
in every field.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import polars as pl

from ..errors import ParseError
from ..formats import EventFormat
from .compile import Compiler
from .grammar import (
    Binary,
    Call,
    Cast,
    Cond,
    Conversion,
    Field,
    Index,
    Node,
    Num,
    Str,
    parse_conversions,
    parse_print_fmt,
)
from .values import _cast_mask, _fold

__all__ = ["info_parser"]

_META = set(".^$*+?()[]{}|\\")
_M64 = (1 << 64) - 1


def _esc(text: str) -> str:
    return "".join("\\" + c if c in _META else c for c in text)


def _esc_literal(text: str) -> str:
    """Literal format text as a regex in which a run of blanks matches any run of blanks, or none: pasted text has
    extra spaces, and a trailing blank before an empty ``%s`` is gone once the line's end is stripped."""
    return re.sub(r"[ \t\n]+", lambda m: r"\s*", _esc(text))


def _bits(dt: pl.DataType) -> int:
    for cls, b in ((pl.Int8, 8), (pl.Int16, 16), (pl.Int32, 32), (pl.UInt8, 8), (pl.UInt16, 16), (pl.UInt32, 32)):
        if dt == cls:
            return b
    return 64


def _to_dtype(v: pl.Expr, dt: pl.DataType) -> pl.Expr:
    """A UInt64 expression of raw bits cast to the field's integer dtype (two's complement for signed ones)."""
    b = _bits(dt)
    if b < 64:
        v = v & pl.lit((1 << b) - 1, pl.UInt64)
    if dt.is_signed_integer():
        if b == 64:
            return v.reinterpret(signed=True)
        s = v.cast(pl.Int64)
        return pl.when(s >= (1 << (b - 1))).then(s - (1 << b)).otherwise(s).cast(dt)
    return v.cast(dt, strict=False)


def _num_text(e: pl.Expr, conv: str) -> pl.Expr:
    """Raw UInt64 bits of a printed number."""
    t = e.str.strip_chars(" ")
    if conv in "xXp":
        t = t.str.replace(r"^0[xX]", "")
        return pl.when(e.str.strip_chars(" ").is_in(["(nil)", "(null)"])).then(pl.lit(0, pl.UInt64)).otherwise(
            t.str.to_integer(base=16, dtype=pl.UInt64, strict=False))
    if conv == "o":
        return t.str.to_integer(base=8, dtype=pl.UInt64, strict=False)
    neg = t.str.starts_with("-")
    mag = t.str.replace(r"^[-+]", "").str.to_integer(base=10, dtype=pl.UInt64, strict=False)
    return pl.when(neg).then(pl.lit(0, pl.UInt64) - mag).otherwise(mag)


def _field_of(n: Node, schema: dict[str, pl.DataType]) -> tuple[str | None, int | None]:
    """(field, mask) when ``n`` is ``REC->f`` or ``REC->f & CONST`` (possibly under casts that keep its bits)."""
    mask: int | None = None
    while isinstance(n, Cast):
        m = _cast_mask(n.type)
        if m is not None:
            mask = m if mask is None else mask & m
        n = n.operand
    if isinstance(n, Binary) and n.op == "&" and isinstance(n.left, Field):
        c = _fold(n.right)
        if c is None:
            return None, None
        mask = c if mask is None else mask & c
        n = n.left
    if isinstance(n, Field) and n.name in schema:
        return n.name, mask
    return None, None


def _table(call: Call) -> list[tuple[int, str]]:
    return [(v, name) for v, name in Compiler.table(call, kernel_enums=True) if v >= 0]


def _unsymbol(e: pl.Expr, table: list[tuple[int, str]]) -> pl.Expr:
    names: dict[str, int] = {}
    for v, name in table:
        names.setdefault(name, v)
    hit = e.replace_strict(list(names), list(names.values()), default=None, return_dtype=pl.UInt64)
    raw = e.str.replace(r"^0x", "").str.to_integer(base=16, dtype=pl.UInt64, strict=False)
    return pl.coalesce(hit, pl.when(e.str.starts_with("0x")).then(raw))


def _unflags(e: pl.Expr, delim: str, table: list[tuple[int, str]]) -> pl.Expr:
    names: dict[str, int] = {}
    for v, name in table:
        if v > 0:
            names.setdefault(name, v)
    if not delim:
        return _unsymbol(e, table)
    parts = e.str.split(delim)
    keys = list(names)
    vals = list(names.values())
    one = pl.coalesce(
        pl.element().replace_strict(keys, vals, default=None, return_dtype=pl.UInt64),
        pl.element().str.replace(r"^0x", "").str.to_integer(base=16, dtype=pl.UInt64, strict=False),
    )
    ored = parts.list.eval(one.bitwise_or()).list.first()
    return pl.when(e == "").then(pl.lit(0, pl.UInt64)).otherwise(ored)


class _Plan:
    def __init__(self, schema: dict[str, pl.DataType]) -> None:
        self.schema = schema
        self.regex: list[str] = []
        self.ints: dict[str, list[pl.Expr]] = {}
        self.cover: dict[str, int] = {}
        self.uninverted: set[str] = set()
        self.strs: dict[str, pl.Expr] = {}
        self.elems: dict[str, dict[int, pl.Expr]] = {}  # REC->arr[i] printed as a number: index → value
        self.groups = 0

    def group(self, pattern: str) -> str:
        g = f"g{self.groups}"
        self.groups += 1
        self.regex.append(f"(?P<{g}>{pattern})")
        return g

    def int_value(self, field: str, value: pl.Expr) -> None:
        self.ints.setdefault(field, []).append(value)


def _pattern(conv: Conversion) -> str:
    c = conv.conv
    if c in "di":
        core = r"[-+ ]?\d+"
    elif c == "u":
        core = r"\d+"
    elif c in "xX":
        core = r"(?:0[xX])?[0-9a-fA-F]+" if "#" in conv.flags else r"[0-9a-fA-F]+"
    elif c == "o":
        core = r"[0-7]+"
    elif c == "c":
        core = r"(?s:.)?"
    elif c == "p" and not conv.ext:
        # libtraceevent prints NULL as "(nil)" (glibc), the kernel's tracefs as "(null)"; the kernel's own %p has no
        # 0x (hashed unless no_hash_pointers)
        core = r"\(nil\)|\(null\)|(?:0x)?[0-9a-fA-F]+"
    else:
        core = r"(?s:.*?)"
    if conv.width and conv.width != 0 and c != "s" and core != r"(?s:.*?)":
        return rf" *(?:{core}) *"
    return core


def _alt(texts: list[str]) -> str:
    uniq = sorted({t for t in texts}, key=len, reverse=True)
    return "(?:" + "|".join(_esc(t) for t in uniq) + ")"


def _str_pattern(arg: Node) -> str:
    """A regex of every text a ``%s`` argument can print (names of its tables, its literals), or ``.*?``."""
    if isinstance(arg, Str):
        return _esc(arg.value)
    if isinstance(arg, Num):
        return _esc(arg.text)
    if isinstance(arg, Cond):
        a, b = _str_pattern(arg.then), _str_pattern(arg.other)
        if r"(?s:.*?)" in (a, b):
            return r"(?s:.*?)"
        return f"(?:{a}|{b})"
    if isinstance(arg, Call) and arg.name in ("__print_symbolic", "__print_symbolic_u64"):
        names = [n for _, n in Compiler.table(arg, kernel_enums=True)]
        return f"(?:{_alt(names)}|0x[0-9a-f]+)" if names else "0x[0-9a-f]+"
    if isinstance(arg, Call) and arg.name in ("__print_flags", "__print_flags_u64") and len(arg.args) > 1 \
            and isinstance(arg.args[1], Str):
        names = [n for _, n in Compiler.table(arg, kernel_enums=True)]
        one = f"(?:{_alt(names)}|0x[0-9a-f]+)" if names else "0x[0-9a-f]+"
        d = _esc(arg.args[1].value)
        return f"(?:{one}(?:{d}{one})*)?"
    return r"(?s:.*?)"


def _fields_in(n: Node) -> set[str]:
    out: set[str] = set()
    if isinstance(n, Field):
        out.add(n.name)
    for attr in ("operand", "left", "right", "test", "then", "other", "base", "index", "value", "name"):
        sub = getattr(n, attr, None)
        if isinstance(sub, Node):
            out |= _fields_in(sub)
    if isinstance(n, Call):
        for a in n.args:
            out |= _fields_in(a)
    return out


def _cover(n: Node, schema) -> dict[str, int]:
    """Bits of each field that an inverted argument gives back."""
    out: dict[str, int] = {}

    def add(x: Node) -> None:
        f, m = _field_of(x, schema)
        if f:
            out[f] = out.get(f, 0) | (_M64 if m is None else m)

    def walk(x: Node) -> None:
        if isinstance(x, Call) and x.args:
            add(x.args[0])
        elif isinstance(x, Cond):
            add(x.test)
            walk(x.then)
            walk(x.other)
        else:
            add(x)

    walk(n)
    return out


def _plan_arg(plan: _Plan, conv: Conversion, arg: Node) -> None:
    before = plan.groups
    _plan_arg_inner(plan, conv, arg)
    if plan.groups == before:
        plan.uninverted |= _fields_in(arg)
    else:
        for f, m in _cover(arg, plan.schema).items():
            plan.cover[f] = plan.cover.get(f, 0) | m


def _plan_arg_inner(plan: _Plan, conv: Conversion, arg: Node) -> None:
    schema = plan.schema
    pat = _pattern(conv)
    if conv.conv == "s" and not conv.width:
        pat = _str_pattern(arg)
    if conv.conv == "p" and conv.ext:
        plan.regex.append(f"(?:{pat})")
        return
    if conv.conv != "s" and isinstance(arg, Index) and isinstance(arg.base, Field) and isinstance(arg.index, Num):
        dt = schema.get(arg.base.name)
        if isinstance(dt, pl.List) and dt.inner.is_integer():
            g = plan.group(pat)
            plan.elems.setdefault(arg.base.name, {})[arg.index.value] = _num_text(pl.col("_m").struct.field(g),
                                                                                  conv.conv)
            return
    if conv.conv != "s":
        field, mask = _field_of(arg, schema)
        dt = schema.get(field) if field else None
        if field and mask is None and dt is not None and dt.is_integer():
            g = plan.group(pat)
            plan.int_value(field, _num_text(pl.col("_m").struct.field(g), conv.conv))
            return
        if field and dt is not None and dt.is_integer() and mask is not None and mask >= (1 << _bits(dt)) - 1:
            g = plan.group(pat)
            plan.int_value(field, _num_text(pl.col("_m").struct.field(g), conv.conv))
            return
        plan.regex.append(f"(?:{pat})")
        return
    # %s
    if isinstance(arg, Field) and schema.get(arg.name) == pl.String:
        g = plan.group(pat)
        plan.strs[arg.name] = pl.col("_m").struct.field(g).str.strip_chars_start(" ") if conv.width else \
            pl.col("_m").struct.field(g)
        return
    if isinstance(arg, Call) and arg.name in ("__get_str", "__get_rel_str") and arg.args:
        a = arg.args[0]
        name = getattr(a, "name", None)
        if name in schema and schema[name] == pl.String:
            g = plan.group(pat)
            plan.strs[name] = pl.col("_m").struct.field(g)
            return
    inv = _string_inverse(arg, schema)
    if inv:
        g = plan.group(pat)
        e = pl.col("_m").struct.field(g)
        if conv.width:
            e = e.str.strip_chars(" ")
        for field, fn in inv:
            value = fn(e)
            if value is not None:
                plan.int_value(field, value)
        return
    plan.regex.append(f"(?:{pat})")


def _string_inverse(arg: Node, schema) -> list[tuple[str, Callable[[pl.Expr], pl.Expr | None]]]:
    """How a ``%s`` argument's text maps back to integer fields: [(field, text → UInt64 bits)]."""
    if isinstance(arg, Call) and arg.name in ("__print_symbolic", "__print_symbolic_u64") and arg.args:
        field, _ = _field_of(arg.args[0], schema)
        if field and schema[field].is_integer():
            t = _table(arg)
            return [(field, lambda e, t=t: _unsymbol(e, t))]
        return []
    if isinstance(arg, Call) and arg.name in ("__print_flags", "__print_flags_u64") and len(arg.args) > 1:
        field, _ = _field_of(arg.args[0], schema)
        delim = arg.args[1].value if isinstance(arg.args[1], Str) else None
        if field and delim is not None and schema[field].is_integer():
            t = _table(arg)
            return [(field, lambda e, t=t, d=delim: _unflags(e, d, t))]
        return []
    if isinstance(arg, Cond):
        then, other = arg.then, arg.other
        if isinstance(then, Str) and isinstance(other, Str) and then.value != other.value:
            field, mask = _field_of(arg.test, schema)
            if field and schema[field].is_integer():
                bit = 1 if mask is None else mask
                if mask is None or (mask & (mask - 1)) == 0:
                    return [(field, lambda e, y=then.value, n=other.value, b=bit: pl.when(e == y).then(
                        pl.lit(b, pl.UInt64)).when(e == n).then(pl.lit(0, pl.UInt64)))]
            return []
        sub_t = _string_inverse(then, schema) if isinstance(then, Call) else []
        sub_o = _string_inverse(other, schema) if isinstance(other, Call) else []
        out: list[tuple[str, Callable]] = []
        if sub_t and isinstance(other, Str):
            for field, fn in sub_t:
                out.append((field, lambda e, fn=fn, s=other.value: pl.when(e == s).then(pl.lit(0, pl.UInt64))
                            .otherwise(fn(e))))
            return out
        if sub_t and sub_o and len(sub_t) == 1 and len(sub_o) == 1 and sub_t[0][0] == sub_o[0][0]:
            field = sub_t[0][0]
            ft, fo = sub_t[0][1], sub_o[0][1]
            out.append((field, lambda e, ft=ft, fo=fo: pl.coalesce(_named(ft(e), e), fo(e))))
            test = arg.test
            if isinstance(test, Binary) and test.op == "==" and isinstance(test.left, Field) and \
                    isinstance(test.right, Num) and test.left.name in schema:
                k = test.right.value
                out.append((test.left.name, lambda e, ft=ft, k=k: pl.when(_named(ft(e), e).is_not_null()).then(
                    pl.lit(k, pl.UInt64))))
            return out
    return []


def _named(v: pl.Expr, e: pl.Expr) -> pl.Expr:
    """A symbol lookup that counts only when the text was a name (not a ``0x…`` fallback)."""
    return pl.when(~e.str.starts_with("0x")).then(v)


def info_parser(fmt: EventFormat, long_size: int = 8) -> Callable[[pl.Series], pl.DataFrame]:
    """Build a parser of an event's rendered text.

    Args:
        fmt: the event format whose ``print fmt`` produced the text.
        long_size: the traced kernel's ``sizeof(long)`` (field dtypes depend on it).

    Returns:
        A function taking a String Series of ``info`` texts (what follows ``event:`` on a trace line, leading blanks
        allowed) and returning a frame with one column per own field of the format, in order, with the format's
        dtypes; see the module docstring for what stays null.

    Raises:
        ParseError: the print fmt cannot be parsed.
    """
    schema = fmt.schema(long_size)
    try:
        pf = parse_print_fmt(fmt.print_fmt, "c")
    except ParseError:
        raise
    plan = _Plan(schema)
    args = list(pf.args)
    for part in parse_conversions(pf.fmt):
        if isinstance(part, str):
            plan.regex.append(_esc_literal(part))
            continue
        if part.width == -1 and args:
            args.pop(0)
        if not args:
            plan.regex.append("(?s:.*?)")
            continue
        _plan_arg(plan, part, args.pop(0))
    pattern = "(?s)^" + "".join(plan.regex).rstrip("\n") + r"\n?$"
    strs = plan.strs
    # a fixed array comes back when every element is printed, each as a whole number (sys_enter's args[0..5])
    lists = {f.name: [plan.elems[f.name][i] for i in range(f.array_len)] for f in fmt.own_fields
             if f.array_len and f.name in plan.elems and set(plan.elems[f.name]) == set(range(f.array_len))}
    ints: dict[str, list[pl.Expr]] = {}
    for name, vals in plan.ints.items():
        full = (1 << _bits(schema[name])) - 1
        cov = plan.cover.get(name, _M64) & full
        # a value is kept when every bit came back, or the low bits did and no other argument needs the rest
        if cov == full or ((cov + 1) & cov == 0 and name not in plan.uninverted):
            ints[name] = vals

    def parse(info: pl.Series) -> pl.DataFrame:
        s = info.cast(pl.String).str.strip_chars_start(" ")
        df = pl.DataFrame({"_info": s})
        if plan.groups:
            df = df.with_columns(pl.col("_info").str.extract_groups(pattern).alias("_m"))
        cols: list[pl.Expr] = []
        for f in fmt.own_fields:
            dt = schema[f.name]
            if f.name in strs:
                cols.append(strs[f.name].cast(dt).alias(f.name))
            elif f.name in lists:
                inner = dt.inner
                items = [_to_dtype(v, inner) for v in lists[f.name]]
                whole = pl.all_horizontal([v.is_not_null() for v in items])
                cols.append(pl.when(whole).then(pl.concat_list(items)).cast(dt).alias(f.name))
            elif f.name in ints and dt.is_integer():
                vals = ints[f.name]
                v = vals[0]
                for other in vals[1:]:
                    v = pl.when(v.is_null()).then(other).when(other.is_null()).then(v).otherwise(v | other)
                cols.append(_to_dtype(v, dt).alias(f.name))
            else:
                cols.append(pl.lit(None, dt).alias(f.name))
        if not cols:
            return pl.DataFrame(schema={})
        # with_columns broadcasts the all-null literals to the input's height (a select of literals alone gives 1 row)
        return df.with_columns(cols).select([f.name for f in fmt.own_fields])

    return parse
