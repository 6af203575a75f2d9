"""ftrace text: tracefs ``trace`` / ``trace_pipe`` output and ``trace-cmd report`` output, as a :class:`Trace`.

Implements the line layouts of Linux's tracefs output (``kernel/trace/trace_output.c``, Linux 6.x: ``comm-pid
[cpu] flags timestamp: event: info``, the ``# tracer:`` header, ``<stack trace>`` blocks of `` => symbol`` lines,
``CPU:N [LOST n EVENTS]``) and of trace-cmd 3.x ``report`` (default, ``-t`` nanoseconds, ``-R`` raw; ``cpus=N`` /
``version = 6`` headers, ``CPU n is empty``, ``kernel_stack:`` followed by ``=> sym (addr)`` lines, the forms of
libtraceevent's plugins — see :mod:`._plugins`), plus what pasting does to them (``> `` quote prefixes, lines with only
``timestamp: event: info``) and gzip/zstd compression.

Timestamps in text are microseconds (nanoseconds with ``trace-cmd report -t``); ``ts`` holds them as Int64 ns.
Columns: ``ts``, ``cpu`` (Int32; null on bare lines), ``common_pid``, ``common_flags`` and
``common_preempt_count`` (only when the irq-flags column ``d..2.`` is present), ``common_comm`` (null for ``<...>``),
then the event format's own fields with the format's dtypes, inverted from the printed text (fields the text does
not carry are null). ``kernel_stack`` rows carry ``callers`` (List[String], leaf first) and ``caller``
(List[UInt64], when the text shows addresses). Lines matching no form are kept in ``trace.unparsed_lines``; events
whose text does not match their format are counted in ``trace.damage``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from ...errors import ConfigError, ParseError, TracekitError
from ...formats import EventFormat, builtin_formats, load_format_dir
from ...model import LOST_SCHEMA, Trace
from ...printfmt import info_parser
from . import _fast, _funcgraph, _lines, _plugins
from ._invert import HEX_BYTES, raw_parser, words_from_array
from ._source import MAX_BYTES, check_text, lines_frame, read_bytes

__all__ = ["sniff", "read"]

_SNIFF_EVENT = re.compile(
    r"^(?:[ \t]*>)*[ \t]*(?:\S.*?-\d+\s+(?:\(\s*(?:\d+|-+)\)\s+)?\[\d+\]\s*(?:[.A-Za-z0-9]{4,5}\s+)?\d+(?:\.\d+)?"
    r"|\d+\.\d+):\s+(?:<(?:user )?stack trace>|[A-Za-z_][\w.+-]*:|[A-Za-z_.$][\w.$]*\s+<-)", re.M)
_SNIFF_HEADER = re.compile(r"^(?:[ \t]*>)*[ \t]*(?:# tracer: \S+|cpus=\d+\s*$)", re.M)

STACK_EVENTS = ("kernel_stack", "user_stack")
_RESERVED = ("ts", "cpu", "buffer")
#: print-fmt inversions and -R parsers by (event, print fmt, long size, schema), built once per process
_PARSERS: dict = {}

#: flag characters of the irq-flags column (kernel/trace/trace_output.c, trace_print_lat_fmt) → common_flags bits
_IRQ_CHAR = {"d": 0x01, "D": 0x81, "b": 0x80, "X": 0x02, ".": 0}
_RESCHED_CHAR = {"B": 0x26, "N": 0x24, "L": 0x22, "b": 0x06, "n": 0x04, "l": 0x02, "p": 0x20, ".": 0}
_HARDSOFT_CHAR = {"Z": 0x48, "z": 0x40, "H": 0x18, "h": 0x08, "s": 0x10, ".": 0}


def sniff(head: bytes) -> bool:
    """True when ``head`` (the first bytes, decompressed) looks like tracefs or trace-cmd report text."""
    if b"\x00" in head:
        return False
    text = head.decode("utf-8", "replace")
    return bool(_SNIFF_HEADER.search(text) or _SNIFF_EVENT.search(text) or _funcgraph.sniff(text))


def _formats(option, path: str) -> tuple[dict[str, EventFormat], object | None, int]:
    """Event formats from ``formats=`` (a trace.dat, a formats folder, a dict, or None → built-in), plus the
    kallsyms and long size a trace.dat carries."""
    base = dict(builtin_formats())
    if option is None:
        return base, None, 8
    if isinstance(option, dict):
        return {**base, **option}, None, 8
    p = Path(option)
    if p.is_dir():
        return {**base, **load_format_dir(p)}, None, 8
    if p.is_file():
        from ...api import load

        tr = load(p)
        if not tr.formats:
            raise ConfigError(f"formats={option}: that input carries no event formats")
        return {**base, **tr.formats}, tr.kallsyms, int(tr.metadata.get("long_size", 8) or 8)
    raise ConfigError(f"formats={option}: expected a trace.dat, a folder of format files or a dict")


def _by_short_name(formats: dict[str, EventFormat]) -> dict[str, EventFormat]:
    out: dict[str, EventFormat] = {}
    for fmt in formats.values():
        out.setdefault(fmt.name, fmt)
    return out


def _ts_ns(col: str = "ts") -> pl.Expr:
    """``secs.usecs`` (or ``secs.nsecs``) → Int64 ns; a bare integer (a counter clock such as x86-tsc, which the
    kernel prints unconverted) is kept as it is."""
    parts = pl.col(col).str.split_exact(".", 1)
    sec = parts.struct.field("field_0").cast(pl.Int64, strict=False)
    frac = parts.struct.field("field_1")
    return pl.when(frac.is_null()).then(sec).otherwise(
        sec * 1_000_000_000 + frac.str.pad_end(9, "0").str.slice(0, 9).cast(pl.Int64))


def _flag_columns(schema: dict[str, pl.DataType]) -> list[pl.Expr]:
    f = pl.col("flags")

    def char(i: int, table: dict[str, int]) -> pl.Expr:
        return f.str.slice(i, 1).replace_strict(list(table), list(table.values()), default=0, return_dtype=pl.UInt32)

    depth = f.str.slice(3, 1).str.to_integer(base=16, strict=False).fill_null(0)
    migrate = pl.when(f.str.len_chars() >= 5).then(f.str.slice(4, 1).str.to_integer(base=16, strict=False)) \
        .otherwise(0).fill_null(0)
    flags = (char(0, _IRQ_CHAR) | char(1, _RESCHED_CHAR) | char(2, _HARDSOFT_CHAR))
    return [pl.when(f.is_not_null()).then(flags).cast(schema.get("common_flags", pl.UInt8)).alias("common_flags"),
            pl.when(f.is_not_null()).then(depth | (migrate * 16)).cast(schema.get("common_preempt_count", pl.UInt8))
            .alias("common_preempt_count")]


def _event_frame(rows: pl.DataFrame, name: str, fmt: EventFormat | None, long_size: int, with_flags: bool,
                 parse_cache: dict) -> tuple[pl.DataFrame, int]:
    """Typed frame of one event's rows; returns (frame, rows whose text matched no known form)."""
    common = {f.name: f.dtype(long_size) for f in fmt.common_fields} if fmt else {}
    pid_dt = common.get("common_pid", pl.Int32())
    base = [pl.col("line_no"), pl.col("ts"), pl.col("cpu").cast(pl.Int32),
            *([pl.col("buffer").fill_null("")] if "buffer" in rows.columns else []),
            pl.col("pid").cast(pid_dt, strict=False).alias("common_pid")]
    if with_flags:
        base += _flag_columns(common)
    base.append(pl.when(pl.col("comm") == "<...>").then(None).otherwise(pl.col("comm")).alias("common_comm"))
    out = rows.select(base)
    if fmt is None:
        return out.with_columns(rows["info"].alias("info")), 0
    schema = fmt.schema(long_size)
    info = rows["info"].fill_null("")
    key = (fmt.full_name, fmt.print_fmt, long_size, repr(schema))
    if key not in _PARSERS:
        try:
            _PARSERS[key] = info_parser(fmt, long_size)
        except TracekitError:
            # a print fmt the grammar cannot read: the fields stay null and the rows are counted as damage below
            _PARSERS[key] = lambda s, sch=schema: pl.DataFrame(schema=sch).clear(len(s))
        _PARSERS[("raw", key)] = raw_parser(fmt, long_size)
    raw_rx, raw_fields = _PARSERS[("raw", key)]
    first = f"{next(iter(schema))}=" if schema else None
    # the -R form starts with the first field's name: the regex runs only when some line does
    raw_m = info.str.contains(raw_rx) if first and info.str.starts_with(first).any() \
        else pl.Series(np.zeros(len(info), dtype=bool))
    raw = None
    if raw_m.any():
        raw = raw_fields(info)
        for c in [c for c in raw.columns if c.startswith(HEX_BYTES)]:
            n = c[len(HEX_BYTES):]
            raw = raw.with_columns(words_from_array(info, raw[c], fmt.field(n).element_size(long_size), schema[n]).alias(n)) \
                .drop(c)
    nulls = pl.DataFrame(schema=schema).clear(len(info))
    if name in STACK_EVENTS and raw is None:
        fields = nulls   # "<stack trace >": the frames come from the "=>" lines, nothing to invert
    elif raw is not None and raw_m.all() and not any(raw[c].null_count() for c in raw.columns):
        fields = nulls   # every line in -R form, every value read: no print fmt to invert
    else:
        fields = _by_unique(info, _PARSERS[key])
    failed = 0
    if raw is not None:
        fields = fields.with_columns([pl.when(raw_m).then(pl.coalesce(raw[n], fields[n])).otherwise(fields[n])
                                      .alias(n) for n in raw.columns])
    handler = _plugins.HANDLERS.get(name)
    if handler is not None:
        matched, exprs = handler(pl.col("info"), fmt, schema)
        plug = _by_unique(info, lambda s: pl.DataFrame({"info": s}).select(
            matched.alias("_m"), *[e.alias(n) for n, e in exprs.items()]))
        cols = []
        for n in fields.columns:
            if n in exprs:
                cols.append(pl.when(plug["_m"]).then(plug[n]).otherwise(fields[n]).alias(n))
        fields = fields.with_columns(cols) if cols else fields
        extra = [plug[n] for n in exprs if n not in fields.columns]
        if extra:
            fields = fields.with_columns(extra)
        ok = plug["_m"] | raw_m
    else:
        ok = raw_m
    if schema and name not in STACK_EVENTS:
        own = [c for c in schema if c in fields.columns]
        all_null = fields.select(pl.all_horizontal([pl.col(c).is_null() for c in own])).to_series()
        bad = all_null & ~ok
        failed = int(bad.sum())
    # a field named like a frame column (sched_wake_idle_without_ipi.cpu) gets a "_" suffix, as in trace.dat frames
    fields = fields.rename({c: f"{c}_" for c in fields.columns if c in _RESERVED})
    return pl.concat([out, fields], how="horizontal"), failed


def _typed(ev: pl.DataFrame) -> pl.DataFrame:
    """Event lines of :func:`._lines.classify` (text columns) in the typed form of :func:`._fast.parse_events`:
    ``pid`` Int64, ``cpu`` Int32, ``ts`` Int64 ns, ``ts_frac`` (digits after the dot), ``comm`` stripped."""
    frac = pl.col("ts").str.split_exact(".", 1).struct.field("field_1").str.len_chars()
    return ev.select("line_no", pl.col("comm").str.strip_chars(), pl.col("pid").cast(pl.Int64, strict=False),
                     pl.col("cpu").cast(pl.Int32), "flags", _ts_ns().alias("ts"),
                     frac.fill_null(0).cast(pl.Int8).alias("ts_frac"), "event", "info")


def _stack_lines(text: _fast.Text, rows: np.ndarray, extra: pl.DataFrame | None) -> pl.DataFrame:
    """``line_no, line`` of the frame lines at ``rows`` (plus ``extra`` ones), for :func:`._lines.attach_stacks`."""
    df = pl.DataFrame({"line_no": (rows + 1).astype(np.uint32),
                       "line": text.strings(text.starts[rows], text.ends[rows])})
    return df if extra is None or extra.height == 0 else pl.concat([df, extra]).sort("line_no")


def _classify_fast(text: _fast.Text) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame, np.ndarray]:
    """:func:`._lines.classify` with the common line forms read from the bytes (:mod:`._fast`); the lines it does
    not read go through the Polars classifier. Returns (typed events, frame lines or None while they are only
    ``stack_rows`` indices, others, stack_rows)."""
    first, *_ = _fast.first_bytes(text)
    stack = _fast.stack_line_mask(text)
    cand = np.flatnonzero(~stack & (first != ord("#")) & (text.ends > text.starts))
    ok, ev = _fast.parse_events(text, cand)
    rest_rows = np.sort(np.concatenate([cand[~ok], np.flatnonzero(~stack & ((first == ord("#"))
                                                                          | (text.ends == text.starts)))]))
    rest = pl.DataFrame({"line_no": (rest_rows + 1).astype(np.uint32),
                         "line": text.strings(text.starts[rest_rows], text.ends[rest_rows])})
    rev, odd, others = _lines.classify(rest)
    if rev.height:
        ev = pl.concat([ev, _typed(rev)], how="diagonal_relaxed").sort("line_no")
    stack_rows = np.flatnonzero(stack)
    stack_lines = _stack_lines(text, stack_rows, odd) if odd.height else None
    return ev, stack_lines, others, stack_rows


def _split_funcgraph(ev: pl.DataFrame, others: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """:func:`._funcgraph.split` over the funcgraph rows only (it reads ``ts`` as text: Int64 ns as digits)."""
    fg = ev["event"].is_in(list(_funcgraph.EVENTS))
    if not fg.any():
        return (ev, *_funcgraph.split(ev.clear(), others)[1:])
    rest, others, graph = _funcgraph.split(ev.filter(fg).with_columns(pl.col("ts").cast(pl.String)), others)
    return pl.concat([ev.filter(~fg), rest.with_columns(pl.col("ts").cast(pl.Int64))]).sort("line_no"), others, graph


def _by_unique(info: pl.Series, parse: Callable[[pl.Series], pl.DataFrame]) -> pl.DataFrame:
    """``parse(info)``, run once per distinct text when texts repeat (lock addresses, stack markers)."""
    if len(info) < 4096:
        return parse(info)
    uniq = info.unique()
    if len(uniq) * 2 > len(info):
        return parse(info)
    key = "\x00info"
    table = parse(uniq).with_columns(uniq.alias(key))
    return info.alias(key).to_frame().join(table, on=key, how="left", maintain_order="left").drop(key)


def _learn_vcpu(frames: dict[str, pl.DataFrame]) -> None:
    """kvm_exit printed by libtraceevent's kvm plugin has no vcpu: take the vcpu_id of the same thread's nearest
    kvm_entry (the one before it, else the one after)."""
    ex = next((k for k in frames if k.endswith("kvm_exit")), None)
    en = next((k for k in frames if k.endswith("kvm_entry")), None)
    if ex is None or en is None or "vcpu_id" not in frames[ex].columns or "vcpu_id" not in frames[en].columns:
        return
    exits = frames[ex]
    if exits["vcpu_id"].null_count() == 0:
        return
    entries = (frames[en].select("line_no", "common_pid", pl.col("vcpu_id").alias("_v"))
               .drop_nulls().sort("line_no"))
    dt = exits.schema["vcpu_id"]
    exits = exits.sort("line_no")
    for strategy in ("backward", "forward"):
        j = exits.join_asof(entries, on="line_no", by="common_pid", strategy=strategy, check_sortedness=False)
        exits = exits.with_columns(pl.coalesce(pl.col("vcpu_id"), j["_v"].cast(dt)).alias("vcpu_id"))
    frames[ex] = exits


def _resolve_function_names(frames: dict[str, pl.DataFrame], kallsyms) -> None:
    """Function events printed by name: ``ip`` / ``parent_ip`` become the symbol's start address (the text drops
    the offset into the function), so they resolve back to the same name."""
    key = next((k for k in frames if k.rsplit(":", 1)[-1] == "function"), None)
    if key is None:
        return
    df = frames[key]
    for field in ("ip", "parent_ip"):
        sym = f"{field}_sym"
        if sym not in df.columns or field not in df.columns:
            continue
        names = [n for n in df[sym].drop_nulls().unique().to_list()]
        addrs = [kallsyms.address_of(n) for n in names]
        known = [(n, a) for n, a in zip(names, addrs, strict=True) if a is not None]
        if not known:
            continue
        start = df[sym].replace_strict([n for n, _ in known], [a for _, a in known], default=None,
                                       return_dtype=pl.UInt64)
        df = df.with_columns(pl.coalesce(pl.col(field), start.cast(df.schema[field])).alias(field))
    frames[key] = df


def read(path: str | os.PathLike, *, formats=None, progress: Callable[[int, int], None] | None = None,
         max_bytes: int = MAX_BYTES, **options) -> Trace:
    """Read tracefs or trace-cmd report text (plain, gzip or zstd) into a :class:`Trace`.

    Args:
        path: the text file.
        formats: event formats for typed fields: a trace.dat path (its formats, kallsyms and long size), a folder
            of format files (:func:`tracekit.formats.load_format_dir`), a dict, or None for the built-in Linux 6.18
            formats.
        progress: called as ``progress(done, total)`` over the reading stages.
        max_bytes: refuse text (after decompression) larger than this.

    Returns:
        A Trace with ``format="ftrace-text"``, one frame per event (keys ``system:event`` when the format is
        known), ``unparsed_lines`` and ``lost_events``.

    Raises:
        ParseError: unreadable, binary, oversized or not trace text at all.
        ConfigError: a ``formats=`` that is neither a trace.dat, a folder nor a dict.
    """
    p = os.fspath(path)
    steps = 5

    def step(i: int) -> None:
        if progress is not None:
            progress(i, steps)

    fmts, kallsyms, long_size = _formats(formats, p)
    by_name = _by_short_name(fmts)
    data, compression = read_bytes(p, max_bytes)
    check_text(data, p)
    step(1)
    text = _fast.split(data)
    if text is None:
        data = bytes(data)
        lines = _lines.strip_quotes(lines_frame(data))
        n_lines = lines.height
        del data
        ev, stack_lines, others = _lines.classify(lines)
        ev = _typed(ev)
    else:
        del data
        n_lines = len(text)
        ev, stack_lines, others, stack_rows = _classify_fast(text)
    ev, others, graph = _split_funcgraph(ev, others)   # function_graph call lines
    md = _lines.metadata(others)
    step(2)
    if ev.height == 0 and graph.height == 0 and not (others["kind"] == "ignored").any():
        if text is not None and stack_lines is None:
            stack_lines = _stack_lines(text, stack_rows, None)
        first = pl.concat([others.select("line_no", "line"),
                           stack_lines.select("line_no", "line")]).sort("line_no").head(1)
        found = repr(first["line"][0][:60]) if first.height else "nothing"
        raise ParseError(p, 0, "tracefs or trace-cmd report text (lines like 'comm-pid [cpu] ts: event: info')",
                         found)
    attached = None
    if text is not None and stack_lines is None:
        attached = _fast.attach(text, stack_rows, ev["line_no"].to_numpy(),
                                ev["event"].is_in(list(STACK_EVENTS)).to_numpy())
        if attached is None:
            stack_lines = _stack_lines(text, stack_rows, None)
    stacks, orphans = attached if attached is not None else _lines.attach_stacks(ev, stack_lines, STACK_EVENTS)
    step(3)
    with_flags = ev["flags"].is_not_null().any()
    frames: dict[str, pl.DataFrame] = {}
    damage: list[ParseError] = []
    cache: dict = {}
    for (name,), rows in ev.partition_by("event", as_dict=True, maintain_order=True).items():
        fmt = by_name.get(name)
        frame, failed = _event_frame(rows, name, fmt, long_size, with_flags, cache)
        if name in STACK_EVENTS:
            frame = _with_stacks(frame, stacks, fmt, long_size)
        if failed:
            bad_line = int(frame.filter(pl.all_horizontal(
                [pl.col(c).is_null() for c in fmt.schema(long_size) if c in frame.columns]))["line_no"][0])
            damage.append(ParseError(p, None, f"{failed} {name} line(s) in the form of its print fmt "
                                              f"(fields left null; first at line {bad_line})",
                                     repr(rows.filter(pl.col("line_no") == bad_line)["info"][0][:80])))
        frames[fmt.full_name if fmt else name] = frame
    _funcgraph.merge(frames, graph, by_name, long_size, kallsyms)
    _learn_vcpu(frames)
    if kallsyms is not None:
        _resolve_function_names(frames, kallsyms)
    # rows are in line (trace) order already: partition_by and the left joins keep it
    frames = {k: v.drop("line_no") for k, v in frames.items()}
    step(4)
    unparsed = pl.concat([others.filter(pl.col("kind") == "unparsed").select("line_no", "line"), orphans]) \
        .sort("line_no")
    md.update({"compression": compression, "long_size": long_size,
               "ts_precision_ns": 1 if ev["ts_frac"].head(1000).max() == 9 else 1000,
               "lines": n_lines, "unparsed": unparsed.height})
    lost = _lines.lost_events(others).cast(LOST_SCHEMA)
    used = {k: fmts[k] for k in frames if k in fmts}
    step(5)
    return Trace(source=p, format="ftrace-text", frames=frames, metadata=md, formats=used, lost_events=lost,
                 kallsyms=kallsyms, damage=damage, unparsed_lines=unparsed)


def _with_stacks(frame: pl.DataFrame, stacks: pl.DataFrame, fmt: EventFormat | None, long_size: int) -> pl.DataFrame:
    """Join the frame lines of each stack event; ``size`` is the frame count when the text did not give it."""
    own = stacks.rename({"owner": "line_no", "caller": "_caller"})
    if own.height == frame.height and own["line_no"].equals(frame["line_no"].cast(own.schema["line_no"])):
        # every stack event has its frames, in the same (line) order: no join needed
        j = pl.concat([frame, own.drop("line_no")], how="horizontal")
    else:
        j = frame.join(own, on="line_no", how="left", maintain_order="left")
    j = j.with_columns(pl.col("callers").fill_null(pl.lit([], dtype=pl.List(pl.String))))
    if "size" in j.columns:
        j = j.with_columns(pl.coalesce(pl.col("size"), pl.col("callers").list.len().cast(j.schema["size"]))
                           .alias("size"))
    if "caller" in j.columns:
        j = j.with_columns(pl.coalesce(pl.col("caller"), pl.col("_caller").cast(j.schema["caller"])).alias("caller"))
        if "size" in j.columns:
            # trace-cmd -R prints 8 words whatever the record's size: the words past `size` are not the stack's
            j = j.with_columns(pl.col("caller").list.head(pl.col("size").clip(0).fill_null(0)).alias("caller"))
    return j.drop("_caller")
