"""Where the ``mutex-hotspots`` rule reads time in a lock from: symbol-set matching and call paths over frame lists
(perf callchains, kernel stacks), ``lock:contention_begin``/``contention_end`` pairing with the ``ftrace:kernel_stack``
after each begin, ``ftrace:funcgraph_exit`` intervals of the set's functions (function_graph tracer), and call
counts of the set's functions from the function tracer (``ftrace:function``).

Every function works on whole columns (Polars list and join operations); distinct stacks are resolved once.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from ..model import Trace

__all__ = ["SUFFIX", "WAITS_SCHEMA", "symbol_pattern", "lock_kind", "with_paths", "wait_stats", "contention_waits",
           "funcgraph_intervals", "function_calls", "union_intervals", "split_buckets", "symbol_names", "ARROW"]

SUFFIX = r"(?:\.(?:isra|constprop|part|cold|lto_priv|llvm)(?:\.\d+)?)*"
"""Compiler suffixes a symbol may carry (``.isra.0``, ``.constprop.0``, ``.part.0``, ``.cold`` …)."""

_TRACING = r"^(?:trace_event_raw_event_|__traceiter_|perf_trace_|__bpf_trace_|trace_contention_)"
_LCB = {"SPIN": 1, "READ": 2, "WRITE": 4, "RT": 8, "PERCPU": 16, "MUTEX": 32}
ARROW = " → "

WAITS_SCHEMA = {"pid": pl.Int32, "comm": pl.String, "cpu": pl.Int32, "lock_addr": pl.UInt64, "ts": pl.Int64,
                "end_ts": pl.Int64, "wait_ns": pl.Int64, "flags": pl.UInt32, "kind": pl.String, "slept": pl.Boolean,
                "path": pl.String, "in_set": pl.Boolean}


def symbol_pattern(names: list[str] | tuple[str, ...]) -> str:
    """A regex matching any of ``names`` exactly, with optional compiler suffixes (:data:`SUFFIX`)."""
    alts = "|".join(re.escape(n) for n in names) or r"(?!)"
    return rf"^(?:{alts}){SUFFIX}$"


def lock_kind(flags: pl.Expr) -> pl.Expr:
    """The lock type ``perf lock contention`` prints for contention_begin ``flags`` (LCB_F_* bits)."""
    f = flags.cast(pl.Int64) & 0x3F
    s, r, w, rt, pc, m = (_LCB[k] for k in ("SPIN", "READ", "WRITE", "RT", "PERCPU", "MUTEX"))
    table = {s: "spinlock", s | r: "rwlock:R", s | w: "rwlock:W", r: "rwsem:R", w: "rwsem:W", rt: "rt-mutex",
             rt | r: "rwlock-rt:R", rt | w: "rwlock-rt:W", pc | r: "pcpu-sem:R", pc | w: "pcpu-sem:W", m: "mutex",
             m | s: "mutex"}
    return f.replace_strict(list(table), list(table.values()), default="other", return_dtype=pl.String)


def _paths(chain: pl.Expr, set_re: str, internal_re: str, callers: int) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(in_set, path, where) of leaf-first frame lists: see the module docstring."""
    root_first = chain.list.reverse()
    hit = root_first.list.eval(pl.element().str.contains(set_re))
    in_set = hit.list.any().fill_null(False)
    pos = hit.list.arg_max().cast(pl.Int64)
    start = pl.max_horizontal(pos - callers, pl.lit(0, pl.Int64))
    head = root_first.list.slice(start, pos - start + 1)
    below = root_first.list.get(pos + 1, null_on_oob=True)
    below_ok = below.str.contains(internal_re).fill_null(False)
    tail = pl.when(below_ok).then(pl.concat_list(below)).otherwise(pl.lit([], dtype=pl.List(pl.String)))
    path = pl.when(in_set).then(pl.concat_list(head, tail).list.join(ARROW)).otherwise(None)
    any_re = f"(?:{set_re})|(?:{internal_re})"
    leaf_hit = chain.list.eval(pl.element().str.contains(any_re))
    where = pl.when(in_set).then(chain.list.get(leaf_hit.list.arg_max(), null_on_oob=True)).otherwise(None)
    return in_set, path, where


def with_paths(df: pl.DataFrame, col: str, set_re: str, internal_re: str, callers: int,
                strip_tracing: bool = False) -> pl.DataFrame:
    """``df`` plus the set membership and call path of the frame lists in ``col``, each distinct list computed once
    (stacks and callchains repeat: a few hundred distinct ones among millions of rows).

    Args:
        df: rows holding ``col``, a List[String] of frames, leaf first.
        col: the column.
        set_re, internal_re: regexes of the symbol set and of the mutex internals (:func:`symbol_pattern`).
        callers: frames above the outermost set frame kept in a path.
        strip_tracing: drop tracing frames (``trace_event_raw_event_*`` …) first, as kernel stacks of events hold.

    Returns:
        ``df`` with ``_hit`` (a frame is in the set), ``_set_path`` (the call path into the set, null when not in
        it), ``_path`` (that, or the three innermost frames root to leaf) and ``_where`` (the innermost set or
        internal frame).
    """
    key = pl.col(col).list.join("\x1f").fill_null("")
    keyed = df.with_columns(key.alias("_key"))
    uniq = keyed.select("_key", col).unique("_key")
    chain = pl.col(col)
    if strip_tracing:
        chain = chain.list.eval(pl.element().filter(~pl.element().str.contains(_TRACING)))
    uniq = uniq.with_columns(chain.fill_null(pl.lit([], dtype=pl.List(pl.String))).alias("_c"))
    hit, path, where = _paths(pl.col("_c"), set_re, internal_re, callers)
    other = pl.when(pl.col("_c").list.len() > 0).then(pl.col("_c").list.head(3).list.reverse().list.join(ARROW))
    uniq = uniq.select("_key", hit.alias("_hit"), pl.when(hit).then(path).otherwise(other).alias("_path"),
                       where.alias("_where"), pl.when(hit).then(path).alias("_set_path"))
    return keyed.join(uniq, on="_key", how="left").drop("_key")


def wait_stats(df: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Per ``keys``: ``count``, ``total_ns``, ``max_ns``, ``p50_ns``, ``p99_ns`` (nearest rank), ``spin``/``sleep``
    counts and ``spin_ns``/``sleep_ns`` of waits (:data:`WAITS_SCHEMA` rows); most total wait first."""
    w = pl.col("wait_ns")
    return (df.group_by(keys)
            .agg(count=pl.len().cast(pl.Int64), total_ns=w.sum(), max_ns=w.max(),
                 p50_ns=w.quantile(0.5, "nearest").cast(pl.Int64), p99_ns=w.quantile(0.99, "nearest").cast(pl.Int64),
                 spin=(~pl.col("slept")).sum().cast(pl.Int64), sleep=pl.col("slept").sum().cast(pl.Int64),
                 spin_ns=w.filter(~pl.col("slept")).sum(), sleep_ns=w.filter(pl.col("slept")).sum())
            .sort(["total_ns", *keys], descending=[True] + [False] * len(keys)))


def symbol_names(kallsyms, addrs: pl.Series) -> pl.Series:
    """Symbol names of ``addrs`` (null below the first symbol or for 0) as a String Series: one searchsorted and
    one gather from the table's names, whatever string type the table stores them in."""
    a = addrs.fill_null(0).cast(pl.UInt64).to_numpy()
    table = np.asarray(kallsyms.addrs, dtype=np.uint64)
    if not len(table):
        return pl.Series([None] * len(a), dtype=pl.String)
    idx = np.searchsorted(table, a, side="right") - 1
    ok = (idx >= 0) & (a != 0)
    names = pl.Series(np.asarray(kallsyms.names).astype(str), dtype=pl.String)
    got = names.gather(np.where(ok, idx, 0))
    return pl.select(pl.when(pl.Series(ok)).then(got)).to_series()


def _read(trace: Trace, name: str, columns: tuple[str, ...]) -> pl.DataFrame:
    """The columns of event ``name`` that exist among ``columns``: projected through :meth:`Trace.scan`, so a
    converted dataset reads only those columns' files (a trace in memory gives its frame's columns)."""
    lf = trace.scan(name)
    have = set(lf.collect_schema().names())
    return lf.select([c for c in columns if c in have]).collect()


_IDS = ("ts", "cpu", "common_pid", "common_comm")


def _stack_names(trace: Trace, stacks: pl.DataFrame) -> pl.Series:
    """``callers`` of kernel_stack rows, resolving ``caller`` addresses through the trace's kallsyms if needed."""
    if "callers" in stacks.columns:
        return stacks["callers"]
    if "caller" not in stacks.columns or trace.kallsyms is None:
        return pl.Series("callers", [None] * stacks.height, dtype=pl.List(pl.String))
    rows = stacks.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_r"), pl.col("caller"))
    flat = rows.explode("caller")
    named = (flat.with_columns(symbol_names(trace.kallsyms, flat["caller"]).alias("_n"))
             .group_by("_r").agg(pl.col("_n").drop_nulls()))
    # joined back by row: an empty caller list may explode to no row at all
    return rows.join(named, on="_r", how="left")["_n"].fill_null(pl.lit([], dtype=pl.List(pl.String))) \
        .alias("callers")


def contention_waits(trace: Trace, set_re: str, internal_re: str, callers: int = 1) -> tuple[pl.DataFrame, dict]:
    """Pair ``lock:contention_begin`` → ``contention_end`` per (pid, lock address) into waits.

    A begin repeated before its end (a mutex's optimistic spin, then its sleep) is one wait timed from the first
    begin, as ``perf lock contention`` does; it ``slept`` when any of its begins lacks the SPIN flag. The call path
    comes from the ``kernel_stack`` event right after the first begin on the same CPU and pid.

    Args:
        trace: a trace holding both contention events (and ideally ``kernel_stack``).
        set_re, internal_re: regexes of the symbol set and the mutex internals (:func:`symbol_pattern`).
        callers: frames above the set frame kept in a path.

    Returns:
        (waits with :data:`WAITS_SCHEMA`, counts: ``unmatched_begin`` (no end before the trace ends),
        ``unmatched_end`` (no begin: the wait started before the trace), ``no_stack`` (waits without a stack)).
    """
    beg = _read(trace, "contention_begin", (*_IDS, "lock_addr", "flags"))
    end = _read(trace, "contention_end", (*_IDS, "lock_addr"))
    comm = pl.col("common_comm") if "common_comm" in beg.columns else pl.lit(None, pl.String)
    b = beg.select(pl.col("ts").cast(pl.Int64), pl.col("cpu").cast(pl.Int32), pl.col("common_pid").cast(pl.Int32)
                   .alias("pid"), comm.cast(pl.String).alias("comm"), pl.col("lock_addr").cast(pl.UInt64),
                   pl.col("flags").cast(pl.UInt32), pl.lit(0, pl.Int8).alias("ev"))
    e = end.select(pl.col("ts").cast(pl.Int64), pl.col("cpu").cast(pl.Int32), pl.col("common_pid").cast(pl.Int32)
                   .alias("pid"), pl.lit(None, pl.String).alias("comm"), pl.col("lock_addr").cast(pl.UInt64),
                   pl.lit(None, pl.UInt32).alias("flags"), pl.lit(1, pl.Int8).alias("ev"))
    key = ["pid", "lock_addr"]
    ev = (pl.concat([b, e]).sort([*key, "ts", "ev"])
          .with_columns(episode=(pl.col("ev").cast(pl.Int64).cum_sum() - pl.col("ev")).over(key)))
    is_b, is_e = pl.col("ev") == 0, pl.col("ev") == 1
    spin = (pl.col("flags").cast(pl.Int64) & _LCB["SPIN"]) != 0
    ep = (ev.group_by([*key, "episode"])
          .agg(ts=pl.col("ts").filter(is_b).first(), end_ts=pl.col("ts").filter(is_e).first(),
               cpu=pl.col("cpu").filter(is_b).first(), comm=pl.col("comm").filter(is_b).first(),
               flags=pl.col("flags").filter(is_b).first(), slept=(is_b & ~spin).any(), nb=is_b.sum()))
    counts = {"unmatched_begin": int(ep.filter(pl.col("end_ts").is_null()).height),
              "unmatched_end": int(ep.filter(pl.col("nb") == 0).height)}
    w = ep.filter(pl.col("end_ts").is_not_null() & (pl.col("nb") > 0))
    path = pl.lit(None, pl.String)
    in_set = pl.lit(False)
    if trace.has("kernel_stack") and w.height:
        st = _read(trace, "kernel_stack", (*_IDS, "callers", "caller"))
        st = st.select(pl.col("ts").cast(pl.Int64).alias("st_ts"), pl.col("cpu").cast(pl.Int32),
                       pl.col("common_pid").cast(pl.Int32).alias("pid"),
                       _stack_names(trace, st).alias("stack")).sort("st_ts")
        # a stack whose first frame is another event's tracing function is not a contention_begin's
        first = pl.col("stack").list.first()
        st = st.filter(first.is_null() | ~first.str.starts_with("trace_event_raw_event_")
                       | first.str.starts_with("trace_event_raw_event_contention_begin"))
        firsts = b.select("ts", "cpu", "pid").unique().sort("ts")
        evs = pl.concat([b.select("ts", "cpu", "pid"), e.select("ts", "cpu", "pid")]).unique().sort("ts")
        # the stack of an event is the next stack on its CPU and pid, and that event the stack's previous one
        fwd = firsts.join_asof(st, left_on="ts", right_on="st_ts", by=["cpu", "pid"], strategy="forward",
                              check_sortedness=False)
        back = st.join_asof(evs.rename({"ts": "ev_ts"}), left_on="st_ts", right_on="ev_ts", by=["cpu", "pid"],
                            strategy="backward", check_sortedness=False).select("st_ts", "cpu", "pid", "ev_ts")
        pairs = (fwd.join(back, left_on=["ts", "st_ts", "cpu", "pid"], right_on=["ev_ts", "st_ts", "cpu", "pid"],
                          how="semi").select("ts", "cpu", "pid", "stack").unique(["ts", "cpu", "pid"]))
        w = w.join(pairs, on=["ts", "cpu", "pid"], how="left")
        w = with_paths(w, "stack", set_re, internal_re, callers, strip_tracing=True)
        in_set = pl.col("_hit")
        path = pl.col("_path")
    else:
        w = w.with_columns(pl.lit(None, pl.List(pl.String)).alias("stack"))
    w = w.with_columns(wait_ns=pl.col("end_ts") - pl.col("ts"), kind=lock_kind(pl.col("flags")),
                       path=path, in_set=in_set)
    counts["no_stack"] = int(w["stack"].is_null().sum()) if w.height else 0
    w = w.select([pl.col(c).cast(t) for c, t in WAITS_SCHEMA.items()]).sort("ts")
    return w, counts


def union_intervals(w: pl.DataFrame) -> pl.DataFrame:
    """Merge overlapping intervals of one pid (a spinlock wait nested in a mutex wait) into disjoint ones.

    Args:
        w: rows with ``pid``, ``comm``, ``ts``, ``end_ts``.

    Returns:
        ``pid``, ``grp``, ``comm``, ``ts``, ``end_ts``: one row per disjoint interval.
    """
    s = w.select("pid", "comm", "ts", "end_ts").sort(["pid", "ts"])
    prev_end = pl.col("end_ts").cum_max().shift(1).over("pid")
    s = s.with_columns(grp=(prev_end.is_null() | (pl.col("ts") > prev_end)).cum_sum().over("pid"))
    return s.group_by(["pid", "grp"]).agg(pl.col("comm").drop_nulls().first(), pl.col("ts").min(),
                                         pl.col("end_ts").max())


def split_buckets(iv: pl.DataFrame, t0: int, bucket_ns: int) -> pl.DataFrame:
    """Spread intervals over time buckets.

    Args:
        iv: rows with ``pid``, ``ts``, ``end_ts`` (ns).
        t0: start of bucket 0 (ns).
        bucket_ns: bucket length.

    Returns:
        ``iv`` exploded to one row per (interval, bucket) it touches, with ``bucket`` and ``ns`` spent in it.
    """
    b0 = (pl.col("ts") - t0) // bucket_ns
    b1 = (pl.col("end_ts") - 1 - t0) // bucket_ns
    x = iv.with_columns(bucket=pl.int_ranges(b0, pl.max_horizontal(b0, b1) + 1)).explode("bucket")
    lo = pl.max_horizontal(pl.col("ts"), t0 + pl.col("bucket") * bucket_ns)
    hi = pl.min_horizontal(pl.col("end_ts"), t0 + (pl.col("bucket") + 1) * bucket_ns)
    return x.with_columns(ns=(hi - lo).clip(0, None))


def funcgraph_intervals(trace: Trace, set_re: str) -> pl.DataFrame:
    """Calls of the symbol set timed by the function_graph tracer: one row per ``ftrace:funcgraph_exit`` of a set
    function, named by its ``func_sym`` column (function_graph text: the name as printed), else ``func`` through
    the trace's kallsyms.

    Returns:
        ``pid``, ``comm``, ``ts`` (calltime), ``end_ts`` (rettime), ``wait_ns``, ``path`` (the function), sorted by
        ``ts``; empty without names or such exits. Exits without calltime (function_graph text without a time
        column) are left out; ``pid`` is null where the text names no task (tracefs without ``funcgraph-proc`` on
        a CPU that never switched tasks).
    """
    ex = _read(trace, "funcgraph_exit", (*_IDS, "func", "func_sym", "calltime", "rettime"))
    names = pl.Series([None] * ex.height, dtype=pl.String)
    if "func_sym" in ex.columns:
        names = ex["func_sym"].cast(pl.String)
    if trace.kallsyms is not None and "func" in ex.columns and names.null_count():
        names = pl.select(pl.coalesce(names, symbol_names(trace.kallsyms, ex["func"]))).to_series()
    comm = pl.col("common_comm") if "common_comm" in ex.columns else pl.lit(None, pl.String)
    out = (ex.with_columns(names.alias("path"))
           .filter(pl.col("path").str.contains(set_re).fill_null(False))
           .select(pl.col("common_pid").cast(pl.Int32).alias("pid"), comm.cast(pl.String).alias("comm"),
                   pl.col("calltime").cast(pl.Int64).alias("ts"), pl.col("rettime").cast(pl.Int64).alias("end_ts"),
                   "path"))
    return out.with_columns(wait_ns=pl.col("end_ts") - pl.col("ts")).filter(pl.col("wait_ns") >= 0).sort("ts")


def function_calls(trace: Trace, set_re: str) -> pl.DataFrame:
    """Calls of the symbol set seen by the function tracer (``ftrace:function``: ``ip`` and ``parent_ip``, named
    through their ``*_sym`` columns or the trace's kallsyms). The tracer gives no durations: calls only.

    Returns:
        per ``pid``, ``comm`` and ``path`` (``parent → function``): ``calls``, ``first_ts``, ``last_ts``; most calls
        first.
    """
    fn = _read(trace, "function", (*_IDS, "ip", "ip_sym", "parent_ip", "parent_ip_sym"))

    def named(field: str) -> pl.Series:
        if f"{field}_sym" in fn.columns:
            by_text = fn[f"{field}_sym"].cast(pl.String)
            if by_text.null_count() < fn.height or field not in fn.columns or trace.kallsyms is None:
                return by_text
        if field in fn.columns and trace.kallsyms is not None:
            return symbol_names(trace.kallsyms, fn[field])
        return pl.Series([None] * fn.height, dtype=pl.String)

    comm = pl.col("common_comm") if "common_comm" in fn.columns else pl.lit(None, pl.String)
    return (fn.select(pl.col("ts").cast(pl.Int64), pl.col("common_pid").cast(pl.Int32).alias("pid"),
                      comm.cast(pl.String).alias("comm"))
            .with_columns(named("ip").alias("_f"), named("parent_ip").fill_null("?").alias("_p"))
            .filter(pl.col("_f").str.contains(set_re).fill_null(False))
            .with_columns(path=pl.concat_str(pl.col("_p"), pl.lit(ARROW), pl.col("_f")))
            .group_by("pid", "path")
            .agg(pl.col("comm").drop_nulls().last(), calls=pl.len().cast(pl.Int64), first_ts=pl.col("ts").min(),
                 last_ts=pl.col("ts").max())
            .sort(["calls", "pid", "path"], descending=[True, False, False]))
