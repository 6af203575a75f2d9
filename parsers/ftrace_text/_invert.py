"""The ``name=value`` form of ``trace-cmd report -R`` (:func:`raw_parser`) and the value helpers the plugin forms
share (symbol tables, flag texts, printed integers → field dtypes).

The inversion of an event's ``print fmt`` itself is :func:`tracekit.printfmt.info_parser`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import polars as pl
import pyarrow as pa

from ...formats import EventFormat

_CONV = re.compile(r"%(?P<flags>[-+ #0]*)(?P<width>\d+|\*)?(?:\.(?P<prec>\d+|\*))?(?P<len>hh|h|ll|l|L|z|j|t|q)?"
                   r"(?P<conv>[diouxXcsp%])(?P<pext>(?<=p)[A-Za-z]\w*)?")
_CAST = r"(?:\(\s*(?:const\s+|unsigned\s+|signed\s+|struct\s+)*[A-Za-z_]\w*(?:\s+\w+)*\s*\**\s*\)\s*)*"
_DIRECT = re.compile(rf"^{_CAST}\(?\s*{_CAST}REC\s*->\s*(\w+)\s*\)?$")
_ENTRY = re.compile(r'\{\s*([^{}]+?)\s*,\s*((?:"(?:[^"\\]|\\.)*"\s*)+)\}')
_SAFE_EXPR = re.compile(r"^[0-9a-fA-FxX\s+\-|&<>()~]+$")
#: byte → its hex digit's value, 255 for a byte that is no hex digit
HEX_DIGIT = np.full(256, 255, dtype=np.uint8)
HEX_DIGIT[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)
HEX_DIGIT[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "r": "\r", "0": "\0"}


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


HEX_BYTES = "\x00hex:"   # prefix of a raw column holding the byte span of an array's ``ARRAY[…]`` text


def words_from_array(info: pl.Series, span: pl.Series, size: int, dtype: pl.DataType,
                     little_endian: bool = True) -> pl.Series:
    """The bytes trace-cmd -R prints as ``ARRAY[28, e7, 39, …]`` (two hex digits each) → a List column of
    ``size``-byte words, decoded in numpy straight from the Arrow buffer of ``info``.

    Args:
        info: the info texts.
        span: per row, a struct ``b, e`` of byte offsets in the text: ``b`` just after ``ARRAY[``, ``e`` the end of
            the value (blanks and the ``]`` before it are dropped here); null for rows without an array.
        size: bytes per word; dtype: the List dtype to return.

    Rows are grouped by text length, one matrix per length. Null spans give null; a value not in that form gives an
    empty list; a trailing partial word is dropped.
    """
    n = len(info)
    arr = info.cast(pl.String).alias("t").to_arrow(compat_level=pl.CompatLevel.oldest())
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    bufs = arr.buffers()
    off = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset: arr.offset + n + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None and off[-1] > off[0] else None
    valid = span.is_not_null().to_numpy()
    begin = off[:-1] + span.struct.field("b").fill_null(0).cast(pl.Int64).to_numpy()
    end = off[:-1] + span.struct.field("e").fill_null(0).cast(pl.Int64).to_numpy()
    valid &= end > begin
    if data is not None:
        for _ in range(64):
            blank = valid & (end > begin) & np.isin(data[np.maximum(end - 1, 0)], (32, 9))
            if not blank.any():
                break
            end -= blank
        valid_close = valid & (end > begin) & (data[np.maximum(end - 1, 0)] == 93)
    else:
        valid_close = np.zeros(n, dtype=bool)
    nchar = np.where(valid_close, end - 1 - begin, 0)
    nbytes = np.where(valid_close & (nchar % 4 == 2), (nchar + 2) // 4, 0)
    counts = nbytes // size
    words = np.zeros((0,), dtype=np.uint8)
    pieces, rows_of = [], []
    if data is not None:
        for length in np.unique(nchar[counts > 0]):
            rows = np.flatnonzero((nchar == length) & (counts > 0))
            m = np.lib.stride_tricks.sliding_window_view(data, int(length))[begin[rows]]
            hi, lo = HEX_DIGIT[m[:, 0::4]], HEX_DIGIT[m[:, 1::4]]
            ok = ~((hi == 255) | (lo == 255)).any(axis=1)
            ok &= ((m[:, 2::4] == 44) & (m[:, 3::4] == 32)).all(axis=1)
            k = int(counts[rows[0]]) * size
            by = ((hi[:, :k] << 4) | lo[:, :k]).astype(np.uint8)
            counts[rows[~ok]] = 0
            pieces.append(by[ok])
            rows_of.append(rows[ok])
    if len(pieces) == 1:
        words = pieces[0].reshape(-1)                  # one text length (trace-cmd -R prints 8 words): in order
    elif pieces:
        order = np.argsort(np.concatenate(rows_of), kind="stable")
        if len({p.shape[1] for p in pieces}) == 1:
            words = np.concatenate(pieces)[order].reshape(-1)
        else:
            each = [r for p in pieces for r in p]
            words = np.concatenate([each[i] for i in order])
    words = words.view(np.dtype(f"{'<' if little_endian else '>'}u{size}"))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    lists = pl.from_arrow(pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(words)))
    lists = pl.select(pl.when(pl.Series(valid)).then(lists)).to_series()
    return lists.cast(dtype, strict=False)


def _wide_list(dt: pl.DataType) -> bool:
    """A List of integers wider than a byte (its -R bytes are decoded by :func:`words_from_array`)."""
    return isinstance(dt, pl.List) and dt.inner.is_integer() and dt.inner != pl.UInt8


def raw_parser(fmt: EventFormat, long_size: int = 8) -> tuple[str, Callable[[pl.Series], pl.DataFrame]]:
    """The ``name=value`` form ``trace-cmd report -R`` prints for every field: (regex, reader of the info texts into
    a frame of the fields; list fields of wider words come as ``HEX_BYTES``-prefixed byte spans).

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

    def fields(info: pl.Series) -> pl.DataFrame:
        # values sit between "name=" and " next_name=": literal finds and slices, no capturing regex (arrays make
        # these lines long, and capture groups over long lines are slow); computed in stages so that each find
        # and each value is evaluated once
        keys = [f"{n}=" if i == 0 else f" {n}=" for i, n in enumerate(names)]
        text = pl.col("\x00info")
        df = pl.DataFrame({"\x00info": info}).with_columns(
            *[text.str.find(k, literal=True).alias(f"\x00p{i}") for i, k in enumerate(keys)],
            *[text.str.find(f"{k}ARRAY[", literal=True).alias(f"\x00a{i}") for i, k in enumerate(keys)
              if _wide_list(schema[names[i]])])
        pos = [pl.col(f"\x00p{i}") for i in range(len(names))]
        ends = [*pos[1:], text.str.len_chars()]
        listed = [_wide_list(schema[n]) for n in names]
        df = df.with_columns(*[text.str.slice(pos[i] + len(keys[i]), ends[i] - pos[i] - len(keys[i]))
                               .str.strip_chars_end().alias(f"\x00v{i}") for i in range(len(names)) if not listed[i]])
        out = []
        for i, n in enumerate(names):
            dt = schema[n]
            v = pl.col(f"\x00v{i}")
            if dt == pl.String:
                out.append(v.alias(n))
            elif dt.is_integer():
                hexed = v.str.starts_with("0x") | pl.lit(convs.get(n, "d") in "xXp")
                out.append(pl.when(hexed).then(to_dtype(v, dt, 16)).otherwise(to_dtype(v, dt, 10)).alias(n))
            elif isinstance(dt, pl.List) and dt.inner == pl.UInt8:
                out.append(v.str.strip_prefix("ARRAY[").str.strip_suffix("]").str.split(", ").list.eval(
                    pl.element().str.to_integer(base=16, dtype=pl.UInt8, strict=False)).alias(n))
            elif listed[i]:
                # the record's bytes in memory order; words are rebuilt eagerly by words_from_array() from the
                # value's byte span (finds give byte offsets)
                arr = pl.col(f"\x00a{i}") == pos[i]
                end = pos[i + 1] if i + 1 < len(names) else text.str.len_bytes()
                out.append(pl.when(arr).then(pl.struct((pos[i] + len(keys[i]) + 6).alias("b"), end.alias("e")))
                           .alias(f"{HEX_BYTES}{n}"))
        return df.select(out)

    return rx, fields
