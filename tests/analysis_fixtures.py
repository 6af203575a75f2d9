"""Hand-made traces and rule results for the analysis, CLI and report tests (used before/besides the real rules).

The frames follow the column names and dtypes of the trace.dat reader and of the KVM contract
(``tracekit.detectors.pmi.WINDOW_SCHEMA``: flagged-exit schema); the values are small and written here on purpose so that a
test knows exactly what the report must show.
"""

from __future__ import annotations

from typing import Any, ClassVar

import polars as pl

from tracekit.analysis import EXIT_STATS_SCHEMA, MULTI_PMI_SCHEMA
from tracekit.detectors import Finding, Inputs, RuleResult
from tracekit.model import Trace

EVIL_COMM = '<script>window.__pwned=1;alert("x")</script><img src=x onerror="window.__pwned=2">'

_COMMON = {"ts": pl.Int64, "cpu": pl.Int32, "common_pid": pl.Int32, "common_comm": pl.String}


def kvm_trace(comm0: str = "CPU 0/KVM") -> Trace:
    """Two vCPU threads (pids 100, 101): four exits each; vCPU 0's second exit gets three PMIs (apic NMI)."""
    exits = pl.DataFrame({
        "ts": [1_000, 5_000, 9_000, 13_000, 1_500, 5_500, 9_500, 13_500],
        "cpu": [0, 0, 0, 0, 1, 1, 1, 1],
        "common_pid": [100] * 4 + [101] * 4,
        "common_comm": [comm0] * 4 + ["CPU 1/KVM"] * 4,
        "exit_reason": [1, 32, 1, 12, 1, 1, 48, 1],
        "vcpu_id": [0] * 4 + [1] * 4,
    }, schema={**_COMMON, "exit_reason": pl.UInt32, "vcpu_id": pl.UInt32})
    entries = exits.select(pl.col("ts") + 2_000, "cpu", "common_pid", "common_comm", "vcpu_id")
    irq = pl.DataFrame({
        "ts": [5_100, 5_300, 5_600, 9_600], "cpu": [0, 0, 0, 1], "common_pid": [100, 100, 100, 101],
        "common_comm": [comm0, comm0, comm0, "CPU 1/KVM"], "apicid": [0, 0, 0, 1], "dm": [0x400] * 4,
        "tm": [0] * 4, "vec": [2] * 4,
    }, schema={**_COMMON, "apicid": pl.UInt32, "dm": pl.UInt16, "tm": pl.UInt8, "vec": pl.UInt8})
    return Trace(source="hand-made.dat", format="trace.dat",
                 frames={"kvm:kvm_exit": exits, "kvm:kvm_entry": entries, "kvm:kvm_apic_accept_irq": irq},
                 metadata={"version": 7, "clock": "local", "cpus": 2, "uname": "Linux host 6.18.0 x86_64"})


def windows_frame(comm_pids=(100, 101)) -> pl.DataFrame:
    """Every window of :func:`kvm_trace`, contract schema."""
    return pl.DataFrame({
        "pid": [100] * 4 + [101] * 4, "vcpu": [0] * 4 + [1] * 4, "cpu": [0] * 4 + [1] * 4,
        "exit_ts": [1_000, 5_000, 9_000, 13_000, 1_500, 5_500, 9_500, 13_500],
        "entry_ts": [3_000, 7_000, 11_000, 15_000, 3_500, 7_500, 11_500, 15_500],
        "exit_reason": ["EXTERNAL_INTERRUPT", "MSR_WRITE", "EXTERNAL_INTERRUPT", "HLT",
                        "EXTERNAL_INTERRUPT", "EXTERNAL_INTERRUPT", "EPT_VIOLATION", "EXTERNAL_INTERRUPT"],
        "pmi_count": [0, 3, 0, 0, 0, 0, 1, 0],
        "sources": [[], ["apic_nmi"], [], [], [], [], ["apic_nmi"], []],
        "inconclusive": [False] * 8,
    }, schema=MULTI_PMI_SCHEMA)


class FakeMultiPmi:
    """Stands in for the ``multi-pmi-per-exit`` rule: returns the hand-made frames above."""

    name: ClassVar[str] = "multi-pmi-per-exit"
    description: ClassVar[str] = "VM-exits with more than one PMI (hand-made results)"
    requires: ClassVar[tuple[str, ...]] = ("kvm_exit", "kvm_entry")
    requires_any: ClassVar[tuple] = ()
    record_hint: ClassVar[str] = "trace-cmd record -e kvm"
    defaults: ClassVar[dict[str, Any]] = {"min_pmis": 2}

    def run(self, inputs: Inputs, config: dict[str, Any]) -> RuleResult:
        if not any(t.has("kvm_exit") for t in inputs.host):
            return RuleResult(self.name, ran=False, missing=["kvm_exit", "kvm_entry"], record_hint=self.record_hint)
        w = windows_frame()
        flagged = w.filter(pl.col("pmi_count") >= config["min_pmis"])
        findings = []
        if flagged.height:
            findings.append(Finding(self.name, "error", f"{flagged.height} VM-exit(s) got more than one PMI",
                                    f"Worst: {flagged['pmi_count'].max()} PMIs in one exit.", flagged.height,
                                    flagged))
        return RuleResult(self.name, ran=True, findings=findings,
                          frames={"flagged": flagged, "windows": w, "inconclusive": w.clear()})


class FakeExitStats:
    name: ClassVar[str] = "exit-stats"
    description: ClassVar[str] = "exit statistics (hand-made)"
    requires: ClassVar[tuple[str, ...]] = ("kvm_exit",)
    requires_any: ClassVar[tuple] = ()
    record_hint: ClassVar[str] = "trace-cmd record -e kvm:kvm_exit -e kvm:kvm_entry"
    defaults: ClassVar[dict[str, Any]] = {}

    def run(self, inputs: Inputs, config: dict[str, Any]) -> RuleResult:
        w = windows_frame()
        st = (w.with_columns((pl.col("entry_ts") - pl.col("exit_ts")).alias("d"))
              .group_by("pid", "vcpu", "exit_reason")
              .agg(pl.len().cast(pl.Int64).alias("count"), pl.col("d").sum().alias("total_ns"),
                   pl.col("d").min().alias("min_ns"), pl.col("d").max().alias("max_ns"),
                   pl.col("d").mean().alias("mean_ns"), pl.col("d").median().alias("p50_ns"),
                   pl.col("d").quantile(0.99).alias("p99_ns"))
              .with_columns((pl.col("count") / pl.col("count").sum().over("pid")).alias("share"))
              .cast(EXIT_STATS_SCHEMA).select(list(EXIT_STATS_SCHEMA)).sort("pid", "exit_reason"))
        return RuleResult(self.name, ran=True, frames={"exit_stats": st},
                          findings=[Finding(self.name, "info", "exit statistics", "4 exits per vCPU", 8)])


class FakeMissing:
    """A rule whose events are never present (to show the record hint)."""

    name: ClassVar[str] = "mutex-hotspots"
    description: ClassVar[str] = "lock hotspots (hand-made)"
    requires: ClassVar[tuple[str, ...]] = ("lock:contention_begin",)
    requires_any: ClassVar[tuple] = ()
    record_hint: ClassVar[str] = "trace-cmd record -e lock:contention_begin -e lock:contention_end -T"
    defaults: ClassVar[dict[str, Any]] = {"threshold": 0.2}

    def run(self, inputs: Inputs, config: dict[str, Any]) -> RuleResult:
        return RuleResult(self.name, ran=False, missing=["lock:contention_begin"], record_hint=self.record_hint)


FAKE_RULES = (FakeMultiPmi, FakeExitStats, FakeMissing)
