"""Text parsing speed: tracekit's ftrace-text reader against ``trace-cmd report`` producing the same text.

For each trace.dat given, in the same run: time ``trace-cmd report [ARGS] FILE > TMP`` (the producer), then time
``tracekit.load(TMP)`` with every event frame materialised (the consumer). Prints lines/s of both and the ratio.

    python benchmarks/bench_text.py /work/shared/data/host-contention/trace_v7_zstd.dat [--args=-R] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _produce(dat: Path, out: Path, args: list[str]) -> float:
    t0 = time.perf_counter()
    with open(out, "wb") as f:
        subprocess.run(["trace-cmd", "report", *args, str(dat)], stdout=f, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def _parse(text: Path) -> tuple[float, int, int]:
    import tracekit

    t0 = time.perf_counter()
    tr = tracekit.load(text)
    for name in tr.event_names:
        tr.events(name)
    return time.perf_counter() - t0, tr.total_events, tr.unparsed_lines.height


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dat", nargs="+", type=Path)
    ap.add_argument("--args", default="", help="extra trace-cmd report arguments, e.g. -R or -t")
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs of each side")
    ns = ap.parse_args(argv)
    if shutil.which("trace-cmd") is None:
        print("trace-cmd not installed: nothing to compare with", file=sys.stderr)
        return 2
    extra = ns.args.split()
    import tracekit

    # warm up: imports and the built-in formats are loaded once per process, not per file
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm.txt"
        warm.write_text(" bash-1 [000]   1.000001: sched_wake_idle_without_ipi: cpu=1\n")
        tracekit.load(warm)
    print(f"{'file':40s} {'lines':>10s} {'events':>9s} {'trace-cmd s':>11s} {'tracekit s':>10s} "
          f"{'tc lines/s':>11s} {'tk lines/s':>11s} {'ratio':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        for dat in ns.dat:
            out = Path(tmp) / "report.txt"
            produce = min(_produce(dat, out, extra) for _ in range(ns.repeat))
            with open(out, "rb") as f:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))
            runs = [_parse(out) for _ in range(ns.repeat)]
            parse = min(r[0] for r in runs)
            events, unparsed = runs[0][1], runs[0][2]
            print(f"{dat.name[:40]:40s} {lines:10d} {events:9d} {produce:11.2f} {parse:10.2f} "
                  f"{lines / produce:11.0f} {lines / parse:11.0f} {produce / parse:6.2f}"
                  + (f"  ({unparsed} unparsed lines)" if unparsed else ""))
            os.unlink(out)
    print("ratio > 1: parsing the text is faster than trace-cmd producing it (same machine, same run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
