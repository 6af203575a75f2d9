#!/bin/bash
# Makes a big REAL trace for benchmarks/bench_tracedat.py (adapted from ../shared/data/tools/record_big.sh):
# sched + irq + raw_syscalls + timer events of a busy workload (perf bench sched messaging + pipe) recorded in a
# tracefs instance set up by hand (the top buffer is left alone), stopped at >= TARGET entries or at the first
# overrun, then `trace-cmd extract` (v7/zstd) and `trace-cmd convert` to v6 and v7/none.
# usage (root): benchmarks/make_big_trace.sh [OUTDIR]     (default /work/big; TARGET=12000000)
set -eu
OUT=${1:-/work/big}; TARGET=${TARGET:-12000000}
T=/sys/kernel/tracing; NAME=tk_big; I=$T/instances/$NAME
mkdir -p "$OUT"; cd "$OUT"
[ -e $T/trace ] || mount -t tracefs nodev $T
[ -d $I ] && rmdir $I
mkdir $I
echo 0 > $I/tracing_on; echo local > $I/trace_clock
echo 1048576 > $I/buffer_size_kb          # 1 GiB per CPU
echo 1 > $I/events/sched/enable
echo 1 > $I/events/irq/enable
echo 1 > $I/events/raw_syscalls/enable
echo 1 > $I/events/timer/enable
echo 1 > $I/tracing_on
( while :; do perf bench sched messaging -g 4 -l 200 >/dev/null 2>&1; done ) & P1=$!
( while :; do perf bench sched pipe -l 200000 >/dev/null 2>&1; done ) & P2=$!
start=$(date +%s.%N)
while :; do
  sleep 0.25
  e=$(cat $I/per_cpu/cpu*/stats | awk '/^entries/{s+=$2} END{print s}')
  o=$(cat $I/per_cpu/cpu*/stats | awk '/^overrun/{s+=$2} END{print s}')
  if [ "$e" -ge "$TARGET" ] || [ "$o" -gt 0 ]; then break; fi
done
echo 0 > $I/tracing_on
end=$(date +%s.%N)
kill $P1 $P2; wait $P1 $P2 2>/dev/null || true
echo "recording wall time: $(echo "$end - $start" | bc) s; entries=$e overrun=$o" > record_log.txt
for c in $I/per_cpu/cpu*; do echo "== $(basename $c)"; cat $c/stats; done > ftrace_per_cpu_stats.txt
trace-cmd extract -B $NAME -o big_v7_zstd.dat >> record_log.txt 2>&1
rmdir $I 2>/dev/null || true   # trace-cmd extract -B may remove it itself
trace-cmd convert --file-version 6 -i big_v7_zstd.dat -o big_v6.dat >> record_log.txt 2>&1
trace-cmd convert --compression none -i big_v7_zstd.dat -o big_v7_none.dat >> record_log.txt 2>&1
ls -la "$OUT"
