"""Charts of the ``mutex-hotspots`` rule: share in the lock per thread over time (heat map), share over time with
bursts marked (stacked area), top call paths into the lock (horizontal bar), and contention wait times (histogram,
log scale). matplotlib through the object API (``matplotlib.figure.Figure``, Agg canvas): no pyplot state.

Each function takes the rule's :class:`~tracekit.detectors.RuleResult` and returns a Figure, or None when the result
lacks what the chart needs (the wait histogram needs contention events); :func:`figures` returns them all by name.
Frames read: ``bucket_share``, ``timeline``, ``bursts``, ``periodicity``, ``top_paths``, ``waits`` (see
:mod:`tracekit.detectors.mutex_hotspots`). Samples are preferred over contention events when both are present.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure

__all__ = ["figures", "heatmap", "share_area", "top_paths", "wait_histogram"]

_WIDTH = 9.0
_BURST = "#c0392b"
_MAX_THREADS = 30
_MAX_AREAS = 8


def _frame(result: Any, name: str) -> pl.DataFrame | None:
    frames = getattr(result, "frames", None) or {}
    df = frames.get(name)
    return df if df is not None and not df.is_empty() else None


_ORDER = ("perf", "funcgraph", "contention")
_WHAT = {"perf": "samples", "funcgraph": "wall time inside", "contention": "wall time waiting"}


def _source(result: Any) -> str | None:
    """The source the rule's ``hotspots`` row uses: the first of perf, funcgraph, contention with time in the set."""
    tl = _frame(result, "timeline")
    if tl is None:
        return None
    present = [s for s in _ORDER if s in set(tl["source"].to_list())]
    hot = set(tl.filter(pl.col("lock") > 0)["source"].to_list())
    return next((s for s in present if s in hot), present[0] if present else None)


def _label(row_comm: str | None, tid: int) -> str:
    return f"{row_comm or '?'}-{tid}"


def _thread_order(tb: pl.DataFrame, limit: int) -> pl.DataFrame:
    return (tb.group_by("tid").agg(pl.col("comm").drop_nulls().last(), lock=pl.col("lock").sum())
            .sort(["lock", "tid"], descending=[True, False]).head(limit))


def heatmap(result: Any) -> Figure | None:
    """Threads × time buckets, colour = the thread's share in the lock (of its samples, or of wall time).

    Args:
        result: the ``mutex-hotspots`` RuleResult.
    """
    src = _source(result)
    tb = _frame(result, "bucket_share")
    tl = _frame(result, "timeline")
    if src is None or tb is None or tl is None:
        return None
    tb = tb.filter(pl.col("source") == src)
    tl = tl.filter(pl.col("source") == src)
    if tb.is_empty():
        return None
    threads = _thread_order(tb, _MAX_THREADS)
    nb = int(tl["bucket"].max()) + 1
    row = dict(zip(threads["tid"].to_list(), range(threads.height), strict=True))
    sub = tb.filter(pl.col("tid").is_in(threads["tid"].to_list()))
    grid = np.full((threads.height, nb), np.nan)
    rows = np.array([row[t] for t in sub["tid"].to_list()], dtype=np.int64)
    grid[rows, sub["bucket"].to_numpy()] = sub["share"].to_numpy()
    bucket_s = float(tl["t_s"][1] - tl["t_s"][0]) if tl.height > 1 else 1.0
    fig = Figure(figsize=(_WIDTH, 1.2 + 0.28 * threads.height), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(grid * 100, aspect="auto", interpolation="nearest", cmap="magma", vmin=0, vmax=100,
                   extent=(0, nb * bucket_s, threads.height - 0.5, -0.5))
    ax.set_yticks(range(threads.height),
                  [_label(c, t) for c, t in zip(threads["comm"].to_list(), threads["tid"].to_list(), strict=True)],
                  fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_title(f"Share of each thread's {_WHAT.get(src, src)} in the lock, per {bucket_s:g} s bucket ({src})")
    fig.colorbar(im, ax=ax, label="% in lock")
    return fig


def share_area(result: Any) -> Figure | None:
    """Stacked area of the lock share over time, one band per thread (top threads, the rest summed), bursts shaded.

    Args:
        result: the ``mutex-hotspots`` RuleResult.
    """
    src = _source(result)
    tb = _frame(result, "bucket_share")
    tl = _frame(result, "timeline")
    if src is None or tb is None or tl is None:
        return None
    tb = tb.filter(pl.col("source") == src)
    tl = tl.filter(pl.col("source") == src).sort("bucket")
    top = _thread_order(tb, _MAX_AREAS)
    grid = tl.select("bucket", "t_s")
    ys, labels = [], []
    for tid, comm in zip(top["tid"].to_list(), top["comm"].to_list(), strict=True):
        col = grid.join(tb.filter(pl.col("tid") == tid).select("bucket", "share_of_lock_threads"), on="bucket",
                        how="left")["share_of_lock_threads"].fill_null(0.0).to_numpy()
        ys.append(col * 100)
        labels.append(_label(comm, tid))
    rest = (tl["share"].fill_null(0.0).to_numpy() * 100) - (np.sum(ys, axis=0) if ys else 0.0)
    if np.any(rest > 1e-6):
        ys.append(np.clip(rest, 0, None))
        labels.append("other threads")
    fig = Figure(figsize=(_WIDTH, 3.8), layout="constrained")
    ax = fig.add_subplot()
    x = tl["t_s"].to_numpy()
    if ys:
        ax.stackplot(x, np.vstack(ys), labels=labels, step="post", alpha=0.85)
    bursts = _frame(result, "bursts")
    if bursts is not None:
        for start, length in bursts.filter(pl.col("source") == src).select("start_s", "length_s").iter_rows():
            ax.axvspan(start, start + length, color=_BURST, alpha=0.12, lw=0)
    per = _frame(result, "periodicity")
    text = ""
    if per is not None:
        p = per.filter(pl.col("source") == src)
        text = p["text"][0] if p.height else ""
    ax.set_xlabel("time (s)")
    ax.set_ylabel("% of the lock threads' samples" if src == "perf" else f"% of {_WHAT.get(src, src)}")
    ax.set_ylim(0, 100)
    ax.set_title(f"Share in the lock over time ({src}); shaded: bursts — {text}")
    ax.legend(loc="upper right", fontsize=7, ncols=2)
    return fig


def top_paths(result: Any) -> Figure | None:
    """Horizontal bars of the top call paths into the lock, by share of all samples (or of all wait time).

    Args:
        result: the ``mutex-hotspots`` RuleResult.
    """
    tp = _frame(result, "top_paths")
    src = _source(result)
    if tp is None or src is None:
        return None
    tp = tp.filter(pl.col("source") == src).sort("share")
    if tp.is_empty():
        return None
    fig = Figure(figsize=(_WIDTH, 1.4 + 0.45 * tp.height), layout="constrained")
    ax = fig.add_subplot()
    shares = tp["share"].to_numpy() * 100
    y = np.arange(tp.height)
    ax.barh(y, shares, color="#4c72b0")
    ax.set_yticks(y, [p if len(p) <= 90 else "…" + p[-89:] for p in tp["path"].to_list()], fontsize=7)
    for yi, s, n in zip(y, shares, tp["samples"].to_list(), strict=True):
        ax.text(s, yi, f" {s:.1f}% ({n})", va="center", fontsize=7)
    ax.set_xlim(0, max(shares.max() * 1.25, 1.0))
    ax.set_xlabel({"perf": "% of all samples", "funcgraph": "% of the time in the set"}.get(
        src, "% of all contention wait time"))
    ax.set_title(f"Top call paths into the lock ({src})")
    return fig


def wait_histogram(result: Any) -> Figure | None:
    """Histogram of contention wait times (log-spaced bins, log counts), spinning and sleeping waits stacked.

    Args:
        result: the ``mutex-hotspots`` RuleResult (needs its ``waits`` frame: contention events).
    """
    w = _frame(result, "waits")
    if w is None:
        return None
    w = w.filter(pl.col("wait_ns") > 0)
    if w.is_empty():
        return None
    mine = w.filter(pl.col("in_set"))
    pick = mine if not mine.is_empty() else w
    lo, hi = float(pick["wait_ns"].min()), float(pick["wait_ns"].max())
    bins = np.logspace(np.log10(max(lo, 1.0)), np.log10(max(hi, lo * 1.01, 2.0)), 50)
    spin = pick.filter(~pl.col("slept"))["wait_ns"].to_numpy()
    sleep = pick.filter(pl.col("slept"))["wait_ns"].to_numpy()
    fig = Figure(figsize=(_WIDTH, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.hist([spin, sleep], bins=bins, stacked=True, label=[f"spin ({len(spin)})", f"sleep ({len(sleep)})"],
            color=["#4c72b0", _BURST])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("wait per acquisition (ns)")
    ax.set_ylabel("acquisitions")
    scope = "in the lock's call paths" if pick is mine else "all locks"
    ax.set_title(f"Contention wait times ({scope}: {pick.height} waits, p99 "
                 f"{pick['wait_ns'].quantile(0.99, 'nearest') / 1e3:.1f} µs, max {hi / 1e3:.1f} µs)")
    ax.legend(fontsize=8)
    return fig


def figures(result: Any) -> dict[str, Figure]:
    """Every hotspot chart the result allows, by name (``hotspot_heatmap``, ``hotspot_share``, ``hotspot_paths``,
    ``hotspot_waits``).

    Args:
        result: the ``mutex-hotspots`` RuleResult (``ran`` True).

    Returns:
        name → Figure, charts without data left out.
    """
    out = {"hotspot_heatmap": heatmap(result), "hotspot_share": share_area(result),
           "hotspot_paths": top_paths(result), "hotspot_waits": wait_histogram(result)}
    return {k: v for k, v in out.items() if v is not None}
