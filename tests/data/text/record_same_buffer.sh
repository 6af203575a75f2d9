#!/bin/bash
# Records ONE ftrace ring buffer twice: as tracefs text (`cat trace`, non-consuming) and as trace.dat
# (`trace-cmd extract`, which consumes it), so tests can compare the text reader with the trace.dat reader.
# Workloads: a short perf_event ctx-mutex contention run (lock:contention_*, sched, irq, stacks) and
# kvm_tiny.c (a real KVM guest doing port writes, one MMIO access and HLT: kvm:* events), plus the function
# tracer filtered to two functions. Run as root on a machine with tracefs and /dev/kvm:
#   tests/data/text/record_same_buffer.sh [OUTDIR]     (default: tests/data/text/same_buffer)
#   CLOCK=x86-tsc tests/data/text/record_same_buffer.sh tests/data/text/same_buffer_tsc
# With trace_clock=local the text shows microseconds ROUNDED from the ring buffer's nanoseconds; with a counter
# clock (x86-tsc) the kernel prints the raw counter, so text and trace.dat carry the very same timestamps.
# Needs gcc, trace-cmd, zstd; TOOLS= the folder holding perf_ctx_contention.c (default ../shared/data/tools).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/same_buffer}
TOOLS=${TOOLS:-$HERE/../../../../shared/data/tools}
T=/sys/kernel/tracing
mkdir -p "$OUT"
[ -e $T/trace ] || mount -t tracefs nodev $T
BIN=$(mktemp -d)
gcc -O2 -pthread -o "$BIN/perf_ctx_contention" "$TOOLS/perf_ctx_contention.c"
gcc -O2 -o "$BIN/kvm_tiny" "$HERE/kvm_tiny.c"

echo 0 > $T/tracing_on
echo 0 > $T/events/enable
echo nop > $T/current_tracer
echo > $T/set_event_pid
echo > $T/trace
echo ${CLOCK:-local} > $T/trace_clock
echo 8192 > $T/buffer_size_kb           # no overruns for this short run
echo 1 > $T/events/sched/enable
echo 1 > $T/events/irq/enable
echo 1 > $T/events/lock/contention_begin/enable
echo 1 > $T/events/lock/contention_end/enable
echo 1 > $T/events/kvm/enable
echo 0 > $T/options/hash-ptr            # %p prints the real address (as trace.dat holds it), not a hash
echo 1 > $T/options/stacktrace          # a kernel stack after every event
echo 1 > $T/tracing_on
"$BIN/perf_ctx_contention" 3 0.01 > "$OUT/workload_stdout.txt"
echo 0 > $T/options/stacktrace
"$BIN/kvm_tiny" 16 >> "$OUT/workload_stdout.txt"
# the function tracer, limited to the contended path (skipped when this kernel refuses it)
if echo 'perf_event_ctx_lock_nested*' > $T/set_ftrace_filter 2>/dev/null \
   && echo '__mutex_lock*' >> $T/set_ftrace_filter && echo function > $T/current_tracer 2>/dev/null; then
  "$BIN/perf_ctx_contention" 2 0.002 >> "$OUT/workload_stdout.txt"
  echo nop > $T/current_tracer
  echo > $T/set_ftrace_filter
fi
echo 0 > $T/tracing_on
for c in $(ls -d $T/per_cpu/cpu* | sed 's/.*cpu//'); do echo "== cpu$c"; cat $T/per_cpu/cpu$c/stats; done > "$OUT/per_cpu_stats.txt"
cat $T/trace > "$OUT/trace.txt"
trace-cmd extract -o "$OUT/trace.dat" > "$OUT/extract_log.txt" 2>&1
echo 1 > $T/options/hash-ptr
echo local > $T/trace_clock
echo 0 > $T/events/enable
echo 1410 > $T/buffer_size_kb
rm -rf "$BIN"
zstd -q -19 -f --rm "$OUT/trace.txt"
ls -l "$OUT"
