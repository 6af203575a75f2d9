"""Regenerate the render goldens: ``trace-cmd report -t -N`` (libtraceevent without plugins) of every trace.dat the
render tests read, stored zstd-compressed in tests/golden/render/.

Real traces: the cuts in tests/data/tracedat/ and tests/data/text/same_buffer*/ (made by their own scripts).
KVM traces (no real KVM host was available): tests/data/printfmt/kvm_{vmx,svm}.dat are written here by
tracekit.testing (build_kvm_scenario + write_tracedat, fixed seeds), so that trace-cmd itself renders kvm_exit (both
ISA branches), kvm_entry, kvm_apic_accept_irq, kvm_inj_virq, kvm_msr, nmi events and the kprobes.
Every format: tests/data/printfmt/all_formats.dat holds 6 events of every bundled Linux 6.18 event (seeded random
field values, biased to small numbers so symbol tables hit) written by write_tracedat, so trace-cmd renders every
print fmt of kvm, kvmmmu, sched, irq, irq_vectors, nmi, lock, msr, raw_syscalls, timer and ftrace. Left out: events
with a field named ``cpu`` (the frame column of that name), ftrace's kernel_stack/user_stack/bprint (their records
are not plain field dumps), and kvm_emulate_insn gets ``len`` <= 15 (libtraceevent prints bytes past the array).

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


def write_all_formats() -> Path:
    import random

    import polars as pl

    from tracekit.formats import builtin_formats
    from tracekit.testing import write_tracedat

    rng = random.Random(7)
    formats = builtin_formats()
    events = {}
    ts = 1_000_000_000
    bits_of = {pl.Int8: 8, pl.Int16: 16, pl.Int32: 32, pl.UInt8: 8, pl.UInt16: 16, pl.UInt32: 32}
    for key, fmt in sorted(formats.items()):
        if any(f.name in ("ts", "cpu") for f in fmt.own_fields) or key in (
                "ftrace:kernel_stack", "ftrace:user_stack", "ftrace:bprint"):
            continue
        schema = fmt.schema()
        cols: dict[str, list] = {"ts": [], "cpu": [], "common_pid": []} | {f.name: [] for f in fmt.own_fields}
        for _ in range(6):
            ts += 1000
            cols["ts"].append(ts)
            cols["cpu"].append(0)
            cols["common_pid"].append(100)
            for f in fmt.own_fields:
                dt = schema[f.name]
                if dt == pl.String:
                    cols[f.name].append("".join(rng.choice("abcxyz_/0 ") for _ in range(rng.randint(0, 10))))
                    continue
                if isinstance(dt, pl.List):
                    inner = dt.inner
                    b = next((v for k, v in bits_of.items() if inner == k), 64)
                    n = f.array_len or rng.randint(0, 6)
                    lo = -(1 << (b - 1)) if inner.is_signed_integer() else 0
                    cols[f.name].append([lo + rng.getrandbits(b) for _ in range(n)])
                    continue
                b = next((v for k, v in bits_of.items() if dt == k), 64)
                v = rng.getrandbits(b) if rng.random() < 0.4 else rng.choice(
                    [0, 1, 2, 3, 7, 12, 48, 0x78, 0x7C, 0x400, 0x80000021])
                if key == "kvm:kvm_emulate_insn" and f.name == "len":
                    v = rng.randint(0, 15)
                v &= (1 << b) - 1
                if dt.is_signed_integer() and v >> (b - 1):
                    v -= 1 << b
                cols[f.name].append(v)
        events[key] = pl.DataFrame(cols, schema={"ts": pl.Int64, "cpu": pl.Int32, "common_pid": pl.Int32, **schema})
    path = KVM / "all_formats.dat"
    write_tracedat(path, events, formats, kallsyms={"func_a": 0xFFFFFFFF81000000, "func_b": 0xFFFFFFFF81001000},
                   cmdlines={100: "t"})
    return path


def golden_name(path: Path) -> str:
    name = path.name.removesuffix(".zst").removesuffix(".dat")
    return f"{path.parent.name}__{name}.N.txt.zst"


def main() -> int:
    if not shutil.which("trace-cmd") or not shutil.which("zstd"):
        print("trace-cmd and zstd are needed", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    KVM.mkdir(parents=True, exist_ok=True)
    paths = [ROOT / p for p in REAL] + write_kvm() + [write_all_formats()]
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
