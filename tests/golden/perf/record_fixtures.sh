#!/bin/bash
# Records the small perf.data fixtures of tests/data/perf/ with the guest command line of
# ../shared/data/tools/record_guest_perf.sh (software clocks, fixed period, callchains), scaled down:
# plain, --compression-level=1, --threads directory, pipe mode (-o -), and a tracepoint recording.
# Usage: record_fixtures.sh WORKLOAD_BINARY   (perf_ctx_contention built from ../shared/data/tools)
set -e
W=${1:?usage: $0 path/to/perf_ctx_contention}
OUT=$(cd "$(dirname "$0")/../../data/perf" && pwd)
cd "$OUT"
rm -rf small_plain.data small_zstd.data small_threads.data small_pipe.data small_sched.data small_lost.data
COMMON="-N -B -T --sample-cpu --clockid=CLOCK_MONOTONIC_RAW -e cpu-clock -e task-clock -c 1000000 -g"
perf record $COMMON -o small_plain.data -- "$W" 2 0.3
perf record --compression-level=1 -a $COMMON -o small_zstd.data -- "$W" 2 0.3
perf record --threads --compression-level=1 -a $COMMON -o small_threads.data -- "$W" 2 0.3
perf record $COMMON -o - -- "$W" 2 0.3 > small_pipe.data
perf record -a -T --sample-cpu -e sched:sched_switch -e sched:sched_wakeup -o small_sched.data -- "$W" 2 0.2
# a 1-page ring buffer at 100k samples/s: PERF_RECORD_LOST and LOST_SAMPLES
perf record -m 1 -a -g -e cpu-clock -c 10000 -o small_lost.data -- "$W" 2 0.05
chmod -R a+r .
