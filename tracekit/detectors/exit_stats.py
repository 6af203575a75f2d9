"""Rule ``exit-stats``: per vCPU and exit reason, how many VM-exits and how long KVM took to handle them.

The table ``perf kvm stat report`` prints, as a Polars frame: handling time is the time from a ``kvm_exit`` to the next
``kvm_entry`` of the same thread (windows as in :mod:`tracekit.detectors.pmi`); exit reasons are named from the
``kvm_exit`` print fmt (VMX names when ``isa == 1``, SVM names otherwise).
"""

from __future__ import annotations

from typing import Any, ClassVar

import polars as pl

from . import Finding, Inputs, RuleResult, register
from .kvm_windows import collect, exit_windows_plan
from .multi_pmi import cannot_run, kvm_traces

__all__ = ["ExitStats", "EXIT_STATS_SCHEMA", "exit_table", "exit_table_plan"]

EXIT_STATS_SCHEMA = {
    "pid": pl.Int32, "vcpu": pl.Int32, "exit_reason": pl.String, "count": pl.Int64, "total_ns": pl.Int64,
    "min_ns": pl.Int64, "max_ns": pl.Int64, "mean_ns": pl.Float64, "p50_ns": pl.Float64, "p99_ns": pl.Float64,
    "share": pl.Float64,
}
"""One row per (vCPU thread, exit reason) over completed windows (exit followed by an entry): ``share`` is the
fraction of that vCPU's completed exits; percentiles interpolate linearly (numpy's default)."""


@register
class ExitStats:
    """VM-exit counts and handling times per vCPU and exit reason (``perf kvm stat report``)."""

    name: ClassVar[str] = "exit-stats"
    description: ClassVar[str] = ("VM-exits per vCPU and exit reason with handling time (exit → entry): count, "
                                  "total/min/max/mean/p50/p99, share — like perf kvm stat report")
    requires: ClassVar[tuple[str, ...]] = ("kvm_exit", "kvm_entry")
    requires_any: ClassVar[tuple[tuple[str, ...], ...]] = ()
    record_hint: ClassVar[str] = "trace-cmd record -e kvm:kvm_exit -e kvm:kvm_entry"
    defaults: ClassVar[dict[str, Any]] = {"slow_exit_us": 1000.0}

    def run(self, inputs: Inputs, config: dict[str, Any]) -> RuleResult:
        """Build the exit table of every host trace with KVM events.

        Args:
            inputs: the traces. config: ``slow_exit_us`` — an info finding names reasons whose p99 exceeds it.

        Returns:
            frame ``exit_stats`` (:data:`EXIT_STATS_SCHEMA`), sorted by pid, vcpu, count (descending), reason.
        """
        cfg = {**self.defaults, **(config or {})}
        traces = kvm_traces(inputs)
        if not traces:
            return cannot_run(self, inputs)
        # one lazy plan per run: on a converted dataset only pid/vcpu/cpu/ts/exit_reason/isa of kvm_exit and
        # pid/ts/cpu of kvm_entry are read; the windows are aggregated, never returned
        wins = pl.concat([exit_windows_plan(t).drop("window") for t in traces])
        stats, open_n = pl.collect_all([exit_table_plan(wins), wins.select(pl.col("entry_ts").is_null().sum())],
                                       engine="streaming")
        open_n = int(open_n.item())
        notes = [f"{open_n} exit(s) without a following kvm_entry (trace end or lost events) left out"] if open_n else []
        res = RuleResult(self.name, ran=True, frames={"exit_stats": stats}, notes=notes)
        slow_ns = float(cfg["slow_exit_us"]) * 1000.0
        slow = stats.filter(pl.col("p99_ns") > slow_ns)
        total = int(stats["count"].sum())
        vcpus = stats.select("pid", "vcpu").unique().height
        summary = f"{total:,} VM-exits handled on {vcpus} vCPU thread(s)."
        if not stats.is_empty():
            top = (stats.group_by("exit_reason").agg(pl.col("count").sum())
                   .sort(["count", "exit_reason"], descending=[True, False]).head(3))
            summary += " Most frequent: " + ", ".join(f"{r} ({c:,})" for r, c in top.iter_rows()) + "."
        if not slow.is_empty():
            names = ", ".join(sorted(set(slow["exit_reason"].to_list())))
            summary += f" p99 handling time above {cfg['slow_exit_us']} µs for: {names}."
        # count: the exits the table covers; evidence: the (vCPU, reason) rows slow at p99
        res.findings.append(Finding(self.name, "info", "VM-exit statistics", summary, count=total,
                                    evidence=slow if not slow.is_empty() else None))
        return res


def exit_table_plan(windows: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """The plan of :func:`exit_table` (a group_by aggregation over the windows)."""
    done = windows.lazy().filter(pl.col("entry_ts").is_not_null()).with_columns(
        (pl.col("entry_ts") - pl.col("exit_ts")).alias("ns"))
    ns = pl.col("ns")
    out = (done.group_by("pid", "vcpu", "exit_reason")
           .agg(pl.len().alias("count"), ns.sum().alias("total_ns"), ns.min().alias("min_ns"),
                ns.max().alias("max_ns"), ns.mean().alias("mean_ns"),
                ns.quantile(0.5, "linear").alias("p50_ns"), ns.quantile(0.99, "linear").alias("p99_ns"))
           .with_columns((pl.col("count") / pl.col("count").sum().over("pid", "vcpu")).alias("share")))
    return (out.select(list(EXIT_STATS_SCHEMA)).cast(EXIT_STATS_SCHEMA)
            .sort(["pid", "vcpu", "count", "exit_reason"], descending=[False, False, True, False]))


def exit_table(windows: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The ``exit_stats`` table from windows (``pid``, ``vcpu``, ``exit_reason``, ``exit_ts``, ``entry_ts``)."""
    return collect(exit_table_plan(windows))
