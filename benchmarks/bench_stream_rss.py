"""Peak RSS of ``tracekit convert`` as the input grows 1×, 4×, 16×.

usage: python benchmarks/bench_stream_rss.py [--mode stream|whole] [--base-seconds 0.25] [--factors 1,4,16]
       [--cut-from TRACE.dat] [--dir /tmp/tk-rss]

Inputs, either:

* generated (default): a ``tracekit.testing.build_kvm_scenario`` trace.dat whose traced time is ``base × factor``
  (same seed and rates, so events grow linearly). The builder holds the whole scenario in memory (1.2 GB for 1M
  events), so the 16× input stays ≈ 1M events and the 1× one ≈ 55k: too small to fill the streaming conversion's
  fixed working set (a 1 MiB batch of pages per CPU, merge windows of PART_ROWS rows per event, the allocator's
  high-water mark after a few full windows), so peak RSS still rises from 1× to 16× here and is flat only beyond;
* ``--cut-from TRACE.dat``: cuts of a real recording — its first ``factor / max(factors)`` of events (by ``ts``,
  every event type), each written back with the same writer (``tracekit.testing.write_tracedat``, zstd), so the
  inputs differ only in length. With /work/big/big_v7_zstd.dat (12.8M events) the 1× cut is 0.8M events: large
  enough to fill the working set, and RSS is flat from 1× to 16×.

Each conversion runs in a fresh grandchild process; the child that waited for it reports
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` — the conversion's own peak RSS. The baseline row is the same child
importing tracekit and polars without converting. Prints one JSON line per input and a ratio (peak RSS at the
largest input / at the smallest).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

_CONVERT = ("import sys, tracekit, polars; from tracekit.stream import convert; "
            "convert(sys.argv[1], sys.argv[2], overwrite=True, stream=sys.argv[3] == 'stream') "
            "if sys.argv[1] != '-' else None")


def _measure(src: str, out: str, mode: str) -> None:
    """Child: run the conversion as a grandchild and print its peak RSS (bytes) and wall time."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", _CONVERT, src, out, mode], check=True)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({"peak_rss": rss, "seconds": dt}))


def _run_measure(src: str, out: str, mode: str) -> dict:
    res = subprocess.run([sys.executable, __file__, "--measure", src, out, mode], check=True, capture_output=True,
                         text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _cuts(src: str, factors: list[int], d: Path) -> dict[int, Path]:
    """The first ``f / max(factors)`` of ``src``'s events (by ts) as trace.dat files, written by one writer."""
    import dataclasses

    import numpy as np
    import polars as pl

    import tracekit
    from tracekit.testing.tracedat_writer import write_tracedat

    out = {f: d / f"cut_{Path(src).stem}_{f}of{max(factors)}.dat" for f in factors}
    if all(p.exists() for p in out.values()):
        return out
    tr = tracekit.load(src)
    frames = {k: tr.events(k) for k in tr.frames}
    ts = np.sort(np.concatenate([f["ts"].to_numpy() for f in frames.values()]))
    for f, path in out.items():
        if not path.exists():
            cut = int(ts[len(ts) * f // max(factors) - 1])
            sub = dataclasses.replace(tr, frames={k: v.filter(pl.col("ts") <= cut) for k, v in frames.items()})
            write_tracedat(path, sub, compression="zstd")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-seconds", type=float, default=0.25)
    ap.add_argument("--factors", default="1,4,16")
    ap.add_argument("--dir", default="/tmp/tk-rss")
    ap.add_argument("--cut-from", help="a real trace.dat: the inputs are its first 1/16, 4/16, 16/16 (see above)")
    ap.add_argument("--mode", choices=("stream", "whole"), default="stream",
                    help="stream: convert(stream=True), page batches; whole: the in-memory reader")
    ap.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        _measure(*a.measure)
        return 0
    import tracekit
    from tracekit.testing import build_kvm_scenario

    d = Path(a.dir)
    d.mkdir(parents=True, exist_ok=True)
    factors = [int(x) for x in a.factors.split(",")]
    cuts = _cuts(a.cut_from, factors, d) if a.cut_from else {}
    base = _run_measure("-", str(d / "none"), a.mode)
    print(json.dumps({"input": "baseline (import only)", **base}))
    rows = []
    for f in factors:
        src = cuts.get(f) or d / f"kvm_x{f}.dat"
        if not src.exists():
            build_kvm_scenario(1, duration_s=a.base_seconds * f).write(src, compression="zstd")
        m = _run_measure(str(src), str(d / f"{src.stem}.pq"), a.mode)
        events = tracekit.load(d / f"{src.stem}.pq").total_events
        row = {"mode": a.mode, "input": src.name, "factor": f, "file_bytes": os.path.getsize(src), "events": events, **m,
               "peak_rss_mib": round(m["peak_rss"] / 2**20, 1),
               "above_baseline_mib": round((m["peak_rss"] - base["peak_rss"]) / 2**20, 1)}
        rows.append(row)
        print(json.dumps(row))
    if len(rows) > 1:
        print(json.dumps({"rss_ratio_largest_to_smallest": round(rows[-1]["peak_rss"] / rows[0]["peak_rss"], 2),
                          "events_ratio": round(rows[-1]["events"] / rows[0]["events"], 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
