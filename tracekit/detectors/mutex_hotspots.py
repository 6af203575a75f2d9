"""Rule ``mutex-hotspots``: how much time threads spend in a lock symbol set, through which paths, and when.

Sources (any one is enough; several combine):

* host perf samples with callchains (``perf record -a -g``; any frame of a perf Trace with a ``callchain`` column,
  List[String] leaf first). Kernel frames perf left as hex (no kallsyms at read time) are named through the
  ``callchain_ip`` column and the kallsyms of a host trace.dat of the same run, when one is given;
* trace.dat ``lock:contention_begin`` / ``lock:contention_end`` with the ``ftrace:kernel_stack`` recorded after each
  event (``-O stacktrace``): one wait per acquisition, per lock address and call path (source ``contention``);
* the function_graph tracer's ``ftrace:funcgraph_exit`` (``calltime``/``rettime``) of the set's functions: wall time
  inside them per thread (source ``funcgraph``; path = the function; nested set calls count once).

Pairing, stacks and intervals live in :mod:`tracekit.detectors.lock_sources`.

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
    One row per symbol set, :data:`HOTSPOTS_SCHEMA` (= ``tracekit.analysis.HOTSPOTS_SCHEMA``), from the first
    source whose rows reach the set among perf, funcgraph, contention: ``symbol`` (the set's label), ``share``
    (0..1: period-weighted share of all samples of the perf event in the set; for funcgraph/contention the
    wall-time share of the threads in the set), ``samples``/``total_samples`` (samples; calls or waits),
    ``by_thread`` (pid, tid, comm, share of the thread's own samples or wall time, samples in the set),
    ``top_paths`` (path, share, samples), ``bursts`` (start_s, length_s, peak), ``period_s``.
``thread_share``
    Per thread: ``source`` (``perf``, ``funcgraph``, ``contention``), ``pid``, ``tid``, ``comm``, ``lock`` (period,
    or ns in the set),
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
``function_calls``
    Function tracer only (``ftrace:function``, no durations): ``pid``, ``comm``, ``path`` (``parent → function``),
    ``calls``, ``first_ts``, ``last_ts``.
``bursts``
    ``source`` + :data:`~tracekit.detectors.periodicity.BURSTS_SCHEMA`.
``periodicity``
    One row per source: ``source``, ``period_s``, ``confidence``, ``method``, ``bursts``, ``mean_burst_s``,
    ``text`` (``bursts every ~4.0 s lasting ~1.9 s``), ``bucket_s`` (the bucket used: ``bucket_s``, widened when a
    source would need more than :data:`MAX_BUCKETS`).

A ``warning`` Finding is raised for each thread whose share exceeds ``thread_threshold`` (default 0.2) in more than
one consecutive bucket (at least ``min_bucket_samples`` samples in each for perf). Vectorised: list operations
and group-bys over all samples / events, no per-sample Python loop.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import polars as pl

from ..model import Trace
from . import Finding, Inputs, RuleResult, register
from .lock_sources import (
    ARROW,
    SUFFIX,
    WAITS_SCHEMA,
    contention_waits,
    funcgraph_intervals,
    function_calls,
    lock_kind,
    split_buckets,
    symbol_names,
    symbol_pattern,
    union_intervals,
    wait_stats,
    with_paths,
)
from .periodicity import BURSTS_SCHEMA, estimate_period, find_bursts

__all__ = ["MutexHotspots", "HOTSPOTS_SCHEMA", "symbol_pattern", "contention_waits", "lock_kind", "SUFFIX",
           "WAITS_SCHEMA"]

HOTSPOTS_SCHEMA = {
    "symbol": pl.String, "share": pl.Float64, "samples": pl.Int64, "total_samples": pl.Int64,
    "by_thread": pl.List(pl.Struct({"pid": pl.Int32, "tid": pl.Int32, "comm": pl.String, "share": pl.Float64,
                                    "samples": pl.Int64})),
    "top_paths": pl.List(pl.Struct({"path": pl.String, "share": pl.Float64, "samples": pl.Int64})),
    "bursts": pl.List(pl.Struct({"start_s": pl.Float64, "length_s": pl.Float64, "peak": pl.Float64})),
    "period_s": pl.Float64,
}
"""The ``hotspots`` frame: one row per symbol set (the findings.json ``hotspots`` entry)."""


def _perf_samples(inputs: Inputs, kallsyms) -> tuple[Trace, str, pl.DataFrame] | None:
    """The perf event with the most callchain samples among the host (else guest) traces."""
    best = None
    for side in (inputs.host, inputs.guest):
        for tr in side:
            if not tr.format.startswith("perf"):
                continue
            for name in tr.event_names:
                if "callchain" not in tr.scan(name).collect_schema():
                    continue
                n = _rows(tr, name)
                if n and (best is None or n > best[2]):
                    best = (tr, name, n)
        if best is not None:
            break
    if best is None:
        return None
    tr, name, _n = best
    df = tr.events(name)  # the winner only, whole (every column is used)
    if kallsyms is not None and "callchain_ip" in df.columns:
        df = _name_hex_frames(df, kallsyms)
    return tr, name, df


def _rows(tr: Trace, name: str) -> int:
    """Rows of event ``name`` without reading them (a converted dataset answers from the Parquet metadata)."""
    return int(tr.scan(name).select(pl.len()).collect().item())


def _ts_range(tr: Trace, names: tuple[str, ...]) -> tuple[int, int]:
    """First and last ``ts`` over events ``names``, reading only their ``ts`` column."""
    r = pl.concat([tr.scan(n).select(pl.col("ts").min().alias("lo"), pl.col("ts").max().alias("hi")).collect()
                   for n in names])
    return int(r["lo"].min()), int(r["hi"].max())


def _name_hex_frames(df: pl.DataFrame, kallsyms) -> pl.DataFrame:
    """Name frames perf printed as ``[unknown]`` or hex through ``kallsyms`` (a host trace.dat's table)."""
    unnamed = pl.element().str.contains(r"^(?:\[unknown\]|0x[0-9a-f]+|[0-9a-f]{8,})$")
    if not df["callchain"].list.eval(unnamed).list.any().any():
        return df
    flat = df.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_r"), "callchain", "callchain_ip").explode(
        ["callchain", "callchain_ip"])
    names = symbol_names(kallsyms, flat["callchain_ip"])
    fixed = pl.when(pl.col("callchain").str.contains(r"^(?:\[unknown\]|0x[0-9a-f]+|[0-9a-f]{8,})$")
                    & (pl.col("callchain_ip") >= 0xFFFF_8000_0000_0000) & pl.col("_n").is_not_null()
                    ).then(pl.col("_n")).otherwise(pl.col("callchain"))
    chains = (flat.with_columns(names.alias("_n")).with_columns(fixed.alias("callchain"))
              .group_by("_r", maintain_order=True).agg(pl.col("callchain").alias("_fixed")))
    # empty (or null) chains explode to one null row or to none, depending on the Polars version: keep them as they are
    out = df.with_row_index("_r").join(chains, on="_r", how="left")
    keep = (pl.col("callchain").list.len().fill_null(0) == 0) | pl.col("_fixed").is_null()
    return out.with_columns(pl.when(keep).then(pl.col("callchain")).otherwise(pl.col("_fixed")).alias("callchain")
                            ).drop("_r", "_fixed")


MAX_BUCKETS = 200_000
"""More buckets than this over one source's time span widens the bucket (and says so in the notes)."""


def _bucket(span_ns: int, bucket_ns: int, source: str, res: RuleResult) -> int:
    if span_ns // bucket_ns <= MAX_BUCKETS:
        return bucket_ns
    wide = -(-span_ns // MAX_BUCKETS)
    res.notes.append(f"{source}: {span_ns / 1e9:g} s in {bucket_ns / 1e9:g} s buckets is more than {MAX_BUCKETS} "
                     f"buckets; using {wide / 1e9:g} s")
    return wide


@register
class MutexHotspots:
    """Share of time in ``perf_event_ctx_lock*`` (or another symbol set) per thread and over time, the call paths
    into it, contention waits, and the period of its bursts."""

    name: ClassVar[str] = "mutex-hotspots"
    description: ClassVar[str] = ("Time threads spend in perf_event_ctx_lock* (perf callchains, lock contention "
                                  "events): per thread, per call path, per lock, and the period of its bursts")
    requires: ClassVar[tuple[str, ...]] = ()
    requires_any: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("lock:contention_begin", "funcgraph_exit", "cpu-clock", "task-clock", "cycles", "cpu-cycles"),)
    record_hint: ClassVar[str] = (
        "perf record -a -g -e cpu-clock -o perf.data -- sleep 10   # and/or: trace-cmd record -e "
        "lock:contention_begin -e lock:contention_end -O stacktrace -- sleep 10   # or: trace-cmd record -p "
        "function_graph -l 'perf_event_ctx_lock*' -- sleep 10")
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
        graphs = [t for t in inputs.host if t.has("funcgraph_exit") and _rows(t, "funcgraph_exit")]
        both = [t for t in inputs.host if t.has("contention_begin") and t.has("contention_end")]
        dat = [t for t in both if _rows(t, "contention_begin") and _rows(t, "contention_end")]
        ksyms = next((t.kallsyms for t in inputs.host if t.kallsyms is not None and len(t.kallsyms)), None)
        perf = _perf_samples(inputs, ksyms)
        fn_only = any(t.has("ftrace:function") for t in inputs.host)
        if perf is None and not dat and not graphs and not fn_only:
            res.missing = ["perf samples with callchains (perf record -g) | lock:contention_begin+contention_end | "
                           "ftrace:funcgraph_exit"]
            if both:
                res.notes.append("lock:contention_begin/end are in the trace but hold no event")
            return res
        res.ran = True
        parts: dict[str, list[pl.DataFrame]] = {}
        if perf is not None:
            self._perf(perf, cfg, set_re, int_re, bucket_ns, parts, res)
        if graphs and not self._funcgraph(graphs[0], cfg, set_re, bucket_ns, parts, res):
            res.notes.append(f"funcgraph: no call of {cfg['label']} in {graphs[0].source}")
        calls = [t for t in inputs.host if t.has("ftrace:function") and _rows(t, "ftrace:function")]
        if calls:
            fc = function_calls(calls[0], set_re)
            parts.setdefault("function_calls", []).append(fc)
            res.notes.append(f"function: {int(fc['calls'].sum()) if fc.height else 0} calls of {cfg['label']} "
                             f"in {calls[0].source} (counts only: the function tracer has no durations)")
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
        df = with_paths(df, "callchain", set_re, int_re, int(cfg["path_callers"]))
        in_set, path, where = pl.col("_hit"), pl.col("_set_path"), pl.col("_where")
        # without a period (or with none recorded) every sample weighs one
        weight = pl.col("period").cast(pl.Int64).fill_null(1) if "period" in df.columns else pl.lit(1, pl.Int64)
        t0 = int(df["ts"].min())
        bucket_ns = _bucket(int(df["ts"].max()) - t0, bucket_ns, "perf", res)
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
                                           entry=pl.col("path").first().str.split(ARROW).list.first())
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
        parts.setdefault("waits_by_lock", []).append(wait_stats(waits, ["lock_addr", "kind"]))
        parts.setdefault("waits_by_path", []).append(wait_stats(waits.with_columns(pl.col("path").fill_null("?")),
                                                            ["path"]))
        lo, hi = _ts_range(tr, ("contention_begin", "contention_end"))
        self._intervals("contention", waits, waits.filter(pl.col("in_set")), lo, hi, bucket_ns, cfg, parts, res)

    # -- function_graph ----------------------------------------------------------------------------------------------
    def _funcgraph(self, tr: Trace, cfg, set_re, bucket_ns, parts, res) -> bool:
        calls = funcgraph_intervals(tr, set_re)
        if calls.is_empty():
            return False
        lo, hi = _ts_range(tr, ("funcgraph_exit",))
        lo = min(lo, int(calls["ts"].min()))
        res.notes.append(f"funcgraph: {calls.height} calls of {cfg['label']} in {tr.source}")
        everyone = tr.scan("funcgraph_exit").select(pl.col("common_pid").cast(pl.Int32).alias("pid")).collect()
        self._intervals("funcgraph", everyone, calls, lo, hi, bucket_ns, cfg, parts, res)
        return True

    def _intervals(self, source: str, every: pl.DataFrame, mine: pl.DataFrame, lo: int, hi: int, bucket_ns: int,
                   cfg, parts, res) -> None:
        """Wall-time shares from time intervals in the set (``mine``: pid, comm, ts, end_ts, wait_ns, path) among
        all the source's rows (``every``: pid, for the per-thread totals)."""
        span = max(hi - lo, 1)
        bucket_ns = _bucket(span, bucket_ns, source, res)
        iv = union_intervals(mine) if mine.height else pl.DataFrame(schema={"pid": pl.Int32, "comm": pl.String,
                                                                            "ts": pl.Int64, "end_ts": pl.Int64})
        names = mine.group_by("pid").agg(pl.col("comm").drop_nulls().last())
        th = (iv.group_by("pid").agg(lock=(pl.col("end_ts") - pl.col("ts")).sum())
              .join(mine.group_by("pid").agg(samples=pl.len().cast(pl.Int64)), on="pid")
              .join(every.group_by("pid").agg(total_samples=pl.len().cast(pl.Int64)), on="pid", how="left")
              .join(names, on="pid", how="left")
              .with_columns(tid=pl.col("pid"), total=pl.lit(span, pl.Int64), source=pl.lit(source))
              .with_columns(share=pl.col("lock") / pl.col("total")))
        nthreads = max(th.height, 1)
        sp = split_buckets(iv, lo, bucket_ns) if iv.height else iv.with_columns(bucket=pl.lit(0), ns=pl.lit(0))
        tb = (sp.group_by("pid", "bucket").agg(lock=pl.col("ns").sum(), samples=pl.len().cast(pl.Int64))
              .join(names, on="pid", how="left")
              .with_columns(tid=pl.col("pid"), total=pl.lit(bucket_ns, pl.Int64), bucket_samples=pl.lit(None))
              .with_columns(share=pl.col("lock") / pl.col("total"),
                            share_of_lock_threads=pl.col("lock") / (bucket_ns * nthreads)))
        tl = sp.group_by("bucket").agg(lock=pl.col("ns").sum())
        tl = (self._full_buckets(tl, "bucket", last=(hi - lo) // bucket_ns)
              .with_columns(total=pl.lit(bucket_ns * nthreads, pl.Int64))
              .with_columns(share=pl.col("lock") / pl.col("total"), share_all=pl.lit(None, pl.Float64)))
        tot = int(every["wait_ns"].sum()) if "wait_ns" in every.columns and every.height else 0
        mine_ns = int(mine["wait_ns"].sum()) if mine.height else 0
        paths = (mine.group_by("path").agg(samples=pl.len().cast(pl.Int64), lock=pl.col("wait_ns").sum(),
                                           entry=pl.col("path").first().str.split(ARROW).list.first())
                 .with_columns(share=pl.col("lock") / max(tot or mine_ns, 1),
                               share_of_lock=pl.col("lock") / max(mine_ns, 1))
                 .sort(["lock", "path"], descending=[True, False]))
        self._add(parts, res, source, th, tb, tl, paths, bucket_ns, cfg)
        lock = int(iv.select((pl.col("end_ts") - pl.col("ts")).sum()).item() or 0) if iv.height else 0
        res.frames[f"_{source}_totals"] = pl.DataFrame({"lock": [lock], "total": [span * nthreads],
                                                       "samples": [mine.height], "total_samples": [every.height]})

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
            {"source": [source], "bucket_s": [bucket_s],
             "period_s": [None if per.period_s is None else float(per.period_s)],
             "confidence": [per.confidence], "method": [per.method], "bursts": [per.bursts],
             "mean_burst_s": [per.mean_burst_s], "text": [per.text]},
            schema={"source": pl.String, "bucket_s": pl.Float64, "period_s": pl.Float64, "confidence": pl.Float64, "method": pl.String,
                    "bursts": pl.Int64, "mean_burst_s": pl.Float64, "text": pl.String}))

    @staticmethod
    def _hotspots(frames: dict[str, pl.DataFrame], cfg) -> pl.DataFrame:
        order = ("perf", "funcgraph", "contention")
        totals = {src: frames.pop(f"_{src}_totals") for src in order if f"_{src}_totals" in frames}
        if not totals:  # function tracer only: calls without time
            fc = frames.get("function_calls", pl.DataFrame(schema={"path": pl.String, "calls": pl.Int64}))
            paths = (fc.group_by("path").agg(samples=pl.col("calls").sum()).sort("samples", descending=True)
                     .with_columns(share=pl.lit(None, pl.Float64)).head(int(cfg["top_paths"])))
            n = int(fc["calls"].sum()) if fc.height else 0
            return pl.DataFrame([{"symbol": cfg["label"], "share": None, "samples": n, "total_samples": n,
                                  "by_thread": [], "top_paths": paths.select("path", "share", "samples").to_dicts(),
                                  "bursts": [], "period_s": None}], schema=HOTSPOTS_SCHEMA)
        # samples first, then function_graph, then contention: the first whose rows reach the set
        source = next((s for s in order if s in totals and totals[s]["samples"][0]), next(iter(totals)))
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
        if "bucket_share" not in frames:
            return []
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
        for (source,), grp in long.group_by(["source"], maintain_order=True):
            bucket_s = float(per.filter(pl.col("source") == source)["bucket_s"][0])
            ev = (grp.group_by("tid").agg(pl.col("comm").first(), runs=pl.len(), longest_s=pl.col("buckets").max()
                                          * bucket_s, first_s=pl.col("start_s").min(), peak=pl.col("peak").max())
                  .sort("longest_s", descending=True))
            text = per.filter(pl.col("source") == source)["text"]
            what = {"perf": "of their sampled time", "funcgraph": "of wall time inside"}.get(source,
                                                                                          "of wall time waiting")
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
