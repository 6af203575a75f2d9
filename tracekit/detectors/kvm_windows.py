"""VM-exit windows of KVM vCPU threads, and where lost events make them inconclusive.

Part of the KVM detector contract (see :mod:`tracekit.detectors.pmi`): a window runs from a ``kvm_exit`` to the next
``kvm_entry`` of the same thread (``common_pid``), across CPU migrations. A window is *inconclusive* when a lost-event
mark (a ring-buffer page with the missed-events flag, ``Trace.tables["lost_marks"]`` or ``Trace.lost_events``)
overlaps the time its thread spent on that CPU during the window; a mark without a time covers the whole trace of its
CPU, a mark without a CPU every CPU.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ..model import Trace

__all__ = ["exit_windows", "exit_windows_plan", "columns", "collect", "assign_windows", "lost_marks", "inconclusive", "presence"]

_I32 = pl.Int32


def collect(lf: pl.LazyFrame) -> pl.DataFrame:
    """Run a detector's plan with Polars' streaming engine (operators it lacks fall back to the in-memory one)."""
    return lf.collect(engine="streaming")


def columns(trace: Trace, name: str, cols: dict[str, pl.Expr], where: pl.Expr | None = None) -> pl.LazyFrame:
    """Event ``name`` as a LazyFrame of the columns ``cols`` (output name → expression), rows kept by ``where``.

    One plan for every Trace: on a converted dataset (``Trace.scan``) only the columns the expressions use are read
    and ``where`` is pushed into the Parquet scan; on a trace in memory it runs on its frame, made lazy."""
    lf = trace.scan(name)
    if where is not None:
        lf = lf.filter(where)
    return lf.select([e.alias(n) for n, e in cols.items()])


def _reason_names(trace: Trace, exits: pl.LazyFrame) -> pl.LazyFrame | None:
    """(exit_reason, isa) → exit_reason_name from the kvm_exit print fmt, evaluated once per distinct pair (not per
    row), or None when the print fmt names nothing."""
    fmt = trace.format_of("kvm_exit")
    if fmt is None:
        return None
    try:
        from ..printfmt import symbolic_columns
    except ImportError:  # tracekit.printfmt not available: keep the number
        return None
    keys = [c for c in ("exit_reason", "isa") if c in exits.collect_schema()]
    pairs = collect(exits.select(keys).unique())
    named = symbolic_columns(trace, fmt, pairs)
    if "exit_reason_name" not in named.columns:
        return None
    return named.select(*keys, pl.col("exit_reason_name").cast(pl.String)).lazy()


def exit_windows_plan(trace: Trace) -> pl.LazyFrame:
    """The plan of :func:`exit_windows` (collect it, or build on it: ``exit-stats`` aggregates it)."""
    ex = trace.scan("kvm_exit")
    number = pl.col("exit_reason").cast(pl.String)
    has_isa = "isa" in ex.collect_schema()
    names = _reason_names(trace, ex)
    keep = ["exit_reason", "isa"] if has_isa else ["exit_reason"]
    exits = ex.select(pl.col("common_pid").cast(_I32, strict=False).alias("pid"),
                      pl.col("vcpu_id").cast(_I32, strict=False).alias("vcpu"), pl.col("cpu").cast(_I32, strict=False),
                      pl.col("ts").cast(pl.Int64, strict=False).alias("exit_ts"), *keep).with_row_index("_seq")
    if names is not None:
        # a reason the print fmt does not name shows as its number, as libtraceevent prints it
        exits = exits.join(names, on=keep, how="left", nulls_equal=True, maintain_order="left")
        reason = pl.coalesce(pl.col("exit_reason_name"), number)
    else:
        reason = number
    isa = pl.col("isa").cast(pl.Int32, strict=False) if has_isa else pl.lit(None, pl.Int32)
    exits = exits.select("_seq", "pid", "vcpu", "cpu", "exit_ts", reason.alias("exit_reason"), isa.alias("isa"))
    exits = exits.sort(["exit_ts", "_seq"])
    ent = columns(trace, "kvm_entry", {"pid": pl.col("common_pid").cast(_I32, strict=False),
                                       "entry_ts": pl.col("ts").cast(pl.Int64, strict=False),
                                       "entry_cpu": pl.col("cpu").cast(_I32, strict=False)}).sort("entry_ts")
    win = exits.join_asof(ent, left_on="exit_ts", right_on="entry_ts", by="pid", strategy="forward",
                          allow_exact_matches=False, coalesce=False, check_sortedness=False)
    return (win.sort(["exit_ts", "pid", "_seq"]).drop("_seq", "pid_right", strict=False)
            .with_row_index("window")
            .select("window", "pid", "vcpu", "cpu", "exit_ts", "entry_ts", "exit_reason", "isa", "entry_cpu"))


def exit_windows(trace: Trace) -> pl.DataFrame:
    """Every VM-exit window of ``trace``: window (row id), pid, vcpu, cpu, exit_ts, entry_ts, exit_reason, isa,
    entry_cpu — ordered by exit_ts then pid. Reads only those columns of ``kvm_exit``/``kvm_entry``.

    Raises:
        MissingEventError: the trace has no ``kvm_exit`` or no ``kvm_entry``.
    """
    return collect(exit_windows_plan(trace))


def assign_windows(df: pl.DataFrame, windows: pl.DataFrame) -> pl.DataFrame:
    """Add ``window`` (UInt32, null outside any window) and ``gap`` (the last window of the thread that started at or
    before the event, -1 before the first) to a frame with ``ts`` and ``pid``: the event is in the window of its
    thread's last exit at or before it when the thread's next entry is not before it."""
    w = windows.select("pid", "exit_ts", "entry_ts", pl.col("window").alias("_w")).sort("exit_ts")
    out = (df.sort("ts").join_asof(w, left_on="ts", right_on="exit_ts", by="pid", strategy="backward", check_sortedness=False))
    inside = pl.col("_w").is_not_null() & (pl.col("entry_ts").is_null() | (pl.col("ts") <= pl.col("entry_ts")))
    return (out.with_columns(pl.when(inside).then(pl.col("_w")).otherwise(None).cast(pl.UInt32, strict=False).alias("window"),
                             pl.col("_w").cast(pl.Int64, strict=False).fill_null(-1).alias("gap"))
            .drop("_w", "exit_ts", "entry_ts"))


def lost_marks(trace: Trace, presence: pl.DataFrame) -> pl.DataFrame:
    """Where events were lost: ``cpu`` (null: any CPU), ``lo``, ``hi`` (ns; null: unbounded).

    Read from ``trace.tables["lost_marks"]`` when the reader gives one row per page that carried the missed-events
    flag (``cpu``, ``ts`` = the page's first event, optional ``prev_ts`` = the last event before it on that CPU,
    ``lost``/``lost_unknown``), else from ``trace.lost_events`` (the same columns when present, or per-CPU counts).
    With a time, the loss lies between ``prev_ts`` (else the last earlier event in ``presence``) and ``ts``; without
    one, the whole trace on that CPU is in doubt.
    """
    schema = {"cpu": pl.Int32, "lo": pl.Int64, "hi": pl.Int64}
    le = trace.tables.get("lost_marks")
    if le is None or "ts" not in le.columns:
        le = trace.lost_events
    if le is None or le.is_empty():
        return pl.DataFrame(schema=schema)
    cnt = [pl.col(c).fill_null(0) for c in ("lost", "lost_unknown") if c in le.columns]
    le = le.filter(pl.sum_horizontal(cnt) > 0) if cnt else le
    if le.is_empty():
        return pl.DataFrame(schema=schema)
    cpu = pl.col("cpu").cast(_I32, strict=False) if "cpu" in le.columns else pl.lit(None, _I32)
    if "ts" not in le.columns:
        return le.select(cpu.alias("cpu"), pl.lit(None, pl.Int64).alias("lo"), pl.lit(None, pl.Int64).alias("hi"))
    marks = le.select(cpu.alias("cpu"), pl.col("ts").cast(pl.Int64, strict=False).alias("hi"),
                      (pl.col("prev_ts").cast(pl.Int64, strict=False) if "prev_ts" in le.columns
                       else pl.lit(None, pl.Int64)).alias("lo"))
    if "prev_ts" not in le.columns:
        seen = presence.select(pl.col("cpu"), pl.col("ts").alias("_prev")).unique().sort("_prev")
        known = marks.filter(pl.col("cpu").is_not_null() & pl.col("hi").is_not_null()).with_row_index("_i")
        prev = known.sort("hi").join_asof(seen, left_on="hi", right_on="_prev", by="cpu", strategy="backward",
                                          allow_exact_matches=False, check_sortedness=False)
        marks = pl.concat([prev.select("cpu", "_prev", "hi").rename({"_prev": "lo"}),
                           marks.filter(pl.col("cpu").is_null() | pl.col("hi").is_null()).select("cpu", "lo", "hi")])
    return marks.select(list(schema)).cast(schema)


def inconclusive(windows: pl.DataFrame, presence: pl.DataFrame, marks: pl.DataFrame) -> pl.Series:
    """Per window: True when a lost-event mark overlaps the time its thread spent on that CPU during the window
    (from its first to its last sighting there), or, for a mark without a CPU, the window itself."""
    n = windows.height
    if marks.is_empty() or n == 0:
        return pl.Series("inconclusive", np.zeros(n, dtype=bool))
    big = np.iinfo(np.int64).max
    w = windows.select("window", "exit_ts", pl.col("entry_ts").fill_null(big).alias("end"))
    hit = pl.Series("window", [], dtype=pl.UInt32)
    anycpu = marks.filter(pl.col("cpu").is_null())
    if not anycpu.is_empty():
        lo = anycpu["lo"].fill_null(-big).to_numpy()
        hi = anycpu["hi"].fill_null(big).to_numpy()
        ws, we = w["exit_ts"].to_numpy(), w["end"].to_numpy()
        # marks without a CPU are few (one per unknown loss): test each against every window at once
        m = np.zeros(n, dtype=bool)
        for a, b in zip(lo, hi, strict=True):
            m |= (ws <= b) & (we >= a)
        hit = pl.concat([hit, w.filter(pl.Series(m))["window"]])
    percpu = marks.filter(pl.col("cpu").is_not_null()).with_columns(
        pl.col("lo").fill_null(-big), pl.col("hi").fill_null(big)).sort("hi")
    if not percpu.is_empty():
        # where the thread was during the window: per CPU, from its first to its last sighting there (to the end of
        # the trace on the CPU where an open window's thread was last seen)
        inside = presence.filter(pl.col("window").is_not_null())
        open_ids = w.filter(pl.col("end") == big)["window"].cast(pl.UInt32)
        last_cpu = (inside.filter(pl.col("window").is_in(open_ids.implode())).sort("ts")
                    .group_by("window").agg(pl.col("cpu").last().alias("_last_cpu")))
        pairs = (inside.filter(pl.col("cpu").is_in(percpu["cpu"].unique().implode()))
                 .group_by("window", "cpu").agg(pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last"))
                 .join(last_cpu, on="window", how="left")
                 .with_columns(pl.when(pl.col("cpu") == pl.col("_last_cpu")).then(big).otherwise(pl.col("last"))
                               .alias("last"))
                 .drop("_last_cpu").sort("first"))
        # the first mark on that CPU ending at or after the stay began is the only one that can overlap it without
        # an earlier one overlapping too (marks of one CPU are disjoint and sorted)
        j = pairs.join_asof(percpu, left_on="first", right_on="hi", by="cpu", strategy="forward",
                            check_sortedness=False)
        hit = pl.concat([hit, j.filter(pl.col("lo").is_not_null() & (pl.col("lo") <= pl.col("last")))["window"]
                         .cast(pl.UInt32, strict=False)])
    flag = np.zeros(n, dtype=bool)
    flag[hit.unique().to_numpy().astype(np.int64)] = True
    return pl.Series("inconclusive", flag)


def presence(trace: Trace, windows: pl.DataFrame, extra: list[pl.DataFrame]) -> pl.DataFrame:
    """(ts, pid, cpu, window) of every sighting of a vCPU thread on a CPU: its exits and entries, its route events,
    and when recorded, sched_switch in/out and sched_migrate_task (both CPUs)."""
    parts = [windows.select(pl.col("exit_ts").alias("ts"), "pid", "cpu"),
             windows.filter(pl.col("entry_ts").is_not_null())
             .select(pl.col("entry_ts").alias("ts"), "pid", pl.col("entry_cpu").alias("cpu"))]
    parts += [e.select("ts", "pid", "cpu") for e in extra]
    ts = pl.col("ts").cast(pl.Int64, strict=False)
    if trace.has("sched_switch"):
        sw = collect(columns(trace, "sched_switch", {"ts": ts, "prev_pid": pl.col("prev_pid").cast(_I32, strict=False),
                                                     "next_pid": pl.col("next_pid").cast(_I32, strict=False),
                                                     "cpu": pl.col("cpu").cast(_I32, strict=False)}))
        parts += [sw.select("ts", pl.col(col).alias("pid"), "cpu") for col in ("prev_pid", "next_pid")]
    if trace.has("sched_migrate_task"):
        mg = collect(columns(trace, "sched_migrate_task", {"ts": ts, "pid": pl.col("pid").cast(_I32, strict=False),
                                                           "orig_cpu": pl.col("orig_cpu").cast(_I32, strict=False),
                                                           "dest_cpu": pl.col("dest_cpu").cast(_I32, strict=False)}))
        parts += [mg.select("ts", "pid", pl.col(col).alias("cpu")) for col in ("orig_cpu", "dest_cpu")]
    pids = windows["pid"].unique()
    pres = pl.concat([p.cast({"ts": pl.Int64, "pid": _I32, "cpu": _I32}) for p in parts]).filter(
        pl.col("pid").is_in(pids.implode()))
    return assign_windows(pres, windows)
