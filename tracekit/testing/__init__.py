"""Synthetic inputs with known answers: a trace.dat writer and KVM host scenarios.

``write_tracedat`` writes trace-cmd v6/v7 files (none or zstd) that ``trace-cmd report`` reads without a warning;
``formats_extra`` holds the kprobe-style formats (``kvm_pmu_deliver_pmi``, ``kvm_inj_nmi``) a KVM engineer adds;
``build_kvm_scenario`` makes KVM host traces whose ground truth (every VM-exit window, PMIs per window) is known;
``build_contention_scenario`` makes periodic bursts of perf_event context-mutex contention with their waits.
"""

from .contention_scenario import ContentionScenario, build_contention_scenario
from .formats_extra import INJ_NMI_KPROBE, PMI_KPROBE, kprobe_format, kvm_formats
from .kvm_scenario import ROUTES, TRUTH_SCHEMA, Scenario, build_kvm_scenario
from .tracedat_writer import LostEvents, write_tracedat

__all__ = ["write_tracedat", "LostEvents", "kprobe_format", "kvm_formats", "PMI_KPROBE", "INJ_NMI_KPROBE",
           "build_kvm_scenario", "Scenario", "ROUTES", "TRUTH_SCHEMA", "build_contention_scenario",
           "ContentionScenario"]
