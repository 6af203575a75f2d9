"""User-address maps of the perf.data reader: forked processes inherit their parent's maps (perf's thread model)."""

from __future__ import annotations

import numpy as np
import polars as pl
from tracekit.parsers.perf_data.symbolize import Symbolizer


def _tables(fork_rows: list[tuple[int, int, int]]) -> dict[str, pl.DataFrame]:
    mmap2 = pl.DataFrame({"pid": [10, 10, 20, 10], "addr": [0x1000, 0x5000, 0x1000, 0x9000],
                          "len": [0x1000, 0x1000, 0x1000, 0x1000], "pgoff": [0, 0, 0, 0],
                          "filename": ["/bin/a", "/lib/b", "/bin/c", "/lib/late"], "ts": [0, 0, 0, 500]},
                         schema_overrides={"pid": pl.UInt32, "addr": pl.UInt64, "len": pl.UInt64, "pgoff": pl.UInt64})
    fork = pl.DataFrame({"pid": [r[0] for r in fork_rows], "ppid": [r[1] for r in fork_rows],
                         "tid": [r[0] for r in fork_rows], "ptid": [r[1] for r in fork_rows],
                         "time": [r[2] for r in fork_rows]}, schema={k: pl.UInt32 for k in ("pid", "ppid", "tid",
                                                                                               "ptid")} | {"time": pl.UInt64})
    return {"mmap2": mmap2, "fork": fork}


def _dso(sym: Symbolizer, pid: int, addr: int) -> str:
    cls = sym._pid_classes(np.array([pid]))
    return sym.resolve(cls, np.array([addr], dtype=np.uint64), np.array([False]))[1][0]


def test_forked_process_names_addresses_through_the_maps_its_parent_had_at_the_fork():
    # 11 forks from 10 at time 100 (before /lib/late is mapped), 12 from 11 at 600, 13 is a thread of 10
    sym = Symbolizer(None, _tables([(11, 10, 100), (12, 11, 600), (10, 10, 50)]))
    assert _dso(sym, 11, 0x1010) == "/bin/a" and _dso(sym, 11, 0x5010) == "/lib/b"
    assert _dso(sym, 11, 0x9010) == "[unknown]"  # mapped by the parent after the fork
    assert _dso(sym, 10, 0x9010) == "/lib/late"
    assert _dso(sym, 12, 0x1010) == "/bin/a"  # a fork of a fork
    assert _dso(sym, 20, 0x1010) == "/bin/c" and _dso(sym, 21, 0x1010) == "[unknown]"
    assert sym._pid_classes(np.array([11, 12, 10, 99])).tolist() == [11, 11, 10, -2]  # same maps, one class
