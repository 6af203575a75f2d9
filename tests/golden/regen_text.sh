#!/bin/bash
# Makes the trace-cmd report texts the ftrace-text tests read, from the committed trace.dat of the same-buffer
# recording (tests/data/text/record_same_buffer.sh): default output (libtraceevent plugins), -t (ns timestamps),
# -R (raw fields), and a mail-quoted cut of the default output. Needs trace-cmd (3.1.x) and zstd.
#   tests/golden/regen_text.sh
set -eu
D=$(cd "$(dirname "$0")/../data/text/same_buffer" && pwd)
command -v trace-cmd >/dev/null || { echo "trace-cmd not installed" >&2; exit 1; }
trace-cmd report "$D/trace.dat" 2>/dev/null | zstd -q -19 -f -o "$D/report.txt.zst"
trace-cmd report -t "$D/trace.dat" 2>/dev/null | zstd -q -19 -f -o "$D/report_t.txt.zst"
trace-cmd report -R "$D/trace.dat" 2>/dev/null | zstd -q -19 -f -o "$D/report_R.txt.zst"
# what a bug report holds: a slice of the default output with a '> ' quote prefix, gzip-compressed
trace-cmd report "$D/trace.dat" 2>/dev/null | sed -n '1,400p' | sed 's/^/> /' | gzip -9 -n > "$D/report_quoted.txt.gz"
trace-cmd -h 2>&1 | grep -m1 "version" > "$D/report_tool_version.txt"
ls -l "$D"
# the x86-tsc recording: trace-cmd prints the raw counter glued to the CPU column ("[001]3696154942357:")
T=$(cd "$(dirname "$0")/../data/text/same_buffer_tsc" && pwd)
trace-cmd report "$T/trace.dat" 2>/dev/null | zstd -q -19 -f -o "$T/report.txt.zst"
