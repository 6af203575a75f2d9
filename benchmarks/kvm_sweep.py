#!/usr/bin/env python3
"""Precision and recall of ``multi-pmi-per-exit`` over many generated KVM host traces (issue 5's "Done when").

Each scenario is built by :func:`tracekit.testing.build_kvm_scenario` (seed × route set × ISA × file version and
compression × decoys/migrations/lost events), written as a trace.dat by tracekit's writer, read back by
``tracekit.load`` and run through the rule. Per window (key: vCPU thread ``pid`` and ``exit_ts``):

* flagged by the rule and in the truth with ``pmi_count > 1`` and conclusive → true positive;
* flagged but not so in the truth → false positive; in the truth but not flagged → false negative;
* every window's ``pmi_count``, ``vcpu``, ``entry_ts`` and ``inconclusive`` must also equal the truth (counted as
  mismatches).

    python benchmarks/kvm_sweep.py [--seeds 5] [--duration 0.02] [--out sweep.json]

Prints one line per scenario family and the totals; exit status 1 if precision or recall is below 1.0 or any
window differs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import tracekit
from tracekit.detectors import Inputs
from tracekit.detectors.multi_pmi import MultiPmiPerExit
from tracekit.testing import kvm_scenario as ks

KEY = ["pid", "exit_ts"]
ROUTE_SETS = [(r,) for r in ks.ROUTES] + [ks.ROUTES, ("deliver_pmi", "function"), ("apic_nmi", "inj_nmi"),
                                          ("function", "lvtpc_fixed", "inj_nmi"), ("deliver_pmi", "apic_nmi")]
FILES = [(6, "none"), (7, "none"), (7, "zstd")]  # the writer compresses with zstd only; zlib is read from real files
OPTIONS = {
    "plain": dict(ipi_nmi_decoys=0.0, host_nmis=0.0, migrations=0.0, lost_events=0),
    "decoys+migrations": dict(ipi_nmi_decoys=0.2, host_nmis=0.1, migrations=0.05, time_extends=2),
    "lost": dict(lost_events=4, migrations=0.02),
}


def _one(seed: int, routes: tuple[str, ...], isa: str, version: int, compression: str, opts: dict,
         duration: float, tmp: Path) -> dict:
    injection = "same_window" if routes == ("inj_nmi",) else "queued"
    sc = ks.build_kvm_scenario(seed, routes=routes, isa=isa, vcpus=4, duration_s=duration, pmi_probability=0.12,
                               double_pmi_rate=0.35, nmi_injection=injection, **opts)
    path = tmp / "s.dat"
    sc.write(path, version=version, compression=compression)
    res = MultiPmiPerExit().run(Inputs(host=(tracekit.load(path),)), {})
    if not res.ran:
        raise SystemExit(f"rule did not run on seed {seed} {routes}: {res.missing}")
    got = res.frames["windows"]
    cols = ["vcpu", "entry_ts", "pmi_count", "inconclusive"]
    both = sc.truth.select(KEY + cols).join(got.select(KEY + cols), on=KEY, how="full", suffix="_got",
                                            coalesce=True, nulls_equal=True)
    differ = sum(int((~both[c].eq_missing(both[f"{c}_got"])).sum()) for c in cols)
    truth = set(map(tuple, sc.flagged.select(KEY).rows()))
    flagged = set(map(tuple, res.frames["flagged"].select(KEY).rows()))
    return {"windows": sc.truth.height, "truth_flagged": len(truth), "tp": len(truth & flagged),
            "fp": len(flagged - truth), "fn": len(truth - flagged), "window_mismatches": differ,
            "inconclusive": int(sc.truth["inconclusive"].sum())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="seeds per scenario family")
    ap.add_argument("--duration", type=float, default=0.02, help="traced seconds per scenario")
    ap.add_argument("--out", type=Path, help="write every scenario's counts as JSON here")
    ns = ap.parse_args(argv)
    total = dict.fromkeys(["scenarios", "windows", "truth_flagged", "tp", "fp", "fn", "window_mismatches",
                           "inconclusive"], 0)
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for family, (routes, isa, (version, compression), (opt_name, opts)) in enumerate(itertools.product(
                ROUTE_SETS, ("vmx", "svm"), FILES, OPTIONS.items())):
            fam = dict.fromkeys(total, 0)
            for seed in range(1000 * family + 1, 1000 * family + ns.seeds + 1):  # every scenario differs
                r = _one(seed, routes, isa, version, compression, opts, ns.duration, Path(tmp))
                rows.append({"seed": seed, "routes": "+".join(routes), "isa": isa, "version": version,
                             "compression": compression, "options": opt_name, **r})
                for k, v in r.items():
                    fam[k] += v
                fam["scenarios"] += 1
            for k, v in fam.items():
                total[k] += v
            print(f"{'+'.join(routes):42s} {isa} v{version}/{compression:4s} {opt_name:18s} windows {fam['windows']:6d} "
                  f"flagged {fam['truth_flagged']:4d} tp {fam['tp']:4d} fp {fam['fp']} fn {fam['fn']} "
                  f"mismatches {fam['window_mismatches']}", flush=True)
    precision = total["tp"] / max(total["tp"] + total["fp"], 1)
    recall = total["tp"] / max(total["tp"] + total["fn"], 1)
    print(json.dumps({**total, "precision": precision, "recall": recall,
                      "seconds": round(time.perf_counter() - t0, 1)}))
    if ns.out:
        ns.out.write_text(json.dumps(rows, indent=1))
    ok = precision == 1.0 and recall == 1.0 and total["window_mismatches"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
