"""Benchmark the trace.dat reader against ``trace-cmd report`` on the same file, in the same run.

usage: python benchmarks/bench_tracedat.py FILE.dat [--no-trace-cmd] [--repeat N]

Prints: events, tracekit wall time (load + every frame built), events/s, peak RSS of the reading process, the frames'
size (Polars ``estimated_size``), and the ratio to ``trace-cmd report FILE > /dev/null``. The tracekit side runs in
a fresh child process so that its peak RSS is its own; with ``--repeat N`` the two sides alternate N times (the best
time of each side is kept, the highest peak RSS) and the load average is printed, as both move with the machine's
load. Make a big real trace with benchmarks/make_big_trace.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time


def _inner(path: str) -> None:
    import tracekit

    t0 = time.perf_counter()
    tr = tracekit.load(path)
    size = 0
    n = 0
    for name in tr.event_names:
        df = tr.events(name)
        size += df.estimated_size()
        n += df.height
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"events": n, "seconds": dt, "peak_rss": rss, "frames_bytes": size,
                      "damage": len(tr.damage), "lost": tr.lost_total}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--no-trace-cmd", action="store_true", help="skip the trace-cmd report timing")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each side; the best time is kept")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.inner:
        _inner(a.file)
        return 0
    tc_ok = not a.no_trace_cmd and shutil.which("trace-cmd") is not None
    runs, tc = [], []
    load0 = os.getloadavg()[0]
    # the two sides alternate, so a change in the machine's load hits both alike
    for _ in range(a.repeat):
        out = subprocess.run([sys.executable, __file__, "--inner", a.file], capture_output=True, text=True,
                             check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
        if tc_ok:
            t0 = time.perf_counter()
            with open("/dev/null", "w") as null:
                subprocess.run(["trace-cmd", "report", a.file], stdout=null, stderr=subprocess.DEVNULL, check=False)
            tc.append(time.perf_counter() - t0)
    best = min(runs, key=lambda r: r["seconds"])
    mib = 1 << 20
    print(f"file            {a.file}")
    print(f"load average    {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end ({os.cpu_count()} CPUs)")
    print(f"events          {best['events']:,}  (damage {best['damage']}, lost {best['lost']})")
    times = ", ".join(f"{r['seconds']:.2f}" for r in runs)
    print(f"tracekit        {best['seconds']:.2f} s  ({best['events'] / best['seconds']:,.0f} events/s; runs: {times})")
    rss = max(r["peak_rss"] for r in runs)
    print(f"peak RSS        {rss / mib:,.0f} MiB  (highest of the runs)")
    print(f"frames size     {best['frames_bytes'] / mib:,.0f} MiB  (peak RSS / frames = "
          f"{rss / max(best['frames_bytes'], 1):.2f})")
    if a.no_trace_cmd:
        return 0
    if not tc_ok:
        print("trace-cmd       not installed: no ratio")
        return 0
    print(f"trace-cmd       {min(tc):.2f} s  (report > /dev/null; runs: {', '.join(f'{t:.2f}' for t in tc)})")
    pairs = sorted(t / r["seconds"] for t, r in zip(tc, runs, strict=True))
    print(f"speed-up        {min(tc) / best['seconds']:.1f}x  (best vs best; run by run: "
          f"{', '.join(f'{x:.1f}' for x in pairs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
