"""mutex-hotspots on ``tracekit.testing.build_contention_scenario`` (another helper's generator of periodic
perf_event context-mutex contention, modelled on the real recording): written as trace.dat, read back through
``tracekit.load``; every wait must equal the generator's truth and the burst period must come back within 5%."""

from __future__ import annotations

import polars as pl
import pytest

import tracekit
from tracekit.detectors import Inputs
from tracekit.detectors.mutex_hotspots import MutexHotspots

testing = pytest.importorskip("tracekit.testing")
if not hasattr(testing, "build_contention_scenario"):  # pragma: no cover - older checkouts
    pytest.skip("tracekit.testing has no build_contention_scenario", allow_module_level=True)


def test_scenario_waits_and_period(tmp_path):
    # small on purpose: the generator is a per-event Python loop (three bursts are enough for the onset period)
    sc = testing.build_contention_scenario(3, period_s=1.5, burst_s=0.4, duration_s=4.5, threads=2)
    path = tmp_path / "scenario.dat"
    sc.write(path, version=7, compression="zstd")
    res = MutexHotspots().run(Inputs(host=(tracekit.load(path),)), {"bucket_s": 0.05})
    got = res.frames["waits"].sort(["pid", "lock_addr", "ts"])
    want = sc.waits.sort(["pid", "lock_addr", "ts"])
    assert got.height == want.height
    for col in ("pid", "lock_addr", "ts", "end_ts", "wait_ns", "slept"):
        assert got[col].cast(want.schema[col]).to_list() == want[col].to_list(), col
    # the truth names the handler under the lock; the rule's path starts with it for waits in the set
    entry = got.select(pl.when(pl.col("in_set")).then(pl.col("path").str.split(" → ").list.first())
                       .otherwise(pl.lit("__schedule")))["path"]
    assert entry.to_list() == want["path"].to_list()
    per = res.frames["periodicity"].row(0, named=True)
    assert per["period_s"] == pytest.approx(sc.period_ns / 1e9, rel=0.05)
    assert per["mean_burst_s"] == pytest.approx(sc.burst_ns / 1e9, abs=0.15)
