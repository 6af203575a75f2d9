#!/bin/bash
# Cuts the real host-contention recording (../shared/data/host-contention/trace_v7_zstd.dat, see its README.txt)
# into the small trace.dat fixtures of tests/parsers/test_tracedat*.py, with trace-cmd only:
#   contention_v7_zstd.dat     `trace-cmd split` of 80 ms (~28.6k events: lock contention, kernel stacks, sched)
#   contention_v6.dat.zst      `trace-cmd convert --file-version 6` of it (stored zstd-compressed: kallsyms is big)
#   contention_v7_none.dat.zst `trace-cmd convert --compression none` of it (stored zstd-compressed)
#   contention_v7_zlib.dat     `convert --compression zlib` by a trace-cmd that has zlib (TRACE_CMD_ZLIB=path;
#                              Debian's has not: skipped then)
# usage: tests/data/tracedat/make_cuts.sh [SOURCE.dat]     then tests/golden/tracedat/regen.sh
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${1:-$HERE/../../../../shared/data/host-contention/trace_v7_zstd.dat}
TC=${TRACE_CMD:-trace-cmd}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
"$TC" split -i "$SRC" -o "$TMP/cut.dat" 3555.000 3555.080 > /dev/null
mv "$TMP/cut.dat.1" "$HERE/contention_v7_zstd.dat"
"$TC" convert --file-version 6 -i "$HERE/contention_v7_zstd.dat" -o "$TMP/v6.dat" > /dev/null
"$TC" convert --compression none -i "$HERE/contention_v7_zstd.dat" -o "$TMP/none.dat" > /dev/null
zstd -q -19 -f "$TMP/v6.dat" -o "$HERE/contention_v6.dat.zst"
zstd -q -19 -f "$TMP/none.dat" -o "$HERE/contention_v7_none.dat.zst"
if [ -n "${TRACE_CMD_ZLIB:-}" ]; then
  "$TRACE_CMD_ZLIB" convert --compression zlib -i "$HERE/contention_v7_zstd.dat" -o "$HERE/contention_v7_zlib.dat" > /dev/null
else
  echo "TRACE_CMD_ZLIB not set: contention_v7_zlib.dat left as it is" >&2
fi
