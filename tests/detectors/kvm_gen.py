"""A small in-memory KVM host scenario for the detector tests: vCPU threads exiting and entering, PMIs through each
route, IPI-NMI decoys, migrations, windows open at trace start/end, lost events — with its ground truth (the contract's
window schema), known by construction (how many PMIs were generated per window), never derived by the rules' logic.

It builds :class:`tracekit.model.Trace` objects straight from Polars frames (the trace.dat writer → reader chain is
tested in test_kvm_chain.py).
"""

# ruff: noqa: B023  (the per-vCPU helpers are called inside their own loop pass and must see its current cpu)
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from tracekit.formats import builtin_formats
from tracekit.model import Trace
from tracekit.symbols import Kallsyms

VMX_REASONS = {1: "EXTERNAL_INTERRUPT", 32: "MSR_WRITE", 48: "EPT_VIOLATION", 12: "HLT", 52: "PREEMPTION_TIMER",
               56: "APIC_WRITE"}
SVM_REASONS = {0x60: "interrupt", 0x7C: "msr", 0x400: "npf", 0x78: "hlt"}
ALL_ROUTES = ("deliver_pmi", "function", "apic_nmi", "lvtpc_fixed", "inj_nmi")
PMI_ADDR = 0xFFFFFFFF81120000
HANDLE_ADDR = 0xFFFFFFFF81120400
LVTPC_VECTOR = 0xFE

_COMMON = {"ts": pl.Int64, "cpu": pl.Int32, "common_pid": pl.Int32}
_FIELDS = {
    "kvm:kvm_exit": {"exit_reason": pl.UInt32, "guest_rip": pl.UInt64, "isa": pl.UInt32, "vcpu_id": pl.UInt32},
    "kvm:kvm_entry": {"vcpu_id": pl.UInt32, "rip": pl.UInt64},
    "kprobes:kvm_pmu_deliver_pmi": {"__probe_ip": pl.UInt64},
    "ftrace:function": {"ip": pl.UInt64, "parent_ip": pl.UInt64},
    "kvm:kvm_apic_accept_irq": {"apicid": pl.UInt32, "dm": pl.UInt16, "tm": pl.UInt16, "vec": pl.UInt8},
    "kvm:kvm_apic_ipi": {"icr_low": pl.UInt32, "dest_id": pl.UInt32},
    "kvm:kvm_inj_virq": {"vector": pl.UInt32, "soft": pl.Boolean, "reinjected": pl.Boolean},
    "kvm:kvm_inj_nmi": {},
    "kvm:kvm_apic": {"rw": pl.UInt32, "reg": pl.UInt32, "val": pl.UInt64},
    "kvm:kvm_msr": {"write": pl.UInt32, "ecx": pl.UInt32, "data": pl.UInt64, "exception": pl.UInt8},
    "sched:sched_migrate_task": {"comm": pl.String, "pid": pl.Int32, "prio": pl.Int32, "orig_cpu": pl.Int32,
                                 "dest_cpu": pl.Int32},
}
TRUTH_SCHEMA = {"pid": pl.Int32, "vcpu": pl.Int32, "cpu": pl.Int32, "exit_ts": pl.Int64, "entry_ts": pl.Int64,
                "exit_reason": pl.String, "pmi_count": pl.Int32, "sources": pl.List(pl.String),
                "inconclusive": pl.Boolean}


@dataclass
class Scenario:
    trace: Trace
    truth: pl.DataFrame  # every window, contract schema; exit_reason as the VMX/SVM name
    reason_numbers: list[int]  # kvm_exit.exit_reason per truth row
    outside: int  # PMIs generated outside any window
    msr_writes: pl.DataFrame = field(default_factory=pl.DataFrame)
    lvtpc_incidents: int = 0


def build(seed: int, *, routes=ALL_ROUTES, vcpus: int = 3, windows: int = 200, cpus: int = 4, p_pmi: float = 0.3,
          p_multi: float = 0.15, decoys: bool = True, migrations: bool = True, svm: bool = False,
          lost: str = "none", fixed_vcpus: tuple[int, ...] | None = None, function_decoys: bool = True,
          lvtpc_rearm: bool = True) -> Scenario:
    """Generate a scenario.

    Args:
        routes: the routes through which every PMI is seen (all of them per PMI, in stage order).
        fixed_vcpus: vCPUs programming LVTPC in Fixed mode (default: the odd ones when both apic_nmi and
            lvtpc_fixed are asked for, all when only lvtpc_fixed is).
        lost: ``none``, ``timed`` (lost_events rows with ts/prev_ts of the gap) or ``untimed`` (counts only).
        lvtpc_rearm: the guest writes LVTPC (unmasked) after each PMI it handles — when False, PMIs of a vCPU follow
            each other with no write in between (what the lvtpc rule flags).
    """
    rng = random.Random(seed)
    rows: dict[str, list[dict]] = {k: [] for k in _FIELDS}
    truth: list[dict] = []
    reason_nums: list[int] = []
    win_cpus: list[set[int]] = []
    outside = 0
    lvtpc_incidents = 0
    if fixed_vcpus is None:
        if "lvtpc_fixed" in routes and "apic_nmi" in routes:
            fixed_vcpus = tuple(v for v in range(vcpus) if v % 2 == 1)
        elif "lvtpc_fixed" in routes:
            fixed_vcpus = tuple(range(vcpus))
        else:
            fixed_vcpus = ()
    reasons = SVM_REASONS if svm else VMX_REASONS
    rearm_reason = 0x7C if svm else 56  # the guest's LVTPC write: an MSR (x2APIC) / APIC-write exit
    msr_truth = []

    for v in range(vcpus):
        pid = 2000 + v
        cpu = v % cpus
        t = 10_000 + rng.randrange(5_000)
        fixed = v in fixed_vcpus

        def emit(kind: str, ts: int, _pid=pid, **f) -> None:
            rows[kind].append({"ts": ts, "cpu": f.pop("_cpu", cpu), "common_pid": _pid, **f})

        def lvtpc_write(ts: int, masked: bool = False) -> None:
            mode = (0 << 8 | LVTPC_VECTOR) if fixed else (4 << 8)
            emit("kvm:kvm_apic", ts, rw=1, reg=0x340, val=mode | ((1 << 16) if masked else 0))

        # LVTPC programmed before the first exit is seen by KVM in a window: emit it in the first window below
        pmi_serial = 0

        def pmi(ts: int) -> int:
            """One PMI through every route, returns the next free ts."""
            nonlocal pmi_serial
            pmi_serial += 1
            if "deliver_pmi" in routes:
                emit("kprobes:kvm_pmu_deliver_pmi", ts, __probe_ip=PMI_ADDR)
                ts += 1
            if "function" in routes:
                emit("ftrace:function", ts, ip=PMI_ADDR + rng.choice((0, 4)), parent_ip=HANDLE_ADDR + 0x30)
                ts += 1
            if fixed and "lvtpc_fixed" in routes:
                emit("kvm:kvm_apic_accept_irq", ts, apicid=v, dm=0 << 8, tm=0, vec=LVTPC_VECTOR)
                ts += 1
            elif not fixed and "apic_nmi" in routes:
                emit("kvm:kvm_apic_accept_irq", ts, apicid=v, dm=4 << 8, tm=0, vec=0)
                ts += 1
            if not fixed and "inj_nmi" in routes:
                emit("kvm:kvm_inj_nmi", ts)
                ts += 1
            if fixed and "lvtpc_fixed" in routes:
                emit("kvm:kvm_inj_virq", ts, vector=LVTPC_VECTOR, soft=False, reinjected=False)
                ts += 1
            return ts + rng.randrange(1, 200)

        if v == 0:  # a PMI before this thread's first exit: outside any window
            t = pmi(t) + 500
            outside += 1
        last_pmi_rearmed = True
        for w in range(windows):
            if migrations and rng.random() < 0.1:
                new = rng.randrange(cpus)
                if new != cpu:
                    emit("sched:sched_migrate_task", t, _pid=0, comm=f"CPU {v}/KVM", pid=pid, prio=120,
                         orig_cpu=cpu, dest_cpu=new, _cpu=new)
                    cpu = new
                    t += 10
            reason = rng.choice(list(reasons))
            exit_ts = t
            emit("kvm:kvm_exit", t, exit_reason=reason, guest_rip=0xFFFFFFFF81000000 + w, isa=2 if svm else 1,
                 vcpu_id=v)
            cpus_here = {cpu}
            exit_cpu = cpu
            t += rng.randrange(50, 300)
            if w == 0:
                lvtpc_write(t)
                t += 20
            n = 0
            if rng.random() < p_pmi:
                n = 1 + (rng.random() < p_multi / p_pmi) + (p_multi > 0 and rng.random() < 0.02)
            srcs = set()
            for i in range(n):
                if decoys and rng.random() < 0.2:
                    t = _decoy(emit, t, v, vcpus, rng)
                if migrations and i == 1 and rng.random() < 0.3:  # migrate mid-window between two PMIs
                    new = (cpu + 1) % cpus
                    emit("sched:sched_migrate_task", t, _pid=0, comm=f"CPU {v}/KVM", pid=pid, prio=120,
                         orig_cpu=cpu, dest_cpu=new, _cpu=new)
                    cpu = new
                    cpus_here.add(cpu)
                    t += 10
                if not last_pmi_rearmed and not svm:
                    lvtpc_incidents += 1
                t = pmi(t)
                last_pmi_rearmed = False
                srcs |= {r for r in routes if _route_applies(r, fixed)}
            if decoys and rng.random() < 0.05:
                t = _decoy(emit, t, v, vcpus, rng)
            if rng.random() < 0.2:
                msr = rng.choice((0x186, 0x38F, 0xC1, 0x10, 0x1D9))
                emit("kvm:kvm_msr", t, write=1, ecx=msr, data=rng.randrange(1 << 20), exception=0)
                if msr in (0x186, 0x38F, 0xC1):
                    msr_truth.append({"ts": t, "pid": pid, "vcpu": v, "msr": msr})
                t += 5
            last = w == windows - 1
            entry_ts = None
            if not last:
                t += rng.randrange(100, 3000) if rng.random() > 0.01 else (1 << 27) + 5  # time extends
                entry_ts = t
                emit("kvm:kvm_entry", t, vcpu_id=v, rip=0xFFFFFFFF81000000 + w)
                t += rng.randrange(500, 20_000)
            truth.append({"pid": pid, "vcpu": v, "cpu": exit_cpu, "exit_ts": exit_ts, "entry_ts": entry_ts,
                          "exit_reason": reasons[reason], "pmi_count": n, "sources": sorted(srcs),
                          "inconclusive": False})
            reason_nums.append(reason)
            win_cpus.append(cpus_here)
            if n and lvtpc_rearm and not last:
                # next window is the guest's LVTPC write (APIC_WRITE exit) handled right away
                t += 100
                emit("kvm:kvm_exit", t, exit_reason=rearm_reason, guest_rip=0, isa=2 if svm else 1, vcpu_id=v)
                ex2 = t
                t += 30
                lvtpc_write(t)
                last_pmi_rearmed = True
                t += 40
                emit("kvm:kvm_entry", t, vcpu_id=v, rip=0)
                truth.append({"pid": pid, "vcpu": v, "cpu": cpu, "exit_ts": ex2, "entry_ts": t,
                              "exit_reason": reasons[rearm_reason], "pmi_count": 0, "sources": [],
                              "inconclusive": False})
                reason_nums.append(rearm_reason)
                win_cpus.append({cpu})
                t += rng.randrange(500, 5000)
    if function_decoys and "function" in routes:
        # function events of other functions, and of kvm_pmu_deliver_pmi's caller with it as parent: not PMIs
        for r in list(rows["ftrace:function"])[:50]:
            rows["ftrace:function"].append({**r, "ts": r["ts"], "ip": HANDLE_ADDR + 0x10, "parent_ip": PMI_ADDR})

    frames = {}
    for k, fl in _FIELDS.items():
        sch = {**_COMMON, **fl}
        rs = sorted(rows[k], key=lambda r: r["ts"])
        if not rs and k not in ("kvm:kvm_exit", "kvm:kvm_entry"):
            continue
        frames[k] = pl.DataFrame({c: [r.get(c) for r in rs] for c in sch}, schema=sch)
    if "ftrace:function" in frames:
        frames["ftrace:function"] = frames["ftrace:function"].sort("ts", maintain_order=True)

    truth_df = pl.DataFrame(truth, schema=TRUTH_SCHEMA)
    lost_df = pl.DataFrame(schema={"cpu": pl.Int32, "lost": pl.Int64, "lost_unknown": pl.Int64})
    if lost != "none":
        truth_df, lost_df = _lose(truth_df, win_cpus, frames, rng, timed=(lost == "timed"), cpus=cpus)
    fmts = builtin_formats()
    formats = {k: fmts[k] for k in frames if k in fmts}
    ks = Kallsyms(np.array([0xFFFFFFFF81000000, PMI_ADDR, HANDLE_ADDR, HANDLE_ADDR + 0x800], dtype=np.uint64),
                  np.array(["_stext", "kvm_pmu_deliver_pmi", "kvm_pmu_handle_event", "kvm_pmu_refresh"],
                           dtype=object))
    trace = Trace(source=f"gen-{seed}", format="trace.dat", frames=frames, formats=formats, lost_events=lost_df,
                  kallsyms=ks, metadata={"cpus": cpus})
    msr_df = pl.DataFrame(msr_truth, schema={"ts": pl.Int64, "pid": pl.Int32, "vcpu": pl.Int32, "msr": pl.UInt32})
    return Scenario(trace, truth_df, reason_nums, outside, msr_df, lvtpc_incidents)


def _route_applies(route: str, fixed: bool) -> bool:
    if route in ("apic_nmi", "inj_nmi"):
        return not fixed
    if route == "lvtpc_fixed":
        return fixed
    return True


def _decoy(emit, t: int, v: int, vcpus: int, rng: random.Random) -> int:
    """An NMI IPI sent by this vCPU to another one: kvm_apic_ipi then kvm_apic_accept_irq NMI for the target."""
    target = (v + 1 + rng.randrange(max(1, vcpus - 1))) % max(vcpus, 2)
    if target == v:
        target = v + 1
    emit("kvm:kvm_apic_ipi", t, icr_low=(4 << 8) | (1 << 14), dest_id=target)
    emit("kvm:kvm_apic_accept_irq", t + 2, apicid=target, dm=4 << 8, tm=0, vec=0)
    return t + 20


def _lose(truth: pl.DataFrame, win_cpus: list[set[int]], frames: dict, rng: random.Random, *, timed: bool,
          cpus: int):
    """Mark losses on two CPUs; return the truth with the windows they touch inconclusive, and lost_events."""
    every = pl.concat([f.select("ts", "cpu") for f in frames.values()]).sort("ts")
    lo_t, hi_t = int(every["ts"].min()), int(every["ts"].max())
    rows = []
    flags = np.zeros(truth.height, dtype=bool)
    ex = truth["exit_ts"].to_numpy()
    en = truth["entry_ts"].fill_null(np.iinfo(np.int64).max).to_numpy()
    for c in rng.sample(range(cpus), 2):
        on = every.filter(pl.col("cpu") == c)["ts"].to_numpy()
        if len(on) < 10:
            continue
        k = rng.randrange(5, len(on) - 5)
        prev, first = int(on[k - 1]), int(on[k])
        if prev == first:
            continue
        rows.append({"cpu": c, "lost": 7, "lost_unknown": 0, "ts": first, "prev_ts": prev})
        for i in range(truth.height):
            if c in win_cpus[i] and (ex[i] <= first and en[i] >= prev if timed else True):
                flags[i] = True
    del lo_t, hi_t
    lost = pl.DataFrame(rows, schema={"cpu": pl.Int32, "lost": pl.Int64, "lost_unknown": pl.Int64, "ts": pl.Int64,
                                      "prev_ts": pl.Int64})
    if not timed:
        lost = lost.drop("ts", "prev_ts")
    return truth.with_columns(pl.Series("inconclusive", flags)), lost
