"""Rule ``mutex-hotspots``: how much time threads spend in a lock symbol set, through which paths, and when.

Sources (any one is enough; several combine):

* host perf samples with callchains (``perf record -a -g``; any frame of a perf Trace with a ``callchain`` column,
  List[String] leaf first). Kernel frames perf left as hex (no kallsyms at read time) are named through the
  ``callchain_ip`` column and the kallsyms of a host trace.dat of the same run, when one is given;
* trace.dat ``lock:contention_begin`` / ``lock:contention_end`` with the ``ftrace:kernel_stack`` recorded after each
  event (``-O stacktrace``): one wait per acquisition, per lock address and call path.

The symbol set (``symbols``, default ``perf_event_ctx_lock``, ``perf_event_ctx_lock_nested``,
``perf_event_ctx_unlock``) matches with compiler suffixes (``.isra.N``, ``.constprop.N``, ``.part.N``, ``.cold``,
``.lto_priv.N``). A sample is *in the lock* when any frame of its chain matches (counted once per sample, weighted
by ``period`` — what ``perf report --children`` prints). The mutex internals (``internals``: ``__mutex_lock``,
``mutex_spin_on_owner``, ``osq_lock``, ``__mutex_unlock_slowpath``) are read only under a set frame: they name the
call path's last step and where inside the lock a sample sits.

A *call path* reads root to leaf: ``path_callers`` frames above the outermost set frame, that frame, and its callee
when the callee is a mutex internal, e.g. ``perf_ioctl → perf_event_ctx_lock_nested.isra.0 →
__mutex_lock.constprop.0``. A wait whose stack holds no set frame gets the path of its three innermost frames
(tracing frames dropped).

Frames of the :class:`~tracekit.detectors.RuleResult` (the report helper reads them by these names):

``hotspots``
    One row per symbol set, :data:`HOTSPOTS_SCHEMA` (= ``tracekit.analysis.HOTSPOTS_SCHEMA``): ``symbol`` (the set's label), ``share``
    (0..1: period-weighted share of all samples of the perf event in the set; with contention events only, the
    wall-time share of the waiting threads), ``samples``/``total_samples`` (sample counts; waits with contention
    events only), ``by_thread`` (pid, tid, comm, share of the thread's own samples, samples in the set),
    ``top_paths`` (path, share of all samples, samples), ``bursts`` (start_s, length_s, peak), ``period_s``.
``thread_share``
    Per thread: ``source`` (``perf`` or ``contention``), ``pid``, ``tid``, ``comm``, ``lock`` (period, or wait ns),
    ``total`` (the thread's period, or the trace span in ns), ``samples`` (in the set; waits for contention),
    ``total_samples``, ``share`` (lock / total).
``bucket_share``
    Per thread and time bucket: ``source``, ``bucket``, ``t_s`` (bucket start, s from the first event), ``tid``,
    ``comm``, ``lock``, ``total``, ``samples``, ``share`` (of the thread's own samples, or of the bucket's wall time),
    ``share_of_lock_threads`` (lock / the bucket's total over every thread that ever enters the set: these stack up
    to the ``timeline`` share).
``timeline``
    Per bucket: ``source``, ``bucket``, ``t_s``, ``lock``, ``total`` (over the lock threads), ``share``,
    ``share_all`` (lock / every sample of the bucket, perf only), ``in_burst``.
``top_paths``
    ``source``, ``path``, ``entry`` (the caller frame), ``samples``, ``lock`` (period or wait ns), ``share`` (of
    all samples, or of all wait time), ``share_of_lock``.
``lock_internals``
    perf only: ``where`` (the innermost set or internal frame of a sample in the set), ``samples``, ``share``.
``waits``
    One row per acquisition (contention events): ``pid``, ``comm``, ``cpu``, ``lock_addr``, ``ts``, ``end_ts``,
    ``wait_ns``, ``flags`` (of its first begin), ``kind`` (``spinlock``, ``mutex``, ``rwsem:R`` … as ``perf lock``
    names them), ``slept`` (a begin without the SPIN flag: the waiter went to sleep), ``path``, ``in_set``.
``waits_by_lock`` / ``waits_by_path``
    Per ``lock_addr`` (with ``kind``) / per ``path``: ``count``, ``total_ns``, ``max_ns``, ``p50_ns``, ``p99_ns``,
    ``spin``, ``sleep`` (counts), ``spin_ns``, ``sleep_ns``; most total wait first.
``bursts``
    ``source`` + :data:`~tracekit.detectors.periodicity.BURSTS_SCHEMA`.
``periodicity``
    One row per source: ``source``, ``period_s``, ``confidence``, ``method``, ``bursts``, ``mean_burst_s``,
    ``text`` (``bursts every ~4.0 s lasting ~1.9 s``).

A ``warning`` Finding is raised for each thread whose share exceeds ``thread_threshold`` (default 0.2) in more than
one consecutive bucket (at least ``min_bucket_samples`` samples in each for perf). Vectorised: list operations
and group-bys over all samples / events, no per-sample Python loop.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
import polars as pl

from ..model import Trace
from . import Finding, Inputs, RuleResult, register
from .periodicity import BURSTS_SCHEMA, estimate_period, find_bursts

__all__ = ["MutexHotspots", "symbol_pattern", "contention_waits", "lock_kind", "SUFFIX", "HOTSPOTS_SCHEMA",
           "WAITS_SCHEMA"]

SUFFIX = r"(?:\.(?:isra|constprop|part|cold|lto_priv|llvm)(?:\.\d+)?)*"
"""Compiler suffixes a symbol may carry (``.isra.0``, ``.constprop.0``, ``.part.0``, ``.cold`` …)."""

_TRACING = r"^(?:trace_event_raw_event_|__traceiter_|perf_trace_|__bpf_trace_|trace_contention_)"
_LCB = {"SPIN": 1, "READ": 2, "WRITE": 4, "RT": 8, "PERCPU": 16, "MUTEX": 32}
_ARROW = " → "

HOTSPOTS_SCHEMA = {
    "symbol": pl.String, "share": pl.Float64, "samples": pl.Int64, "total_samples": pl.Int64,
    "by_thread": pl.List(pl.Struct({"pid": pl.Int32, "tid": pl.Int32, "comm": pl.String, "share": pl.Float64,
                                    "samples": pl.Int64})),
    "top_paths": pl.List(pl.Struct({"path": pl.String, "share": pl.Float64, "samples": pl.Int64})),
    "bursts": pl.List(pl.Struct({"start_s": pl.Float64, "length_s": pl.Float64, "peak": pl.Float64})),
    "period_s": pl.Float64,
}
"""The ``hotspots`` frame: one row per symbol set (the findings.json ``hotspots`` entry)."""

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
    path = pl.when(in_set).then(pl.concat_list(head, tail).list.join(_ARROW)).otherwise(None)
    any_re = f"(?:{set_re})|(?:{internal_re})"
    leaf_hit = chain.list.eval(pl.element().str.contains(any_re))
    where = pl.when(in_set).then(chain.list.get(leaf_hit.list.arg_max(), null_on_oob=True)).otherwise(None)
    return in_set, path, where


def _with_paths(df: pl.DataFrame, col: str, set_re: str, internal_re: str, callers: int,
                strip_tracing: bool = False) -> pl.DataFrame:
    """``df`` plus ``_hit``, ``_path``, ``_where`` for the frame lists in ``col``, each distinct list computed once
    (stacks and callchains repeat: a few hundred distinct ones among millions of rows)."""
    key = pl.col(col).list.join("\x1f").fill_null("")
    keyed = df.with_columns(key.alias("_key"))
    uniq = keyed.select("_key", col).unique("_key")
    chain = pl.col(col)
    if strip_tracing:
        chain = chain.list.eval(pl.element().filter(~pl.element().str.contains(_TRACING)))
    uniq = uniq.with_columns(chain.fill_null(pl.lit([], dtype=pl.List(pl.String))).alias("_c"))
    hit, path, where = _paths(pl.col("_c"), set_re, internal_re, callers)
    other = pl.when(pl.col("_c").list.len() > 0).then(pl.col("_c").list.head(3).list.reverse().list.join(_ARROW))
    uniq = uniq.select("_key", hit.alias("_hit"), pl.when(hit).then(path).otherwise(other).alias("_path"),
                       where.alias("_where"), pl.when(hit).then(path).alias("_set_path"))
    return keyed.join(uniq, on="_key", how="left").drop("_key")


def _stats(df: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    w = pl.col("wait_ns")
    return (df.group_by(keys)
            .agg(count=pl.len().cast(pl.Int64), total_ns=w.sum(), max_ns=w.max(),
                 p50_ns=w.quantile(0.5, "nearest").cast(pl.Int64), p99_ns=w.quantile(0.99, "nearest").cast(pl.Int64),
                 spin=(~pl.col("slept")).sum().cast(pl.Int64), sleep=pl.col("slept").sum().cast(pl.Int64),
                 spin_ns=w.filter(~pl.col("slept")).sum(), sleep_ns=w.filter(pl.col("slept")).sum())
            .sort(["total_ns", *keys], descending=[True] + [False] * len(keys)))


def _names(kallsyms, addrs: pl.Series) -> pl.Series:
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


def _stack_names(trace: Trace, stacks: pl.DataFrame) -> pl.Series:
    """``callers`` of kernel_stack rows, resolving ``caller`` addresses through the trace's kallsyms if needed."""
    if "callers" in stacks.columns:
        return stacks["callers"]
    if "caller" not in stacks.columns or trace.kallsyms is None:
        return pl.Series("callers", [None] * stacks.height, dtype=pl.List(pl.String))
    flat = stacks.select(pl.int_range(pl.len()).alias("_r"), pl.col("caller")).explode("caller")
    names = _names(trace.kallsyms, flat["caller"])
    return (flat.with_columns(names.alias("_n")).group_by("_r", maintain_order=True)
            .agg(pl.col("_n").drop_nulls())["_n"].alias("callers"))


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
    beg = trace.events("contention_begin")
    end = trace.events("contention_end")
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
        st = trace.events("kernel_stack")
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
        w = _with_paths(w, "stack", set_re, internal_re, callers, strip_tracing=True)
        in_set = pl.col("_hit")
        path = pl.col("_path")
    else:
        w = w.with_columns(pl.lit(None, pl.List(pl.String)).alias("stack"))
    w = w.with_columns(wait_ns=pl.col("end_ts") - pl.col("ts"), kind=lock_kind(pl.col("flags")),
                       path=path, in_set=in_set)
    counts["no_stack"] = int(w["stack"].is_null().sum()) if w.height else 0
    w = w.select([pl.col(c).cast(t) for c, t in WAITS_SCHEMA.items()]).sort("ts")
    return w, counts


def _union_ns(w: pl.DataFrame) -> pl.DataFrame:
    """Merge overlapping waits of one pid (a spinlock wait nested in a mutex wait) into disjoint intervals."""
    s = w.select("pid", "comm", "ts", "end_ts").sort(["pid", "ts"])
    prev_end = pl.col("end_ts").cum_max().shift(1).over("pid")
    s = s.with_columns(grp=(prev_end.is_null() | (pl.col("ts") > prev_end)).cum_sum().over("pid"))
    return s.group_by(["pid", "grp"]).agg(pl.col("comm").drop_nulls().first(), pl.col("ts").min(),
                                         pl.col("end_ts").max())


def _split_buckets(iv: pl.DataFrame, t0: int, bucket_ns: int) -> pl.DataFrame:
    """Spread intervals (pid, ts, end_ts) over buckets: the ns each spends in each bucket."""
    b0 = (pl.col("ts") - t0) // bucket_ns
    b1 = (pl.col("end_ts") - 1 - t0) // bucket_ns
    x = iv.with_columns(bucket=pl.int_ranges(b0, pl.max_horizontal(b0, b1) + 1)).explode("bucket")
    lo = pl.max_horizontal(pl.col("ts"), t0 + pl.col("bucket") * bucket_ns)
    hi = pl.min_horizontal(pl.col("end_ts"), t0 + (pl.col("bucket") + 1) * bucket_ns)
    return x.with_columns(ns=(hi - lo).clip(0, None))


def _perf_samples(inputs: Inputs, kallsyms) -> tuple[Trace, str, pl.DataFrame] | None:
    """The perf event with the most callchain samples among the host (else guest) traces."""
    best = None
    for side in (inputs.host, inputs.guest):
        for tr in side:
            if not tr.format.startswith("perf"):
                continue
            for name in tr.event_names:
                df = tr.events(name)
                if "callchain" in df.columns and df.height and (best is None or df.height > best[2].height):
                    best = (tr, name, df)
        if best is not None:
            break
    if best is None:
        return None
    tr, name, df = best
    if kallsyms is not None and "callchain_ip" in df.columns:
        df = _name_hex_frames(df, kallsyms)
    return tr, name, df


def _name_hex_frames(df: pl.DataFrame, kallsyms) -> pl.DataFrame:
    """Name frames perf printed as ``[unknown]`` or hex through ``kallsyms`` (a host trace.dat's table)."""
    unnamed = pl.element().str.contains(r"^(?:\[unknown\]|0x[0-9a-f]+|[0-9a-f]{8,})$")
    if not df["callchain"].list.eval(unnamed).list.any().any():
        return df
    flat = df.select(pl.int_range(pl.len()).alias("_r"), "callchain", "callchain_ip").explode(
        ["callchain", "callchain_ip"])
    names = _names(kallsyms, flat["callchain_ip"])
    fixed = pl.when(pl.col("callchain").str.contains(r"^(?:\[unknown\]|0x[0-9a-f]+|[0-9a-f]{8,})$")
                    & (pl.col("callchain_ip") >= 0xFFFF_8000_0000_0000) & pl.col("_n").is_not_null()
                    ).then(pl.col("_n")).otherwise(pl.col("callchain"))
    chains = (flat.with_columns(names.alias("_n")).with_columns(fixed.alias("callchain"))
              .group_by("_r", maintain_order=True).agg("callchain")["callchain"])
    return df.with_columns(chains.alias("callchain"))


@register
class MutexHotspots:
    """Share of time in ``perf_event_ctx_lock*`` (or another symbol set) per thread and over time, the call paths
    into it, contention waits, and the period of its bursts."""

    name: ClassVar[str] = "mutex-hotspots"
    description: ClassVar[str] = ("Time threads spend in perf_event_ctx_lock* (perf callchains, lock contention "
                                  "events): per thread, per call path, per lock, and the period of its bursts")
    requires: ClassVar[tuple[str, ...]] = ()
    requires_any: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("lock:contention_begin", "cpu-clock", "task-clock", "cycles", "cpu-cycles"),)
    record_hint: ClassVar[str] = (
        "perf record -a -g -e cpu-clock -o perf.data -- sleep 10   # and/or: trace-cmd record -e "
        "lock:contention_begin -e lock:contention_end -O stacktrace -- sleep 10")
    defaults: ClassVar[dict[str, Any]] = {
        "label": "perf_event_ctx_lock*",
        "symbols": ["perf_event_ctx_lock", "perf_event_ctx_lock_nested", "perf_event_ctx_unlock"],
        "internals": ["__mutex_lock", "mutex_spin_on_owner", "osq_lock", "__mutex_unlock_slowpath"],
        "bucket_s": 0.1,
        "thread_threshold": 0.2,
        "burst_threshold": 0.2,
        "min_bucket_samples": 4,
        "path_callers": 1,
        "top_paths": 10,
    }

    def run(self, inputs: Inputs, config: dict[str, Any]) -> RuleResult:
        """Run the rule over every usable source of ``inputs`` (see the module docstring)."""
        cfg = {**self.defaults, **(config or {})}
        set_re, int_re = symbol_pattern(cfg["symbols"]), symbol_pattern(cfg["internals"])
        bucket_ns = max(1, int(round(float(cfg["bucket_s"]) * 1e9)))
        res = RuleResult(rule=self.name, ran=False, record_hint=self.record_hint)
        both = [t for t in inputs.host if t.has("contention_begin") and t.has("contention_end")]
        dat = [t for t in both if t.events("contention_begin").height and t.events("contention_end").height]
        ksyms = next((t.kallsyms for t in inputs.host if t.kallsyms is not None and len(t.kallsyms)), None)
        perf = _perf_samples(inputs, ksyms)
        if perf is None and not dat:
            res.missing = ["perf samples with callchains (perf record -g) | lock:contention_begin+contention_end"]
            if both:
                res.notes.append("lock:contention_begin/end are in the trace but hold no event")
            return res
        res.ran = True
        parts: dict[str, list[pl.DataFrame]] = {}
        if perf is not None:
            self._perf(perf, cfg, set_re, int_re, bucket_ns, parts, res)
        if dat:
            self._contention(dat[0], cfg, set_re, int_re, bucket_ns, parts, res)
            if len(dat) > 1:
                res.notes.append(f"contention events read from {dat[0].source} only ({len(dat)} traces had them)")
        for name, dfs in parts.items():
            res.frames[name] = pl.concat(dfs, how="diagonal_relaxed")
        res.frames["hotspots"] = self._hotspots(res.frames, cfg)
        res.findings.extend(self._findings(res.frames, cfg))
        return res

    # -- perf samples --------------------------------------------------------------------------------------------
    def _perf(self, perf, cfg, set_re, int_re, bucket_ns, parts, res) -> None:
        tr, event, df = perf
        df = _with_paths(df, "callchain", set_re, int_re, int(cfg["path_callers"]))
        in_set, path, where = pl.col("_hit"), pl.col("_set_path"), pl.col("_where")
        # without a period (or with none recorded) every sample weighs one
        weight = pl.col("period").cast(pl.Int64).fill_null(1) if "period" in df.columns else pl.lit(1, pl.Int64)
        t0 = int(df["ts"].min())
        s = df.select(pl.col("ts").cast(pl.Int64), pl.col("pid").cast(pl.Int32), pl.col("tid").cast(pl.Int32),
                      pl.col("comm").cast(pl.String), weight.alias("w"), in_set.alias("hit"), path.alias("path"),
                      where.alias("where"), ((pl.col("ts") - t0) // bucket_ns).alias("bucket"))
        res.notes.append(f"perf: {s.height} samples of {event!r} in {tr.source}")
        unknown = df.select(pl.col("callchain").explode().eq("[unknown]").mean()).item()
        if unknown and unknown > 0.5:
            res.notes.append(f"perf: {unknown:.0%} of the callchain frames are unnamed; load the perf.data with "
                             "kallsyms=FILE of the recording host, or give a host trace.dat of the same run")
        lockw = pl.col("w").filter(pl.col("hit"))
        total_w = int(s["w"].sum())
        names = s.group_by("tid").agg(pl.col("pid").last(), pl.col("comm").last())
        th = (s.group_by("tid").agg(lock=lockw.sum(), total=pl.col("w").sum(), samples=pl.col("hit").sum()
                                    .cast(pl.Int64), total_samples=pl.len().cast(pl.Int64))
              .join(names, on="tid").with_columns(share=pl.col("lock") / pl.col("total"), source=pl.lit("perf")))
        lock_tids = th.filter(pl.col("samples") > 0)["tid"].to_list()
        tb = (s.group_by("tid", "bucket").agg(lock=lockw.sum(), total=pl.col("w").sum(),
                                              samples=pl.col("hit").sum().cast(pl.Int64),
                                              bucket_samples=pl.len())
              .join(names.select("tid", "comm"), on="tid"))
        tl = (s.group_by("bucket").agg(lock=lockw.sum(), total=pl.col("w").filter(pl.col("tid").is_in(lock_tids))
                                       .sum(), all=pl.col("w").sum()))
        tl = self._full_buckets(tl, "bucket").with_columns(
            share=(pl.col("lock") / pl.col("total")).fill_nan(0.0).fill_null(0.0),
            share_all=(pl.col("lock") / pl.col("all")).fill_nan(0.0).fill_null(0.0))
        tb = (tb.filter(pl.col("tid").is_in(lock_tids)).join(tl.select("bucket", pl.col("total").alias("_bt")),
                                                             on="bucket")
              .with_columns(share=pl.col("lock") / pl.col("total"),
                            share_of_lock_threads=(pl.col("lock") / pl.col("_bt")).fill_nan(0.0)).drop("_bt"))
        hits = s.filter(pl.col("hit"))
        lock_w = int(hits["w"].sum()) if hits.height else 0
        paths = (hits.group_by("path").agg(samples=pl.len().cast(pl.Int64), lock=pl.col("w").sum(),
                                           entry=pl.col("path").first().str.split(_ARROW).list.first())
                 .with_columns(share=pl.col("lock") / total_w, share_of_lock=pl.col("lock") / max(lock_w, 1))
                 .sort(["lock", "path"], descending=[True, False]))
        internals = (hits.group_by("where").agg(samples=pl.len().cast(pl.Int64), lock=pl.col("w").sum())
                     .with_columns(share=pl.col("lock") / total_w).sort("lock", descending=True))
        self._add(parts, res, "perf", th, tb, tl, paths, bucket_ns, cfg)
        parts.setdefault("lock_internals", []).append(internals)
        res.frames["_perf_totals"] = pl.DataFrame({"lock": [lock_w], "total": [total_w], "samples": [hits.height],
                                                   "total_samples": [s.height]})

    # -- contention events ---------------------------------------------------------------------------------------
    def _contention(self, tr: Trace, cfg, set_re, int_re, bucket_ns, parts, res) -> None:
        waits, counts = contention_waits(tr, set_re, int_re, int(cfg["path_callers"]))
        res.notes.append(f"contention: {waits.height} waits in {tr.source}; " + ", ".join(
            f"{k} {v}" for k, v in counts.items()))
        if not tr.has("kernel_stack"):
            res.notes.append("contention: no ftrace:kernel_stack in the trace, so no wait can be tied to "
                             f"{cfg['label']}; record with -O stacktrace (echo 1 > options/stacktrace)")
        parts.setdefault("waits", []).append(waits)
        parts.setdefault("waits_by_lock", []).append(_stats(waits, ["lock_addr", "kind"]))
        parts.setdefault("waits_by_path", []).append(_stats(waits.with_columns(pl.col("path").fill_null("?")),
                                                            ["path"]))
        lo = min(int(tr.events(n)["ts"].min()) for n in ("contention_begin", "contention_end"))
        hi = max(int(tr.events(n)["ts"].max()) for n in ("contention_begin", "contention_end"))
        span = max(hi - lo, 1)
        mine = waits.filter(pl.col("in_set"))
        iv = _union_ns(mine) if mine.height else pl.DataFrame(schema={"pid": pl.Int32, "comm": pl.String,
                                                                      "ts": pl.Int64, "end_ts": pl.Int64})
        names = waits.group_by("pid").agg(pl.col("comm").drop_nulls().last())
        th = (iv.group_by("pid").agg(lock=(pl.col("end_ts") - pl.col("ts")).sum())
              .join(mine.group_by("pid").agg(samples=pl.len().cast(pl.Int64)), on="pid")
              .join(waits.group_by("pid").agg(total_samples=pl.len().cast(pl.Int64)), on="pid")
              .join(names, on="pid", how="left")
              .with_columns(tid=pl.col("pid"), total=pl.lit(span, pl.Int64), source=pl.lit("contention"))
              .with_columns(share=pl.col("lock") / pl.col("total")))
        nthreads = max(th.height, 1)
        sp = _split_buckets(iv, lo, bucket_ns) if iv.height else iv.with_columns(bucket=pl.lit(0), ns=pl.lit(0))
        tb = (sp.group_by("pid", "bucket").agg(lock=pl.col("ns").sum(), samples=pl.len().cast(pl.Int64))
              .join(names, on="pid", how="left")
              .with_columns(tid=pl.col("pid"), total=pl.lit(bucket_ns, pl.Int64), bucket_samples=pl.lit(None))
              .with_columns(share=pl.col("lock") / pl.col("total"),
                            share_of_lock_threads=pl.col("lock") / (bucket_ns * nthreads)))
        tl = sp.group_by("bucket").agg(lock=pl.col("ns").sum())
        tl = (self._full_buckets(tl, "bucket", last=(hi - lo) // bucket_ns)
              .with_columns(total=pl.lit(bucket_ns * nthreads, pl.Int64))
              .with_columns(share=pl.col("lock") / pl.col("total"), share_all=pl.lit(None, pl.Float64)))
        tot = int(waits["wait_ns"].sum()) if waits.height else 0
        mine_ns = int(mine["wait_ns"].sum()) if mine.height else 0
        paths = (mine.group_by("path").agg(samples=pl.len().cast(pl.Int64), lock=pl.col("wait_ns").sum(),
                                           entry=pl.col("path").first().str.split(_ARROW).list.first())
                 .with_columns(share=pl.col("lock") / max(tot, 1), share_of_lock=pl.col("lock") / max(mine_ns, 1))
                 .sort(["lock", "path"], descending=[True, False]))
        self._add(parts, res, "contention", th, tb, tl, paths, bucket_ns, cfg)
        res.frames["_contention_totals"] = pl.DataFrame({"lock": [int(iv.select((pl.col("end_ts") - pl.col("ts"))
                                                                                 .sum()).item() or 0)],
                                                         "total": [span * nthreads], "samples": [mine.height],
                                                         "total_samples": [waits.height]})

    # -- shared ----------------------------------------------------------------------------------------------------
    @staticmethod
    def _full_buckets(df: pl.DataFrame, col: str, last: int | None = None) -> pl.DataFrame:
        hi = int(df[col].max()) if df.height else 0
        hi = max(hi, last or 0)
        grid = pl.DataFrame({col: pl.int_range(0, hi + 1, dtype=pl.Int64, eager=True)})
        return grid.join(df.with_columns(pl.col(col).cast(pl.Int64)), on=col, how="left").fill_null(0)

    def _add(self, parts, res, source, th, tb, tl, paths, bucket_ns, cfg) -> None:
        bucket_s = bucket_ns / 1e9
        t_s = (pl.col("bucket") * bucket_s).alias("t_s")
        share = tl["share"].to_numpy()
        bursts = find_bursts(share, bucket_s, float(cfg["burst_threshold"]))
        per = estimate_period(share, bucket_s, bursts)
        hot = np.zeros(len(share), dtype=bool)
        for a, n in zip(bursts["first_bucket"].to_list(), bursts["buckets"].to_list(), strict=True):
            hot[a:a + n] = True  # one slice per burst, not per bucket
        src = pl.lit(source).alias("source")
        parts.setdefault("thread_share", []).append(
            th.select(src, "pid", "tid", "comm", "lock", "total", "samples", "total_samples", "share")
            .sort("share", descending=True))
        parts.setdefault("bucket_share", []).append(
            tb.select(src, pl.col("bucket").cast(pl.Int64), t_s, "tid", "comm", "lock", "total", "samples",
                      pl.col("bucket_samples").cast(pl.Int64), "share", "share_of_lock_threads")
            .sort(["tid", "bucket"]))
        parts.setdefault("timeline", []).append(
            tl.select(src, "bucket", t_s, "lock", "total", "share", "share_all")
            .with_columns(in_burst=pl.Series(hot)))
        parts.setdefault("top_paths", []).append(
            paths.head(int(cfg["top_paths"])).select(src, "path", "entry", "samples", "lock", "share",
                                                     "share_of_lock"))
        parts.setdefault("bursts", []).append(bursts.select(src, *BURSTS_SCHEMA))
        parts.setdefault("periodicity", []).append(pl.DataFrame(
            {"source": [source], "period_s": [None if per.period_s is None else float(per.period_s)],
             "confidence": [per.confidence], "method": [per.method], "bursts": [per.bursts],
             "mean_burst_s": [per.mean_burst_s], "text": [per.text]},
            schema={"source": pl.String, "period_s": pl.Float64, "confidence": pl.Float64, "method": pl.String,
                    "bursts": pl.Int64, "mean_burst_s": pl.Float64, "text": pl.String}))

    @staticmethod
    def _hotspots(frames: dict[str, pl.DataFrame], cfg) -> pl.DataFrame:
        totals = {src: frames.pop(f"_{src}_totals") for src in ("perf", "contention") if f"_{src}_totals" in frames}
        # samples first; contention events when the samples never reach the set (kernel frames left unnamed)
        source = "perf" if "perf" in totals and (totals["perf"]["samples"][0] or "contention" not in totals) \
            else "contention"
        tot = totals[source]
        one = pl.col("source") == source
        th = frames["thread_share"].filter(one & (pl.col("samples") > 0))
        tp = frames["top_paths"].filter(one)
        bu = frames["bursts"].filter(one)
        per = frames["periodicity"].filter(one)
        row = {
            "symbol": cfg["label"],
            "share": float(tot["lock"][0]) / max(float(tot["total"][0]), 1.0),
            "samples": int(tot["samples"][0]),
            "total_samples": int(tot["total_samples"][0]),
            "by_thread": th.select("pid", "tid", "comm", "share", "samples").to_dicts(),
            "top_paths": tp.select("path", "share", "samples").to_dicts(),
            "bursts": bu.select("start_s", "length_s", "peak").to_dicts(),
            "period_s": per["period_s"][0] if per.height else None,
        }
        return pl.DataFrame([row], schema=HOTSPOTS_SCHEMA)

    @staticmethod
    def _findings(frames: dict[str, pl.DataFrame], cfg) -> list[Finding]:
        thr = float(cfg["thread_threshold"])
        enough = pl.col("bucket_samples").is_null() | (pl.col("bucket_samples") >= int(cfg["min_bucket_samples"]))
        over = (frames["bucket_share"].filter((pl.col("share") > thr) & enough).sort(["source", "tid", "bucket"])
                .with_columns(run=(pl.col("bucket").diff().over(["source", "tid"]) != 1).fill_null(True).cum_sum()))
        long = (over.group_by(["source", "tid", "run"])
                .agg(pl.col("comm").last(), buckets=pl.len(), start_s=pl.col("t_s").min(), peak=pl.col("share").max())
                .filter(pl.col("buckets") > 1))
        out: list[Finding] = []
        if long.is_empty():
            return out
        per = frames["periodicity"]
        bucket_s = float(cfg["bucket_s"])
        for (source,), grp in long.group_by(["source"], maintain_order=True):
            ev = (grp.group_by("tid").agg(pl.col("comm").first(), runs=pl.len(), longest_s=pl.col("buckets").max()
                                          * bucket_s, first_s=pl.col("start_s").min(), peak=pl.col("peak").max())
                  .sort("longest_s", descending=True))
            text = per.filter(pl.col("source") == source)["text"]
            what = "of their sampled time" if source == "perf" else "of wall time waiting"
            top = frames["top_paths"].filter(pl.col("source") == source).head(1)
            via = (f" Mostly through {top['path'][0]} ({top['share_of_lock'][0]:.0%} of the time in the lock)."
                   if top.height else "")
            summary = (f"{ev.height} thread(s) spend more than {thr:.0%} {what} in {cfg['label']} for longer than "
                       f"one {bucket_s:g} s bucket (longest {ev['longest_s'].max():.1f} s, peak "
                       f"{ev['peak'].max():.0%}); {text[0] if text.len() else ''}.{via}")
            out.append(Finding(rule="mutex-hotspots", severity="warning",
                               title=f"{cfg['label']} hotspot: {ev.height} thread(s) above {thr:.0%} ({source})",
                               summary=summary, count=int(grp.height), evidence=ev))
        return out
