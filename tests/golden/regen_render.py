"""Regenerate the render goldens: ``trace-cmd report -t -N`` (libtraceevent without plugins) of every trace.dat the
render tests read, stored zstd-compressed in tests/golden/render/.

Real traces: the cuts in tests/data/tracedat/ and tests/data/text/same_buffer*/ (made by their own scripts).
KVM traces (no real KVM host was available): tests/data/printfmt/kvm_{vmx,svm}.dat are written here by
tracekit.testing (build_kvm_scenario + write_tracedat, fixed seeds), so that trace-cmd itself renders kvm_exit (both
ISA branches), kvm_entry, kvm_apic_accept_irq, kvm_inj_virq, kvm_msr, nmi events and the kprobes.

usage: python tests/golden/regen_render.py        (needs trace-cmd and zstd on PATH)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "golden" / "render"
KVM = ROOT / "tests" / "data" / "printfmt"
REAL = [
    "tests/data/tracedat/contention_v7_zstd.dat",
    "tests/data/tracedat/contention_v6.dat.zst",
    "tests/data/tracedat/multi_buffer.dat",
    "tests/data/text/same_buffer/trace.dat",
]


def write_kvm() -> list[Path]:
    from tracekit.testing import build_kvm_scenario, write_tracedat

    out = []
    for isa, seed in (("vmx", 3), ("svm", 4)):
        sc = build_kvm_scenario(seed, vcpus=2, duration_s=0.004, isa=isa,
                                routes=("deliver_pmi", "apic_nmi", "lvtpc_fixed", "inj_nmi"), lost_events=0)
        path = KVM / f"kvm_{isa}.dat"
        write_tracedat(path, sc.events, sc.formats, kallsyms=sc.kallsyms, cmdlines=sc.cmdlines, cpus=sc.cpus)
        out.append(path)
    return out


def golden_name(path: Path) -> str:
    name = path.name.removesuffix(".zst").removesuffix(".dat")
    return f"{path.parent.name}__{name}.N.txt.zst"


def main() -> int:
    if not shutil.which("trace-cmd") or not shutil.which("zstd"):
        print("trace-cmd and zstd are needed", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    KVM.mkdir(parents=True, exist_ok=True)
    paths = [ROOT / p for p in REAL] + write_kvm()
    with tempfile.TemporaryDirectory() as tmp:
        for p in paths:
            src = p
            if p.suffix == ".zst":
                src = Path(tmp) / p.stem
                subprocess.run(["zstd", "-q", "-d", "-f", str(p), "-o", str(src)], check=True)
            text = subprocess.run(["trace-cmd", "report", "-t", "-N", str(src)], check=True, capture_output=True).stdout
            dest = OUT / golden_name(p)
            subprocess.run(["zstd", "-q", "-19", "-f", "-o", str(dest)], input=text, check=True)
            print(f"{p.relative_to(ROOT)} -> {dest.relative_to(ROOT)} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
