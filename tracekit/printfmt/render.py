"""Render events as libtraceevent prints them without plugins (``trace-cmd report -N``), and symbolic columns.

Implements the output of libtraceevent 1.8's ``pretty_print`` for every event of a :class:`~tracekit.model.Trace`:
each event's print fmt is parsed once (:mod:`.grammar`), compiled once to a Polars expression (:mod:`.compile`) and
evaluated over the event's whole frame. Events whose print fmt libtraceevent cannot parse (an unknown helper, a
statement expression) print ``[FAILED TO PARSE]`` followed by `` name=value`` of every field, as it does; ftrace's
``bprint`` prints ``%ps: `` and its decoded text. ``info`` keeps libtraceevent's text except one trailing newline,
which trace-cmd does not show either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from ..formats import EventFormat
from .compile import Compiler
from .grammar import Call, Cond, Field, Node, PrintFmt, parse_conversions, parse_print_fmt
from .values import SYMBOLIC_HELPERS, FuncTable, failed_reason, hex_expr

__all__ = ["render_trace", "render_event", "symbolic_columns", "RENDER_SCHEMA"]

RENDER_SCHEMA = {"ts": pl.Int64, "cpu": pl.Int32, "common_pid": pl.Int32, "common_comm": pl.String,
                 "event": pl.String, "info": pl.String}
"""Columns of :func:`render_trace`'s frame."""

_FUNCS: dict[int, tuple[Any, FuncTable]] = {}


def _funcs(trace) -> FuncTable:
    """The function map of the trace's kallsyms, built once per table (traces cut from one share it)."""
    ks = getattr(trace, "kallsyms", None)
    hit = _FUNCS.get(id(ks))
    if hit is not None and hit[0] is ks:
        return hit[1]
    ft = FuncTable(ks)
    _FUNCS.clear()
    _FUNCS[id(ks)] = (ks, ft)
    return ft


def _printk(trace) -> dict[int, str] | None:
    md = getattr(trace, "metadata", {}) or {}
    pk = md.get("printk_formats") or md.get("printk")
    if isinstance(pk, Mapping) and pk:
        return {int(k): str(v) for k, v in pk.items()}
    return None


def _long_size(trace) -> int:
    md = getattr(trace, "metadata", {}) or {}
    try:
        return int(md.get("long_size") or 8)
    except (TypeError, ValueError):
        return 8


def _raw_field(fmt: EventFormat, name: str, dt: pl.DataType, long_size: int) -> pl.Expr:
    """libtraceevent's ``print_field_raw`` for one field."""
    try:
        f = fmt.field(name)
    except KeyError:
        return pl.lit("", pl.String)
    c = pl.col(name)
    if dt == pl.String:
        return c.fill_null("")
    if isinstance(dt, pl.List):
        inner = c.list.eval(hex_expr(pl.element().cast(pl.Int64).reinterpret(signed=False) & 0xFF
                                     ).str.pad_start(2, "0"))
        return pl.lit("ARRAY[") + inner.list.join(", ").fill_null("") + pl.lit("]")
    if not dt.is_integer():
        return pl.lit("", pl.String)
    v = c.cast(pl.Int64).fill_null(0)
    u = v.reinterpret(signed=False)
    is_long = "long" in f.type
    if f.is_pointer:
        return pl.lit("0x") + hex_expr(u & ((1 << (8 * f.size)) - 1 if f.size < 8 else (1 << 64) - 1))
    if f.signed:
        if f.size == 4:
            return pl.lit("0x") + hex_expr(u & 0xFFFFFFFF) if is_long else v.cast(pl.String)
        if f.size == 2:
            return v.cast(pl.String).str.pad_start(2, " ")
        if f.size == 1:
            return v.cast(pl.String)
        return v.cast(pl.String)
    if is_long:
        return pl.lit("0x") + hex_expr(u)
    return c.cast(pl.UInt64).cast(pl.String)


def _failed_expr(fmt: EventFormat, schema: Mapping[str, pl.DataType], long_size: int) -> pl.Expr:
    parts: list[pl.Expr] = [pl.lit("[FAILED TO PARSE]")]
    for f in fmt.own_fields:
        parts.append(pl.lit(f" {f.name}="))
        parts.append(_raw_field(fmt, f.name, schema[f.name], long_size) if f.name in schema else pl.lit(""))
    return pl.concat_str(parts)


def info_expr(fmt: EventFormat, schema: Mapping[str, pl.DataType], *, long_size: int = 8,
              funcs: FuncTable | None = None, printk: dict[int, str] | None = None) -> pl.Expr:
    """The ``info`` text of one event as a Polars expression over its frame.

    Args:
        fmt: the event's format.
        schema: the frame's column dtypes.
        long_size: the traced kernel's ``sizeof(long)``.
        funcs: the function map for ``%ps``; printk: the file's printk strings by address.
    """
    comp = Compiler(fmt, dict(schema), long_size, funcs, printk)
    if fmt.system == "ftrace" and fmt.name in ("kernel_stack", "user_stack") and "callers" in schema:
        # text inputs carry the frames as names only: print those where the record has no caller addresses
        names = pl.col("callers").list.head(8).list.concat(pl.lit(["0x0"] * 8, pl.List(pl.String))).list.head(8)
        from_names = names.list.eval(pl.lit("\t=> ") + pl.element()).list.join("\n")
        rendered = comp.render(parse_print_fmt(fmt.print_fmt)).str.strip_suffix("\n")
        has_addr = pl.col("caller").list.len().fill_null(0) > 0 if "caller" in schema else pl.lit(False)
        return pl.when(has_addr).then(rendered).otherwise(from_names)
    if fmt.system == "ftrace" and fmt.name == "bprint" and "text" in schema:
        ip = comp.pointer(parse_conversions("%ps")[0], Field("ip"))
        # get_bprint_format(): a format address missing from printk_formats prints "(NO FORMAT FOUND at %llx)"
        missing = pl.lit("(NO FORMAT FOUND at ") + hex_expr(comp.num(Field("fmt"))) + pl.lit(")")
        text = pl.when(pl.col("text").is_null()).then(missing).otherwise(pl.col("text"))
        return (ip + pl.lit(": ") + text).str.strip_suffix("\n")
    try:
        pf = parse_print_fmt(fmt.print_fmt)
    except Exception:  # noqa: BLE001 - a print fmt the grammar rejects is what libtraceevent fails on too
        return _failed_expr(fmt, schema, long_size)
    if failed_reason(pf):
        return _failed_expr(fmt, schema, long_size)
    return comp.render(pf).str.strip_suffix("\n")


def render_event(df: pl.DataFrame, fmt: EventFormat, *, long_size: int = 8, funcs: FuncTable | None = None,
                 printk: dict[int, str] | None = None) -> pl.Series:
    """The ``info`` Series of one event frame (see :func:`render_trace`)."""
    if df.height == 0:
        return pl.Series("info", [], dtype=pl.String)
    e = info_expr(fmt, df.schema, long_size=long_size, funcs=funcs, printk=printk)
    return df.select(e.alias("info")).to_series()


def render_trace(trace) -> pl.DataFrame:
    """Every event of ``trace`` as text, in trace order.

    Args:
        trace: a :class:`~tracekit.model.Trace`.

    Returns:
        A frame with :data:`RENDER_SCHEMA` (plus ``buffer`` when the frames carry one), sorted by ``ts`` then
        ``cpu`` (the order trace-cmd merges CPUs in); ``info`` is what libtraceevent prints for the event without
        plugins — the text ``trace-cmd report -N`` shows after the event name.
    """
    long_size = _long_size(trace)
    funcs = _funcs(trace)
    printk = _printk(trace)
    parts: list[pl.DataFrame] = []
    for short in trace.event_names:
        df = trace.events(short)
        key = trace._key(short)
        fmt = trace.formats.get(key)
        name = fmt.name if fmt is not None else key.rsplit(":", 1)[-1]
        if df.height == 0:
            continue
        if fmt is not None:
            info = info_expr(fmt, df.schema, long_size=long_size, funcs=funcs, printk=printk)
        elif "info" in df.columns:
            info = pl.col("info").cast(pl.String)
        else:
            info = pl.lit("", pl.String)
        cols = [
            pl.col("ts").cast(pl.Int64) if "ts" in df.columns else pl.lit(None, pl.Int64).alias("ts"),
            pl.col("cpu").cast(pl.Int32) if "cpu" in df.columns else pl.lit(None, pl.Int32).alias("cpu"),
            (pl.col("common_pid").cast(pl.Int32) if "common_pid" in df.columns
             else pl.lit(None, pl.Int32).alias("common_pid")),
            (pl.col("common_comm").cast(pl.String) if "common_comm" in df.columns
             else pl.lit(None, pl.String).alias("common_comm")),
            pl.lit(name, pl.String).alias("event"),
            info.alias("info"),
        ]
        if "buffer" in df.columns:
            cols.append(pl.col("buffer").cast(pl.String))
        parts.append(df.select(cols))
    if not parts:
        return pl.DataFrame(schema=RENDER_SCHEMA)
    out = pl.concat(parts, how="diagonal_relaxed")
    return out.sort(["ts", "cpu"], maintain_order=True, nulls_last=True)


def _symbolic_targets(n: Node) -> list[str]:
    """Fields that the ``__print_symbolic``/``__print_flags`` calls inside ``n`` apply to."""
    out: list[str] = []

    def first_field(x: Node) -> str | None:
        if isinstance(x, Field):
            return x.name
        for attr in ("operand", "left", "right", "test", "then", "other", "base", "index"):
            sub = getattr(x, attr, None)
            if isinstance(sub, Node):
                r = first_field(sub)
                if r:
                    return r
        if isinstance(x, Call):
            for a in x.args:
                r = first_field(a)
                if r:
                    return r
        return None

    def walk(x: Node) -> None:
        if isinstance(x, Call) and x.name in SYMBOLIC_HELPERS and x.args:
            f = first_field(x.args[0])
            if f and f not in out:
                out.append(f)
            return
        if isinstance(x, Cond):
            walk(x.then)
            walk(x.other)
            return
        if isinstance(x, Call):
            for a in x.args:
                walk(a)

    walk(n)
    return out


def symbolic_columns(trace, fmt: EventFormat, df: pl.DataFrame) -> pl.DataFrame:
    """Add a String column ``<field>_name`` for every field a ``__print_symbolic``/``__print_flags`` (or their
    ``_u64`` forms) of the event's print fmt applies to.

    The column is the text of the whole argument the helper sits in, evaluated with C's precedence (what the
    kernel meant; rendering follows libtraceevent's own grouping instead, which differs for e.g. timer_start's
    ``flags & (A | B)``), masks, shifts and conditionals included, so kvm_exit's ``exit_reason_name`` follows the ``isa`` ternary: the VMX table
    when ``isa == 1``, the SVM table otherwise. When several arguments name the same field the first one wins
    (kvm_exit's second ``__print_flags`` on ``exit_reason``, which only adds ``FAILED_VMENTRY``, is not a column).
    Table entries named by a kernel enum that no ``TRACE_DEFINE_ENUM`` exports (kvm_track_tsc's
    ``VDSO_CLOCKMODE_TSC``) get the kernel's value from :data:`.values.KERNEL_ENUMS`, as tracefs prints them;
    :func:`render_trace` keeps libtraceevent's ``0x1``.

    Args:
        trace: the trace (for ``long_size`` and kallsyms); may be None.
        fmt: the event's format.
        df: the event's frame.

    Returns:
        ``df`` with the columns added (unchanged when the print fmt has no symbolic helper or cannot be parsed).
    """
    try:
        pf: PrintFmt = parse_print_fmt(fmt.print_fmt, "c")
    except Exception:  # noqa: BLE001 - no symbolic columns for a print fmt the grammar rejects
        return df
    comp = Compiler(fmt, dict(df.schema), _long_size(trace) if trace is not None else 8,
                    _funcs(trace) if trace is not None else None, None, kernel_enums=True)
    new: list[pl.Expr] = []
    seen: set[str] = set()
    for arg in pf.args:
        for field in _symbolic_targets(arg):
            col = f"{field}_name"
            if field in seen or col in df.columns or field not in df.columns:
                continue
            seen.add(field)
            new.append(comp.text(arg).alias(col))
    if not new:
        return df
    return df.with_columns(new)
