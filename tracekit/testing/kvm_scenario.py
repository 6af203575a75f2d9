"""Synthetic KVM host traces with their ground truth, for the vPMU detectors (contract: the KVM scenario/detector
contract of issue 5; the event sequence follows Linux 6.18 ``arch/x86/kvm/{x86,pmu,lapic}.c``).

A vCPU thread (``CPU N/KVM``, one pid each, pinned to one CPU at a time) alternates guest time and VM-exit windows
(``kvm_exit`` … ``kvm_entry``). In a window KVM handles the exit (``kvm_msr``, ``kvm_apic`` …) and, in
``vcpu_enter_guest``, delivers pending PMIs: ``kvm_pmu_deliver_pmi`` → ``kvm_apic_local_deliver(APIC_LVTPC)`` →
``__apic_accept_irq`` (``kvm_apic_accept_irq``: NMI, or Fixed with the LVTPC vector) → the injection before entry
(``vmx_inject_nmi``/``svm_inject_nmi`` seen by the ``kvm_inj_nmi`` kprobe; ``kvm_inj_virq`` for a Fixed vector). As in
KVM, one NMI is injected per entry (a second pending NMI waits for an NMI-window exit) and a second Fixed PMI before
injection coalesces in the IRR (one ``kvm_inj_virq``). The guest's PMI handler then exits on its PMU MSR accesses and
re-arms LVTPC. Decoys: NMI IPIs (``kvm_apic_ipi`` + ``kvm_apic_accept_irq`` NMI, to another vCPU or to itself),
host NMIs (``nmi:nmi_handler``, exit reason EXCEPTION_NMI/nmi), timer interrupts on other Fixed vectors, and function
tracer hits whose *parent* is ``kvm_pmu_deliver_pmi``.

Ground truth is bookkeeping, never the rules' logic: every route event carries the id of the PMI it belongs to, and
a window's ``pmi_count`` is the number of distinct PMIs with a traced event in it (``sources``: their routes).
Lost events are made by really dropping every event of one CPU inside a window (its ``kvm_exit``/``kvm_entry`` kept):
those windows are the inconclusive ones.
"""

from __future__ import annotations

import bisect
import heapq
import os
import random
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ..formats import EventFormat
from .formats_extra import kvm_formats
from .tracedat_writer import LostEvents, write_tracedat

__all__ = ["Scenario", "build_kvm_scenario", "ROUTES", "TRUTH_SCHEMA", "KALLSYMS", "VMX", "SVM"]

ROUTES = ("deliver_pmi", "function", "apic_nmi", "lvtpc_fixed", "inj_nmi")
TRUTH_SCHEMA = {"pid": pl.Int32, "vcpu": pl.Int32, "cpu": pl.Int32, "exit_ts": pl.Int64, "entry_ts": pl.Int64,
                "exit_reason": pl.String, "pmi_count": pl.Int32, "sources": pl.List(pl.String),
                "inconclusive": pl.Boolean}
PMI_TRUTH_SCHEMA = {"pmi": pl.Int32, "pid": pl.Int32, "vcpu": pl.Int32, "route": pl.String, "event": pl.String,
                    "ts": pl.Int64, "cpu": pl.Int32, "window_exit_ts": pl.Int64, "dropped": pl.Boolean}
MSR_TRUTH_SCHEMA = {"pid": pl.Int32, "vcpu": pl.Int32, "ts": pl.Int64, "write": pl.Boolean, "msr": pl.UInt32,
                    "data": pl.UInt64, "pmu": pl.Boolean}
LVTPC_TRUTH_SCHEMA = {"pid": pl.Int32, "vcpu": pl.Int32, "ts": pl.Int64, "value": pl.UInt64, "masked": pl.Boolean,
                      "isa": pl.Int32}

# exit reasons: (VMX basic exit reason, name) — arch/x86/include/uapi/asm/vmx.h; SVM exit codes — svm.h
VMX = {"EXCEPTION_NMI": 0, "EXTERNAL_INTERRUPT": 1, "NMI_WINDOW": 8, "HLT": 12, "MSR_READ": 31, "MSR_WRITE": 32,
       "EPT_VIOLATION": 48, "PREEMPTION_TIMER": 52, "APIC_WRITE": 56}
SVM = {"EXCEPTION_NMI": 0x61, "EXTERNAL_INTERRUPT": 0x60, "NMI_WINDOW": 0x74, "HLT": 0x78, "MSR_READ": 0x7C,
       "MSR_WRITE": 0x7C, "EPT_VIOLATION": 0x400, "PREEMPTION_TIMER": 0x64, "APIC_WRITE": 0x7C}
SVM_NAMES = {0x61: "nmi", 0x60: "interrupt", 0x74: "iret", 0x78: "hlt", 0x7C: "msr", 0x400: "npf", 0x64: "vintr"}
# background mix of exits (kind, weight); handling time ranges in ns
_MIX = (("EXTERNAL_INTERRUPT", 30), ("MSR_WRITE", 25), ("EPT_VIOLATION", 15), ("HLT", 10), ("PREEMPTION_TIMER", 12),
        ("APIC_WRITE", 8))
_HANDLING = {"EXCEPTION_NMI": (1500, 6000), "EXTERNAL_INTERRUPT": (800, 5000), "NMI_WINDOW": (600, 2000),
             "HLT": (5000, 400_000), "MSR_READ": (500, 2000), "MSR_WRITE": (600, 4000),
             "EPT_VIOLATION": (1500, 30_000), "PREEMPTION_TIMER": (700, 3000), "APIC_WRITE": (700, 3000)}

_MIX_NAMES = tuple(k for k, _ in _MIX)
_MIX_WEIGHTS = tuple(w for _, w in _MIX)

# a plausible 6.18 x86 kallsyms: core kernel at 0xffffffff81…, kvm / kvm_intel / kvm_amd as modules
KALLSYMS: dict[str, tuple[int, str]] = {
    "_stext": (0xFFFFFFFF81000000, ""), "default_do_nmi": (0xFFFFFFFF81034560, ""),
    "nmi_handle": (0xFFFFFFFF810343A0, ""), "perf_event_nmi_handler": (0xFFFFFFFF8100C2B0, ""),
    "__schedule": (0xFFFFFFFF81E3A1C0, ""), "schedule": (0xFFFFFFFF81E3AB30, ""),
    "kvm_vcpu_ioctl": (0xFFFFFFFFC0A02A10, "kvm"), "kvm_arch_vcpu_ioctl_run": (0xFFFFFFFFC0A26B50, "kvm"),
    "vcpu_enter_guest": (0xFFFFFFFFC0A24E80, "kvm"), "kvm_pmu_handle_event": (0xFFFFFFFFC0A5D1F0, "kvm"),
    "kvm_pmu_deliver_pmi": (0xFFFFFFFFC0A5D3C0, "kvm"), "kvm_pmu_trigger_event": (0xFFFFFFFFC0A5D7A0, "kvm"),
    "kvm_apic_local_deliver": (0xFFFFFFFFC0A4B0D0, "kvm"), "__apic_accept_irq": (0xFFFFFFFFC0A4A6E0, "kvm"),
    "kvm_inject_nmi": (0xFFFFFFFFC0A1F210, "kvm"), "kvm_lapic_reg_write": (0xFFFFFFFFC0A4C9F0, "kvm"),
    "vmx_inject_nmi": (0xFFFFFFFFC0B0E6A0, "kvm_intel"), "vmx_handle_exit": (0xFFFFFFFFC0B12C40, "kvm_intel"),
    "svm_inject_nmi": (0xFFFFFFFFC0B81230, "kvm_amd"), "svm_handle_exit": (0xFFFFFFFFC0B84E10, "kvm_amd"),
}
IBT = 4                      # the function tracer's ip is the fentry call, after endbr64
LOCAL_TIMER_VECTOR = 0xEC
NMI_INTR_INFO = 0x80000202   # valid | NMI type | vector 2
APIC_LVTPC = 0x340
APIC_ICR = 0x300
APIC_EOI = 0xB0
APIC_DM_NMI = 0x400
APIC_LVT_MASKED = 1 << 16
INTEL_PMU = {"PERFEVTSEL0": 0x186, "PMC0": 0xC1, "FIXED_CTR_CTRL": 0x38D, "GLOBAL_STATUS": 0x38E,
             "GLOBAL_CTRL": 0x38F, "GLOBAL_OVF_CTRL": 0x390}
AMD_PMU = {"PERF_CTL0": 0xC0010200, "PERF_CTR0": 0xC0010201, "K7_EVNTSEL0": 0xC0010000, "K7_PERFCTR0": 0xC0010004,
           "GLOBAL_STATUS": 0xC0000300, "GLOBAL_CTL": 0xC0000301, "GLOBAL_STATUS_CLR": 0xC0000302}
OTHER_MSRS = (0x6E0, 0x48, 0x10, 0x1A0)  # TSC_DEADLINE, SPEC_CTRL, TSC, MISC_ENABLE
X2APIC_LVTPC = 0x834


def _pmu_msr(msr: int) -> bool:
    return msr in INTEL_PMU.values() or 0xC1 <= msr < 0xC9 or 0x186 <= msr < 0x18E or 0x309 <= msr < 0x30D or (
        0xC0010000 <= msr < 0xC0010008) or (0xC0010200 <= msr < 0xC001020C) or 0xC0000300 <= msr < 0xC0000304


@dataclass
class Scenario:
    """A generated KVM host trace and what is true about it.

    Attributes:
        events: frames keyed by ``system:event`` (``ts``, ``cpu``, ``common_pid``, ``seq``, the event's fields).
        formats: the formats to embed (Linux 6.18 + the kprobes).
        truth: every VM-exit window, :data:`TRUTH_SCHEMA` (the contract's schema), ordered by ``exit_ts``, ``pid``.
        pmis: every route event of every PMI, :data:`PMI_TRUTH_SCHEMA` (``dropped``: lost with the ring buffer).
        outside_pmis: PMIs with a traced event outside any window (before the thread's first exit).
        msr_writes: every ``kvm_msr`` the guest caused (reads too), :data:`MSR_TRUTH_SCHEMA`.
        lvtpc_writes: every guest write of APIC_LVTPC, :data:`LVTPC_TRUTH_SCHEMA`.
        lost: the missed-events marks the writer puts in the pages.
        kallsyms, cmdlines, cpus: what the file carries.
        params: the arguments the scenario was built with.
    """

    events: dict[str, pl.DataFrame]
    formats: dict[str, EventFormat]
    truth: pl.DataFrame
    pmis: pl.DataFrame
    outside_pmis: int
    msr_writes: pl.DataFrame
    lvtpc_writes: pl.DataFrame
    lost: list[LostEvents]
    kallsyms: str
    cmdlines: dict[int, str]
    cpus: int
    params: dict = field(default_factory=dict)

    @property
    def flagged(self) -> pl.DataFrame:
        """The windows ``multi-pmi-per-exit`` must report: more than one PMI and conclusive."""
        return self.truth.filter((pl.col("pmi_count") > 1) & ~pl.col("inconclusive"))

    @property
    def exit_stats(self) -> pl.DataFrame:
        """Completed VM-exits per vCPU thread and exit reason: ``count``, ``total_ns``, ``min_ns``, ``max_ns`` of
        the handling time (exit → entry), from the generated windows."""
        h = (pl.col("entry_ts") - pl.col("exit_ts")).alias("h")
        return (self.truth.filter(pl.col("entry_ts").is_not_null()).with_columns(h)
                .group_by("pid", "vcpu", "exit_reason")
                .agg(pl.len().cast(pl.Int64).alias("count"), pl.col("h").sum().alias("total_ns"),
                     pl.col("h").min().alias("min_ns"), pl.col("h").max().alias("max_ns"))
                .sort("pid", "exit_reason"))

    @property
    def inconclusive(self) -> pl.DataFrame:
        """The windows that overlap lost events (reported whatever their count)."""
        return self.truth.filter(pl.col("inconclusive"))

    def write(self, path: str | os.PathLike, version: int = 7, compression: str = "none") -> int:
        """Write the scenario as a trace.dat file (see :func:`write_tracedat`); returns the event count."""
        return write_tracedat(path, self.events, self.formats, version=version, compression=compression,
                              cpus=self.cpus, kallsyms=self.kallsyms, cmdlines=self.cmdlines, lost=self.lost,
                              uname="Linux kvm-host 6.18.0 x86_64")


class _Emitter:
    """Rows per event; every row gets a global ``seq`` (the order of equal timestamps)."""

    def __init__(self, formats: dict[str, EventFormat]):
        self.formats = formats
        self.rows: dict[str, list[tuple[int, int, int, int, dict]]] = {}
        self.seq = 0

    def __call__(self, name: str, ts: int, cpu: int, pid: int, /, **fields) -> int:
        self.seq += 1
        self.rows.setdefault(name, []).append((ts, cpu, pid, self.seq, fields))
        return self.seq

    def frames(self, dropped: set[int]) -> dict[str, pl.DataFrame]:
        out = {}
        for name, rows in self.rows.items():
            rows = [r for r in rows if r[3] not in dropped]
            fmt = self.formats[name]
            own = {f.name: f.dtype() for f in fmt.own_fields if f.size}
            cols: dict[str, list] = {k: [r[i] for r in rows] for i, k in enumerate(("ts", "cpu", "common_pid", "seq"))}
            for k, dt in own.items():
                default = "" if dt == pl.String else 0
                cols[k] = [r[4].get(k, default) for r in rows]
            schema = {"ts": pl.Int64, "cpu": pl.Int32, "common_pid": pl.Int32, "seq": pl.Int64, **own}
            out[name] = pl.DataFrame(cols, schema=schema, strict=False)
        return out


@dataclass
class _Vcpu:
    idx: int
    pid: int
    cpu: int
    isa: int
    fixed_vector: int | None          # LVTPC in Fixed mode with this vector, else NMI mode
    t: int = 0
    pending_nmi: list = field(default_factory=list)
    pending_virq: int | None = None
    forced: list = field(default_factory=list)   # exits the guest must take next: (kind, payload)
    windows: int = 0


def build_kvm_scenario(seed: int, *, vcpus: int = 4, cpus: int | None = None, duration_s: float = 0.05,
                       routes: tuple[str, ...] = ROUTES, isa: str = "vmx", exit_interval_us: float = 40.0,
                       pmi_probability: float = 0.05, double_pmi_rate: float = 0.3, ipi_nmi_decoys: float = 0.01,
                       host_nmis: float = 0.01, migrations: float = 0.005, lost_events: int = 2,
                       time_extends: int = 1, open_at_start: bool = True, nmi_injection: str = "queued",
                       lvtpc_vector: int = 0xF4, kprobe_system: str = "kprobes", start_ns: int = 10_000_000_000,
                       ) -> Scenario:
    """Generate a KVM host trace with known PMIs per VM-exit window.

    Args:
        seed: the random seed; the same arguments give the same scenario.
        vcpus: vCPU threads (``CPU 0/KVM`` …); cpus: host CPUs (default ``vcpus + 2``; spare ones take migrations).
        duration_s: traced time.
        routes: what the trace shows of a PMI (:data:`ROUTES`): ``deliver_pmi`` (kprobe), ``function`` (function
            tracer), ``apic_nmi``/``lvtpc_fixed`` (``kvm_apic_accept_irq``; Fixed mode also ``kvm_inj_virq``; with
            ``lvtpc_fixed``, vCPUs program LVTPC as a Fixed vector — all of them unless ``apic_nmi`` is also
            given, then every other one), ``inj_nmi`` (kprobe on the NMI injection).
        isa: "vmx" (Intel, ``isa`` 1) or "svm" (AMD, ``isa`` 2).
        exit_interval_us: mean guest time between exits.
        pmi_probability: chance that a window delivers PMIs; double_pmi_rate: of those, the share with two.
        ipi_nmi_decoys, host_nmis, migrations: per-window chance of an NMI IPI, a host NMI exit, a migration.
        lost_events: windows whose inner events are dropped (missed-events flag, some without a count).
        time_extends: long halts (≥ 2^27 ns without an event on that CPU).
        open_at_start: threads start inside an exit (events, then ``kvm_entry`` with no ``kvm_exit``).
        nmi_injection: "queued" (KVM: one NMI per entry, the next after an NMI-window exit) or "same_window"
            (each PMI's injection in its own window, to test the ``inj_nmi`` route alone).
        lvtpc_vector: the Fixed vector guests in Fixed mode program.
        kprobe_system: the group of the kprobes (``kprobes`` or ``probe`` …).
        start_ns: trace clock at the start.

    Returns:
        the :class:`Scenario`.
    """
    unknown = set(routes) - set(ROUTES)
    if unknown or isa not in ("vmx", "svm") or nmi_injection not in ("queued", "same_window"):
        from ..errors import ConfigError
        raise ConfigError(f"bad scenario arguments: routes {sorted(unknown)}, isa {isa!r}, {nmi_injection!r}")
    params = {k: v for k, v in locals().items() if k not in ("unknown",)}
    rng = random.Random(seed)
    cpus = cpus if cpus is not None else vcpus + 2
    formats = kvm_formats(kprobe_system=kprobe_system)
    pmi_event = f"{kprobe_system}:kvm_pmu_deliver_pmi"
    inj_event = f"{kprobe_system}:kvm_inj_nmi"
    emit = _Emitter(formats)
    sym = {k: v[0] for k, v in KALLSYMS.items()}
    isa_no = 1 if isa == "vmx" else 2
    codes = VMX if isa == "vmx" else SVM
    traced_accept = "apic_nmi" in routes or "lvtpc_fixed" in routes
    end = start_ns + int(duration_s * 1e9)
    qemu = 4000 + (seed % 97) * 10
    threads = []
    for i in range(vcpus):
        fixed = None
        if "lvtpc_fixed" in routes and ("apic_nmi" not in routes or i % 2 == 1):
            fixed = lvtpc_vector
        threads.append(_Vcpu(i, qemu + 1 + i, i, isa_no, fixed))
    free_cpus = set(range(vcpus, cpus))
    stays: list[tuple[int, int, int]] = []        # (cpu, from, to) a vCPU thread occupied a CPU
    stay_from = {i: start_ns for i in range(vcpus)}
    windows: list[dict] = []
    pmi_rows: list[dict] = []
    msr_rows: list[dict] = []
    lvtpc_rows: list[dict] = []
    chain_seq: dict[int, tuple[int, str, str]] = {}   # emitted seq → (pmi id, route, event)
    next_pmi = [0]
    current: list[int | None] = [None]            # the window being generated
    long_halts = set(rng.sample(range(vcpus), min(time_extends, vcpus)))

    def step(v: _Vcpu, lo: int = 150, hi: int = 900) -> int:
        v.t += int(rng.randrange(lo, hi))
        return v.t

    def route_event(v: _Vcpu, pmi: int, route: str, name: str, **fields) -> None:
        s = emit(name, step(v), v.cpu, v.pid, **fields)
        chain_seq[s] = (pmi, route, name)
        if current[0] is not None:
            windows[current[0]]["route_events"] += 1
        pmi_rows.append({"pmi": pmi, "pid": v.pid, "vcpu": v.idx, "route": route, "event": name, "ts": v.t,
                         "cpu": v.cpu, "seq": s})

    def deliver_pmi(v: _Vcpu) -> None:
        """kvm_pmu_deliver_pmi → kvm_apic_local_deliver(LVTPC) → __apic_accept_irq."""
        pmi = next_pmi[0]
        next_pmi[0] += 1
        if "deliver_pmi" in routes:
            route_event(v, pmi, "deliver_pmi", pmi_event, __probe_ip=sym["kvm_pmu_deliver_pmi"])
        if "function" in routes:
            route_event(v, pmi, "function", "ftrace:function", ip=sym["kvm_pmu_deliver_pmi"] + IBT,
                        parent_ip=sym["vcpu_enter_guest"] + 0x5A3)
            # callees of kvm_pmu_deliver_pmi: their parent_ip is inside it, which must not count
            emit("ftrace:function", step(v, 40, 120), v.cpu, v.pid, ip=sym["kvm_apic_local_deliver"] + IBT,
                 parent_ip=sym["kvm_pmu_deliver_pmi"] + 0x2F)
        if v.fixed_vector is None:
            if traced_accept and "apic_nmi" in routes:
                route_event(v, pmi, "apic_nmi", "kvm:kvm_apic_accept_irq", apicid=v.idx, dm=APIC_DM_NMI, tm=0, vec=0)
            v.pending_nmi.append(pmi)
            if nmi_injection == "same_window":
                inject(v)
        else:
            route_event(v, pmi, "lvtpc_fixed", "kvm:kvm_apic_accept_irq", apicid=v.idx, dm=0, tm=0,
                        vec=v.fixed_vector)
            if v.pending_virq is None:
                v.pending_virq = pmi

    def inject(v: _Vcpu) -> None:
        """kvm_check_and_inject_events: one NMI per entry, then the pending Fixed vector."""
        if v.pending_nmi:
            pmi = v.pending_nmi.pop(0)
            if "inj_nmi" in routes:
                route_event(v, pmi, "inj_nmi", inj_event,
                            __probe_ip=sym["vmx_inject_nmi" if isa == "vmx" else "svm_inject_nmi"])
            v.forced.extend(_handler_exits(v))
            if v.pending_nmi and nmi_injection == "queued":
                v.forced.insert(0, ("NMI_WINDOW", None))
        if v.pending_virq is not None:
            pmi = v.pending_virq
            v.pending_virq = None
            route_event(v, pmi, "lvtpc_fixed", "kvm:kvm_inj_virq", vector=v.fixed_vector, soft=False,
                        reinjected=False)
            v.forced.extend(_handler_exits(v))

    def _handler_exits(v: _Vcpu) -> list:
        """The guest PMI handler's intercepted accesses: status, counters, LVTPC re-arm, global enable."""
        lvt = APIC_DM_NMI if v.fixed_vector is None else v.fixed_vector
        if isa == "vmx":
            seq = [("MSR_READ", (INTEL_PMU["GLOBAL_STATUS"], 1)), ("MSR_WRITE", (INTEL_PMU["GLOBAL_CTRL"], 0)),
                   ("MSR_WRITE", (INTEL_PMU["GLOBAL_OVF_CTRL"], 1)),
                   ("MSR_WRITE", (INTEL_PMU["PMC0"], (1 << 48) - 100_000)), ("APIC_WRITE", (APIC_LVTPC, lvt)),
                   ("MSR_WRITE", (INTEL_PMU["GLOBAL_CTRL"], 0x70000000F))]
        else:
            seq = [("MSR_READ", (AMD_PMU["GLOBAL_STATUS"], 1)), ("MSR_WRITE", (AMD_PMU["GLOBAL_STATUS_CLR"], 1)),
                   ("MSR_WRITE", (AMD_PMU["PERF_CTR0"], (1 << 48) - 100_000)), ("APIC_WRITE", (APIC_LVTPC, lvt))]
        if v.fixed_vector is not None:
            seq.append(("APIC_WRITE", (APIC_EOI, 0)))
        return seq

    def msr(v: _Vcpu, write: bool, ecx: int, data: int) -> None:
        s_ts = step(v)
        emit("kvm:kvm_msr", s_ts, v.cpu, v.pid, write=int(write), ecx=ecx, data=data, exception=0)
        msr_rows.append({"pid": v.pid, "vcpu": v.idx, "ts": s_ts, "write": write, "msr": ecx, "data": data,
                         "pmu": _pmu_msr(ecx)})

    def apic_write(v: _Vcpu, reg: int, val: int) -> None:
        if isa == "svm":         # x2APIC: the write is an MSR write first
            msr(v, True, 0x800 + (reg >> 4), val)
        emit("kvm:kvm_apic", step(v), v.cpu, v.pid, rw=1, reg=reg, val=val)
        if reg == APIC_LVTPC:
            lvtpc_rows.append({"pid": v.pid, "vcpu": v.idx, "ts": v.t, "value": val,
                               "masked": bool(val & APIC_LVT_MASKED), "isa": isa_no})

    def migrate(v: _Vcpu) -> None:
        if not free_cpus:
            return
        dest = rng.choice(sorted(free_cpus))
        comm = f"CPU {v.idx}/KVM"
        emit("sched:sched_switch", step(v), v.cpu, v.pid, prev_comm=comm, prev_pid=v.pid, prev_prio=120,
             prev_state=0, next_comm=f"migration/{v.cpu}", next_pid=20 + 7 * v.cpu, next_prio=0)
        emit("sched:sched_migrate_task", step(v), v.cpu, 20 + 7 * v.cpu, comm=comm, pid=v.pid, prio=120,
             orig_cpu=v.cpu, dest_cpu=dest)
        free_cpus.add(v.cpu)
        free_cpus.discard(dest)
        stays.append((v.cpu, stay_from[v.idx], v.t))
        stay_from[v.idx] = v.t
        v.cpu = dest
        emit("sched:sched_switch", step(v, 2000, 9000), v.cpu, 0, prev_comm=f"swapper/{dest}", prev_pid=0,
             prev_prio=120, prev_state=0, next_comm=comm, next_pid=v.pid, next_prio=120)

    def handle(v: _Vcpu, kind: str, payload) -> None:
        """The exit's own events."""
        if kind in ("MSR_WRITE", "MSR_READ"):
            if payload is None:
                if rng.random() < 0.5:
                    pmu = INTEL_PMU if isa == "vmx" else AMD_PMU
                    name = rng.choice(sorted(pmu))
                    payload = (pmu[name], int(rng.randrange(0, 1 << 40)))
                else:
                    payload = (rng.choice(OTHER_MSRS), int(rng.randrange(0, 1 << 40)))
            msr(v, kind == "MSR_WRITE", *payload)
        elif kind == "APIC_WRITE":
            if payload is None:
                payload = (APIC_EOI, 0)
            apic_write(v, *payload)
        elif kind == "EXCEPTION_NMI":
            emit("nmi:nmi_handler", step(v, 500, 2000), v.cpu, v.pid, handler=sym["perf_event_nmi_handler"],
                 delta_ns=int(rng.randrange(800, 5000)), handled=1)
        elif kind in ("PREEMPTION_TIMER", "EXTERNAL_INTERRUPT") and traced_accept and rng.random() < 0.5:
            # the host timer fires a Fixed interrupt into the guest: another vector, never a PMI
            emit("kvm:kvm_apic_accept_irq", step(v), v.cpu, v.pid, apicid=v.idx, dm=0, tm=0, vec=LOCAL_TIMER_VECTOR)
            if "lvtpc_fixed" in routes:
                emit("kvm:kvm_inj_virq", step(v), v.cpu, v.pid, vector=LOCAL_TIMER_VECTOR, soft=False,
                     reinjected=False)

    def ipi_decoy(v: _Vcpu) -> None:
        target = v.idx if (vcpus == 1 or rng.random() < 0.3) else rng.choice([i for i in range(vcpus)
                                                                              if i != v.idx])
        apic_write(v, APIC_ICR, APIC_DM_NMI)
        emit("kvm:kvm_apic_ipi", step(v), v.cpu, v.pid, icr_low=APIC_DM_NMI, dest_id=target)
        emit("kvm:kvm_apic_accept_irq", step(v), v.cpu, v.pid, apicid=target, dm=APIC_DM_NMI, tm=0, vec=0)

    def exit_fields(v: _Vcpu, kind: str) -> dict:
        code = codes[kind]
        intr = 0x800000EC if kind == "EXTERNAL_INTERRUPT" else (NMI_INTR_INFO if kind == "EXCEPTION_NMI" else 0)
        return {"exit_reason": code, "guest_rip": 0xFFFFFFFF81000000 + int(rng.randrange(0, 1 << 22)) * 4,
                "isa": isa_no, "info1": int(rng.randrange(0, 1 << 32)) if kind == "EPT_VIOLATION" else 0,
                "info2": 0, "intr_info": intr, "error_code": 0, "vcpu_id": v.idx, "requests": 0}

    def reason_name(kind: str) -> str:
        return kind if isa == "vmx" else SVM_NAMES[codes[kind]]

    def window(v: _Vcpu, first: bool) -> None:
        """One VM-exit of ``v`` at ``v.t`` (or, ``first``, the exit in progress when tracing started)."""
        forced = bool(v.forced)
        if forced:        # the guest's PMI handler is running: its counters are stopped, no new PMI
            kind, payload = v.forced.pop(0)
        elif v.windows == 0:        # the guest's perf sets LVTPC up masked, then arms it (perf_events_lapic_init)
            lvt = APIC_DM_NMI if v.fixed_vector is None else v.fixed_vector
            kind, payload = "APIC_WRITE", (APIC_LVTPC, lvt | APIC_LVT_MASKED)
            v.forced.append(("APIC_WRITE", (APIC_LVTPC, lvt)))
        else:
            kind, payload = rng.choices(_MIX_NAMES, _MIX_WEIGHTS)[0], None
            if rng.random() < host_nmis:
                kind = "EXCEPTION_NMI"
        wid = None
        if not first:
            rec = exit_fields(v, kind)
            s = emit("kvm:kvm_exit", v.t, v.cpu, v.pid, **rec)
            wid = len(windows)
            windows.append({"pid": v.pid, "vcpu": v.idx, "cpu": v.cpu, "exit_ts": v.t, "entry_ts": None,
                            "exit_reason": reason_name(kind), "exit_seq": s, "cpus": {v.cpu}, "migrated": False, "route_events": 0})
        v.windows += 1
        current[0] = wid
        lo, hi = _HANDLING[kind]
        budget_end = v.t + int(rng.randrange(lo, hi))
        long_halt = kind == "HLT" and v.idx in long_halts and wid is not None and v.t > start_ns + (end - start_ns) // 3
        if wid is not None and rng.random() < migrations and not long_halt:
            migrate(v)
            windows[wid]["cpus"].add(v.cpu)
            windows[wid]["migrated"] = True
        handle(v, kind, payload)
        if long_halt:
            long_halts.discard(v.idx)
            comm = f"CPU {v.idx}/KVM"
            emit("sched:sched_switch", step(v), v.cpu, v.pid, prev_comm=comm, prev_pid=v.pid, prev_prio=120,
                 prev_state=1, next_comm=f"swapper/{v.cpu}", next_pid=0, next_prio=120)
            v.t += int(rng.randrange(1 << 27, 3 << 27))
            emit("sched:sched_switch", v.t, v.cpu, 0, prev_comm=f"swapper/{v.cpu}", prev_pid=0, prev_prio=120,
                 prev_state=0, next_comm=comm, next_pid=v.pid, next_prio=120)
        if not forced and rng.random() < pmi_probability:
            deliver_pmi(v)
            if rng.random() < double_pmi_rate:
                deliver_pmi(v)
        if rng.random() < ipi_nmi_decoys and traced_accept:
            ipi_decoy(v)
        inject(v)
        v.t = max(v.t + 200, budget_end)
        if v.t >= end:
            return
        s = emit("kvm:kvm_entry", v.t, v.cpu, v.pid, vcpu_id=v.idx, rip=0xFFFFFFFF81000000, immediate_exit=False,
                 intr_info=0, error_code=0)
        if wid is not None:
            windows[wid]["entry_ts"] = v.t
            windows[wid]["inner"] = s - windows[wid]["exit_seq"] - 1

    # the event loop: the next exit of every vCPU, in time order
    heap = []
    for v in threads:
        v.t = start_ns + int(rng.randrange(0, 20_000))
        if open_at_start and v.idx % 2 == 0:
            window(v, first=True)
        heapq.heappush(heap, (v.t + int(rng.expovariate(1 / (exit_interval_us * 1000))) + 1000, v.idx))
    while heap:
        t, i = heapq.heappop(heap)
        v = threads[i]
        if t >= end:
            continue
        v.t = t
        window(v, first=False)
        if v.t >= end:
            continue
        gap = 1500 + int(rng.randrange(0, 1500)) if v.forced else int(rng.expovariate(1 / (exit_interval_us * 1000))) + 500
        heapq.heappush(heap, (v.t + gap, i))
    # host NMIs on idle CPUs (pid 0): never a PMI of a vCPU
    stays.extend((v.cpu, stay_from[v.idx], 1 << 62) for v in threads)
    for c in range(cpus):
        busy = [(a, b) for cpu, a, b in stays if cpu == c]
        for t in np.sort([rng.randrange(start_ns, end) for _ in range(int(host_nmis * 100) + 1)]):
            if any(a - 10_000 <= t <= b + 10_000 for a, b in busy):
                continue
            emit("nmi:nmi_handler", int(t), c, 0, handler=sym["perf_event_nmi_handler"],
                 delta_ns=int(rng.randrange(800, 5000)), handled=1)
    return _finish(emit, windows, pmi_rows, msr_rows, lvtpc_rows, chain_seq, threads, rng, lost_events, formats,
                   cpus, qemu, params)


def _finish(emit, windows, pmi_rows, msr_rows, lvtpc_rows, chain_seq, threads, rng, lost_events, formats, cpus,
            qemu, params) -> Scenario:
    """Drop the lost events, then count the PMIs each window shows."""
    all_seq_ts = {r[3]: (r[0], r[1]) for rows in emit.rows.values() for r in rows}
    dropped: set[int] = set()
    lost: list[LostEvents] = []
    inconclusive: set[int] = set()
    candidates = [i for i, w in enumerate(windows) if w["entry_ts"] is not None and not w["migrated"]
                  and w.get("inner", 0) > 0]
    by_cpu: dict[int, list[tuple[int, int]]] = {}
    for s, (t, c) in all_seq_ts.items():
        by_cpu.setdefault(c, []).append((t, s))
    with_pmis = {i for i in candidates if windows[i]["route_events"]}
    picks = rng.sample(sorted(with_pmis), min(lost_events // 2, len(with_pmis)))
    rest = [i for i in candidates if i not in picks]
    picks += rng.sample(rest, min(lost_events - len(picks), len(rest)))
    for i in picks:
        w = windows[int(i)]
        c = w["cpu"]
        inner = sorted((t, s) for t, s in by_cpu[c] if w["exit_ts"] < t < w["entry_ts"])
        if not inner:
            continue
        # the ring buffer overflowed in the first part of the window: what follows on that CPU is kept. The cut
        # never splits a PMI's events inside the window (its remains could not be told from another PMI's)
        chains = [chain_seq.get(sq, (None,))[0] for _, sq in inner]
        cuts = [k for k in range(1, len(inner) + 1)
                if not ({c for c in chains[:k] if c is not None} & {c for c in chains[k:] if c is not None})]
        cut = rng.choice(cuts)
        gone = [s for _, s in inner[:cut]]
        resume = inner[cut][0] if cut < len(inner) else w["entry_ts"]
        dropped.update(gone)
        count = None if len(lost) % 3 == 2 else len(gone)
        lost.append(LostEvents(c, resume, count))
        inconclusive.add(int(i))
    # windows per thread, to place each route event
    win_of: dict[int, list[tuple[int, int, int]]] = {}
    for i, w in enumerate(windows):
        win_of.setdefault(w["pid"], []).append((w["exit_ts"], w["entry_ts"] if w["entry_ts"] is not None else 1 << 62,
                                                i))
    starts = {pid: [a for a, _, _ in ws] for pid, ws in win_of.items()}
    counts: dict[int, dict[int, set[str]]] = {}
    outside: set[int] = set()
    for r in pmi_rows:
        r["dropped"] = r["seq"] in dropped
        r["window_exit_ts"] = None
        if r["dropped"]:
            continue
        k = bisect.bisect_right(starts.get(r["pid"], []), r["ts"]) - 1
        if k >= 0 and win_of[r["pid"]][k][1] >= r["ts"]:
            a, _, i = win_of[r["pid"]][k]
            r["window_exit_ts"] = a
            counts.setdefault(i, {}).setdefault(r["pmi"], set()).add(r["route"])
        else:
            outside.add(r["pmi"])
    rows = []
    for i, w in enumerate(windows):
        pm = counts.get(i, {})
        rows.append({"pid": w["pid"], "vcpu": w["vcpu"], "cpu": w["cpu"], "exit_ts": w["exit_ts"],
                     "entry_ts": w["entry_ts"], "exit_reason": w["exit_reason"], "pmi_count": len(pm),
                     "sources": sorted(set().union(*pm.values())) if pm else [],
                     "inconclusive": i in inconclusive})
    truth = pl.DataFrame(rows, schema=TRUTH_SCHEMA).sort("exit_ts", "pid")
    pmis = pl.DataFrame([{k: r[k] for k in PMI_TRUTH_SCHEMA} for r in pmi_rows], schema=PMI_TRUTH_SCHEMA)
    kallsyms = "".join(f"{a:016x} {'T' if not m else 't'} {n}{chr(9) + '[' + m + ']' if m else ''}\n"
                       for n, (a, m) in sorted(KALLSYMS.items(), key=lambda kv: kv[1][0]))
    cmdlines = {qemu: "qemu-system-x86"}
    cmdlines.update({v.pid: f"CPU {v.idx}/KVM" for v in threads})
    return Scenario(events=emit.frames(dropped), formats=formats, truth=truth, pmis=pmis, outside_pmis=len(outside),
                    msr_writes=pl.DataFrame(msr_rows, schema=MSR_TRUTH_SCHEMA),
                    lvtpc_writes=pl.DataFrame(lvtpc_rows, schema=LVTPC_TRUTH_SCHEMA), lost=lost, kallsyms=kallsyms,
                    cmdlines=cmdlines, cpus=cpus, params=params)
