"""Make trace-cmd report texts with libtraceevent's KVM/sched/function plugin forms.

This machine's KVM (kvm-pvm) emits no kvm_exit/kvm_entry, so the events are SYNTHETIC: a small two-vCPU scenario
(threads named ``CPU 0/KVM`` and ``CPU 1/KVM``, VMX and SVM exit reasons, sched_switch/wakeup, function events whose
addresses resolve through a small kallsyms, one empty CPU, a lost-events mark) is written as a trace.dat by
``tracekit.testing.write_tracedat``; the TEXT is what the real ``trace-cmd report`` prints for it (default, -R).
Tests compare the text reader's frames with these input frames. Run: ``python tests/golden/regen_text_kvm.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import zstandard

from tracekit.testing import LostEvents, write_tracedat

OUT = Path(__file__).resolve().parents[1] / "data" / "text" / "kvm_synth"
KALLSYMS = {"kvm_pmu_deliver_pmi": 0xFFFFFFFF81100000, "kvm_pmu_handle_event": 0xFFFFFFFF81100400,
            "vcpu_enter_guest": 0xFFFFFFFF81200000, "perf_event_ctx_lock_nested.isra.0": 0xFFFFFFFF81300000,
            "__mutex_lock.constprop.0": 0xFFFFFFFF81300800, "_stext": 0xFFFFFFFF81000000}
VMX = [12, 30, 1, 32, 48, 10]   # HLT, IO_INSTRUCTION, EXTERNAL_INTERRUPT, MSR_WRITE, EPT_VIOLATION, CPUID
SVM = [0x078, 0x07B, 0x060, 0x07C, 0x400]   # hlt, io, interrupt, msr, npf


def frames(isa: int) -> dict[str, pl.DataFrame]:
    """kvm_entry/kvm_exit pairs for two vCPU threads (pids 4001, 4002 on CPUs 0, 1), plus scheduling and function
    events; ``isa`` 1 = VMX reasons, 2 = SVM."""
    reasons = VMX if isa == 1 else SVM
    ex, en, fn = [], [], []
    t = 1_000_000_000
    for i in range(40):
        for vcpu, pid, cpu in ((0, 4001, 0), (1, 4002, 1)):
            t += 1700 + 37 * i + 11 * vcpu
            en.append((t, cpu, pid, vcpu, 0xFFFFFFFF81000000 + 16 * i, 0, 0, 0))
            t += 5300 + 13 * i
            ex.append((t, cpu, pid, reasons[(i + vcpu) % len(reasons)], 0xFFFFFFFF81000000 + 16 * i + 4, isa,
                       0x1000 * i, 0x20 * vcpu, 0, 0, vcpu, 0))
            if i % 7 == 3:
                t += 900
                fn.append((t, cpu, pid, KALLSYMS["kvm_pmu_deliver_pmi"] + 0x10, KALLSYMS["kvm_pmu_handle_event"] + 0x42))
    entry = pl.DataFrame(en, schema={"ts": pl.Int64, "cpu": pl.Int32, "common_pid": pl.Int32, "vcpu_id": pl.UInt32,
                                     "rip": pl.UInt64, "immediate_exit": pl.UInt8, "intr_info": pl.UInt32,
                                     "error_code": pl.UInt32}, orient="row")
    exit_ = pl.DataFrame(ex, schema={"ts": pl.Int64, "cpu": pl.Int32, "common_pid": pl.Int32,
                                     "exit_reason": pl.UInt32, "guest_rip": pl.UInt64, "isa": pl.UInt32,
                                     "info1": pl.UInt64, "info2": pl.UInt64, "intr_info": pl.UInt32,
                                     "error_code": pl.UInt32, "vcpu_id": pl.UInt32, "requests": pl.UInt64},
                         orient="row")
    func = pl.DataFrame(fn, schema={"ts": pl.Int64, "cpu": pl.Int32, "common_pid": pl.Int32, "ip": pl.UInt64,
                                    "parent_ip": pl.UInt64}, orient="row")
    sw = pl.DataFrame([(t + 1000, 0, 4001, "CPU 0/KVM", 4001, 120, 1, "swapper/0", 0, 120),
                       (t + 2000, 1, 4002, "CPU 1/KVM", 4002, 120, 0x100, "kworker/1:1", 77, 120)],
                      schema={"ts": pl.Int64, "cpu": pl.Int32, "common_pid": pl.Int32, "prev_comm": pl.String,
                              "prev_pid": pl.Int32, "prev_prio": pl.Int32, "prev_state": pl.Int64,
                              "next_comm": pl.String, "next_pid": pl.Int32, "next_prio": pl.Int32}, orient="row")
    wk = pl.DataFrame([(t + 3000, 1, 0, "CPU 0/KVM", 4001, 120, 0)],
                      schema={"ts": pl.Int64, "cpu": pl.Int32, "common_pid": pl.Int32, "comm": pl.String,
                              "pid": pl.Int32, "prio": pl.Int32, "target_cpu": pl.Int32}, orient="row")
    return {"kvm:kvm_entry": entry, "kvm:kvm_exit": exit_, "ftrace:function": func, "sched:sched_switch": sw,
            "sched:sched_wakeup": wk}


def report(dat: Path, *args: str) -> bytes:
    return subprocess.run(["trace-cmd", "report", *args, str(dat)], check=True, capture_output=True).stdout


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for isa, name in ((1, "vmx"), (2, "svm")):
        ev = frames(isa)
        dat = OUT / f"{name}.dat"
        write_tracedat(dat, ev, cpus=3, kallsyms={v: k for k, v in KALLSYMS.items()} and
                       [(a, n) for n, a in KALLSYMS.items()],
                       cmdlines={4001: "CPU 0/KVM", 4002: "CPU 1/KVM", 77: "kworker/1:1"},
                       lost=[LostEvents(cpu=1, before_ts=int(ev["kvm:kvm_exit"]["ts"][30]), count=5)])
        for suffix, args in (("", ()), ("_R", ("-R",))):
            text = report(dat, *args)
            (OUT / f"{name}_report{suffix}.txt.zst").write_bytes(zstandard.ZstdCompressor(level=19).compress(text))
        for key, df in ev.items():
            df.write_parquet(OUT / f"{name}.{key.replace(':', '.')}.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
