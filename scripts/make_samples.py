"""Regenerate the synthetic samples in samples/ (deterministic: same code, same bytes).

usage: python scripts/make_samples.py [OUTDIR]

kvm-double-pmi.dat  trace.dat v7 (zstd) of a 4-vCPU KVM host over 2 s, written by tracekit.testing: every PMI
                    route enabled, some VM-exits with two PMIs, NMI-IPI decoys, host NMIs, migrations, a long halt
                    (time extend). Its ground truth is kvm-double-pmi.truth.json. No ring-buffer overruns: the
                    reader reports lost events per CPU only, which would leave every window on that CPU inconclusive.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tracekit.testing import build_kvm_scenario

SAMPLE_ARGS = {"vcpus": 4, "duration_s": 2.0, "exit_interval_us": 400.0, "pmi_probability": 0.02,
               "double_pmi_rate": 0.3, "ipi_nmi_decoys": 0.005, "host_nmis": 0.005, "migrations": 0.003,
               "lost_events": 0, "time_extends": 1}
SAMPLE_SEED = 2024


def make_kvm_double_pmi(outdir: Path) -> Path:
    sc = build_kvm_scenario(SAMPLE_SEED, **SAMPLE_ARGS)
    path = outdir / "kvm-double-pmi.dat"
    sc.write(path, version=7, compression="zstd")
    truth = {
        "generator": "tracekit.testing.build_kvm_scenario",
        "seed": SAMPLE_SEED,
        "args": SAMPLE_ARGS,
        "windows": sc.truth.height,
        "outside_pmis": sc.outside_pmis,
        "flagged": sc.flagged.to_dicts(),
        "inconclusive": sc.inconclusive.to_dicts(),
        "lost": [{"cpu": m.cpu, "before_ts": m.before_ts, "count": m.count} for m in sc.lost],
    }
    (outdir / "kvm-double-pmi.truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return path


def main(argv: list[str]) -> int:
    outdir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "samples"
    outdir.mkdir(parents=True, exist_ok=True)
    path = make_kvm_double_pmi(outdir)
    print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
