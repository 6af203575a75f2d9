"""Charts of the KVM vPMU rules: PMIs per VM-exit, flagged exits over time, exit reasons and handling times, PMU MSR
activity. matplotlib through the object API (``matplotlib.figure.Figure``, Agg canvas): no pyplot state.

Each function takes the frames of one rule (``tracekit.detectors.RuleResult.frames``) and returns a Figure, or None
when there is nothing to draw; :func:`figures` makes them all from a ``{rule: RuleResult}`` mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib
import numpy as np
import polars as pl
from matplotlib.figure import Figure

__all__ = ["figures", "pmi_histogram", "flagged_timeline", "exit_reasons", "handling_times", "msr_activity"]

_WIDTH = 9.0
_FLAG = "#c0392b"
_INCONCLUSIVE = "#e69f00"
_OK = "#4c72b0"
# boxplot's ``vert`` became ``orientation`` in matplotlib 3.10
_HORIZONTAL = ({"orientation": "horizontal"} if tuple(int(x) for x in matplotlib.__version__.split(".")[:2]) >= (3, 10)
               else {"vert": False})


def _fig(height: float = 3.6) -> Figure:
    fig = Figure(figsize=(_WIDTH, height), layout="constrained")
    return fig


def _has(df: pl.DataFrame | None, *cols: str) -> bool:
    return df is not None and not df.is_empty() and all(c in df.columns for c in cols)


def pmi_histogram(windows: pl.DataFrame) -> Figure | None:
    """Bar chart of how many VM-exit windows saw 0, 1, 2 … PMIs (log scale; > 1 in red).

    Args:
        windows: every window (contract schema: ``pmi_count``, ``inconclusive``).
    """
    if not _has(windows, "pmi_count"):
        return None
    conclusive = windows.filter(~pl.col("inconclusive")) if "inconclusive" in windows.columns else windows
    counts = conclusive.group_by("pmi_count").len().sort("pmi_count")
    fig = _fig()
    ax = fig.add_subplot()
    x = counts["pmi_count"].to_numpy()
    n = counts["len"].to_numpy()
    ax.bar(x, n, color=[_FLAG if v > 1 else _OK for v in x], width=0.7, log=True)
    for xi, ni in zip(x, n, strict=True):
        ax.annotate(f"{ni:,}", (xi, ni), ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0.7, max(10, n.max()) * 2.5)
    ax.set_xticks(x)
    ax.set_xlabel("PMIs synthesized during one VM-exit (exit → next entry)")
    ax.set_ylabel("windows (log)")
    n_inc = windows.height - conclusive.height
    ax.set_title("PMIs per VM-exit" + (f" ({n_inc:,} inconclusive windows left out)" if n_inc else ""))
    return fig


def flagged_timeline(flagged: pl.DataFrame, inconclusive: pl.DataFrame | None = None,
                     windows: pl.DataFrame | None = None) -> Figure | None:
    """Flagged exits (> 1 PMI) on a time line, one row per vCPU; inconclusive windows as hollow markers.

    Args:
        flagged: flagged windows (``vcpu``, ``exit_ts``, ``pmi_count``).
        inconclusive: windows that overlap lost events.
        windows: all windows, to set the time origin and the vCPU rows.
    """
    frames = [f for f in (windows, flagged, inconclusive) if _has(f, "vcpu", "exit_ts")]
    if not frames:
        return None
    t0 = min(int(f["exit_ts"].min()) for f in frames)
    t1 = max(int(f["exit_ts"].max()) for f in frames)
    vcpus = sorted({int(v) for f in frames for v in f["vcpu"].drop_nulls().unique().to_list()})
    row = {v: i for i, v in enumerate(vcpus)}
    fig = _fig(max(2.4, 0.45 * len(vcpus) + 1.6))
    ax = fig.add_subplot()
    if _has(windows, "vcpu", "exit_ts"):
        ax.hlines(range(len(vcpus)), 0, (t1 - t0) / 1e9, colors="#dddddd", linewidth=6, zorder=0)
    if _has(inconclusive, "vcpu", "exit_ts"):
        # thousands of adjacent windows: draw them as spans, merging windows closer than 0.5% of the time axis
        gap = max(int((t1 - t0) * 0.005), 1)
        spans = (inconclusive.drop_nulls("vcpu")
                 .with_columns(pl.col("entry_ts").fill_null(pl.col("exit_ts")).alias("_end"))
                 .sort("vcpu", "exit_ts")
                 .with_columns((pl.col("exit_ts") - pl.col("_end").shift(1).over("vcpu") > gap)
                               .fill_null(True).cum_sum().over("vcpu").alias("_span"))
                 .group_by("vcpu", "_span").agg(pl.col("exit_ts").min(), pl.col("_end").max()))
        for i, (v, part) in enumerate(spans.group_by("vcpu")):
            xr = [((a - t0) / 1e9, max((b - a) / 1e9, (t1 - t0) / 1e9 * 0.002))
                  for a, b in zip(part["exit_ts"], part["_end"], strict=True)]
            ax.broken_barh(xr, (row[int(v[0])] - 0.22, 0.44), facecolors=_INCONCLUSIVE, alpha=0.45, zorder=2,
                           label="inconclusive windows (lost events)" if i == 0 else None)
    if _has(flagged, "vcpu", "exit_ts"):
        fl = flagged.drop_nulls("vcpu")
        sizes = 25 + 15 * np.clip(fl["pmi_count"].to_numpy() - 2, 0, 6)
        ax.scatter((fl["exit_ts"].to_numpy() - t0) / 1e9, [row[int(v)] for v in fl["vcpu"]], s=sizes, c=_FLAG,
                   marker="v", label="> 1 PMI in one exit (bigger: more PMIs)", zorder=3,
                   alpha=1.0 if fl.height < 200 else 0.5, linewidths=0)
    ax.set_yticks(range(len(vcpus)), [f"vCPU {v}" for v in vcpus])
    ax.set_ylim(-0.7, len(vcpus) - 0.3)
    ax.set_xlim(-0.01 * max((t1 - t0) / 1e9, 1e-6), (t1 - t0) / 1e9 * 1.01 + 1e-9)
    ax.set_xlabel("time since the first VM-exit (s)")
    ax.set_title(f"Flagged VM-exits per vCPU ({0 if flagged is None else flagged.height:,})")
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside lower center", fontsize=8, ncols=2)
    return fig


def exit_reasons(exit_stats: pl.DataFrame | None = None, windows: pl.DataFrame | None = None,
                 top: int = 15) -> Figure | None:
    """Horizontal bars: VM-exits per reason (all vCPUs), most frequent first.

    Args:
        exit_stats: the ``exit-stats`` frame (``exit_reason``, ``count``); else counted from ``windows``.
        windows: all windows (``exit_reason``).
        top: at most this many reasons; the rest are summed as "other".
    """
    if _has(exit_stats, "exit_reason", "count"):
        per = exit_stats.group_by("exit_reason").agg(pl.col("count").sum().alias("n"))
    elif _has(windows, "exit_reason"):
        per = windows.group_by("exit_reason").agg(pl.len().cast(pl.Int64).alias("n"))
    else:
        return None
    per = per.with_columns(pl.col("exit_reason").fill_null("?")).sort(["n", "exit_reason"], descending=[True, False])
    if per.height > top:
        rest = per.slice(top)["n"].sum()
        per = pl.concat([per.head(top), pl.DataFrame({"exit_reason": ["other"], "n": [rest]}, schema=per.schema)])
    fig = _fig(max(2.4, 0.3 * per.height + 1.2))
    ax = fig.add_subplot()
    y = np.arange(per.height)
    ax.barh(y, per["n"].to_numpy(), color=_OK)
    ax.set_yticks(y, per["exit_reason"].to_list())
    ax.invert_yaxis()
    ax.set_xlabel("VM-exits")
    ax.set_title("Exit reasons")
    return fig


def handling_times(windows: pl.DataFrame | None = None, exit_stats: pl.DataFrame | None = None,
                   top: int = 10) -> Figure | None:
    """Distribution of exit handling time (exit → next entry) per reason, log scale; box plots from the windows,
    else p50/p99/max markers from ``exit_stats``.

    Args:
        windows: all windows (``exit_reason``, ``exit_ts``, ``entry_ts``).
        exit_stats: the ``exit-stats`` frame (``p50_ns``, ``p99_ns``, ``max_ns``).
        top: the ``top`` most frequent reasons.
    """
    if _has(windows, "exit_reason", "exit_ts", "entry_ts"):
        d = (windows.drop_nulls("entry_ts")
             .select(pl.col("exit_reason").fill_null("?"), ((pl.col("entry_ts") - pl.col("exit_ts")) / 1e3).alias("us"))
             .filter(pl.col("us") > 0))
        if d.is_empty():
            return None
        order = d.group_by("exit_reason").len().sort(["len", "exit_reason"], descending=[True, False]).head(top)
        reasons = order["exit_reason"].to_list()
        data = [d.filter(pl.col("exit_reason") == r)["us"].to_numpy() for r in reasons]
        fig = _fig(max(2.4, 0.35 * len(reasons) + 1.4))
        ax = fig.add_subplot()
        ax.boxplot(data, whis=(1, 99), showfliers=True, flierprops={"markersize": 2}, **_HORIZONTAL)
        ax.set_yticks(np.arange(1, len(reasons) + 1), reasons)
        ax.invert_yaxis()
    elif _has(exit_stats, "exit_reason", "p50_ns", "p99_ns"):
        agg = (exit_stats.group_by("exit_reason")
               .agg(pl.col("count").sum(), pl.col("p50_ns").median(), pl.col("p99_ns").max(), pl.col("max_ns").max())
               .sort("count", descending=True).head(top))
        reasons = agg["exit_reason"].fill_null("?").to_list()
        y = np.arange(len(reasons))
        fig = _fig(max(2.4, 0.35 * len(reasons) + 1.4))
        ax = fig.add_subplot()
        for col, mk, lab in (("p50_ns", "o", "p50"), ("p99_ns", "s", "p99"), ("max_ns", "x", "max")):
            ax.scatter(agg[col].to_numpy() / 1e3, y, marker=mk, label=lab)
        ax.set_yticks(y, reasons)
        ax.invert_yaxis()
        ax.legend(fontsize=8)
    else:
        return None
    ax.set_xscale("log")
    ax.set_xlabel("handling time, exit → entry (µs, log)")
    ax.set_title("Exit handling time per reason")
    return fig


def _nice_bucket(span_s: float, target: int = 60) -> float:
    """A round bucket width (1/2/5 × 10^k s) giving about ``target`` buckets over ``span_s``."""
    raw = max(span_s / target, 1e-6)
    exp = np.floor(np.log10(raw))
    for m in (1, 2, 5, 10):
        if m * 10**exp >= raw:
            return float(m * 10**exp)
    return float(10 ** (exp + 1))  # pragma: no cover


def msr_activity(msr_writes: pl.DataFrame | None, bucket_s: float | None = None, top: int = 8) -> Figure | None:
    """PMU MSR writes per second over time, one line per MSR (the ``top`` most written), all vCPUs summed.

    Args:
        msr_writes: the ``pmu-msr-activity`` rule's ``msr_writes`` frame (``ts``, ``msr`` or ``msr_name``).
        bucket_s: width of a time bucket (default: a round width giving ~60 buckets).
        top: how many MSRs get their own line.
    """
    if not _has(msr_writes, "ts"):
        return None
    if "msr_name" in msr_writes.columns and "msr" in msr_writes.columns:
        name = pl.coalesce(pl.col("msr_name"), pl.format("{}", pl.col("msr")))
    elif "msr_name" in msr_writes.columns:
        name = pl.col("msr_name")
    else:
        name = pl.col("msr").cast(pl.String)
    t0, t1 = int(msr_writes["ts"].min()), int(msr_writes["ts"].max())
    if bucket_s is None:
        bucket_s = _nice_bucket((t1 - t0) / 1e9)
    step = max(int(bucket_s * 1e9), 1)
    d = msr_writes.select(name.fill_null("?").alias("msr"), ((pl.col("ts") - t0) // step).alias("b"))
    order = d.group_by("msr").len().sort(["len", "msr"], descending=[True, False])
    keep = order.head(top)["msr"].to_list()
    d = d.with_columns(pl.when(pl.col("msr").is_in(keep)).then(pl.col("msr")).otherwise(pl.lit("other")))
    nb = int(d["b"].max()) + 1
    fig = _fig()
    ax = fig.add_subplot()
    edges = np.arange(nb + 1) * bucket_s
    for m in keep + (["other"] if order.height > top else []):
        per = d.filter(pl.col("msr") == m).group_by("b").len()
        y = np.zeros(nb)
        y[per["b"].to_numpy()] = per["len"].to_numpy()
        ax.stairs(y / bucket_s, edges, label=m, linewidth=1.4)
    ax.set_xlabel(f"time since the first PMU MSR write (s; {bucket_s:g} s buckets)")
    ax.set_ylabel("writes / s")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Guest writes to PMU MSRs ({msr_writes.height:,})")
    fig.legend(loc="outside right upper", fontsize=8)
    return fig


def figures(results: Mapping[str, Any]) -> dict[str, Figure]:
    """Every KVM chart that the rules' frames allow, by name (``pmi_histogram``, ``flagged_timeline``,
    ``exit_reasons``, ``handling_times``, ``msr_activity``).

    Args:
        results: rule name → RuleResult (rules that did not run are skipped).
    """

    def frames(rule: str) -> dict[str, pl.DataFrame]:
        r = results.get(rule)
        return dict(r.frames) if r is not None and r.ran else {}

    mp, es, msr = frames("multi-pmi-per-exit"), frames("exit-stats"), frames("pmu-msr-activity")
    windows = mp.get("windows")
    made = {
        "pmi_histogram": pmi_histogram(windows) if windows is not None else None,
        "flagged_timeline": (flagged_timeline(mp.get("flagged"), mp.get("inconclusive"), windows)
                             if mp.get("flagged") is not None else None),
        "exit_reasons": exit_reasons(es.get("exit_stats"), windows),
        "handling_times": handling_times(windows, es.get("exit_stats")),
        "msr_activity": msr_activity(msr.get("msr_writes")),
    }
    return {k: v for k, v in made.items() if v is not None}
