"""Rule ``multi-pmi-per-exit``: VM-exits during which KVM synthesized more than one PMI into the vCPU.

The bug fixed by "KVM: x86: Synthesize at most one PMI per VM-exit" and "KVM: x86: Mask LVTPC when handling a PMI":
KVM delivers a second PMI before the guest handled the first, and the guest logs "Uhhuh. NMI received for unknown
reason". PMIs and windows are found by :mod:`tracekit.detectors.pmi` (routes, unification, lost events).
"""

from __future__ import annotations

from typing import Any, ClassVar

import polars as pl

from . import Finding, Inputs, RuleResult, register
from .pmi import KVM_PMI_HINT, PMI_SCHEMA, ROUTES, analyse_pmis, config_vector, route_events

__all__ = ["MultiPmiPerExit", "PER_VCPU_SCHEMA", "PMI_EVENTS", "kvm_traces"]

PER_VCPU_SCHEMA = {"pid": pl.Int32, "vcpu": pl.Int32, "exits": pl.UInt32, "windows_with_pmi": pl.UInt32,
                   "windows_multi": pl.UInt32, "inconclusive": pl.UInt32, "rate": pl.Float64}
"""Per vCPU thread: exits, windows with at least one PMI, conclusive windows with more than ``min_pmis`` - 1,
inconclusive windows, and ``rate`` = windows_multi / exits."""

_SUMMARY_VCPUS = 6
PMI_EVENTS = ("kvm_pmu_deliver_pmi", "function", "kvm_apic_accept_irq", "kvm_inj_nmi", "kvm_inj_virq")


def kvm_traces(inputs: Inputs) -> list:
    """Host traces holding both ``kvm_exit`` and ``kvm_entry``."""
    return [t for t in inputs.host if t.has("kvm_exit") and t.has("kvm_entry")]


def cannot_run(rule: Any, inputs: Inputs) -> RuleResult:
    """The result of a KVM rule whose host traces lack its events: which ones to record, and how."""
    missing = [e for e in rule.requires if not inputs.with_event(e, "host")]
    return RuleResult(rule.name, ran=False, missing=missing or list(rule.requires), record_hint=rule.record_hint)


def _fmt_int(n: int) -> str:
    return f"{n:,}"


@register
class MultiPmiPerExit:
    """VM-exits whose window (kvm_exit → next kvm_entry of the thread) holds more than one synthesized PMI."""

    name: ClassVar[str] = "multi-pmi-per-exit"
    description: ClassVar[str] = ("VM-exits during which KVM synthesized more than one PMI into the vCPU (guest: "
                                  "'Uhhuh. NMI received for unknown reason'); windows overlapping lost events are "
                                  "inconclusive")
    requires: ClassVar[tuple[str, ...]] = ("kvm_exit", "kvm_entry")
    requires_any: ClassVar[tuple[tuple[str, ...], ...]] = (PMI_EVENTS,)
    record_hint: ClassVar[str] = KVM_PMI_HINT
    defaults: ClassVar[dict[str, Any]] = {"min_pmis": 2, "lvtpc_vector": None,
                                          "routes": list(ROUTES)}

    def run(self, inputs: Inputs, config: dict[str, Any]) -> RuleResult:
        """Count PMIs per VM-exit window in every host trace with KVM events.

        Args:
            inputs: the traces. config: ``min_pmis`` (flag windows with at least this many, default 2),
                ``lvtpc_vector`` (None to learn it, or the guest's LVTPC vector), ``routes`` (route names to use).

        Returns:
            frames ``flagged``, ``inconclusive``, ``windows`` (contract schema), ``per_vcpu``, ``pmis``, ``decoys``.
        """
        cfg = {**self.defaults, **(config or {})}
        traces = kvm_traces(inputs)
        if not traces:
            return cannot_run(self, inputs)
        routes = tuple(cfg.get("routes") or ROUTES)
        usable = [t for t in traces if any(route_events(t)[r] for r in routes)]
        if not usable:
            return RuleResult(self.name, ran=False, missing=[" | ".join(PMI_EVENTS)], record_hint=self.record_hint,
                              notes=["the trace has kvm_exit/kvm_entry but no event through which a PMI shows"])
        vector = config_vector(cfg)
        min_pmis = int(cfg.get("min_pmis", 2))
        windows, pmis, decoys, notes = [], [], [], []
        offset = 0
        outside = 0
        for t in usable:
            a = analyse_pmis(t, lvtpc_vector=vector, routes=routes)
            windows.append(a.windows)
            pmis.append(a.pmis.with_columns(pl.col("window") + offset))
            decoys.append(a.decoys.with_columns(pl.col("window") + offset))
            offset += a.windows.height
            outside += a.outside_pmis
            notes += [f"{t.source}: {n}" for n in a.notes]
            notes.append(f"{t.source}: PMI routes seen: {', '.join(a.routes_present) or 'none'}")
        win = pl.concat(windows)
        flagged = win.filter((pl.col("pmi_count") >= min_pmis) & ~pl.col("inconclusive"))
        incon = win.filter(pl.col("inconclusive"))
        per_vcpu = (win.group_by("pid", "vcpu")
                    .agg(pl.len().alias("exits"),
                         (pl.col("pmi_count") > 0).sum().alias("windows_with_pmi"),
                         ((pl.col("pmi_count") >= min_pmis) & ~pl.col("inconclusive")).sum().alias("windows_multi"),
                         pl.col("inconclusive").sum().alias("inconclusive"))
                    .with_columns((pl.col("windows_multi") / pl.col("exits")).alias("rate"))
                    .sort("pid", "vcpu").cast(PER_VCPU_SCHEMA))
        if outside:
            notes.append(f"{outside} PMI(s) outside any VM-exit window (thread in guest mode or before its first "
                         "exit): not counted in windows")
        res = RuleResult(self.name, ran=True, notes=notes, frames={
            "flagged": flagged, "inconclusive": incon, "windows": win, "per_vcpu": per_vcpu,
            "pmis": pl.concat(pmis) if pmis else pl.DataFrame(schema=PMI_SCHEMA),
            "decoys": pl.concat(decoys)})
        res.findings.extend(self._findings(flagged, incon, per_vcpu, win, min_pmis))
        return res

    def _findings(self, flagged: pl.DataFrame, incon: pl.DataFrame, per_vcpu: pl.DataFrame, win: pl.DataFrame,
                  min_pmis: int) -> list[Finding]:
        n_exits = win.height
        if not flagged.is_empty():
            parts = []
            hit = per_vcpu.filter(pl.col("windows_multi") > 0).sort("windows_multi", "vcpu",
                                                                      descending=[True, False])
            for row in hit.head(_SUMMARY_VCPUS).iter_rows(named=True):
                sub = flagged.filter((pl.col("pid") == row["pid"]) & (pl.col("vcpu") == row["vcpu"]))
                most = int(sub["pmi_count"].max())
                parts.append(f"{_fmt_int(row['windows_multi'])} of {_fmt_int(row['exits'])} VM-exits of vCPU "
                             f"{row['vcpu']} (thread {row['pid']}) got {'up to ' if most > min_pmis else ''}"
                             f"{most} PMIs")
            if hit.height > _SUMMARY_VCPUS:
                parts.append(f"and {hit.height - _SUMMARY_VCPUS} more vCPU(s)")
            reasons = flagged["exit_reason"].value_counts(sort=True).head(3)
            top = ", ".join(f"{r} ({c})" for r, c in reasons.iter_rows())
            srcs = sorted({s for lst in flagged["sources"].to_list() for s in lst})
            summary = ("; ".join(parts) + ". The guest logs 'Uhhuh. NMI received for unknown reason' when a second "
                       "PMI arrives before it handled the first: KVM lacks \"KVM: x86: Synthesize at most one PMI per "
                       "VM-exit\" / \"KVM: x86: Mask LVTPC when handling a PMI\". Exit reasons: " + top
                       + f". Seen through: {', '.join(srcs)}.")
            if not incon.is_empty():
                summary += f" {_fmt_int(incon.height)} other window(s) overlap lost events (inconclusive)."
            return [Finding(self.name, "error", f"{flagged.height} VM-exit(s) got more than one PMI", summary,
                            count=flagged.height, evidence=flagged)]
        if not incon.is_empty():
            multi = incon.filter(pl.col("pmi_count") >= min_pmis).height
            summary = (f"No conclusive VM-exit got more than one PMI, but {_fmt_int(incon.height)} of "
                       f"{_fmt_int(n_exits)} windows overlap lost events (ring-buffer overruns), {multi} of them with "
                       f"{min_pmis}+ PMIs seen: record again with a bigger buffer (trace-cmd record -b 20000).")
            return [Finding(self.name, "warning", f"{incon.height} VM-exit window(s) inconclusive (lost events)",
                            summary, count=incon.height, evidence=incon)]
        with_pmi = int((win["pmi_count"] > 0).sum())
        return [Finding(self.name, "info", "No VM-exit got more than one PMI",
                        f"{_fmt_int(n_exits)} VM-exits checked, {_fmt_int(with_pmi)} with one PMI; none with "
                        f"{min_pmis} or more.", count=0)]

