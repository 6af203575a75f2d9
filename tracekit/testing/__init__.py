"""Synthetic inputs with known answers: a trace.dat writer and KVM host scenarios.

``write_tracedat`` writes trace-cmd v6/v7 files (none or zstd) that ``trace-cmd report`` reads without a warning;
``formats_extra`` holds the kprobe-style formats (``kvm_pmu_deliver_pmi``, ``kvm_inj_nmi``) a KVM engineer adds.
"""

from .formats_extra import INJ_NMI_KPROBE, PMI_KPROBE, kprobe_format, kvm_formats
from .tracedat_writer import LostEvents, write_tracedat

__all__ = ["write_tracedat", "LostEvents", "kprobe_format", "kvm_formats", "PMI_KPROBE", "INJ_NMI_KPROBE"]
