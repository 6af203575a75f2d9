#!/usr/bin/env python3
"""Regenerate the perf goldens of tests/golden/perf/ from the real ``perf script`` (perf 6.1).

For every fixture in tests/data/perf/ this runs ``perf script`` with the kallsyms of the machine that recorded it
(``trace-cmd dump --kallsyms`` of the trace.dat recorded in the same run for host-contention, ``/proc/kallsyms``
for the small recordings made on this machine by record_fixtures.sh) and writes, zstd-compressed:

* ``NAME.script.txt.zst``  ``perf script --ns -F comm,pid,tid,cpu,time,period,event,ip,sym,dso[,trace]`` (with
  callchains when recorded; ``--show-lost-events`` for small_lost.data);
* ``NAME.kallsyms.zst``    the kallsyms lines the golden's kernel addresses need (every symbol at the highest start
  at or below each address), so the tests resolve kernel names without the recording machine;
* a few other views of small_plain.data for the perf script reader: ``-G`` without callchains, ``-F tid,time,
  event,ip``, and ``--header`` default output.

Usage: python tests/golden/perf/regen.py [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import zstandard

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "data" / "perf"
FIELDS = "comm,pid,tid,cpu,time,period,event,ip,sym,dso"

#: fixture -> where its kallsyms come from ("trace.dat:PATH" relative to --shared, or "/proc/kallsyms")
FIXTURES = {
    "host-contention.perf.data": "trace.dat:host-contention/trace_v7_zstd.dat",
    "small_plain.data": "/proc/kallsyms",
    "small_zstd.data": "/proc/kallsyms",
    "small_threads.data": "/proc/kallsyms",
    "small_pipe.data": "/proc/kallsyms",
    "small_sched.data": "/proc/kallsyms",
    "small_lost.data": "/proc/kallsyms",
}


def run(cmd: list[str]) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed: {r.stderr[-400:]}")
    return r.stdout


def write_zst(path: Path, text: str) -> None:
    path.write_bytes(zstandard.ZstdCompressor(level=19).compress(text.encode()))
    print(f"wrote {path.relative_to(HERE.parent.parent.parent)} ({path.stat().st_size} bytes)")


def kallsyms_cut(full: str, golden: str) -> str:
    """The lines of ``full`` that name every kernel address printed in ``golden``."""
    rows = re.findall(r"^([0-9a-f]+) (\S) (\S+.*)$", full, re.M)
    starts = np.array([int(a, 16) for a, _, _ in rows], dtype=np.uint64)
    order = np.argsort(starts, kind="stable")
    sorted_starts = starts[order]
    addrs = {int(a, 16) for a in re.findall(r"\b(ffff[0-9a-f]{12})\b", golden)}
    keep: set[int] = set()
    for a in addrs:
        i = int(np.searchsorted(sorted_starts, np.uint64(a), side="right")) - 1
        if i < 0:
            continue
        top = sorted_starts[i]
        j = i
        while j >= 0 and sorted_starts[j] == top:
            keep.add(int(order[j]))
            j -= 1
    return "".join(f"{rows[k][0]} {rows[k][1]} {rows[k][2]}\n" for k in sorted(keep))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(HERE.parents[3] / "shared" / "data"))
    args = ap.parse_args()
    shared = Path(args.shared)
    with tempfile.TemporaryDirectory() as tmp:
        for name, ksrc in FIXTURES.items():
            fixture = DATA / name
            if not fixture.exists():
                print(f"skip {name}: not recorded")
                continue
            if ksrc.startswith("trace.dat:"):
                full = run(["trace-cmd", "dump", "--kallsyms", "-i", str(shared / ksrc.split(":", 1)[1])])
                full = "\n".join(ln for ln in full.splitlines() if re.match(r"^[0-9a-f]+ \S \S", ln)) + "\n"
            else:
                full = Path(ksrc).read_text()
            kfile = Path(tmp) / f"{name}.kallsyms"
            kfile.write_text(full)
            fields = FIELDS + (",trace" if "sched" in name else "")
            lost = ["--show-lost-events"] if "lost" in name else []
            golden = run(["perf", "script", "-i", str(fixture), "--ns", "--kallsyms", str(kfile), "-F", fields, *lost])
            stem = name.removesuffix(".data").removesuffix(".perf")
            write_zst(HERE / f"{stem}.script.txt.zst", golden)
            write_zst(HERE / f"{stem}.kallsyms.zst", kallsyms_cut(full, golden))
            if name == "small_plain.data":
                k = ["--kallsyms", str(kfile)]
                write_zst(HERE / "small_plain.noc.txt.zst",
                          run(["perf", "script", "-i", str(fixture), "--ns", "-G", *k]))
                write_zst(HERE / "small_plain.fields.txt.zst",
                          run(["perf", "script", "-i", str(fixture), "--ns", "-F", "tid,time,event,ip", "-G", *k]))
                write_zst(HERE / "small_plain.header.txt.zst",
                          run(["perf", "script", "-i", str(fixture), "--header", *k]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
