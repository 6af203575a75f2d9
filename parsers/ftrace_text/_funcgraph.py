"""function_graph tracer text → ``ftrace:funcgraph_entry`` / ``ftrace:funcgraph_exit`` frames.

Two layouts carry the same call graph:

* ``trace-cmd report``'s default output, where trace-cmd's ftrace plugin (``lib/trace-cmd/trace-ftrace.c``,
  trace-cmd 3.x: ``fgraph_ent_handler`` / ``fgraph_ret_handler``) prints each funcgraph event after the usual
  ``comm-pid [cpu] ts: funcgraph_entry:`` head as ``[mark] DURATION us |  <indent>func();`` (a leaf: the entry and
  the exit that follows it, merged), ``|  <indent>func() {`` (an entry whose exit comes later) or
  ``[mark] DURATION us |  <indent>}`` (an exit; ``} /* func */`` with ``-O fgraph:tailprint``, `` (depth)`` after the
  line with ``-O fgraph:depth``);
* the kernel's own tracefs ``trace`` of the function_graph tracer (``kernel/trace/trace_functions_graph.c``,
  ``print_graph_prologue`` / ``print_graph_entry_leaf`` / ``print_graph_entry_nested`` / ``print_graph_return``;
  the layout is described in ``Documentation/trace/ftrace.rst``, "function graph tracer"): optional columns
  ``SECS.USECS |`` (``funcgraph-abstime``), ``N us |`` (``funcgraph-reltime``), `` CPU)`` (``funcgraph-cpu``, on by
  default), ``comm-pid |`` (``funcgraph-proc``, comm cut to 7 characters), the latency column ``d..1 |``, then the
  duration column (``+``/``!``/``#``/``*``/``@``/``$`` marks, ``DURATION us |``) and the indented call. A change of
  task on a CPU is printed as a block ``-----`` / `` CPU) prev-pid => next-pid`` / ``-----``; irq arrows
  (``==========>``), ``(Overruns: N)`` lines and separators carry no call.

Both indent the call by 2 + 2 × depth blanks after the ``|``. Values derived, in the columns the trace.dat reader
gives for these events: ``func_sym`` (the name as printed; ``func`` only when the text prints an address or the
kallsyms of ``formats=`` names it), ``depth``, and for exits ``calltime``/``rettime`` in ns: a leaf line starts at its
timestamp and lasts its duration; a ``}`` line ends at its timestamp and started its duration earlier. A ``}``
takes the name of the open ``{`` of the same depth of the same task (same CPU when the task is unknown) above it,
unless a line of the task at a smaller depth lies between (that ``{`` lost its ``}``); each ``{`` closes once. Without a time column (tracefs without ``funcgraph-abstime``/``-reltime``) the times stay
null. A tracefs task is its ``funcgraph-proc`` column, else the last context switch to it on that CPU.

Rows of these events in ``trace-cmd report -R`` (``func=NAME depth=…``) or ``-N`` (their print fmt, ``<-- NAME
(depth) (start: …``) are read by the print-fmt inversion; only their name is taken here, into ``func_sym``.

Everything is column-wise: literal string operations (split at the ``|``, prefix/suffix tests), one regex
extraction per tracefs line, forward/backward fills per CPU, one as-of join of closes to opens per depth.
"""

from __future__ import annotations

import re

import polars as pl

from ...formats import EventFormat

__all__ = ["EVENTS", "sniff", "split", "merge"]

EVENTS = ("funcgraph_entry", "funcgraph_exit")

#: duration column and call, after the head of the line (the same in both layouts)
_CALL = r"(?:[+!#*@$] )?\s*(?:(?P<dur>\d+(?:\.\d+)?)\s+us\s*)?\|(?P<call> .*)$"
_TRACEFS = (r"^\s*(?:(?P<abs>\d+\.\d+)\s+\|\s+)?(?:(?P<rel>\d+)\s+us\s+\|\s+)?(?:(?P<cpu>\d+)\)\s+)?"
            r"(?:(?P<proc>[^|]*?-\d+)\s*\|\s+)?(?:[.a-zA-Z0-9]{4,5}\s+\|\s+)?" + _CALL)
#: the plugin form's duration column (before the first ``|``): blank, or ``[mark] N.NNN us``
_PLUGIN_HEAD = r"^\s*(?:[+!#*@$] )?\s*(?:\d+(?:\.\d+)?\s+us)?\s*$"
_SWITCH = r"^\s*(?P<cpu>\d+)\)\s+(?P<prev>\S.*?-\d+)\s+=>\s+(?P<next>\S.*?-\d+)\s*$"
_NO_CALL = r"^\s*-{10,}\s*$|^\s*\(Overruns: \d+\)\s*$|(?:==========>|<==========)\s*\|?\s*$"
_PROC = r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s*$"

_SNIFF = re.compile(r"(?m)^\s*(?:\d+\.\d+\s+\|\s+)?\d+\)\s+.*\|\s+[A-Za-z_.$][\w.$]*\(.*\)\s*(?:;|\{)\s*$")


def sniff(text: str) -> bool:
    """True when ``text`` holds tracefs function_graph lines (``trace_pipe`` of that tracer has no header)."""
    return _SNIFF.search(text) is not None


def _ns(secs: pl.Expr) -> pl.Expr:
    """``secs.fraction`` (µs or ns digits) → Int64 ns."""
    parts = secs.str.split_exact(".", 1)
    whole = parts.struct.field("field_0").cast(pl.Int64, strict=False)
    frac = parts.struct.field("field_1")
    return pl.when(frac.is_null()).then(whole).otherwise(
        whole * 1_000_000_000 + frac.str.pad_end(9, "0").str.slice(0, 9).cast(pl.Int64, strict=False))


def _calls(df: pl.DataFrame) -> pl.DataFrame:
    """``dur`` (``N.NNN`` µs text) and ``call`` (the text after the duration column's ``|``) → ``dur_ns``, ``depth``,
    ``kind`` (``open`` ``func() {``, ``leaf`` ``func();``, ``close`` ``}``; null for anything else, e.g. a
    comment) and ``name`` (the function; for ``}`` the ``/* func */`` tail when printed). Literal string
    operations only, each column computed once."""
    call = pl.col("call")
    df = df.with_columns(call.str.strip_chars_start(" ").str.strip_chars_end().alias("_b"),
                         pl.col("dur").str.split_exact(".", 1).alias("_d"))
    indent = call.str.len_chars().cast(pl.Int64) - pl.col("call").str.strip_chars_start(" ").str.len_chars()
    depth = (indent - 2) // 2
    body = pl.col("_b")
    if df.select(body.str.ends_with(")").any()).item():
        # trace-cmd -O fgraph:depth: " (N)" after the call
        suffix = r" \((\d+)\)$"
        depth = pl.coalesce(body.str.extract(suffix, 1).cast(pl.Int64, strict=False), depth)
        df = df.with_columns(pl.when(body.str.ends_with(")")).then(body.str.replace(suffix, "")).otherwise(body)
                             .alias("_b"))
    close = body.str.starts_with("}")
    # a call's own trailing comment (funcgraph-retval / -retaddr: "func(); /* ret=0x0 */") is not its end
    core = pl.when(~close & body.str.ends_with("*/")).then(
        body.str.splitn(" /*", 2).struct.field("field_0").str.strip_chars_end()).otherwise(body)
    df = df.with_columns(core.alias("_b"), close.alias("_close"))
    tail = (body.str.strip_prefix("}").str.strip_chars_start().str.strip_prefix("/*").str.strip_chars_start()
            .str.splitn(" ", 2).struct.field("field_0").str.strip_suffix("*/"))
    kind = (pl.when(pl.col("_close")).then(pl.lit("close")).when(body.str.ends_with("{")).then(pl.lit("open"))
            .when(body.str.ends_with(";")).then(pl.lit("leaf")))
    name = pl.when(pl.col("_close")).then(pl.when(tail != "").then(tail)) \
        .otherwise(body.str.splitn("(", 2).struct.field("field_0").str.strip_chars())
    dur_ns = (pl.col("_d").struct.field("field_0").cast(pl.Int64, strict=False) * 1000
              + pl.col("_d").struct.field("field_1").fill_null("").str.pad_end(3, "0").str.slice(0, 3)
              .cast(pl.Int64, strict=False))
    return df.with_columns(dur_ns.alias("dur_ns"), depth.clip(0).alias("depth"), kind.alias("kind"),
                           name.alias("name")).drop("dur", "call", "_b", "_d", "_close")


def _named_rows(ev: pl.DataFrame) -> pl.DataFrame:
    """The function name of funcgraph rows in the ``-R`` (``func=NAME depth=…``) and ``-N`` (``--> NAME (depth)``,
    ``<-- NAME (depth) (start: …``) forms, which the print-fmt inversion reads but for the name (kind ``named``)."""
    rows = ev.filter(pl.col("event").is_in(list(EVENTS)))
    if rows.height == 0:
        return pl.DataFrame()
    name = pl.coalesce(pl.col("info").str.extract(r"^func=(\S+)", 1),
                       pl.col("info").str.extract(r"^(?:-->|<--) (\S+) \(\d+\)", 1))
    return rows.select("line_no", "event", name.alias("name"), pl.lit("named").alias("kind")) \
        .filter(pl.col("name").is_not_null())


def _plugin_rows(ev: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """trace-cmd report rows of the funcgraph events in the plugin form → (graph rows, the other events)."""
    parts = pl.col("info").str.splitn("|", 2)
    ev = ev.with_columns(parts.struct.field("field_0").alias("_h"), parts.struct.field("field_1").alias("call"))
    cand = (pl.col("event").is_in(list(EVENTS)) & pl.col("call").str.starts_with(" ")
            & pl.col("_h").str.contains(_PLUGIN_HEAD))
    ev = ev.with_columns(cand.fill_null(False).alias("_fg"))
    rows = ev.filter(pl.col("_fg"))
    rest = ev.filter(~pl.col("_fg")).drop("_fg", "_h", "call")
    named = _named_rows(rest)
    if rows.height == 0:
        return named, rest
    comm = pl.col("comm").str.strip_chars()
    dur = pl.col("_h").str.strip_chars(" +!#*@$").str.strip_suffix("us").str.strip_chars()
    rows = _calls(rows.select(pl.col("line_no"), _ns(pl.col("ts")).alias("ts"),
                              pl.col("cpu").cast(pl.Int32, strict=False), pl.col("pid").cast(pl.Int32, strict=False),
                              pl.when(comm == "<...>").then(None).otherwise(comm).alias("comm"),
                              pl.when(dur != "").then(dur).alias("dur"), "call", "info"))
    # a line of these events in no call form stays an event line (its print fmt is tried, else counted as damage)
    bad = rows.filter(pl.col("kind").is_null())
    if bad.height:
        rest = pl.concat([rest, ev.join(bad.select("line_no"), on="line_no", how="semi")
                          .drop("_fg", "_h", "call")]).sort("line_no")
        rows = rows.filter(pl.col("kind").is_not_null())
    rows = rows.drop("info")
    return (pl.concat([rows, named], how="diagonal_relaxed") if named.height else rows), rest


def _tracefs_rows(others: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """tracefs function_graph lines among the unparsed lines → (graph rows, the remaining lines)."""
    line = pl.col("line")
    unparsed = pl.col("kind") == "unparsed"
    others = others.with_columns((unparsed & line.str.contains(_SWITCH)).alias("_sw"),
                                 (unparsed & line.str.contains(_TRACEFS)).alias("_fg"))
    if not others.select(pl.col("_fg").any()).item():
        return pl.DataFrame(), others.drop("_sw", "_fg")
    m = others.filter(pl.col("_fg")).select("line_no", line.str.extract_groups(_TRACEFS).alias("_m")).unnest("_m")
    proc = pl.col("proc").str.extract_groups(_PROC)
    ts = pl.coalesce(_ns(pl.col("abs")), pl.col("rel").cast(pl.Int64, strict=False) * 1000)
    rows = _calls(m.select("line_no", ts.alias("ts"), pl.col("cpu").cast(pl.Int32, strict=False),
                           proc.struct.field("pid").cast(pl.Int32, strict=False).alias("pid"),
                           proc.struct.field("comm").str.strip_chars().alias("comm"), "dur", "call"))
    # comments (other events, trace_printk) and other non-call text after the duration column stay unparsed
    calls = rows.filter(pl.col("kind").is_not_null())
    others = others.with_columns(pl.col("_fg") & pl.col("line_no").is_in(calls["line_no"].implode()))
    rows = calls
    sw = line.str.extract_groups(_SWITCH)
    prev, nxt = (sw.struct.field(k).str.extract_groups(_PROC) for k in ("prev", "next"))
    switches = others.filter(pl.col("_sw")).select(
        "line_no", sw.struct.field("cpu").cast(pl.Int32, strict=False).alias("cpu"),
        nxt.struct.field("pid").cast(pl.Int32, strict=False).alias("_next"),
        nxt.struct.field("comm").alias("_next_comm"),
        prev.struct.field("pid").cast(pl.Int32, strict=False).alias("_prev"),
        prev.struct.field("comm").alias("_prev_comm"))
    if switches.height and rows["pid"].null_count():
        # the task of a line is the one switched to last on its CPU, or (before the first switch) the one
        # switched away from at the next switch
        both = pl.concat([rows.with_columns(pl.lit(False).alias("_is_sw")),
                          switches.with_columns(pl.lit(True).alias("_is_sw"))], how="diagonal_relaxed")
        both = both.sort("line_no").with_columns(
            pl.col("_next", "_next_comm").forward_fill().over("cpu"),
            pl.col("_prev", "_prev_comm").backward_fill().over("cpu"))
        rows = both.filter(~pl.col("_is_sw")).select(
            *[c for c in rows.columns if c not in ("pid", "comm")],
            pl.coalesce("pid", "_next", "_prev").alias("pid"),
            pl.when(pl.col("pid").is_not_null()).then(pl.col("comm"))
            .when(pl.col("_next").is_not_null()).then(pl.col("_next_comm"))
            .otherwise(pl.col("_prev_comm")).str.strip_chars().alias("comm")).select(rows.columns)
    done = pl.col("_fg") | pl.col("_sw")
    rest = others.filter(~done).with_columns(
        pl.when(unparsed & line.str.contains(_NO_CALL)).then(pl.lit("ignored")).otherwise(pl.col("kind"))
        .alias("kind")).drop("_sw", "_fg")
    return rows, rest


def split(ev: pl.DataFrame, others: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Take the function_graph lines out of the classified lines.

    Args:
        ev: event lines (:func:`._lines.classify`); rows of ``funcgraph_entry``/``funcgraph_exit`` in trace-cmd's
            plugin form are taken out (the ``-R`` and ``-N`` forms stay: their print fmt inverts).
        others: the other lines; tracefs function_graph lines and context-switch blocks are taken out, irq arrows
            and separators become ``ignored``.

    Returns:
        (events left, other lines left, graph rows: ``line_no, ts, cpu, pid, comm, dur_ns, depth, kind, name``;
        kind ``named`` rows only carry the name of a ``-R``/``-N`` row left among the events, with its ``event``).
    """
    a, ev = _plugin_rows(ev)
    b, others = _tracefs_rows(others)
    parts = [p for p in (a, b) if p.height]
    graph = pl.concat(parts, how="diagonal_relaxed").sort("line_no") if parts else pl.DataFrame()
    return ev, others, graph


def _address(names: pl.Series, kallsyms) -> pl.Series:
    """Addresses of printed names: a hex name (trace-cmd ``%llx``, tracefs ``0x…``) is the address itself, others
    go through ``kallsyms`` (the symbol's start: the function_graph ``func``) when given."""
    hexa = names.str.strip_prefix("0x").str.to_integer(base=16, dtype=pl.UInt64, strict=False)
    is_hex = names.str.contains(r"^(?:0x[0-9a-fA-F]+|[0-9a-f]{8,16})$").fill_null(False)
    out = pl.select(pl.when(is_hex).then(hexa).otherwise(None).alias("a")).to_series()
    if kallsyms is not None:
        uniq = [n for n in names.filter(~is_hex).drop_nulls().unique().to_list()]
        known = [(n, a) for n, a in ((n, kallsyms.address_of(n)) for n in uniq) if a is not None]
        if known:
            named = names.replace_strict([n for n, _ in known], [a for _, a in known], default=None,
                                         return_dtype=pl.UInt64)
            out = pl.select(pl.coalesce(out, named)).to_series()
    return out.alias("func")


def _frames(graph: pl.DataFrame, formats: dict[str, EventFormat], long_size: int,
            kallsyms) -> dict[str, pl.DataFrame]:
    """Entry and exit frames of the graph rows (see the module docstring)."""
    task = pl.coalesce(pl.col("pid").cast(pl.Int64), -1 - pl.col("cpu").cast(pl.Int64).fill_null(0))
    g = graph.filter(pl.col("kind") != "named").with_columns(task.alias("_task"), pl.col("line_no").cast(pl.Int64))
    closes = g.filter(pl.col("kind") == "close")
    pairs = []
    # one pass per depth that has a nameless "}" (a handful), each over whole columns: the "{" of a "}" at depth d
    # is the task's last "{" at depth d with no line of the task at a smaller depth in between (its caller
    # returned: that "{" lost its "}")
    for d in closes.filter(pl.col("name").is_null())["depth"].drop_nulls().unique().to_list():
        gd = g.with_columns((pl.col("depth") < d).cast(pl.Int32).cum_sum().over("_task").alias("_epoch"))
        at = (pl.col("depth") == d)
        o = gd.filter(at & (pl.col("kind") == "open")).select("_task", "_epoch", pl.col("line_no").alias("_open"),
                                                              pl.col("name").alias("_open_name"))
        c = gd.filter(at & (pl.col("kind") == "close")).select("line_no", "_task", "_epoch")
        pairs.append(c.join_asof(o, left_on="line_no", right_on="_open", by=["_task", "_epoch"],
                                 strategy="backward", check_sortedness=False))
    if pairs:
        # an open closes once: a later "}" whose own "{" was not printed gets no name from it
        p = pl.concat(pairs).sort("line_no")
        p = p.filter(pl.col("_open").is_not_null() & pl.col("_open").is_first_distinct())
        closes = closes.join(p.select("line_no", "_open_name"), on="line_no", how="left", maintain_order="left") \
            .with_columns(pl.coalesce("name", "_open_name").alias("name")).drop("_open_name")
    leaf = g.filter(pl.col("kind") == "leaf")
    ent = g.filter(pl.col("kind").is_in(["open", "leaf"]))
    exits = pl.concat([
        leaf.with_columns(pl.col("ts").alias("calltime"), (pl.col("ts") + pl.col("dur_ns")).alias("rettime"))
        .with_columns(pl.col("rettime").alias("ts")),
        closes.with_columns((pl.col("ts") - pl.col("dur_ns")).alias("calltime"), pl.col("ts").alias("rettime")),
    ]).sort("line_no", "depth", descending=[False, True])
    out = {}
    for name, rows in zip(EVENTS, (ent, exits), strict=True):
        fmt = formats.get(name)
        schema = fmt.schema(long_size) if fmt is not None else {}
        common = {f.name: f.dtype(long_size) for f in fmt.common_fields} if fmt is not None else {}
        # damaged text (a duration longer than the time before it, digits beyond the type) gives nulls
        fields = [_address(rows["name"], kallsyms).cast(schema.get("func", pl.UInt64)),
                  pl.col("depth").cast(schema.get("depth", pl.UInt32), strict=False)]
        if name == "funcgraph_entry" and "args" in schema:
            fields.append(pl.lit(None).cast(schema["args"]).alias("args"))
        if name == "funcgraph_exit":
            fields += [pl.lit(None).cast(schema.get("overrun", pl.UInt32)).alias("overrun"),
                       pl.col("calltime").cast(schema.get("calltime", pl.UInt64), strict=False),
                       pl.col("rettime").cast(schema.get("rettime", pl.UInt64), strict=False)]
        frame = rows.select(pl.col("line_no").cast(pl.UInt32), pl.col("ts").cast(pl.Int64),
                            pl.col("cpu").cast(pl.Int32),
                            pl.col("pid").cast(common.get("common_pid", pl.Int32())).alias("common_pid"),
                            pl.col("comm").alias("common_comm"), *fields, pl.col("name").alias("func_sym"))
        out[fmt.full_name if fmt is not None else name] = frame
    return out


def merge(frames: dict[str, pl.DataFrame], graph: pl.DataFrame, formats: dict[str, EventFormat], long_size: int,
          kallsyms=None) -> None:
    """Add the frames of ``graph`` (from :func:`split`) to ``frames`` (keyed ``system:event``, still holding
    ``line_no``), beside rows of the same events read in another form."""
    if graph.height == 0:
        return
    named = graph.filter(pl.col("kind") == "named")
    for event, fmt in ((e, formats.get(e)) for e in EVENTS if named.height):
        key = fmt.full_name if fmt is not None else event
        names = named.filter(pl.col("event") == event)
        if names.height and key in frames and "func_sym" not in frames[key].columns:
            df = frames[key].join(names.select(pl.col("line_no").cast(frames[key].schema["line_no"]),
                                               pl.col("name").alias("func_sym")), on="line_no", how="left",
                                  maintain_order="left")
            if "func" in df.columns:
                df = df.with_columns(pl.coalesce("func", _address(df["func_sym"], kallsyms).cast(df.schema["func"]))
                                     .alias("func"))
            frames[key] = df
    if named.height == graph.height:
        return
    for key, df in _frames(graph, formats, long_size, kallsyms).items():
        if key in frames:
            df = pl.concat([frames[key], df], how="diagonal_relaxed").sort("line_no", maintain_order=True)
        frames[key] = df
