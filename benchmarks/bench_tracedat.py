"""Benchmark the trace.dat reader against ``trace-cmd report`` on the same file, in the same run.

usage: python benchmarks/bench_tracedat.py FILE.dat [--no-trace-cmd] [--repeat N]

Prints: events, tracekit wall time (load + every frame built), events/s, peak RSS of the reading process, the frames'
size (Polars ``estimated_size``), and the ratio to ``trace-cmd report FILE > /dev/null``. The tracekit side runs in
a fresh child process so that its peak RSS is its own. Make a big real trace with benchmarks/make_big_trace.sh.
"""

from __future__ import annotations

import argparse
import json
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
    runs = []
    for _ in range(a.repeat):
        out = subprocess.run([sys.executable, __file__, "--inner", a.file], capture_output=True, text=True,
                             check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["seconds"])
    mib = 1 << 20
    print(f"file            {a.file}")
    print(f"events          {best['events']:,}  (damage {best['damage']}, lost {best['lost']})")
    print(f"tracekit        {best['seconds']:.2f} s  ({best['events'] / best['seconds']:,.0f} events/s)")
    print(f"peak RSS        {best['peak_rss'] / mib:,.0f} MiB")
    print(f"frames size     {best['frames_bytes'] / mib:,.0f} MiB  (peak RSS / frames = "
          f"{best['peak_rss'] / max(best['frames_bytes'], 1):.2f})")
    if not a.no_trace_cmd:
        if shutil.which("trace-cmd") is None:
            print("trace-cmd       not installed: no ratio")
            return 0
        tc = []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            with open("/dev/null", "w") as null:
                subprocess.run(["trace-cmd", "report", a.file], stdout=null, stderr=subprocess.DEVNULL, check=False)
            tc.append(time.perf_counter() - t0)
        print(f"trace-cmd       {min(tc):.2f} s  (report > /dev/null)")
        print(f"speed-up        {min(tc) / best['seconds']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
