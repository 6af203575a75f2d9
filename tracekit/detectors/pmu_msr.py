"""Rule ``pmu-msr-activity``: guest writes to PMU MSRs per vCPU over time.

Every write the guest makes to a PMU MSR that KVM intercepts shows as ``kvm:kvm_msr`` (``write`` = 1, ``ecx`` the MSR,
``data`` the value); reprogramming counters is what drives ``kvm_pmu_handle_event``. MSR numbers and names follow
Linux ``arch/x86/include/asm/msr-index.h`` (Intel SDM vol. 4, AMD APM vol. 2).
"""

from __future__ import annotations

from typing import Any, ClassVar

import polars as pl

from . import Finding, Inputs, RuleResult, register

__all__ = ["PmuMsrActivity", "PMU_MSRS", "MSR_WRITES_SCHEMA", "MSR_RATE_SCHEMA", "msr_names"]


def _table() -> dict[int, str]:
    t: dict[int, str] = {}
    for i in range(8):
        t[0x186 + i] = f"IA32_PERFEVTSEL{i}"
        t[0xC1 + i] = f"IA32_PMC{i}"
        t[0x4C1 + i] = f"IA32_A_PMC{i}"
    for i in range(4):
        t[0x309 + i] = f"IA32_FIXED_CTR{i}"
        t[0xC0010000 + i] = f"K7_EVNTSEL{i}"
        t[0xC0010004 + i] = f"K7_PERFCTR{i}"
    for i in range(6):
        t[0xC0010200 + 2 * i] = f"F15H_PERF_CTL{i}"
        t[0xC0010201 + 2 * i] = f"F15H_PERF_CTR{i}"
    t[0x38D] = "IA32_FIXED_CTR_CTRL"
    t[0x38E] = "IA32_PERF_GLOBAL_STATUS"
    t[0x38F] = "IA32_PERF_GLOBAL_CTRL"
    t[0x390] = "IA32_PERF_GLOBAL_OVF_CTRL"
    t[0xC0000300] = "AMD64_PERF_CNTR_GLOBAL_STATUS"
    t[0xC0000301] = "AMD64_PERF_CNTR_GLOBAL_CTL"
    t[0xC0000302] = "AMD64_PERF_CNTR_GLOBAL_STATUS_CLR"
    t[0xC0000303] = "AMD64_PERF_CNTR_GLOBAL_STATUS_SET"
    return t


PMU_MSRS: dict[int, str] = _table()
"""PMU MSR number → name (Intel PERFEVTSELx, PMCx, A_PMCx, FIXED_CTRx, FIXED_CTR_CTRL, PERF_GLOBAL_*; AMD K7
EVNTSEL/PERFCTR, F15H PERF_CTL/CTR, PERF_CNTR_GLOBAL_*)."""

MSR_WRITES_SCHEMA = {"ts": pl.Int64, "pid": pl.Int32, "vcpu": pl.Int32, "msr": pl.UInt32, "msr_name": pl.String,
                     "value": pl.UInt64}
MSR_RATE_SCHEMA = {"pid": pl.Int32, "vcpu": pl.Int32, "second": pl.Int64, "writes": pl.UInt32}
"""Writes per vCPU thread per one-second bucket (``second`` counted from the trace's first event)."""


def msr_names(msr: pl.Expr) -> pl.Expr:
    """The PMU MSR name of an MSR number column (null when not a PMU MSR)."""
    return msr.replace_strict(PMU_MSRS, default=None, return_dtype=pl.String)


@register
class PmuMsrActivity:
    """Guest writes to PMU MSRs (kvm_msr) per vCPU over time."""

    name: ClassVar[str] = "pmu-msr-activity"
    description: ClassVar[str] = ("guest writes to PMU MSRs (Intel PERFEVTSELx/PMCx/FIXED_CTR*/PERF_GLOBAL_*, AMD "
                                  "PERF_CTL/CTR) per vCPU over time — the reprogramming that drives "
                                  "kvm_pmu_handle_event")
    requires: ClassVar[tuple[str, ...]] = ("kvm_msr",)
    requires_any: ClassVar[tuple[tuple[str, ...], ...]] = ()
    record_hint: ClassVar[str] = "trace-cmd record -e kvm:kvm_msr -e kvm:kvm_exit -e kvm:kvm_entry"
    defaults: ClassVar[dict[str, Any]] = {"max_writes_per_s": 50000}

    def run(self, inputs: Inputs, config: dict[str, Any]) -> RuleResult:
        """List PMU MSR writes and their rate per vCPU thread.

        Args:
            inputs: the traces. config: ``max_writes_per_s`` — a warning names vCPUs above this rate in any second.

        Returns:
            frames ``msr_writes`` (:data:`MSR_WRITES_SCHEMA`) and ``msr_rate`` (:data:`MSR_RATE_SCHEMA`).
        """
        cfg = {**self.defaults, **(config or {})}
        traces = inputs.with_event("kvm_msr", "host")
        if not traces:
            return RuleResult(self.name, ran=False, missing=list(self.requires), record_hint=self.record_hint)
        writes, rates = [], []
        for t in traces:
            w = _writes(t)
            t0 = t.time_range()[0] or 0
            writes.append(w)
            rates.append(w.group_by("pid", "vcpu", ((pl.col("ts") - t0) // 1_000_000_000).alias("second"))
                         .agg(pl.len().alias("writes")))
        msr_writes = pl.concat(writes).sort("ts", maintain_order=True)
        msr_rate = pl.concat(rates).cast(MSR_RATE_SCHEMA).sort("pid", "vcpu", "second")
        res = RuleResult(self.name, ran=True, frames={"msr_writes": msr_writes, "msr_rate": msr_rate})
        res.findings.extend(self._findings(msr_writes, msr_rate, int(cfg["max_writes_per_s"])))
        return res

    def _findings(self, writes: pl.DataFrame, rate: pl.DataFrame, limit: int) -> list[Finding]:
        if writes.is_empty():
            return []
        per = (writes.group_by("msr_name").len().sort(["len", "msr_name"], descending=[True, False]).head(4))
        top = ", ".join(f"{n} ({c:,})" for n, c in per.iter_rows())
        vcpus = writes.select("pid", "vcpu").unique().height
        hot = rate.filter(pl.col("writes") > limit)
        summary = f"{writes.height:,} PMU MSR writes by {vcpus} vCPU thread(s); most written: {top}."
        if hot.is_empty():
            return [Finding(self.name, "info", "PMU MSR writes", summary, count=writes.height)]
        peak = hot.sort("writes", descending=True).row(0, named=True)
        summary += (f" {hot.select('pid', 'vcpu').unique().height} vCPU(s) exceed {limit:,} writes/s (peak "
                    f"{peak['writes']:,} by vCPU {peak['vcpu']} in second {peak['second']}): the guest reprograms "
                    "its counters at a rate that keeps KVM in kvm_pmu_handle_event.")
        return [Finding(self.name, "warning", "Heavy PMU reprogramming", summary, count=hot.height, evidence=hot)]


def _writes(trace) -> pl.DataFrame:
    """PMU MSR writes of one trace, the vCPU taken from the thread's last kvm_exit before the write."""
    df = trace.events("kvm_msr")
    w = (df.filter(pl.col("write") != 0)
         .select(pl.col("ts").cast(pl.Int64, strict=False), pl.col("common_pid").cast(pl.Int32, strict=False).alias("pid"),
                 pl.col("ecx").cast(pl.UInt32, strict=False).alias("msr"), pl.col("data").cast(pl.UInt64, strict=False).alias("value"))
         .with_columns(msr_names(pl.col("msr")).alias("msr_name"))
         .filter(pl.col("msr_name").is_not_null())
         .with_row_index("_i"))
    if trace.has("kvm_exit"):
        ex = (trace.events("kvm_exit")
              .select(pl.col("ts").cast(pl.Int64, strict=False).alias("_ets"), pl.col("common_pid").cast(pl.Int32, strict=False).alias("pid"),
                      pl.col("vcpu_id").cast(pl.Int32, strict=False).alias("vcpu")).sort("_ets"))
        w = w.sort("ts").join_asof(ex, left_on="ts", right_on="_ets", by="pid", strategy="backward",
                                   check_sortedness=False).drop("_ets")
    else:
        w = w.with_columns(pl.lit(None, pl.Int32).alias("vcpu"))
    return w.sort("_i").select(list(MSR_WRITES_SCHEMA)).cast(MSR_WRITES_SCHEMA)
