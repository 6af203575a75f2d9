"""Read the render goldens (``trace-cmd report -t -N`` output, zstd) into (ts, cpu, common_pid, event, info) rows."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import zstandard

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "render"
_HEAD = re.compile(r"-(?P<pid>-?\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<ts>\d+)\.(?P<frac>\d+): (?P<event>[^:\s]+):")


def read_golden(name: str) -> pl.DataFrame:
    """Rows of a golden file; ``info`` is the text after the event column (trace-cmd pads ``event:`` to 21
    characters and adds a space), continuation lines (kernel stacks) joined with newlines, dropped-events marks
    skipped."""
    raw = zstandard.ZstdDecompressor().stream_reader((GOLDEN / name).open("rb")).read().decode(errors="replace")
    rows: list[list] = []
    for line in raw.split("\n"):
        m = _HEAD.search(line)
        if m:
            ev = m["event"]
            start = m.start("event") + max(len(ev) + 1, 21) + 1
            ts = int(m["ts"]) * 1_000_000_000 + int(m["frac"].ljust(9, "0")[:9])
            rows.append([ts, int(m["cpu"]), int(m["pid"]), ev, line[start:]])
        elif rows and line and not line.startswith("cpus=") and "EVENTS DROPPED]" not in line \
                and not re.match(r"^\s*CPU \d+ is empty", line):
            rows[-1][4] += "\n" + line
    return pl.DataFrame(rows, schema={"ts": pl.Int64, "cpu": pl.Int32, "common_pid": pl.Int32, "event": pl.String,
                                      "info": pl.String}, orient="row")
