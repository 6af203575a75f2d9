"""Rule ``lvtpc-unmasked-after-pmi``: the vCPU's LVTPC stays unmasked across a PMI (Intel-compatible vCPUs).

On Intel CPUs delivering a PMI sets the mask bit (16) of the local APIC's LVTPC; the guest's PMI handler clears it when
done (Linux: ``apic_write(APIC_LVTPC, APIC_DM_NMI)`` in ``intel_pmu_handle_irq``). KVM did not emulate that until
"KVM: x86: Mask LVTPC when handling a PMI", so a second PMI could arrive before the guest re-armed LVTPC. AMD does not
mask LVTPC on PMI, so AMD vCPUs are skipped. Seen in a host trace through ``kvm:kvm_apic`` accesses of APIC_LVTPC
(reg 0x340) by the vCPU thread, and the PMIs found by :mod:`tracekit.detectors.pmi`:

``pmi_before_rearm``  a PMI arrives after an earlier PMI of the same vCPU with no guest LVTPC write in between, while the
                      last LVTPC value the guest wrote was unmasked (real hardware would have held it masked);
``read_unmasked``     the guest reads LVTPC after a PMI, before re-arming it, and KVM answers with bit 16 clear.
"""

from __future__ import annotations

from typing import Any, ClassVar

import polars as pl

from ..errors import ConfigError
from . import Finding, Inputs, RuleResult, register
from .multi_pmi import PMI_EVENTS, cannot_run, kvm_traces
from .pmi import APIC_LVTPC, KVM_PMI_HINT, LVT_MASKED, analyse_pmis, config_vector

__all__ = ["LvtpcUnmaskedAfterPmi", "INCIDENT_SCHEMA"]

INCIDENT_SCHEMA = {"pid": pl.Int32, "vcpu": pl.Int32, "ts": pl.Int64, "kind": pl.String, "pmi_ts": pl.Int64,
                   "prev_pmi_ts": pl.Int64, "lvtpc": pl.UInt64}
"""One row per incident: ``ts`` of the PMI (``pmi_before_rearm``) or of the LVTPC read (``read_unmasked``),
``pmi_ts`` the PMI before it, ``prev_pmi_ts`` (for ``pmi_before_rearm``) the earlier PMI not re-armed, ``lvtpc`` the
LVTPC value in force (last written, or read)."""

_VENDORS = {"auto": None, "intel": 1, "amd": 2}


@register
class LvtpcUnmaskedAfterPmi:
    """Intel vCPUs whose LVTPC stays unmasked across a PMI (KVM without "Mask LVTPC when handling a PMI")."""

    name: ClassVar[str] = "lvtpc-unmasked-after-pmi"
    description: ClassVar[str] = ("Intel vCPUs whose LVTPC is not masked by a PMI: a PMI before the guest re-armed "
                                  "LVTPC, or LVTPC read unmasked after a PMI (kvm_apic writes/reads of reg 0x340)")
    requires: ClassVar[tuple[str, ...]] = ("kvm_exit", "kvm_entry", "kvm_apic")
    requires_any: ClassVar[tuple[tuple[str, ...], ...]] = (PMI_EVENTS,)
    record_hint: ClassVar[str] = KVM_PMI_HINT
    defaults: ClassVar[dict[str, Any]] = {"vendor": "auto", "lvtpc_vector": None}

    def run(self, inputs: Inputs, config: dict[str, Any]) -> RuleResult:
        """Find LVTPC left unmasked across PMIs.

        Args:
            inputs: the traces. config: ``vendor`` (``auto`` from kvm_exit ``isa``, ``intel`` or ``amd``),
                ``lvtpc_vector`` as for ``multi-pmi-per-exit``.

        Returns:
            frames ``incidents`` (:data:`INCIDENT_SCHEMA`) and ``lvtpc`` (every LVTPC access: ts, pid, vcpu, rw,
            val, masked).

        Raises:
            ConfigError: ``vendor`` is not auto, intel or amd.
        """
        cfg = {**self.defaults, **(config or {})}
        vendor = str(cfg.get("vendor", "auto")).lower()
        if vendor not in _VENDORS:
            raise ConfigError(f"{self.name}.vendor: expected auto, intel or amd, found {cfg.get('vendor')!r}")
        traces = [t for t in kvm_traces(inputs) if t.has("kvm_apic")]
        if not traces:
            return cannot_run(self, inputs)
        incidents, accesses, notes = [], [], []
        for t in traces:
            a = analyse_pmis(t, lvtpc_vector=config_vector(cfg))
            if a.pmis.is_empty():
                notes.append(f"{t.source}: no PMI seen")
            inc, acc, n = _incidents(t, a, _VENDORS[vendor])
            incidents.append(inc)
            accesses.append(acc)
            notes += [f"{t.source}: {x}" for x in n]
        inc = pl.concat(incidents).sort("ts", "pid")
        res = RuleResult(self.name, ran=True, notes=notes, frames={"incidents": inc, "lvtpc": pl.concat(accesses)})
        if not inc.is_empty():
            per = inc.group_by("kind").len().sort("kind")
            what = ", ".join(f"{k} ×{n}" for k, n in per.iter_rows())
            vcpus = ", ".join(str(v) for v in sorted(set(inc["vcpu"].drop_nulls().to_list())))
            summary = (f"On vCPU(s) {vcpus}, LVTPC was not masked by a PMI ({what}): KVM lacks \"KVM: x86: Mask "
                       "LVTPC when handling a PMI\", so a PMI can arrive before the guest handled the previous one "
                       "(guest: 'Uhhuh. NMI received for unknown reason').")
            res.findings.append(Finding(self.name, "error", f"LVTPC unmasked after PMI ({inc.height})", summary,
                                        count=inc.height, evidence=inc))
        return res


def _incidents(trace, a, vendor: int | None) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    notes: list[str] = []
    apic = trace.events("kvm_apic")
    acc = (apic.filter(pl.col("reg") == APIC_LVTPC)
           .select(pl.col("ts").cast(pl.Int64, strict=False), pl.col("common_pid").cast(pl.Int32, strict=False).alias("pid"),
                   (pl.col("rw") != 0).alias("rw"), pl.col("val").cast(pl.UInt64, strict=False))
           .with_columns(((pl.col("val") & LVT_MASKED) != 0).alias("masked")))
    # vCPU and vendor of each thread: its exits (the most frequent isa)
    threads = a.windows.with_columns(a.isa.alias("isa")).group_by("pid").agg(
        pl.col("vcpu").first(), pl.col("isa").drop_nulls().mode().first().alias("isa"))
    if vendor is not None:
        threads = threads.with_columns(pl.lit(vendor, pl.Int32).alias("isa"))
    acc = acc.join(threads.select("pid", "vcpu"), on="pid", how="left").select("ts", "pid", "vcpu", "rw", "val",
                                                                              "masked")
    amd = threads.filter(pl.col("isa") == 2)
    if not amd.is_empty():
        notes.append(f"{amd.height} AMD vCPU thread(s) skipped (AMD does not mask LVTPC on PMI)")
    intel = threads.filter(pl.col("isa") != 2)["pid"]
    pmis = a.pmis.group_by("pmi").agg(pl.col("ts").min(), pl.col("pid").first(), pl.col("stage").min())
    if (pmis["stage"] <= 1).any():  # an injection alone is a PMI delivered earlier (queued NMI): not a new delivery
        pmis = pmis.filter(pl.col("stage") <= 1)
    pmis = pmis.filter(pl.col("pid").is_in(intel.implode())).drop("stage").sort("ts")
    writes = acc.filter(pl.col("rw")).select(pl.col("ts").alias("w_ts"), "pid", pl.col("val").alias("w_val"))
    judged = writes["pid"].unique()
    blind = pmis.filter(~pl.col("pid").is_in(judged.implode()))["pid"].unique()
    if len(blind):
        notes.append(f"{len(blind)} vCPU thread(s) with PMIs but no LVTPC write in the trace: not judged")
    pmis = pmis.filter(pl.col("pid").is_in(judged.implode()))
    p = (pmis.with_columns(pl.col("ts").shift(1).over("pid", order_by="ts").alias("prev_pmi_ts"))
         .join_asof(writes.sort("w_ts"), left_on="ts", right_on="w_ts", by="pid", strategy="backward",
                    check_sortedness=False))
    rearm_missing = (pl.col("prev_pmi_ts").is_not_null()
                     & (pl.col("w_ts").is_null() | (pl.col("w_ts") < pl.col("prev_pmi_ts")))
                     & ((pl.col("w_val").fill_null(0) & LVT_MASKED) == 0))
    before = p.filter(rearm_missing).select(
        "pid", "ts", pl.lit("pmi_before_rearm").alias("kind"), pl.col("prev_pmi_ts").alias("pmi_ts"),
        "prev_pmi_ts", pl.col("w_val").alias("lvtpc"))
    reads = (acc.filter(~pl.col("rw") & pl.col("pid").is_in(intel.implode())).select("ts", "pid", "val").sort("ts")
             .join_asof(pmis.select(pl.col("ts").alias("pmi_ts"), "pid"), left_on="ts", right_on="pmi_ts", by="pid",
                        strategy="backward", check_sortedness=False)
             .join_asof(writes.sort("w_ts"), left_on="ts", right_on="w_ts", by="pid", strategy="backward",
                        check_sortedness=False))
    unmasked = (pl.col("pmi_ts").is_not_null() & (pl.col("w_ts").is_null() | (pl.col("w_ts") < pl.col("pmi_ts")))
                & ((pl.col("val") & LVT_MASKED) == 0))
    rd = reads.filter(unmasked).select("pid", "ts", pl.lit("read_unmasked").alias("kind"), "pmi_ts",
                                       pl.lit(None, pl.Int64).alias("prev_pmi_ts"), pl.col("val").alias("lvtpc"))
    inc = (pl.concat([before.cast({"lvtpc": pl.UInt64}), rd.cast({"lvtpc": pl.UInt64})])
           .join(threads.select("pid", "vcpu"), on="pid", how="left"))
    return inc.select(list(INCIDENT_SCHEMA)).cast(INCIDENT_SCHEMA), acc, notes
