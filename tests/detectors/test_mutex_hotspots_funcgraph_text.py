"""mutex-hotspots from function_graph tracer TEXT (source ``funcgraph``) gives what it gives from the trace.dat the
text was printed from.

Fixtures: ``tests/data/text/funcgraph/`` (``tests/golden/regen_text_funcgraph.py``): a synthetic trace.dat of
function_graph events — three vCPU threads calling ``kvm_pmu_handle_event → reprogram_counter →
pmc_reprogram_counter.part.0 → perf_event_ctx_lock → perf_event_ctx_lock_nested.isra.0 → __mutex_lock.constprop.0``
every 20 ms with long waits in bursts (0.6 s every 2.0 s), a ``perf`` thread through ``perf_ioctl`` — and the real
``trace-cmd report`` text of it (trace-cmd's function-graph form), plus the kernel's tracefs layout derived from that
text (see the parser test's docstring for the format sources).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import tracekit
from tracekit.detectors import Inputs
from tracekit.detectors.lock_sources import funcgraph_intervals, symbol_pattern
from tracekit.detectors.mutex_hotspots import MutexHotspots

DATA = Path(__file__).resolve().parents[1] / "data" / "text" / "funcgraph"
FRAMES = ("hotspots", "thread_share", "top_paths", "bursts", "periodicity", "timeline", "bucket_share")
SET = symbol_pattern(MutexHotspots.defaults["symbols"])


def _run(path: Path):
    tr = tracekit.load(path)
    return tr, MutexHotspots().run(Inputs(host=(tr,)), {})


@pytest.fixture(scope="module")
def from_dat():
    return _run(DATA / "graph.dat")


def test_dat_scenario_is_what_the_texts_are_checked_against(from_dat):
    """The reference itself: the period of the bursts, the three vCPU threads flagged, three set functions."""
    _, res = from_dat
    per = res.frames["periodicity"].row(0, named=True)
    assert per["source"] == "funcgraph" and per["period_s"] == pytest.approx(2.0, rel=0.05)
    assert per["mean_burst_s"] == pytest.approx(0.6, abs=0.1)
    assert res.frames["top_paths"]["path"].to_list() == ["perf_event_ctx_lock", "perf_event_ctx_lock_nested.isra.0",
                                                         "perf_event_ctx_unlock"]
    assert sorted(res.findings[0].evidence["tid"].to_list()) == [5001, 5002, 5003]


def test_report_ns_text_gives_the_same_result(from_dat):
    """``trace-cmd report -t``: the intervals and every frame of the rule equal the trace.dat's."""
    dat, res = from_dat
    tr, got = _run(DATA / "report_t.txt.zst")
    assert_frame_equal(funcgraph_intervals(tr, SET), funcgraph_intervals(dat, SET))
    for name in FRAMES:
        assert_frame_equal(got.frames[name], res.frames[name], check_exact=True)
    assert [f.summary for f in got.findings] == [f.summary for f in res.findings]


@pytest.mark.parametrize("name", ["report", "report_tail", "tracefs"])
def test_us_text_gives_the_same_result_within_rounding(from_dat, name):
    """Default trace-cmd report (µs), with tailprint/depth, and the tracefs layout: the same calls, paths, bursts
    and period; wall times within the text's 500 ns rounding per call."""
    dat, res = from_dat
    tr, got = _run(DATA / f"{name}.txt.zst")
    # calls starting in the same µs may swap places in ``ts`` order: compare per thread and function
    a, b = (funcgraph_intervals(t, SET).sort("pid", "path", "ts") for t in (dat, tr))
    assert b.select("pid", "path").equals(a.select("pid", "path"))
    assert (b["ts"] - a["ts"]).abs().max() <= 510 and (b["wait_ns"] - a["wait_ns"]).abs().max() <= 10
    # ns columns: 1 µs per call at most (both ends rounded); a 0.1 s bucket holds < 20 calls
    for frame, keys, approx in (("thread_share", ["tid"], {"lock": 1_300_000, "total": 1000, "share": 2e-4}),
                                ("top_paths", ["path"], {"lock": 1_300_000, "share": 2e-4, "share_of_lock": 2e-4}),
                                ("bursts", ["start_s"], {"peak": 2e-4, "mean": 2e-4}),
                                ("periodicity", ["source"], {"confidence": 1e-3}),
                                ("timeline", ["bucket"], {"lock": 20_000, "total": 1000, "share": 2e-4,
                                                          "share_all": 2e-4})):
        x, y = res.frames[frame].sort(keys), got.frames[frame].sort(keys)
        exact = [c for c in x.columns if c not in approx and c != "comm"]
        assert_frame_equal(y.select(exact), x.select(exact), check_exact=True)
        for c, tol in ((c, t) for c, t in approx.items() if c in x.columns):
            assert_frame_equal(y.select(pl.col(c).cast(pl.Float64)), x.select(pl.col(c).cast(pl.Float64)),
                               check_exact=False, rel_tol=0, abs_tol=tol)
    th = got.frames["thread_share"].sort("tid")
    assert (th["lock"] - res.frames["thread_share"].sort("tid")["lock"]).abs().le(th["samples"] * 1000).all()
    assert len(got.findings) == len(res.findings)
    assert sorted(got.findings[0].evidence["tid"].to_list()) == [5001, 5002, 5003]


def test_tracefs_without_tasks_still_finds_the_period(from_dat):
    """Without ``funcgraph-proc`` CPUs that never switch tasks give calls without a thread (in the timeline and
    paths, not in any thread's share), yet the bursts (within a bucket) and their period come out the same."""
    _, res = from_dat
    _, got = _run(DATA / "tracefs_noproc.txt.zst")
    per = got.frames["periodicity"].row(0, named=True)
    want = res.frames["periodicity"].row(0, named=True)
    assert per["period_s"] == pytest.approx(want["period_s"], rel=0.05)
    starts, want_starts = got.frames["bursts"]["start_s"], res.frames["bursts"]["start_s"]
    assert starts.len() == want_starts.len() and (starts - want_starts).abs().max() <= 0.1 + 1e-9
    assert got.frames["thread_share"]["tid"].sort().to_list() == [5001, 5002, 5003, 6001]
