#!/usr/bin/env python3
"""Read a perf.data with tracekit and with ``perf script``, in the same run, and print samples/s and the ratio.

Usage: python benchmarks/bench_perf.py FILE [--repeat N] [--kallsyms FILE]

tracekit's time is the full ``tracekit.parsers.perf_data.read`` (records, samples, callchains, kernel and user
symbols, comm); perf's is ``perf script -i FILE > /dev/null`` (its default output: comm, tid, cpu, time, period,
event and the symbolised callchain). Both get the same kallsyms file when one is given. The best of N runs each;
tracekit's in-process kallsyms and ELF symbol caches are cleared before every timed read, so each read parses kallsyms and every
mapped ELF file again, as a perf script run does.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import warnings


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kallsyms", default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from tracekit.parsers import perf_data

    t0 = time.perf_counter()
    perf_data.read(args.file, kallsyms=args.kallsyms)
    cold = time.perf_counter() - t0
    print(f"tracekit first read (including imports): {cold:.3f} s")

    def read_all():
        perf_data.clear_caches()  # every timed read parses kallsyms and the ELF symbol tables again, as perf does
        t = perf_data.read(args.file, kallsyms=args.kallsyms)
        for e in t.event_names:  # frames are built eagerly; this only makes the timing include them for sure
            t.events(e)
        return t

    t_tk, trace = _best(read_all, args.repeat)
    n = sum(trace.events(e).height for e in trace.event_names)
    frames = sum(int(trace.events(e)["callchain"].list.len().sum() or 0) for e in trace.event_names)
    print(f"tracekit: {n} samples, {frames} callchain frames in {t_tk:.3f} s = {n / t_tk:,.0f} samples/s "
          f"(best of {args.repeat})")
    if shutil.which("perf") is None:
        print("perf not installed: no ratio")
        return 0
    cmd = ["perf", "script", "-i", args.file]
    if args.kallsyms:
        cmd += ["--kallsyms", args.kallsyms]

    def run_perf():
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    t_perf, _ = _best(run_perf, args.repeat)
    print(f"perf script: {t_perf:.3f} s = {n / t_perf:,.0f} samples/s")
    print(f"ratio: tracekit is {t_perf / t_tk:.2f}x faster than perf script "
          f"(first read, including Python imports: {t_perf / cold:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
