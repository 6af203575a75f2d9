"""Fallback inversion of an event's ``print fmt`` into a parser of its rendered text, used when
``tracekit.printfmt.info_parser`` is not available.

It covers the forms kernel formats use for plain values: ``%d %i %u %x %o %c %s %p`` (with flags, widths and length
modifiers) applied to ``REC->field`` (optionally cast), ``__get_str(field)``, and ``__print_symbolic`` /
``__print_flags`` applied directly to ``REC->field``. Any other argument (arithmetic, ternaries, masks, ``%pS``
symbols, arrays) is matched but not inverted: its field comes out null.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import polars as pl

from ...formats import EventFormat

_CONV = re.compile(r"%(?P<flags>[-+ #0]*)(?P<width>\d+|\*)?(?:\.(?P<prec>\d+|\*))?(?P<len>hh|h|ll|l|L|z|j|t|q)?"
                   r"(?P<conv>[diouxXcsp%])(?P<pext>(?<=p)[A-Za-z]\w*)?")
_CAST = r"(?:\(\s*(?:const\s+|unsigned\s+|signed\s+|struct\s+)*[A-Za-z_]\w*(?:\s+\w+)*\s*\**\s*\)\s*)*"
_DIRECT = re.compile(rf"^{_CAST}\(?\s*{_CAST}REC\s*->\s*(\w+)\s*\)?$")
_GET_STR = re.compile(r"^__get_(?:rel_)?str\(\s*(?:REC\s*->\s*)?(\w+)\s*\)$")
_SYMBOLIC = re.compile(rf"^__print_symbolic(?:_u64)?\(\s*{_CAST}REC\s*->\s*(\w+)\s*,(.*)\)$", re.S)
_FLAGS = re.compile(rf'^__print_flags(?:_u64)?\(\s*{_CAST}REC\s*->\s*(\w+)\s*,\s*"((?:[^"\\]|\\.)*)"\s*,(.*)\)$', re.S)
_ENTRY = re.compile(r'\{\s*([^{}]+?)\s*,\s*((?:"(?:[^"\\]|\\.)*"\s*)+)\}')
_TERNARY = re.compile(rf'^{_CAST}\(?\s*REC\s*->\s*(\w+)\s*\)?\s*\?\s*"([^"]*)"\s*:\s*"([^"]*)"$')
_SAFE_EXPR = re.compile(r"^[0-9a-fA-FxX\s+\-|&<>()~]+$")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "r": "\r", "0": "\0"}
_NUM = {"d": r"-?\d+", "i": r"-?\d+", "u": r"-?\d+", "x": r"(?:0x)?[0-9a-fA-F]+", "X": r"(?:0x)?[0-9a-fA-F]+",
        "o": r"[0-7]+", "c": r".", "p": r"(?:0x)?[0-9a-fA-F]+|\(null\)"}


_META = set(".^$*+?()[]{}|\\")


def _esc(text: str) -> str:
    """Escape literal format text for the (Rust) regex engine: meta characters escaped, a run of blanks matches any
    run of blanks (an empty ``%s`` beside it may leave one out)."""
    out = "".join("\\" + c if c in _META else c for c in text)
    return re.sub(r"[ \t\n]+", lambda m: r"\s*", out)


def _c_value(text: str) -> int | None:
    """The value of a constant C expression of a symbol table (``0x040 + 3``, ``(1U << 5)``, ``-1``), or None."""
    t = re.sub(r"(?<=[0-9a-fA-F])(?:[uU][lL]{0,2}|[lL]{1,2}[uU]?)\b", "", text.strip())
    if not _SAFE_EXPR.match(t) or "**" in t:
        return None
    try:
        return int(eval(t, {"__builtins__": {}}, {}))  # noqa: S307 - characters restricted to integer arithmetic
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError):
        return None


def symbol_table(text: str) -> dict[str, int]:
    """``{ 0x1, "S" }, { 0x2, "D" }`` → ``{"S": 1, "D": 2}`` (entries whose value is not a constant are left out)."""
    out: dict[str, int] = {}
    for val, names in _ENTRY.findall(text):
        name = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', names))
        v = _c_value(val)
        if v is not None and name not in out:
            out[name] = v
    return out


def split_print_fmt(print_fmt: str) -> tuple[str, list[str]]:
    """``"a=%d" "b", REC->a, f(x, y)`` → (``a=%db``, [``REC->a``, ``f(x, y)``])."""
    s = print_fmt.strip()
    i, parts = 0, []
    while i < len(s) and s[i] == '"':
        j, buf = i + 1, []
        while j < len(s) and s[j] != '"':
            if s[j] == "\\" and j + 1 < len(s):
                buf.append(_ESCAPES.get(s[j + 1], s[j + 1]))
                j += 2
            else:
                buf.append(s[j])
                j += 1
        parts.append("".join(buf))
        i = j + 1
        while i < len(s) and s[i].isspace():
            i += 1
    rest = s[i:].lstrip()
    if rest.startswith(","):
        rest = rest[1:]
    args, depth, quote, cur = [], 0, False, []
    k = 0
    while k < len(rest):
        c = rest[k]
        if quote:
            if c == "\\" and k + 1 < len(rest):
                cur.append(rest[k:k + 2])
                k += 2
                continue
            quote = c != '"'
        elif c == '"':
            quote = True
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif c == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
            k += 1
            continue
        cur.append(c)
        k += 1
    if "".join(cur).strip():
        args.append("".join(cur).strip())
    return "".join(parts), args


def _u64(expr: pl.Expr, base: int) -> pl.Expr:
    """Text → UInt64, negative decimal wrapped two's-complement, unparsable → null."""
    if base == 16:
        return expr.str.strip_prefix("0x").str.to_integer(base=16, dtype=pl.UInt64, strict=False)
    return pl.coalesce(expr.str.to_integer(base=10, dtype=pl.UInt64, strict=False),
                       expr.str.to_integer(base=10, dtype=pl.Int64, strict=False).cast(pl.UInt64, wrap_numerical=True))


def to_dtype(expr: pl.Expr, dtype: pl.DataType, base: int = 10) -> pl.Expr:
    """Cast the text of a printed integer to ``dtype`` the way C would have truncated the field's value."""
    if dtype == pl.String:
        return expr
    if dtype.is_integer():
        return _u64(expr, base).cast(dtype, wrap_numerical=True)
    return pl.lit(None, dtype=dtype)


def _unsymbol(expr: pl.Expr, table: dict[str, int], dtype: pl.DataType) -> pl.Expr:
    """A ``__print_symbolic`` name back to its value; an unknown value printed as a number is parsed."""
    if not dtype.is_integer():
        return pl.lit(None, dtype=dtype)
    names = pl.Series(list(table), dtype=pl.String)
    vals = pl.Series([v & 0xFFFFFFFFFFFFFFFF for v in table.values()], dtype=pl.UInt64)
    hit = expr.replace_strict(names, vals, default=None, return_dtype=pl.UInt64)
    num = pl.when(expr.str.starts_with("0x")).then(_u64(expr, 16)).otherwise(_u64(expr, 10))
    return pl.coalesce(hit, num).cast(dtype, wrap_numerical=True)


def unflag(expr: pl.Expr, sep: str, table: dict[str, int], dtype: pl.DataType) -> pl.Expr:
    """A ``__print_flags`` text (``SPIN|MUTEX``, leftover bits as hex) back to the OR of its values."""
    if not dtype.is_integer():
        return pl.lit(None, dtype=dtype)
    names = pl.Series(list(table), dtype=pl.String)
    vals = pl.Series([v & 0xFFFFFFFFFFFFFFFF for v in table.values()], dtype=pl.UInt64)
    parts = expr.str.split(sep) if sep else expr.str.split("\x00")
    each = parts.list.eval(pl.coalesce(pl.element().replace_strict(names, vals, default=None, return_dtype=pl.UInt64),
                                       _u64(pl.element(), 16)))
    ok = each.list.eval(pl.element().is_null().any()).list.first().not_()
    total = each.list.eval(pl.element().bitwise_or()).list.first().fill_null(0)
    return pl.when(expr == "").then(pl.lit(0, pl.UInt64)).when(ok).then(total).cast(dtype, wrap_numerical=True)


def field_conversions(fmt: EventFormat) -> dict[str, str]:
    """The printf conversion (``d``, ``u``, ``x``, ``p`` …) the print fmt applies directly to each field."""
    text, args = split_print_fmt(fmt.print_fmt)
    out: dict[str, str] = {}
    argi = 0
    for m in _CONV.finditer(text):
        if m.group("conv") == "%":
            continue
        argi += (m.group("width") == "*") + (m.group("prec") == "*")
        arg = args[argi] if argi < len(args) else ""
        argi += 1
        d = _DIRECT.match(arg)
        if d:
            out.setdefault(d.group(1), m.group("conv"))
    return out


HEX_BYTES = "\x00hex:"   # prefix of a raw column that still holds an array's bytes as hex text


def words_from_hex(hexes: pl.Series, size: int, dtype: pl.DataType, little_endian: bool = True) -> pl.Series:
    """Hex text of an array's bytes per row (``d28b3681ffffffff…``) → a List column of ``size``-byte words, in one
    numpy pass over all rows (null rows stay null; a trailing partial word is dropped)."""
    binary = hexes.str.decode("hex", strict=False)
    nbytes = binary.bin.size().fill_null(0).to_numpy().astype(np.int64)
    counts = nbytes // size
    flat = b"".join(b[: c * size] for b, c in zip(binary.fill_null(b"").to_list(), counts.tolist(), strict=True))
    words = np.frombuffer(flat, dtype=np.dtype(f"{'<' if little_endian else '>'}u{size}"))
    rows = np.repeat(np.arange(len(hexes), dtype=np.int64), counts)
    grouped = (pl.DataFrame({"row": rows, "w": words}).group_by("row", maintain_order=True).agg("w"))
    out = pl.DataFrame({"row": np.arange(len(hexes), dtype=np.int64)}).join(grouped, on="row", how="left")
    lists = out["w"]
    lists = pl.select(pl.when(hexes.is_not_null()).then(lists.fill_null(pl.lit([], dtype=lists.dtype)))).to_series()
    return lists.cast(dtype, strict=False).alias(hexes.name)


def raw_parser(fmt: EventFormat, long_size: int = 8) -> tuple[str, Callable[[pl.Expr], dict[str, pl.Expr]]]:
    """The ``name=value`` form ``trace-cmd report -R`` prints for every field: (regex, converter to field exprs).

    libtraceevent prints pointers and longs as ``0x…``, other integers in the base the print fmt uses for them
    (``rip=1000`` for a ``%llx``), char arrays as text and other arrays as ``ARRAY[b0, b1, …]`` bytes.
    """
    schema = fmt.schema(long_size)
    names = list(schema)
    convs = field_conversions(fmt)
    def value(dt: pl.DataType) -> str:
        if dt == pl.String:
            return ".*?"
        if isinstance(dt, pl.List):
            return r"ARRAY\[[^\]]*\]|\S*"
        return r"\S+"

    rx = "^" + " ".join(f"{_esc(n)}=(?P<r{i}>{value(schema[n])})" for i, n in enumerate(names)) + r"\s*$"

    def fields(info: pl.Expr) -> dict[str, pl.Expr]:
        # values sit between "name=" and " next_name=": literal finds and slices, no capturing regex (arrays make
        # these lines long, and capture groups over long lines are slow)
        keys = [f"{n}=" if i == 0 else f" {n}=" for i, n in enumerate(names)]
        pos = [info.str.find(k, literal=True) for k in keys]
        ends = [*pos[1:], info.str.len_chars()]
        out = {}
        for i, n in enumerate(names):
            begin = pos[i] + len(keys[i])
            v = info.str.slice(begin, ends[i] - begin).str.strip_chars_end()
            dt = schema[n]
            if dt == pl.String:
                out[n] = v
            elif dt.is_integer():
                hexed = v.str.starts_with("0x") | pl.lit(convs.get(n, "d") in "xXp")
                out[n] = pl.when(hexed).then(to_dtype(v, dt, 16)).otherwise(to_dtype(v, dt, 10))
            elif isinstance(dt, pl.List) and dt.inner == pl.UInt8:
                out[n] = v.str.strip_prefix("ARRAY[").str.strip_suffix("]").str.split(", ").list.eval(
                    pl.element().str.to_integer(base=16, dtype=pl.UInt8, strict=False))
            elif isinstance(dt, pl.List) and dt.inner.is_integer():
                # the record's bytes in memory order; words are rebuilt eagerly by words_from_hex()
                arr = v.str.starts_with("ARRAY[")
                out[f"{HEX_BYTES}{n}"] = pl.when(arr).then(v.str.slice(6, v.str.len_bytes() - 7)
                                                           .str.replace_all(", ", "", literal=True))
        return out

    return rx, fields


def info_parser(fmt: EventFormat, long_size: int = 8) -> Callable[[pl.Series], pl.DataFrame]:
    """A function turning a Series of an event's rendered text (what follows ``event:``) into a frame of its own
    fields, with the format's dtypes; fields not inverted (and rows that do not match) come out null."""
    text, args = split_print_fmt(fmt.print_fmt)
    text = text.strip()
    schema = fmt.schema(long_size)
    regex: list[str] = []
    caps: list[tuple[str, str, Callable[[pl.Expr], pl.Expr]]] = []   # (group, field, converter)
    pos, argi = 0, 0
    for m in _CONV.finditer(text):
        regex.append(_esc(text[pos:m.start()]))
        pos = m.end()
        conv = m.group("conv")
        if conv == "%":
            regex.append("%")
            continue
        if m.group("width") == "*":
            argi += 1
        if m.group("prec") == "*":
            argi += 1
        arg = args[argi] if argi < len(args) else ""
        argi += 1
        pad = " *" if m.group("width") else ""
        if conv == "p" and m.group("pext"):
            regex.append(pad + r".*?")
            continue
        pattern = _NUM.get(conv, r".*?")
        group = f"g{len(caps)}"
        direct, getstr = _DIRECT.match(arg), _GET_STR.match(arg)
        sym, flg, tern = _SYMBOLIC.match(arg), _FLAGS.match(arg), _TERNARY.match(arg)
        field = (direct or getstr or sym or flg or tern)
        name = field.group(1) if field else None
        if name not in schema:
            regex.append(f"{pad}(?:{pattern})")
            continue
        dtype = schema[name]
        if sym and conv == "s":
            table = symbol_table(sym.group(2))
            caps.append((group, name, lambda e, t=table, d=dtype: _unsymbol(e, t, d)))
        elif flg and conv == "s":
            table = symbol_table(flg.group(3))
            sep = flg.group(2)
            caps.append((group, name, lambda e, s=sep, t=table, d=dtype: unflag(e, s, t, d)))
        elif tern and conv == "s" and dtype.is_integer():
            yes, no = tern.group(2), tern.group(3)
            caps.append((group, name, lambda e, y=yes, n=no, d=dtype: pl.when(e == y).then(1).when(e == n).then(0)
                         .otherwise(None).cast(d)))
        elif (direct or getstr) and conv == "s" and dtype == pl.String:
            caps.append((group, name, lambda e: e))
        elif direct and conv in "xXp":
            caps.append((group, name, lambda e, d=dtype: to_dtype(e.replace("(null)", "0"), d, 16)))
        elif direct and conv in "diuo":
            base = 8 if conv == "o" else 10
            if base == 8:
                caps.append((group, name, lambda e, d=dtype: e.str.to_integer(base=8, strict=False).cast(d)))
            else:
                caps.append((group, name, lambda e, d=dtype: to_dtype(e, d)))
        else:
            regex.append(f"{pad}(?:{pattern})")
            continue
        regex.append(f"{pad}(?P<{group}>{pattern})")
    regex.append(_esc(text[pos:]))
    full = r"^\s*" + "".join(regex) + r"\s*$"
    try:
        re.compile(full)
    except re.error:
        full = r"^(?P<g_never>\A\z)$"
        caps = []

    def parse(info: pl.Series) -> pl.DataFrame:
        df = pl.DataFrame({"info": info})
        if caps:
            df = df.with_columns(pl.col("info").str.extract_groups(full).alias("_g"))
        cols = {name: pl.lit(None, dtype=dt) for name, dt in schema.items()}
        for group, name, convert in caps:
            if cols[name].meta.is_literal():
                cols[name] = convert(pl.col("_g").struct.field(group))
        return df.with_columns([e.alias(n) for n, e in cols.items()]).select(list(cols))

    parse.regex = full  # type: ignore[attr-defined]
    return parse
