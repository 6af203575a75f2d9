"""A fleet of generated KVM host traces through ``analyze_fleet`` on a local multi-process Dask cluster, checked
against ``tracekit.analyze`` of every trace on this machine.

usage: python benchmarks/bench_fleet.py [--traces 20] [--hosts 7] [--workers 2] [--seconds 0.05] [--dir /tmp/tk-fleet]

Trace i is ``build_kvm_scenario(1000 + i)`` on host ``i % hosts``; every third trace is generated with
``double_pmi_rate=0`` (other PMI routes of the scenario may still flag a few exits). Prints the fleet wall time,
the single-machine wall time, how many traces' rule results (findings, flagged/inconclusive exits, exit stats, hotspots, rule notes) are equal, and the per-host table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=20)
    ap.add_argument("--hosts", type=int, default=7)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=0.05)
    ap.add_argument("--dir", default="/tmp/tk-fleet")
    a = ap.parse_args()
    import polars as pl

    import tracekit
    from tracekit.fleet import analyze_fleet
    from tracekit.testing import build_kvm_scenario

    root = Path(a.dir)
    paths = []
    for i in range(a.traces):
        p = root / "in" / f"host{i % a.hosts:02d}" / f"t{i:03d}.dat"
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            build_kvm_scenario(1000 + i, duration_s=a.seconds, double_pmi_rate=0.0 if i % 3 == 0 else 0.3).write(p)
        paths.append(p.absolute())
    t0 = time.perf_counter()
    res = analyze_fleet([str(p) for p in paths], root / "out", workers=a.workers, host_from="parent")
    fleet_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = {str(p): tracekit.analyze(p).to_dict() for p in paths}
    single_s = time.perf_counter() - t0
    keys = ("findings", "multi_pmi_exits", "inconclusive_exits", "exit_stats", "hotspots", "rules")
    equal = 0
    for r in res.results:
        if r["analysis"] is None:
            continue
        mine = json.loads(json.dumps({k: r["analysis"][k] for k in keys}).replace(r["dataset"], r["path"]))
        equal += mine == {k: single[r["path"]][k] for k in keys}
    print(json.dumps({"traces": len(paths), "workers": res.workers, "fleet_seconds": round(fleet_s, 2),
                      "single_machine_analyze_seconds": round(single_s, 2), "equal_to_single_machine": equal,
                      "events": int(res.traces["events"].sum()),
                      "double_pmi_exits": int(res.traces["double_pmi_exits"].sum())}))
    with pl.Config(tbl_cols=-1, tbl_width_chars=200):
        print(res.hosts.select("host", "traces", "max_severity", "exits", "double_pmi_exits", "double_pmi_rate"))
    return 0 if equal == len(paths) else 1


if __name__ == "__main__":
    sys.exit(main())
