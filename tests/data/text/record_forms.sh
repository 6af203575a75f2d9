#!/bin/bash
# Small real tracefs texts in the less common layouts: options/record-tgid (a "(tgid)" column), options/irq-info
# off (no irq-flags column), and trace_pipe output (no header). Run as root: tests/data/text/record_forms.sh
set -eu
HERE=$(cd "$(dirname "$0")" && pwd); OUT=$HERE/forms; T=/sys/kernel/tracing
mkdir -p "$OUT"
[ -e $T/trace ] || mount -t tracefs nodev $T
echo 0 > $T/tracing_on; echo 0 > $T/events/enable; echo > $T/trace; echo local > $T/trace_clock
echo 1 > $T/events/sched/sched_switch/enable
echo 1 > $T/events/sched/sched_wakeup/enable
echo 1 > $T/events/irq/enable
run() { echo 1 > $T/tracing_on; for i in 1 2 3 4 5; do ls /proc > /dev/null; sleep 0.01; done; echo 0 > $T/tracing_on; }
echo 1 > $T/options/record-tgid; run
head -c 20000 $T/trace | head -n -1 > "$OUT/tgid.txt"; echo > $T/trace
echo 0 > $T/options/record-tgid; echo 0 > $T/options/irq-info; run
head -c 20000 $T/trace | head -n -1 > "$OUT/noirqinfo.txt"; echo > $T/trace
echo 1 > $T/options/irq-info; run
timeout 2 cat $T/trace_pipe | head -c 20000 | head -n -1 > "$OUT/trace_pipe.txt" || true
echo 0 > $T/events/enable; echo > $T/trace
ls -l "$OUT"
