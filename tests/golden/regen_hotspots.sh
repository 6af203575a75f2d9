#!/bin/bash
# Regenerates the mutex-hotspots goldens (tests/golden/hotspots/) from the real tools, and the fixtures they
# describe when missing. Run from anywhere: tests/golden/regen_hotspots.sh [--record-lock]
#
#   tests/data/hotspots/contention_cut.dat   `trace-cmd split` of ../shared/data/host-contention/trace_v7_zstd.dat,
#                                            3553.70-3553.78 s (80 ms, ~20k contention waits, kernel stacks, kallsyms)
#   tests/data/perf/host-contention.perf.data   that run's `perf record -a -g -e cpu-clock` (copied as is)
#   tests/data/hotspots/perf_script.txt.zst     `perf script` of it on the recording host (copied as is)
#
#   perf_report_children.txt.zst  `perf report --children --sort sym -g none` of the perf.data, kernel symbols from
#                                 the kallsyms of the same run (the trace carries them; this kernel differs)
#   contention_pairs.csv.zst      every lock:contention_begin -> contention_end pair per (pid, lock) as printed by
#                                 `trace-cmd report -t` of the cut, with the call path of the begin's kernel stack
#                                 (pairing by the reference loop below, on trace-cmd's text: independent of tracekit)
#   perf_lock_contention_verbose.txt   `perf lock contention -v` of the shared recording (a separate 1 s run of the
#                                 same workload, made by ../shared/data/tools/record_contention.sh); with
#                                 --record-lock, a fresh `perf lock record` of the workload on this host instead
set -euo pipefail
tests=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$(cd "$tests/../.." && pwd)/shared/data}
out=$tests/golden/hotspots
data=$tests/data/hotspots
perf_data=$tests/data/perf/host-contention.perf.data
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out" "$data" "$(dirname "$perf_data")"

if [ ! -f "$data/contention_cut.dat" ]; then
  trace-cmd split -i "$SHARED/host-contention/trace_v7_zstd.dat" -o "$tmp/cut.dat" 3553.70 3553.78 >/dev/null 2>&1
  mv "$tmp/cut.dat.1" "$data/contention_cut.dat"
fi
[ -f "$perf_data" ] || cp "$SHARED/host-contention/perf.data" "$perf_data"
# `perf script` text of the same perf.data, made on the recording host (kernel frames named there)
[ -f "$data/perf_script.txt.zst" ] || cp "$SHARED/host-contention/perf_script.txt.zst" "$data/perf_script.txt.zst"

trace-cmd dump --kallsyms -i "$data/contention_cut.dat" 2>/dev/null | grep -E '^[0-9a-f]{8,16} ' > "$tmp/kallsyms"
perf report --children --stdio --kallsyms="$tmp/kallsyms" -i "$perf_data" --sort sym -g none 2>/dev/null \
  | grep -v '^# (Tip:' | zstd -q -19 -f -o "$out/perf_report_children.txt.zst"

trace-cmd report -t -i "$data/contention_cut.dat" 2>/dev/null | python3 -c '
import re, sys
# Reference pairing over trace-cmd text: a per-line loop on purpose (slow and obvious).
HDR = re.compile(r"^\s*(.*?)-(\d+)\s+\[(\d+)\]\s+(\d+)\.(\d{9}):\s+(\w+):\s+(.*)$")
SET = re.compile(r"^(?:perf_event_ctx_lock|perf_event_ctx_lock_nested|perf_event_ctx_unlock)"
                 r"(?:\.(?:isra|constprop|part|cold|lto_priv|llvm)(?:\.\d+)?)*$")
INT = re.compile(r"^(?:__mutex_lock|mutex_spin_on_owner|osq_lock|__mutex_unlock_slowpath)"
                 r"(?:\.(?:isra|constprop|part|cold|lto_priv|llvm)(?:\.\d+)?)*$")
TRACING = re.compile(r"^(?:trace_event_raw_event_|__traceiter_|perf_trace_|__bpf_trace_|trace_contention_)")
open_, last_ev, pending = {}, {}, None
print("pid,lock_addr,ts,end_ts,wait_ns,flags,slept,path")
def path_of(frames):
    f = [x for x in frames if not TRACING.match(x)]
    if not f:
        return ""
    hits = [i for i, x in enumerate(f) if SET.match(x)]
    if not hits:
        return " → ".join(reversed(f[:3]))
    o = max(hits)
    p = f[o:o + 2][::-1]
    if o > 0 and INT.match(f[o - 1]):
        p.append(f[o - 1])
    return " → ".join(p)
def settle(pending):
    # a contention_begin stack belongs to the last begin/end of its pid on its CPU, when that is a begin
    # still without a stack (an interrupt may record other events between the two)
    if pending and pending[2] and pending[2][0] == "trace_event_raw_event_contention_begin":
        w = last_ev.get(pending[:2])
        if w is not None and w[3] is None:
            w[3] = pending[2]
FL = {"SPIN": 1, "READ": 2, "WRITE": 4, "RT": 8, "PERCPU": 16, "MUTEX": 32}
for line in sys.stdin:
    if line.startswith("=>"):
        if pending is not None:
            pending[2].append(line.split()[1])
        continue
    m = HDR.match(line)
    if not m:
        continue
    settle(pending)
    pending = None
    comm, pid, cpu, s, ns, ev, info = m.groups()
    ts = int(s) * 10**9 + int(ns)
    if ev == "kernel_stack":
        pending = (cpu, pid, [])
    elif ev == "contention_begin":
        addr, flags = re.match(r"(0x[0-9a-f]+) \(flags=(.*)\)", info).groups()
        fl = sum(FL[k] for k in flags.split("|") if k in FL)
        w = open_.get((pid, addr))
        if w is None:
            w = open_[(pid, addr)] = [ts, fl, fl & 1 == 0, None]
            last_ev[(cpu, pid)] = w
        else:
            w[2] = w[2] or fl & 1 == 0
            last_ev[(cpu, pid)] = None
    elif ev == "contention_end":
        last_ev[(cpu, pid)] = None
        addr = info.split()[0]
        w = open_.pop((pid, addr), None)
        if w is not None:
            print(f"{pid},{int(addr, 16)},{w[0]},{ts},{ts - w[0]},{w[1]},{int(w[2])},{path_of(w[3] or [])}")
' | zstd -q -19 -f -o "$out/contention_pairs.csv.zst"

if [ "${1:-}" = --record-lock ]; then
  gcc -O2 -pthread -o "$tmp/perf_ctx_contention" "$SHARED/tools/perf_ctx_contention.c"
  perf lock record -o "$tmp/lock.data" -- "$tmp/perf_ctx_contention" 6 1 >/dev/null 2>&1
  perf lock contention -v -i "$tmp/lock.data" > "$out/perf_lock_contention_verbose.txt" 2>/dev/null
else
  cp "$SHARED/host-contention/perf_lock_contention_verbose.txt" "$out/perf_lock_contention_verbose.txt"
fi
ls -la "$out" "$data" "$perf_data"
