"""mutex-hotspots on a generated trace.dat: vCPU threads whose perf_event_ctx_lock waits come in bursts every N
seconds, written with ``tracekit.testing.write_tracedat`` and read back through ``tracekit.load`` — the rule must
recover N within 5% from the contention events alone, with the call path resolved through the file's kallsyms."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import tracekit
from tracekit.detectors import Inputs
from tracekit.detectors.mutex_hotspots import MutexHotspots
from tracekit.testing import write_tracedat

STACK = ["trace_event_raw_event_contention_begin", "__mutex_lock.constprop.0", "perf_event_ctx_lock_nested.isra.0",
         "perf_event_period", "pmc_reprogram_counter", "reprogram_counter", "kvm_pmu_handle_event",
         "vcpu_enter_guest"]
KALLSYMS = {name: 0xFFFFFFFF81000000 + 0x1000 * i for i, name in enumerate(STACK + ["zz_end"])}
LOCK = 0xFFFF888105AD0A08
VCPUS = 4


def contention_scenario(period_s: float, burst_s: float, duration_s: float, seed: int = 0):
    """One wait per vCPU thread per millisecond: 400-800 µs inside a burst, 10-50 µs outside; 5% of the waits
    go to sleep (a second begin without SPIN). Returns (frames by ``system:event``, cmdlines)."""
    rng = np.random.default_rng(seed)
    slots = int(duration_s * 1000)
    t0 = 1_000_000_000
    n = slots * VCPUS
    vcpu = np.repeat(np.arange(VCPUS), slots)
    start = t0 + np.tile(np.arange(slots, dtype=np.int64) * 1_000_000, VCPUS) + rng.integers(0, 50_000, n)
    rel = (start - t0) / 1e9
    burst = ((rel - 0.25) % period_s) < burst_s
    length = np.where(burst, rng.integers(400_000, 800_000, n), rng.integers(10_000, 50_000, n))
    sleeps = rng.random(n) < 0.05
    pid = 2000 + vcpu
    begin = pl.DataFrame({"ts": start, "cpu": vcpu, "common_pid": pid, "lock_addr": np.full(n, LOCK, np.uint64),
                          "flags": np.full(n, 33, np.uint32)})
    second = pl.DataFrame({"ts": start[sleeps] + 5_000, "cpu": vcpu[sleeps], "common_pid": pid[sleeps],
                           "lock_addr": np.full(int(sleeps.sum()), LOCK, np.uint64),
                           "flags": np.full(int(sleeps.sum()), 32, np.uint32)})
    callers = [KALLSYMS[name] + 0x10 for name in STACK]
    stack = pl.DataFrame({"ts": start + 1_000, "cpu": vcpu, "common_pid": pid, "size": np.full(n, len(STACK)),
                          "caller": pl.Series([callers], dtype=pl.List(pl.UInt64)).gather(np.zeros(n, np.int64))})
    end = pl.DataFrame({"ts": start + length, "cpu": vcpu, "common_pid": pid,
                        "lock_addr": np.full(n, LOCK, np.uint64), "ret": np.zeros(n, np.int32)})
    frames = {"lock:contention_begin": pl.concat([begin, second]).sort("ts"), "lock:contention_end": end,
              "ftrace:kernel_stack": stack}
    cmdlines = {2000 + v: f"CPU {v}/KVM" for v in range(VCPUS)}
    return frames, cmdlines, length, burst


@pytest.mark.parametrize("period_s", [2.0, 3.5])
def test_periodic_contention_written_and_read_back(tmp_path, period_s):
    frames, cmdlines, length, burst = contention_scenario(period_s, 0.8, duration_s=6 * period_s, seed=int(period_s))
    path = tmp_path / "contention.dat"
    write_tracedat(path, frames, version=7, compression="zstd", cpus=VCPUS, kallsyms=KALLSYMS, cmdlines=cmdlines)
    trace = tracekit.load(path)
    res = MutexHotspots().run(Inputs(host=(trace,)), {})
    assert res.ran
    per = res.frames["periodicity"].row(0, named=True)
    assert per["source"] == "contention"
    assert per["period_s"] == pytest.approx(period_s, rel=0.05)
    assert per["mean_burst_s"] == pytest.approx(0.8, abs=0.15)
    waits = res.frames["waits"]
    assert waits.height == len(length)
    assert waits["wait_ns"].sum() == int(length.sum())
    assert waits["slept"].sum() == frames["lock:contention_begin"].filter(pl.col("flags") == 32).height
    paths = res.frames["top_paths"]["path"].to_list()
    assert paths == ["perf_event_period → perf_event_ctx_lock_nested.isra.0 → __mutex_lock.constprop.0"]
    th = res.frames["thread_share"].sort("tid")
    assert th["comm"].to_list() == [f"CPU {v}/KVM" for v in range(VCPUS)]
    span = int(frames["lock:contention_end"]["ts"].max() - frames["lock:contention_begin"]["ts"].min())
    per_thread = length.reshape(VCPUS, -1).sum(axis=1) / span
    assert th["share"].to_numpy() == pytest.approx(per_thread, rel=1e-9)
    assert res.findings and res.findings[0].evidence.height == VCPUS
    assert "bursts every" in res.findings[0].summary


def test_function_graph_calls_give_wall_time_and_period(tmp_path):
    """function_graph exits of perf_event_ctx_lock_nested (and a perf_event_ctx_lock nested around half of them,
    which must not count twice) every 1 ms per vCPU, long inside bursts every 2.5 s."""
    rng = np.random.default_rng(11)
    period_s, slots = 2.5, 15_000
    t0 = 2_000_000_000
    n = slots * VCPUS
    vcpu = np.repeat(np.arange(VCPUS), slots)
    call = t0 + np.tile(np.arange(slots, dtype=np.int64) * 1_000_000, VCPUS) + rng.integers(0, 50_000, n)
    burst = (((call - t0) / 1e9 - 0.3) % period_s) < 0.7
    ret = call + np.where(burst, rng.integers(300_000, 700_000, n), rng.integers(2_000, 20_000, n))
    outer = rng.random(n) < 0.5  # perf_event_ctx_lock(...) { perf_event_ctx_lock_nested(...) } — inlined or not
    nested = KALLSYMS["perf_event_ctx_lock_nested.isra.0"]
    ks = {**KALLSYMS, "perf_event_ctx_lock": 0xFFFFFFFF82000000, "vcpu_run": 0xFFFFFFFF82001000}
    pid = 3000 + vcpu

    def exits(sel, func, lo, hi, depth):
        k = int(sel.sum())
        return pl.DataFrame({"ts": hi[sel] + 200, "cpu": vcpu[sel], "common_pid": pid[sel],
                             "func": np.full(k, func, np.uint64), "depth": np.full(k, depth, np.uint32),
                             "calltime": lo[sel], "rettime": hi[sel]})

    every = np.ones(n, dtype=bool)
    frames = {"ftrace:funcgraph_exit": pl.concat([
        exits(every, nested, call, ret, 3),
        exits(outer, ks["perf_event_ctx_lock"], call - 1_000, ret + 1_000, 2),
        exits(every, ks["vcpu_run"], call - 5_000, ret + 50_000, 1),
    ]).sort("ts")}
    path = tmp_path / "graph.dat"
    write_tracedat(path, frames, version=7, cpus=VCPUS, kallsyms=ks,
                   cmdlines={3000 + v: f"CPU {v}/KVM" for v in range(VCPUS)})
    res = MutexHotspots().run(Inputs(host=(tracekit.load(path),)), {})
    per = res.frames["periodicity"].row(0, named=True)
    assert per["source"] == "funcgraph"
    assert per["period_s"] == pytest.approx(period_s, rel=0.05)
    union = np.where(outer, ret - call + 2_000, ret - call)
    th = res.frames["thread_share"].sort("tid")
    assert th["lock"].to_list() == [int(union[vcpu == v].sum()) for v in range(VCPUS)]
    assert th["comm"].to_list() == [f"CPU {v}/KVM" for v in range(VCPUS)]
    paths = dict(res.frames["top_paths"].select("path", "samples").iter_rows())
    assert paths == {"perf_event_ctx_lock_nested.isra.0": n, "perf_event_ctx_lock": int(outer.sum())}
    assert res.frames["hotspots"]["samples"][0] == n + int(outer.sum())
