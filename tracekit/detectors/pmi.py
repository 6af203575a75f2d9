"""How a synthesized PMI shows up in a host trace, and which VM-exit window it falls in.

Implements the KVM detector contract (routes, stages, windows, lost events) shared with the scenario builder in
:mod:`tracekit.testing`. Upstream Linux has no ``kvm_pmu`` tracepoint, so a PMI that KVM synthesizes into a vCPU is
seen through whatever the engineer enabled; each way is a *route*:

``deliver_pmi``  a kprobe on ``kvm_pmu_deliver_pmi`` (any system) or an event named ``kvm_pmu*pmi*`` / ``kvm_pmi*``;
``function``     ``ftrace:function`` whose ``ip`` resolves through the trace's kallsyms to ``kvm_pmu_deliver_pmi``;
``apic_nmi``     ``kvm:kvm_apic_accept_irq`` with NMI delivery mode (``(dm >> 8) & 7 == 4``) that no NMI IPI of the
                 same window caused (the last ``kvm_apic_ipi`` before it, NMI mode, aimed at that APIC);
``inj_nmi``      a ``kvm_inj_nmi`` event (kprobe or out-of-tree tracepoint, any system);
``lvtpc_fixed``  ``kvm_apic_accept_irq`` Fixed-mode delivery, or ``kvm_inj_virq``, of the guest's LVTPC vector (learnt
                 per vCPU thread from ``kvm_apic`` writes of ``APIC_LVTPC`` in Fixed mode, or the ``lvtpc_vector``
                 option).

A ``kvm_apic_accept_irq`` counts only when it is aimed at the thread's own vCPU: ``__apic_accept_irq`` traces
``vcpu->vcpu_id`` of the *target* (the field is named ``apicid``), while a PMI is always delivered to the vCPU's own
LVTPC; an accept for another vCPU is an IPI this thread sent (an NMI one is kept in ``decoys`` with a null
``ipi_ts``), even when its ``kvm_apic_ipi`` was lost.

One PMI seen through several routes counts once. Every route event has a *stage* (delivery 0, APIC 1, injection 2);
within a window, a new PMI starts at an event whose stage is lower than the previous event's, or equal to it and of a
kind already seen in the current PMI (``kvm_pmu_deliver_pmi`` seen by a kprobe and by the function tracer is one call;
the same kind twice is two). ``kvm_apic_accept_irq`` Fixed and the ``kvm_inj_virq`` that follows it are stages 1 and
2 of one PMI. (The contract's letter — "equal stage with the same route" — would count a kprobe and a function-tracer
hit of two back-to-back calls, d f d f, as one PMI; kinds alternating in pairs count them as two.)

KVM injects one NMI per entry; a second pending NMI is injected after an NMI-window exit, so its ``kvm_inj_nmi`` lands
in a later window, where it counts as a PMI of its own (:func:`_queued_injections`, a FIFO per thread).

Windows and lost events are :mod:`tracekit.detectors.kvm_windows`: a window runs from a ``kvm_exit`` to the next
``kvm_entry`` of the same thread (``common_pid``), across CPU migrations; it is *inconclusive* when a lost-event mark
overlaps its thread's stay on that CPU during it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ..errors import ConfigError
from ..model import Trace
from .kvm_windows import assign_windows, collect, columns, exit_windows, inconclusive, lost_marks
from .kvm_windows import presence as windows_presence

__all__ = [
    "ROUTES",
    "STAGES",
    "WINDOW_SCHEMA",
    "PMI_SCHEMA",
    "PmiAnalysis",
    "route_events",
    "exit_windows",
    "lost_marks",
    "analyse_pmis",
    "KVM_PMI_HINT",
    "assign_windows",
    "config_vector",
]

ROUTES = ("deliver_pmi", "function", "apic_nmi", "lvtpc_fixed", "inj_nmi")
STAGES = {"deliver_pmi": 0, "function": 0, "apic_nmi": 1, "lvtpc_fixed": 1, "inj_nmi": 2}

# Kinds refine routes: lvtpc_fixed is seen at the APIC (stage 1) and again when injected (stage 2).
_KINDS = {  # kind → (route, stage)
    0: ("deliver_pmi", 0),
    1: ("function", 0),
    2: ("apic_nmi", 1),
    3: ("lvtpc_fixed", 1),
    4: ("inj_nmi", 2),
    5: ("lvtpc_fixed", 2),
}

WINDOW_SCHEMA = {
    "pid": pl.Int32,
    "vcpu": pl.Int32,
    "cpu": pl.Int32,
    "exit_ts": pl.Int64,
    "entry_ts": pl.Int64,
    "exit_reason": pl.String,
    "pmi_count": pl.Int32,
    "sources": pl.List(pl.String),
    "inconclusive": pl.Boolean,
}
"""One row per VM-exit window (the contract's flagged-exit schema, in this column order)."""

PMI_SCHEMA = {
    "ts": pl.Int64,
    "pid": pl.Int32,
    "cpu": pl.Int32,
    "route": pl.String,
    "event": pl.String,
    "stage": pl.Int8,
    "window": pl.UInt32,
    "pmi": pl.UInt32,
}
"""Every route event counted: ``window`` is the row of :attr:`PmiAnalysis.windows` it falls in (null outside any
window), ``pmi`` numbers the unified PMIs (events of one PMI share it)."""

DECOY_SCHEMA = {"ts": pl.Int64, "pid": pl.Int32, "cpu": pl.Int32, "apicid": pl.UInt32, "ipi_ts": pl.Int64,
                "window": pl.UInt32}

APIC_LVTPC = 0x340
LVT_MASKED = 1 << 16
DM_FIXED = 0
DM_NMI = 4
PMI_SYMBOL = "kvm_pmu_deliver_pmi"

KVM_PMI_HINT = (
    "echo 'p:kprobes/kvm_pmu_deliver_pmi kvm_pmu_deliver_pmi' >> /sys/kernel/tracing/kprobe_events && "
    "trace-cmd record -e kvm:kvm_exit -e kvm:kvm_entry -e kvm:kvm_apic_accept_irq -e kvm:kvm_apic_ipi "
    "-e kvm:kvm_inj_virq -e kvm:kvm_apic -e kvm:kvm_msr -e kprobes:kvm_pmu_deliver_pmi -e sched:sched_switch "
    "-e sched:sched_migrate_task"
)

_DELIVER_NAME = re.compile(r"^kvm_(?:pmi\w*|pmu\w*pmi\w*)$")
_RETURN_NAME = re.compile(r"(?:__return|_ret|_exit)$")
_INJ_NMI_NAME = re.compile(r"^kvm_inj_nmi\w*$")
_I32 = pl.Int32
_EMPTY_EVENTS = {"ts": pl.Int64, "cpu": pl.Int32, "pid": pl.Int32, "event": pl.String, "kind": pl.Int8,
                 "seq": pl.UInt32}


@dataclass
class PmiAnalysis:
    """What :func:`analyse_pmis` found in one trace.

    Attributes:
        windows: every VM-exit window, :data:`WINDOW_SCHEMA`, ordered by ``exit_ts`` then ``pid``; its row number is
            the window id used by ``pmis``.
        isa: per window, the ``kvm_exit`` ``isa`` (1 VMX Intel, 2 SVM AMD), aligned with ``windows``.
        pmis: every counted route event, :data:`PMI_SCHEMA`.
        decoys: ``kvm_apic_accept_irq`` NMIs an NMI IPI caused (not counted).
        outside_pmis: unified PMIs outside any window (thread in guest mode, or before its first exit).
        routes_present: the routes the trace could show.
        notes: what could not be used and why.
    """

    windows: pl.DataFrame
    isa: pl.Series
    pmis: pl.DataFrame
    decoys: pl.DataFrame
    outside_pmis: int
    routes_present: list[str]
    notes: list[str] = field(default_factory=list)


def _short(key: str) -> str:
    return key.rsplit(":", 1)[-1]


def route_events(trace: Trace) -> dict[str, list[str]]:
    """Event keys (``system:event``) of ``trace`` that can show a PMI, by route name.

    ``apic_nmi`` and ``lvtpc_fixed`` share ``kvm_apic_accept_irq``; ``lvtpc_fixed`` also uses ``kvm_inj_virq``.
    """
    out: dict[str, list[str]] = {r: [] for r in ROUTES}
    for key in trace.frames:
        s = _short(key)
        if _DELIVER_NAME.match(s) and not _RETURN_NAME.search(s):
            out["deliver_pmi"].append(key)
        elif _INJ_NMI_NAME.match(s) and not _RETURN_NAME.search(s):
            out["inj_nmi"].append(key)
        elif s == "function" and key.split(":")[0] in ("ftrace", "function", s):
            out["function"].append(key)
        elif s == "kvm_apic_accept_irq":
            out["apic_nmi"].append(key)
            out["lvtpc_fixed"].append(key)
        elif s == "kvm_inj_virq":
            out["lvtpc_fixed"].append(key)
    return out


def _common(trace: Trace, key: str, kind: int, extra: dict[str, pl.Expr] | None = None,
            where: pl.Expr | None = None) -> pl.DataFrame:
    """Route event ``key`` as (seq, ts, cpu, pid, event, kind, extra…): only these columns are read, rows kept by
    ``where`` (pushed into the scan of a converted dataset)."""
    cols = {"ts": pl.col("ts").cast(pl.Int64, strict=False), "cpu": pl.col("cpu").cast(_I32, strict=False),
            "pid": pl.col("common_pid").cast(_I32, strict=False), "event": pl.lit(key, pl.String),
            "kind": pl.lit(kind, pl.Int8), **(extra or {})}
    return collect(columns(trace, key, cols, where).with_row_index("seq"))


def _symbol_ranges(trace: Trace, name: str) -> list[tuple[int, int]]:
    """Address ranges [start, next symbol) of ``name`` and its compiler-suffixed clones (``name.isra.0``)."""
    ks = trace.kallsyms
    if ks is None or not len(ks):
        return []
    names = pl.Series(ks.names, dtype=pl.String)
    hit = ((names == name) | names.str.starts_with(name + ".")).fill_null(False).to_numpy()
    out = []
    for i in np.flatnonzero(hit):  # a symbol and its few compiler clones
        start = int(ks.addrs[i])
        j = np.searchsorted(ks.addrs, ks.addrs[i], side="right")
        end = int(ks.addrs[j]) if j < len(ks.addrs) else start + 1
        out.append((start, end))
    return out


def _lvtpc_writes(trace: Trace) -> pl.DataFrame:
    """``kvm_apic`` writes of APIC_LVTPC: ts, pid, val (empty when the event is absent)."""
    schema = {"ts": pl.Int64, "pid": pl.Int32, "cpu": pl.Int32, "val": pl.UInt64}
    if not trace.has("kvm_apic"):
        return pl.DataFrame(schema=schema)
    return collect(columns(trace, "kvm_apic", {"ts": pl.col("ts").cast(pl.Int64, strict=False),
                                               "pid": pl.col("common_pid").cast(_I32, strict=False),
                                               "cpu": pl.col("cpu").cast(_I32, strict=False),
                                               "val": pl.col("val").cast(pl.UInt64, strict=False)},
                           (pl.col("rw") != 0) & (pl.col("reg") == APIC_LVTPC)))


def _candidates(trace: Trace, routes: dict[str, list[str]], lvtpc_vector: int | None, vcpu_of: pl.DataFrame,
                notes: list[str]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Route events before window assignment (ts, cpu, pid, event, kind, seq), NMI ``kvm_apic_accept_irq`` rows
    for the thread's own vCPU with their ``apicid`` (for the IPI check), and NMI accepts aimed at another vCPU.

    ``vcpu_of``: pid → vcpu of the vCPU threads (from the windows)."""
    parts: list[pl.DataFrame] = []
    nmi_accepts = pl.DataFrame(schema={**_EMPTY_EVENTS, "apicid": pl.UInt32, "vec": pl.UInt8})
    elsewhere = nmi_accepts.clone()
    for key in routes["deliver_pmi"]:
        parts.append(_common(trace, key, 0))
    for key in routes["inj_nmi"]:
        parts.append(_common(trace, key, 4))
    for key in routes["function"]:
        ranges = _symbol_ranges(trace, PMI_SYMBOL)
        if not ranges:
            notes.append(f"{key} is present but {PMI_SYMBOL} is not in the trace's kallsyms: route 'function' "
                         "not used")
            continue
        ip = pl.col("ip").cast(pl.UInt64, strict=False)
        hit = pl.any_horizontal([(ip >= pl.lit(lo, pl.UInt64)) & (ip < pl.lit(hi, pl.UInt64)) for lo, hi in ranges])
        parts.append(_common(trace, key, 1, where=hit))
    lvtpc = _lvtpc_writes(trace)
    for key in dict.fromkeys(routes["apic_nmi"] + routes["lvtpc_fixed"]):
        s = _short(key)
        if s == "kvm_apic_accept_irq":
            dm = (pl.col("dm").cast(pl.Int64, strict=False) // 256) % 8
            acc = _common(trace, key, 2, {"apicid": pl.col("apicid").cast(pl.UInt32, strict=False), "vec": pl.col("vec").cast(pl.UInt8, strict=False),
                                       "dm": dm})
            # aimed at the thread's own vCPU (or the thread's vCPU is unknown)
            vcpu = pl.col("pid").replace_strict(vcpu_of["pid"], vcpu_of["_vcpu"], default=None,
                                                return_dtype=pl.Int64)
            own = (vcpu.is_null() | (pl.col("apicid").cast(pl.Int64) == vcpu)).fill_null(True)
            if key in routes["apic_nmi"]:
                nmi = acc.filter(pl.col("dm") == DM_NMI).drop("dm")
                nmi_accepts, elsewhere = nmi.filter(own), nmi.filter(~own)
            acc = acc.filter(own)
            if key in routes["lvtpc_fixed"]:
                fixed = acc.filter(pl.col("dm") == DM_FIXED).with_columns(pl.lit(3, pl.Int8).alias("kind"))
                parts.append(_lvtpc_match(fixed, lvtpc, lvtpc_vector).drop("apicid", "dm"))
        else:  # kvm_inj_virq: a real interrupt (not INTn), injected for the first time
            first = ~pl.col("soft").cast(pl.Boolean, strict=False) & ~pl.col("reinjected").cast(pl.Boolean, strict=False)
            virq = _common(trace, key, 5, {"vec": pl.col("vector").cast(pl.UInt8, strict=False)}, where=first)
            parts.append(_lvtpc_match(virq, lvtpc, lvtpc_vector))
    parts = [p.select(list(_EMPTY_EVENTS)) for p in parts]
    cands = pl.concat(parts) if parts else pl.DataFrame(schema=_EMPTY_EVENTS)
    return cands, nmi_accepts, elsewhere


def _lvtpc_match(df: pl.DataFrame, lvtpc: pl.DataFrame, vector: int | None) -> pl.DataFrame:
    """Rows of ``df`` (with ``vec``) whose vector is the thread's LVTPC vector in Fixed mode at that time: the last
    LVTPC write of the same thread before the event, or its first one after (the guest may have programmed LVTPC
    before the trace started and rewrites it in its PMI handler)."""
    if vector is not None:
        return df.filter(pl.col("vec") == vector).drop("vec")
    if lvtpc.is_empty() or df.is_empty():
        return df.clear().drop("vec")
    w = lvtpc.sort("ts").select("ts", "pid", pl.col("val").alias("lvt"))
    d = df.sort("ts")
    back = d.join_asof(w, on="ts", by="pid", strategy="backward", check_sortedness=False)
    fwd = d.join_asof(w, on="ts", by="pid", strategy="forward", check_sortedness=False).select("lvt")
    lvt = back["lvt"].fill_null(fwd["lvt"])
    out = back.with_columns(lvt=lvt)
    fixed = ((pl.col("lvt") // 256) % 8 == DM_FIXED) & ((pl.col("lvt") % 256) == pl.col("vec").cast(pl.UInt64, strict=False))
    return out.filter(fixed.fill_null(False)).drop("lvt", "vec")


def _unify(ev: pl.DataFrame) -> pl.DataFrame:
    """Mark the events that start a PMI in route events sorted by (group, ts, stage, kind): adds ``new``.

    Within a run of equal stages the kinds alternate (two kinds per stage at most): a kind repeated back to back
    starts a segment, and inside a segment every second event starts a PMI. The run's first event starts one when
    the stage went down (or the group begins), else it continues the PMI of the lower stages before it.
    """
    stage = pl.col("stage")
    kind = pl.col("kind")
    same_group = pl.col("group") == pl.col("group").shift(1)
    ps = pl.when(same_group).then(stage.shift(1)).otherwise(None)
    pk = pl.when(same_group).then(kind.shift(1)).otherwise(None)
    ev = ev.with_columns(ps.alias("_ps"), pk.alias("_pk"), pl.int_range(pl.len(), dtype=pl.Int64).alias("_i"))
    run_start = pl.col("_ps").is_null() | (stage != pl.col("_ps"))
    forced = pl.col("_ps").is_not_null() & (stage == pl.col("_ps")) & (kind == pl.col("_pk"))
    seg_first = pl.when(run_start | forced).then(pl.col("_i")).otherwise(None).forward_fill()
    ev = ev.with_columns((pl.col("_i") - seg_first).alias("_pos"))
    new = (pl.when(pl.col("_pos") > 0).then(pl.col("_pos") % 2 == 0)
           .otherwise(pl.col("_ps").is_null() | (stage < pl.col("_ps")) | forced))
    return ev.with_columns(new.alias("new")).drop("_ps", "_pk", "_i", "_pos")


def _queued_injections(ev: pl.DataFrame, windows: pl.DataFrame, lvtpc: pl.DataFrame) -> pl.Series:
    """Per route event (rows of ``ev``): True for an NMI injection that serves a PMI delivered in an EARLIER window.

    KVM injects one NMI per entry; a second pending NMI waits for an NMI-window exit, so its ``kvm_inj_nmi`` shows
    in a later window — where it is a PMI of its own, not the injection of that window's delivery. NMI deliveries
    (PMIs seen at stage 0/1 whose LVTPC is in NMI mode) and injections are matched first in, first out per thread:
    the queue length is a running sum of +1/-1 reflected at 0 (a trace may start with NMIs pending); an injection is
    an earlier window's when the queue held more PMIs at the window's start than injections made in it so far.
    A window that lost events (``inconclusive`` column of ``windows``) leaves the queue unknown: it restarts at 0.
    """
    is_inj = pl.col("kind") == 4
    flags = pl.Series("old", [False] * ev.height, dtype=pl.Boolean)
    if ev.is_empty() or not ev.select(is_inj.any()).item() or not ev.select((pl.col("stage") <= 1).any()).item():
        return flags
    ev = ev.with_row_index("_row")
    d = _unify(ev.filter(pl.col("stage") <= 1))
    d = d.with_columns(pl.col("new").cum_sum().alias("_d"))
    dl = d.group_by("_d").agg(pl.col("ts").first(), pl.col("pid").first(), (pl.col("kind") == 3).any().alias("fx"),
                              (pl.col("kind") == 2).any().alias("nmi"))
    if not lvtpc.is_empty():  # a delivery seen only at stage 0 is an NMI unless the thread's LVTPC is in Fixed mode
        w = lvtpc.sort("ts").select("ts", "pid", pl.col("val").alias("lvt"))
        dl = dl.sort("ts")
        back = dl.join_asof(w, on="ts", by="pid", strategy="backward", check_sortedness=False)
        fwd = dl.join_asof(w, on="ts", by="pid", strategy="forward", check_sortedness=False)
        mode = ((back["lvt"].fill_null(fwd["lvt"]) // 256) % 8).alias("mode")
        dl = back.with_columns(mode).with_columns(
            pl.col("fx") | (~pl.col("nmi") & (pl.col("mode") == DM_FIXED).fill_null(False)))
    deliveries = dl.filter(~pl.col("fx")).select("pid", "ts", pl.lit(1, pl.Int64).alias("step"),
                                                 pl.lit(None, pl.UInt32).alias("_row"))
    injections = ev.filter(is_inj).select("pid", "ts", pl.lit(-1, pl.Int64).alias("step"), "_row")
    # after a window that lost events the queue is unknown: start counting afresh (an epoch per such window)
    lossy = (windows.filter(pl.col("inconclusive") & pl.col("entry_ts").is_not_null())
             .select("pid", pl.col("entry_ts").alias("_lts")).sort("_lts")
             .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("pid").alias("epoch")))

    def epoch_of(df: pl.DataFrame, on: str) -> pl.DataFrame:
        out = df.sort(on).join_asof(lossy, left_on=on, right_on="_lts", by="pid", strategy="backward",
                                    allow_exact_matches=False, check_sortedness=False)
        return out.with_columns(pl.col("epoch").fill_null(0)).drop("_lts")

    walk = epoch_of(pl.concat([deliveries, injections]), "ts").sort(["pid", "epoch", "ts", "step"],
                                                                     descending=[False, False, False, True])
    walk = walk.with_columns(pl.col("step").cum_sum().over("pid", "epoch").alias("_s"))
    walk = walk.with_columns((pl.col("_s") - pl.min_horizontal(pl.lit(0), pl.col("_s").cum_min().over("pid",
                                                                                                        "epoch")))
                             .alias("queue"))
    wins = epoch_of(windows.select(pl.col("window").cast(pl.UInt32, strict=False), "pid", "exit_ts"), "exit_ts")
    start = (wins.join_asof(walk.select("pid", pl.col("ts").alias("_wts"), "queue", pl.col("epoch").alias("_we"))
                            .sort("_wts"), left_on="exit_ts", right_on="_wts", by="pid", strategy="backward",
                            allow_exact_matches=False, check_sortedness=False)
             .select("window", pl.when(pl.col("_we") == pl.col("epoch")).then(pl.col("queue")).otherwise(0)
                     .fill_null(0).alias("at_start")))
    inj = (ev.filter(is_inj & pl.col("window").is_not_null()).select("_row", "window", "ts")
           .sort(["window", "ts", "_row"])
           .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_i"))
           .with_columns((pl.col("_i") - pl.col("_i").min().over("window")).alias("k"))
           .join(start, on="window", how="left"))
    old_rows = inj.filter(pl.col("at_start").fill_null(0) - pl.col("k") > 0)["_row"]
    flags[old_rows.to_numpy().astype("int64")] = True
    return flags


def _segment() -> pl.Expr:
    """The window of an event, or for an event outside any window, the stretch of its thread between two windows
    (negative ids): events of one segment can belong to one PMI or one IPI."""
    return (pl.when(pl.col("window").is_not_null()).then(pl.col("window").cast(pl.Int64, strict=False))
            .otherwise(-(pl.col("gap") + 2) * (1 << 32) - pl.col("pid").cast(pl.Int64, strict=False)))


def analyse_pmis(trace: Trace, *, lvtpc_vector: int | None = None, routes: tuple[str, ...] | None = None
                 ) -> PmiAnalysis:
    """Find every synthesized PMI in ``trace`` and count them per VM-exit window.

    Args:
        trace: a host trace with ``kvm_exit`` and ``kvm_entry``.
        lvtpc_vector: the guest's LVTPC vector for the ``lvtpc_fixed`` route (default: learnt from ``kvm_apic``).
        routes: only use these routes (default: every route the trace can show).

    Returns:
        a :class:`PmiAnalysis`.

    Raises:
        MissingEventError: the trace has no ``kvm_exit`` or no ``kvm_entry``.
    """
    notes: list[str] = []
    windows = exit_windows(trace)
    avail = route_events(trace)
    if routes is not None:
        avail = {r: (v if r in routes else []) for r, v in avail.items()}
    if lvtpc_vector is None and _lvtpc_writes(trace).is_empty():
        avail["lvtpc_fixed"] = []
    present = [r for r in ROUTES if avail[r]]
    vcpu_of = (windows.filter(pl.col("vcpu").is_not_null()).group_by("pid")
               .agg(pl.col("vcpu").first().cast(pl.Int64).alias("_vcpu")))
    cands, nmi_acc, elsewhere = _candidates(trace, avail, lvtpc_vector, vcpu_of, notes)

    # NMI accepts: decoy when the last NMI IPI of the same thread, in the same window (or stretch outside windows),
    # was aimed at that APIC
    decoys = pl.DataFrame(schema=DECOY_SCHEMA)
    if not nmi_acc.is_empty():
        acc = assign_windows(nmi_acc.with_columns(pl.lit(2, pl.Int8).alias("kind")), windows)
        if trace.has("kvm_apic_ipi"):
            icr = pl.col("icr_low").cast(pl.Int64, strict=False)
            ipi = collect(columns(trace, "kvm_apic_ipi", {
                "ts": pl.col("ts").cast(pl.Int64, strict=False), "pid": pl.col("common_pid").cast(_I32, strict=False),
                "cpu": pl.col("cpu").cast(_I32, strict=False), "dest": pl.col("dest_id").cast(pl.UInt32, strict=False),
                "logical": (icr // 2048) % 2 == 1, "shorthand": (icr // (1 << 18)) % 4}, (icr // 256) % 8 == DM_NMI))
            ipi = assign_windows(ipi, windows).select(pl.col("ts").alias("ipi_ts"), "pid", "dest", "logical",
                                                      "shorthand", _segment().alias("ipi_segment"))
            acc = acc.sort("ts").join_asof(ipi.sort("ipi_ts"), left_on="ts", right_on="ipi_ts", by="pid",
                                           strategy="backward", check_sortedness=False)
            caused = (pl.col("ipi_ts").is_not_null() & (pl.col("ipi_segment") == _segment())
                      & ((pl.col("shorthand") != 0) | pl.col("logical") | (pl.col("dest") == pl.col("apicid"))))
            acc = acc.with_columns(caused.fill_null(False).alias("_decoy"))
            decoys = acc.filter(pl.col("_decoy")).select(list(DECOY_SCHEMA)).cast(DECOY_SCHEMA)
            acc = acc.filter(~pl.col("_decoy"))
        cands = pl.concat([cands, acc.select(list(_EMPTY_EVENTS))])
    if not elsewhere.is_empty():  # NMIs this thread sent to another vCPU: never this vCPU's PMI
        other = assign_windows(elsewhere.with_columns(pl.lit(2, pl.Int8).alias("kind")), windows)
        decoys = pl.concat([decoys, other.with_columns(pl.lit(None, pl.Int64).alias("ipi_ts"))
                            .select(list(DECOY_SCHEMA)).cast(DECOY_SCHEMA)]).sort("ts")

    ev = assign_windows(cands, windows)
    route_of = pl.col("kind").replace_strict({k: v[0] for k, v in _KINDS.items()}, return_dtype=pl.String)
    stage_of = pl.col("kind").replace_strict({k: v[1] for k, v in _KINDS.items()}, return_dtype=pl.Int8)
    # outside any window, PMIs are unified per thread and gap between windows (group ids below 0 never collide)
    group = _segment()
    ev = (ev.with_columns(route_of.alias("route"), stage_of.alias("stage"), group.alias("group"))
          .sort(["group", "ts", "stage", "kind", "seq"]))
    presence = windows_presence(trace, windows, [ev.select("ts", "pid", "cpu")])
    marks = lost_marks(trace, presence)
    incon = inconclusive(windows, presence, marks)
    old = _queued_injections(ev, windows.with_columns(incon), _lvtpc_writes(trace))
    ev = pl.concat([_unify(ev.filter(~old)), ev.filter(old).with_columns(pl.lit(True).alias("new"))],
                   how="diagonal_relaxed").sort(["group", "ts", "stage", "kind", "seq"])
    ev = ev.with_columns((pl.col("new").cum_sum() - 1).cast(pl.UInt32, strict=False).alias("pmi"))

    per = (ev.filter(pl.col("window").is_not_null())
           .group_by("window")
           .agg(pl.col("new").sum().cast(pl.Int32, strict=False).alias("pmi_count"),
                pl.col("route").unique().sort().alias("sources")))
    if not marks.is_empty() and marks["hi"].is_null().any():
        notes.append("the trace reports lost events without saying when: every window of a thread that ran on "
                     "such a CPU is inconclusive")
    out = (windows.join(per, on="window", how="left")
           .sort("window")
           .with_columns(pl.col("pmi_count").fill_null(0),
                         pl.col("sources").fill_null(pl.lit([], pl.List(pl.String))),
                         incon.alias("inconclusive")))
    pmis = ev.select(list(PMI_SCHEMA)).cast(PMI_SCHEMA).sort(["ts", "pid", "stage"])
    outside = int(ev.filter(pl.col("window").is_null())["new"].sum())
    return PmiAnalysis(windows=out.select(list(WINDOW_SCHEMA)).cast(WINDOW_SCHEMA), isa=out["isa"], pmis=pmis,
                       decoys=decoys, outside_pmis=outside, routes_present=present, notes=notes)


def config_vector(config: dict[str, Any]) -> int | None:
    """The ``lvtpc_vector`` option as an int (accepts ``"0xfe"``), or None for ``"auto"`` (learn it).

    Raises:
        ConfigError: not a vector 0..255.
    """
    v = config.get("lvtpc_vector")
    if v is None or v == "" or v == "auto":
        return None
    try:
        out = int(v, 0) if isinstance(v, str) else int(v)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"lvtpc_vector: expected an interrupt vector 0..255, found {v!r}") from exc
    if not 0 <= out <= 255:
        raise ConfigError(f"lvtpc_vector: expected an interrupt vector 0..255, found {v!r}")
    return out
