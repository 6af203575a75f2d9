#!/bin/bash
# Regenerates the goldens of tests/parsers/test_tracedat*.py: `trace-cmd report -R -t -N` (raw fields, ns timestamps,
# no plugins) of every fixture in tests/data/tracedat, zstd-compressed, as NAME.raw.txt.zst. *.dat.zst fixtures are
# decompressed to a temporary file first. A zlib fixture needs a trace-cmd built with zlib: TRACE_CMD_ZLIB=path
# (Debian's trace-cmd cannot read zlib; without it the zlib golden is left alone).
# usage: tests/golden/tracedat/regen.sh
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=$HERE/../../data/tracedat
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
trace-cmd --version 2>/dev/null | head -2 > "$HERE/TRACE_CMD_VERSION" || true
for f in "$DATA"/*.dat "$DATA"/*.dat.zst; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .zst); name=${name%.dat}
  in=$f
  if [[ $f == *.zst ]]; then in=$TMP/$name.dat; zstd -q -d -f "$f" -o "$in"; fi
  TC=trace-cmd
  if [[ $name == *zlib* ]]; then
    if [ -z "${TRACE_CMD_ZLIB:-}" ]; then echo "skip $name: TRACE_CMD_ZLIB not set" >&2; continue; fi
    TC=$TRACE_CMD_ZLIB
  fi
  "$TC" report -R -t -N "$in" 2>/dev/null | zstd -q -19 -f -o "$HERE/$name.raw.txt.zst"
  echo "$name: $(zstd -dc "$HERE/$name.raw.txt.zst" | wc -l) lines"
done
