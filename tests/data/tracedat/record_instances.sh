#!/bin/bash
# Records the real multi-buffer and empty trace.dat fixtures of tests/parsers/test_tracedat*.py with tracefs
# instances set up by hand + `trace-cmd extract` (the top buffer is left alone):
#   multi_buffer.dat  instances tk_sched (sched:*), tk_irq (irq:*, timer:*) and tk_lost (sched:*, irq:* in an 8 KiB
#                     ring buffer that overruns: its pages carry the kernel's missed-events flags) of one workload
#   empty.dat         an instance with no event enabled: zero events
# Run as root:  tests/data/tracedat/record_instances.sh [OUTDIR]   (default: this folder)
# Then:         tests/golden/tracedat/regen.sh   (goldens from trace-cmd report -R -t -N)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE}
T=/sys/kernel/tracing
[ -e $T/trace ] || mount -t tracefs nodev $T
for i in tk_sched tk_irq tk_lost tk_empty; do [ -d $T/instances/$i ] && rmdir $T/instances/$i; mkdir $T/instances/$i; done
A=$T/instances/tk_sched; B=$T/instances/tk_irq; E=$T/instances/tk_empty; X=$T/instances/tk_lost
for d in $A $B $E $X; do echo 0 > $d/tracing_on; echo local > $d/trace_clock; echo 1024 > $d/buffer_size_kb; done
echo 1 > $A/events/sched/enable
echo 1 > $B/events/irq/enable
echo 1 > $B/events/timer/enable
echo 8 > $X/buffer_size_kb; echo 1 > $X/events/sched/enable; echo 1 > $X/events/irq/enable
echo 1 > $A/tracing_on; echo 1 > $B/tracing_on; echo 1 > $E/tracing_on; echo 1 > $X/tracing_on
for _ in 1 2 3; do ls -R /usr/share/doc > /dev/null; sleep 0.05; done
echo 0 > $A/tracing_on; echo 0 > $B/tracing_on; echo 0 > $E/tracing_on; echo 0 > $X/tracing_on
trace-cmd extract -B tk_sched -B tk_irq -B tk_lost -o "$OUT/multi_buffer.dat"
trace-cmd extract -B tk_empty -o "$OUT/empty.dat"
for i in tk_sched tk_irq tk_lost tk_empty; do rmdir $T/instances/$i 2>/dev/null || true; done
